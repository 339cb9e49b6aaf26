//! Lists of paths to back up, as restic reads them: `--files-from` (one per line, white
//! space trimmed, blank lines and `#` comments skipped, glob patterns expanded against
//! the disk), `--files-from-verbatim` (one per line, taken as written; only empty lines
//! skipped) and `--files-from-raw` (each path ended by a NUL byte, as `find -print0`
//! writes them). Paths need not be UTF-8.

use globset::GlobBuilder;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// How a list is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListForm {
    /// `--files-from`: lines, comments, globs.
    Patterns,
    /// `--files-from-verbatim`: lines, literal.
    Verbatim,
    /// `--files-from-raw`: NUL-separated, literal.
    Raw,
}

impl ListForm {
    /// The option that reads this form, for messages.
    pub fn flag(self) -> &'static str {
        match self {
            ListForm::Patterns => "--files-from",
            ListForm::Verbatim => "--files-from-verbatim",
            ListForm::Raw => "--files-from-raw",
        }
    }
}

/// One entry of a list: a path, or (in `--files-from`) a pattern to expand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListEntry {
    /// Taken as it is.
    Path(PathBuf),
    /// A glob pattern, with its line number.
    Pattern(usize, PathBuf),
}

/// Why a list is unusable: the problem and, for a line, its number.
#[derive(Debug, thiserror::Error)]
#[error("{}{reason}", line.map_or(String::new(), |l| format!("line {l}: ")))]
pub struct ListError {
    /// 1-based line (or entry) number, when one is to blame.
    pub line: Option<usize>,
    /// What is wrong, with the fix.
    pub reason: String,
}

/// Whether a `--files-from` line is a pattern (restic's glob: `*`, `?`, `[...]`, `\`).
fn is_pattern(line: &[u8]) -> bool {
    line.iter().any(|b| matches!(b, b'*' | b'?' | b'[' | b'\\'))
}

/// The entries of a list's content.
pub fn parse_list(form: ListForm, data: &[u8]) -> Result<Vec<ListEntry>, ListError> {
    let path = |b: &[u8]| PathBuf::from(OsStr::from_bytes(b));
    let mut out = Vec::new();
    match form {
        ListForm::Raw => {
            let mut parts: Vec<&[u8]> = data.split(|b| *b == 0).collect();
            // What follows the last NUL: nothing, in a well-formed list.
            let tail = parts.pop().unwrap_or_default();
            if !tail.is_empty() {
                return Err(ListError {
                    line: Some(parts.len() + 1),
                    reason: "the last path has no NUL byte after it: write the list with `find -print0` or `printf '%s\\0'`".into(),
                });
            }
            for (i, p) in parts.into_iter().enumerate() {
                if p.is_empty() {
                    return Err(ListError {
                        line: Some(i + 1),
                        reason: "an empty path (two NUL bytes in a row)".into(),
                    });
                }
                out.push(ListEntry::Path(path(p)));
            }
        }
        ListForm::Verbatim | ListForm::Patterns => {
            for (i, line) in data.split(|b| *b == b'\n').enumerate() {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if form == ListForm::Verbatim {
                    if !line.is_empty() {
                        out.push(ListEntry::Path(path(line)));
                    }
                    continue;
                }
                let line = line.trim_ascii();
                if line.is_empty() || line.starts_with(b"#") {
                    continue;
                }
                out.push(if is_pattern(line) {
                    ListEntry::Pattern(i + 1, path(line))
                } else {
                    ListEntry::Path(path(line))
                });
            }
        }
    }
    Ok(out)
}

/// The existing paths a glob pattern matches, sorted within each directory, as Go's
/// `filepath.Glob` (restic's) finds them: `*`, `?` and `[...]` within one path component
/// (`*` matches a leading dot too), `\` escapes; no `**`. A relative pattern is relative
/// to the working directory.
pub fn expand_glob(pattern: &Path) -> Result<Vec<PathBuf>, String> {
    let mut found = vec![if pattern.is_absolute() {
        PathBuf::from("/")
    } else {
        PathBuf::new()
    }];
    for part in pattern.as_os_str().as_bytes().split(|b| *b == b'/') {
        if part.is_empty() {
            continue;
        }
        if !is_pattern(part) {
            for f in &mut found {
                f.push(OsStr::from_bytes(part));
            }
            continue;
        }
        let text = std::str::from_utf8(part)
            .map_err(|_| format!("pattern {:?} is not UTF-8 text", pattern.display()))?;
        let glob = GlobBuilder::new(text)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .map_err(|e| format!("pattern {:?} is invalid: {e}", pattern.display()))?
            .compile_matcher();
        let mut next = Vec::new();
        for dir in &found {
            let listed = if dir.as_os_str().is_empty() {
                std::fs::read_dir(".")
            } else {
                std::fs::read_dir(dir)
            };
            let Ok(entries) = listed else { continue };
            let mut names: Vec<_> = entries
                .flatten()
                .map(|e| e.file_name())
                .filter(|n| glob.is_match(Path::new(n)))
                .collect();
            names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            next.extend(names.into_iter().map(|n| dir.join(n)));
        }
        found = next;
    }
    found.retain(|p| !p.as_os_str().is_empty() && std::fs::symlink_metadata(p).is_ok());
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(entries: &[ListEntry]) -> Vec<String> {
        entries
            .iter()
            .map(|e| match e {
                ListEntry::Path(p) => p.display().to_string(),
                ListEntry::Pattern(n, p) => format!("{n}:{}", p.display()),
            })
            .collect()
    }

    #[test]
    fn lines_with_comments_and_patterns() {
        let list = b"# my files\n\n  /srv/data  \r\n/var/log/*.log\n\t#indented comment\nrel/a b\n";
        let got = parse_list(ListForm::Patterns, list).expect("parse");
        assert_eq!(paths(&got), ["/srv/data", "4:/var/log/*.log", "rel/a b"]);
    }

    #[test]
    fn verbatim_lines_are_taken_as_written() {
        let list = b"# not a comment\n\n  spaced  \n/a/*.log\r\n";
        let got = parse_list(ListForm::Verbatim, list).expect("parse");
        assert_eq!(paths(&got), ["# not a comment", "  spaced  ", "/a/*.log"]);
    }

    #[test]
    fn raw_lists_need_every_nul() {
        let got = parse_list(ListForm::Raw, b"/a\n b\0/c#\0").expect("parse");
        assert_eq!(paths(&got), ["/a\n b", "/c#"]);
        assert!(parse_list(ListForm::Raw, b"").expect("empty").is_empty());
        let e = parse_list(ListForm::Raw, b"/a\0/b").expect_err("no final NUL");
        assert!(
            e.line == Some(2) && e.to_string().contains("no NUL byte"),
            "{e}"
        );
        let e = parse_list(ListForm::Raw, b"/a\0\0").expect_err("empty path");
        assert!(e.to_string().contains("empty path"), "{e}");
    }

    #[test]
    fn globs_expand_to_what_exists() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        for sub in ["a1", "a2", "b1"] {
            std::fs::create_dir(d.join(sub)).expect("mkdir");
            std::fs::write(d.join(sub).join("f.txt"), "x").expect("write");
        }
        std::fs::write(d.join(".a3"), "x").expect("write");
        let got = expand_glob(&d.join("a*/f.txt")).expect("glob");
        assert_eq!(got, [d.join("a1/f.txt"), d.join("a2/f.txt")]);
        let got = expand_glob(&d.join("*a[0-9]")).expect("glob");
        assert_eq!(got, [d.join(".a3"), d.join("a1"), d.join("a2")]);
        assert!(expand_glob(&d.join("c*")).expect("glob").is_empty());
        assert!(expand_glob(&d.join("a*/missing")).expect("glob").is_empty());
        assert!(
            expand_glob(&d.join("x["))
                .expect_err("bad")
                .contains("invalid")
        );
    }
}
