//! What a backup leaves out, with restic's meaning. Patterns: one without `/` matches an
//! entry's name anywhere in the tree; one with `/` matches the whole absolute path (a
//! relative one may match at any depth); `*` does not cross `/`, `**` does; `--iexclude`
//! patterns ignore case. Beside patterns: regular files larger than a size
//! ([`parse_size`]), and the contents of directories holding a marker file ([`Marker`],
//! `--exclude-caches` being the marker `CACHEDIR.TAG` with its signature).
//!
//! [`ExcludeRules`] is the plain description (as the command line or the daemon's
//! configuration gives it); [`Excludes`] is it compiled, which the walker, the read-ahead
//! and the progress count all consult, so they leave out the same entries. Pattern files
//! (`--exclude-file`) are read in [`file`].

mod file;
mod marker;
mod size;

pub use file::{expand_env, parse_pattern_lines, read_pattern_file};
pub use marker::{CACHEDIR_SIGNATURE, CACHEDIR_TAG, DirMarks, Marker, MarkerCheck};
pub use size::parse_size;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use std::ffi::OsStr;
use std::fs::Metadata;
use std::path::{Path, PathBuf};

/// Why exclude rules could not be read or compiled; each names the file, line or
/// pattern and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum ExcludeError {
    /// A pattern globset refuses (given on the command line or in the configuration).
    #[error("{0}")]
    Pattern(String),
    /// A pattern file that cannot be read at all.
    #[error("cannot read the exclude file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// One line of a pattern file that is unusable.
    #[error("exclude file {}, line {line}: {reason}", path.display())]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong, with the fix.
        reason: String,
    },
}

/// What a backup leaves out, as given: the patterns (those of pattern files included,
/// already read), the size limit and the marker files. Plain data, so the daemon's
/// configuration can hold it and compare it; [`Excludes::from_rules`] compiles it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExcludeRules {
    /// Patterns matched as written (`--exclude`, `--exclude-file`).
    pub patterns: Vec<String>,
    /// Patterns matched ignoring case (`--iexclude`, `--iexclude-file`).
    pub ipatterns: Vec<String>,
    /// Regular files larger than this many bytes are left out (`--exclude-larger-than`).
    pub larger_than: Option<u64>,
    /// A directory holding one of these files has its contents left out, the marker file
    /// itself excepted (`--exclude-if-present`, `--exclude-caches`).
    pub if_present: Vec<Marker>,
}

impl ExcludeRules {
    /// Whether nothing is left out.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
            && self.ipatterns.is_empty()
            && self.larger_than.is_none()
            && self.if_present.is_empty()
    }

    /// Each rule in words, for summaries such as `cairn config check`'s.
    pub fn describe(&self) -> Vec<String> {
        let mut out = self.patterns.clone();
        out.extend(self.ipatterns.iter().map(|p| format!("{p} (any case)")));
        if let Some(n) = self.larger_than {
            out.push(format!("files larger than {n} bytes"));
        }
        for m in &self.if_present {
            out.push(format!("folders holding {}", m.spec()));
        }
        out
    }
}

/// Patterns compiled for one way of matching (case kept or ignored).
#[derive(Clone, Debug, Default)]
struct PatternSet {
    by_name: GlobSet,
    by_path: GlobSet,
}

impl PatternSet {
    fn compile(patterns: &[String], role: &str, ignore_case: bool) -> Result<Self, String> {
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
                .case_insensitive(ignore_case)
                .build()
                .map_err(|e| format!("{role} {p:?} is invalid: {e}"))?;
            set.add(glob);
        }
        let build = |b: GlobSetBuilder| b.build().map_err(|e| format!("{role}s: {e}"));
        Ok(PatternSet {
            by_name: build(by_name)?,
            by_path: build(by_path)?,
        })
    }

    fn matches(&self, path: &Path, name: &OsStr) -> bool {
        self.by_name.is_match(name) || self.by_path.is_match(path)
    }
}

/// Refuse what restic reads differently: a leading `!` re-includes in restic, which cairn
/// does not do, so taking it as part of a name would store less than the user expects.
pub fn check_exclude_pattern(p: &str) -> Result<(), String> {
    if p.starts_with('!') {
        return Err(format!(
            "exclude pattern {p:?} starts with `!`, which re-includes in restic; cairn has no re-including patterns: remove it, or write \\{p} for a name that starts with `!`"
        ));
    }
    PatternSet::compile(&[p.to_string()], "exclude pattern", false).map(|_| ())
}

/// Compiled exclude rules.
#[derive(Clone, Debug, Default)]
pub struct Excludes {
    exact: PatternSet,
    folded: PatternSet,
    larger_than: Option<u64>,
    markers: Vec<Marker>,
}

impl Excludes {
    /// Compile exclude patterns; the error names the bad pattern.
    pub fn new(patterns: &[String]) -> Result<Self, String> {
        for p in patterns {
            check_exclude_pattern(p)?;
        }
        Self::compile(patterns, "exclude pattern")
    }

    /// Compile patterns with this meaning for another use (`find`); `role` names them in
    /// errors ("find pattern").
    pub fn compile(patterns: &[String], role: &str) -> Result<Self, String> {
        Ok(Excludes {
            exact: PatternSet::compile(patterns, role, false)?,
            ..Excludes::default()
        })
    }

    /// Compile every rule; the error names the bad pattern.
    pub fn from_rules(rules: &ExcludeRules) -> Result<Self, ExcludeError> {
        for p in rules.patterns.iter().chain(&rules.ipatterns) {
            check_exclude_pattern(p).map_err(ExcludeError::Pattern)?;
        }
        Ok(Excludes {
            exact: PatternSet::compile(&rules.patterns, "exclude pattern", false)
                .map_err(ExcludeError::Pattern)?,
            folded: PatternSet::compile(&rules.ipatterns, "iexclude pattern", true)
                .map_err(ExcludeError::Pattern)?,
            larger_than: rules.larger_than,
            markers: rules.if_present.clone(),
        })
    }

    /// Whether a pattern excludes the entry at `path` (with file name `name`). Needs no
    /// look at the disk, so the daemon's routing of events uses it alone.
    pub fn matches(&self, path: &Path, name: &OsStr) -> bool {
        self.exact.matches(path, name) || self.folded.matches(path, name)
    }

    /// Whether a regular file of `size` bytes is too large to store.
    pub fn too_large(&self, size: u64) -> bool {
        self.larger_than.is_some_and(|max| size > max)
    }

    /// Whether an entry with this metadata is left out by size: regular files only,
    /// never directories.
    pub fn too_large_entry(&self, meta: &Metadata) -> bool {
        meta.is_file() && self.too_large(meta.len())
    }

    /// Which marker files mark `dir` (one look per marker; none without markers).
    pub fn marks(&self, dir: &Path) -> DirMarks<'_> {
        DirMarks::of(&self.markers, dir)
    }

    /// Whether a source path itself is left out: by a pattern, by its size, or by a
    /// marker in the directory holding it (restic applies every rule to the paths it is
    /// given too, so a `--files-from` list made by `find` is filtered like a walk).
    pub fn excludes_root(&self, path: &Path, meta: &Metadata) -> bool {
        let Some(name) = path.file_name() else {
            return false;
        };
        self.matches(path, name)
            || self.too_large_entry(meta)
            || path.parent().is_some_and(|p| self.marks(p).excludes(name))
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

    #[test]
    fn iexclude_patterns_ignore_case_and_exclude_patterns_keep_it() {
        let rules = ExcludeRules {
            patterns: vec!["*.log".into()],
            ipatterns: vec!["*.JPG".into(), "/srv/Photos/raw".into()],
            ..ExcludeRules::default()
        };
        let e = Excludes::from_rules(&rules).expect("compile");
        let m = |p: &str| {
            let path = Path::new(p);
            e.matches(path, path.file_name().unwrap_or_default())
        };
        assert!(m("/a/x.log"));
        assert!(!m("/a/x.LOG"));
        assert!(m("/a/x.jpg"));
        assert!(m("/a/x.Jpg"));
        assert!(m("/srv/photos/RAW"));
        assert!(!m("/srv/photos/raw2"));
    }

    #[test]
    fn a_leading_bang_is_refused_with_the_escape_to_write() {
        let err = Excludes::new(&["!keep".into()]).expect_err("refused");
        assert!(
            err.contains("re-includes") && err.contains("\\!keep"),
            "{err}"
        );
        let e = Excludes::new(&["\\!keep".into()]).expect("escaped");
        assert!(e.matches(Path::new("/a/!keep"), OsStr::new("!keep")));
    }

    #[test]
    fn size_limit_leaves_out_larger_regular_files_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let big = dir.path().join("big");
        std::fs::write(&big, vec![0u8; 101]).expect("write");
        let small = dir.path().join("small");
        std::fs::write(&small, vec![0u8; 100]).expect("write");
        let e = Excludes::from_rules(&ExcludeRules {
            larger_than: Some(100),
            ..ExcludeRules::default()
        })
        .expect("compile");
        let meta = |p: &Path| std::fs::symlink_metadata(p).expect("stat");
        assert!(e.too_large_entry(&meta(&big)));
        assert!(!e.too_large_entry(&meta(&small)));
        assert!(!e.too_large_entry(&meta(dir.path())));
        assert!(e.excludes_root(&big, &meta(&big)));
        assert!(!e.excludes_root(&small, &meta(&small)));
    }
}
