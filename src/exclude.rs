//! Exclude patterns, with restic's meaning: a pattern without `/` matches an entry's name
//! anywhere in the tree; a pattern with `/` matches the whole absolute path (a relative one
//! may match at any depth). `*` does not cross `/`; `**` does.

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use std::ffi::OsStr;
use std::path::Path;

/// Compiled exclude patterns.
#[derive(Clone, Debug, Default)]
pub struct Excludes {
    by_name: GlobSet,
    by_path: GlobSet,
}

impl Excludes {
    /// Compile exclude patterns; the error names the bad pattern.
    pub fn new(patterns: &[String]) -> Result<Self, String> {
        Self::compile(patterns, "exclude pattern")
    }

    /// Compile patterns with this meaning for another use (`find`); `role` names them in
    /// errors ("find pattern").
    pub fn compile(patterns: &[String], role: &str) -> Result<Self, String> {
        let mut by_name = GlobSetBuilder::new();
        let mut by_path = GlobSetBuilder::new();
        for p in patterns {
            let trimmed = p.trim_end_matches('/');
            let (set, pat) = if trimmed.contains('/') {
                let pat = if trimmed.starts_with('/') || trimmed.starts_with("**") {
                    trimmed.to_string()
                } else {
                    format!("**/{trimmed}")
                };
                (&mut by_path, pat)
            } else {
                (&mut by_name, trimmed.to_string())
            };
            let glob = GlobBuilder::new(&pat)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| format!("{role} {p:?} is invalid: {e}"))?;
            set.add(glob);
        }
        let build = |b: GlobSetBuilder| b.build().map_err(|e| format!("{role}s: {e}"));
        Ok(Excludes {
            by_name: build(by_name)?,
            by_path: build(by_path)?,
        })
    }

    /// Whether the entry at `path` (with file name `name`) is excluded.
    pub fn matches(&self, path: &Path, name: &OsStr) -> bool {
        self.by_name.is_match(name) || self.by_path.is_match(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_and_path_patterns() {
        let e = Excludes::new(&[
            "*.tmp".into(),
            "/srv/data/cache".into(),
            "logs/*.log".into(),
        ])
        .expect("compile");
        let m = |p: &str| {
            let path = Path::new(p);
            e.matches(path, path.file_name().unwrap_or_default())
        };
        assert!(m("/a/b/x.tmp"));
        assert!(!m("/a/b/x.tmpl"));
        assert!(m("/srv/data/cache"));
        assert!(!m("/srv/data/cache2"));
        assert!(m("/var/logs/a.log"));
        assert!(!m("/var/logs/sub/a.log"));
    }

    #[test]
    fn bad_pattern_is_named() {
        let err = Excludes::new(&["a[".into()]).expect_err("invalid");
        assert!(err.contains("a["), "{err}");
    }
}
