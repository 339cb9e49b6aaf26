//! Pattern files (`--exclude-file`, `--iexclude-file`, the daemon's `exclude_file`), read
//! as restic reads them: one pattern per line, surrounding white space trimmed, blank lines
//! and lines starting with `#` skipped, and `$NAME` or `${NAME}` replaced by the
//! environment variable (`$$` for a literal `$`). Unlike restic, a variable that is not
//! set is an error naming the line rather than an empty string: `$CACHE/*` silently
//! becoming `/*` would leave out far more than meant.

use super::{ExcludeError, check_exclude_pattern};
use std::path::Path;

/// Replace `$NAME` and `${NAME}` in `line` with `lookup(NAME)`, and `$$` with `$`. A `$`
/// followed by anything else stays as it is (restic's rule). A name is a letter or `_`,
/// then letters, digits and `_`.
pub fn expand_env(line: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, used) = if let Some(braced) = after.strip_prefix('{') {
            let Some(end) = braced.find('}') else {
                return Err(
                    "`${` without a closing `}`: write ${NAME}, or $$ for a literal $".into(),
                );
            };
            (&braced[..end], end + 2)
        } else if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
            continue;
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            let name = &after[..end];
            if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
                out.push('$');
                rest = after;
                continue;
            }
            (name, end)
        };
        let valid = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(format!(
                "${{{name}}} is not a variable name (letters, digits and _): write $$ for a literal $"
            ));
        }
        match lookup(name) {
            Some(v) => out.push_str(&v),
            None => {
                return Err(format!(
                    "${name} is not set in cairn's environment: set it, write the value out, or write $$ for a literal $"
                ));
            }
        }
        rest = &after[used..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The patterns of a pattern file's text (`lookup` gives environment variables), each
/// checked; on a bad line, its 1-based number and what is wrong.
pub fn parse_pattern_lines(
    text: &[u8],
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<String>, (usize, String)> {
    let text = text.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(text);
    let mut patterns = Vec::new();
    for (i, raw) in text.split(|b| *b == b'\n').enumerate() {
        let line_no = i + 1;
        let Ok(line) = std::str::from_utf8(raw) else {
            return Err((line_no, "is not UTF-8 text".into()));
        };
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let pattern = expand_env(line, lookup).map_err(|e| (line_no, e))?;
        check_exclude_pattern(&pattern).map_err(|e| (line_no, e))?;
        patterns.push(pattern);
    }
    Ok(patterns)
}

/// The patterns of the pattern file at `path`, with this process's environment; the
/// error names the file, and the line if one is wrong.
pub fn read_pattern_file(path: &Path) -> Result<Vec<String>, ExcludeError> {
    let text = std::fs::read(path).map_err(|source| ExcludeError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let lookup = |name: &str| std::env::var(name).ok();
    parse_pattern_lines(&text, &lookup).map_err(|(line, reason)| ExcludeError::Line {
        path: path.to_path_buf(),
        line,
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOME" => Some("/home/ann".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn variables_are_expanded_and_double_dollars_kept() {
        let x = |s: &str| expand_env(s, &env);
        assert_eq!(x("$HOME/.cache").as_deref(), Ok("/home/ann/.cache"));
        assert_eq!(x("${HOME}x/*").as_deref(), Ok("/home/annx/*"));
        assert_eq!(x("a$$b").as_deref(), Ok("a$b"));
        assert_eq!(x("$$HOME").as_deref(), Ok("$HOME"));
        assert_eq!(x("x$EMPTY.y").as_deref(), Ok("x.y"));
        // A `$` before no name stays, as restic leaves it.
        assert_eq!(x("cost$").as_deref(), Ok("cost$"));
        assert_eq!(x("$.tmp $1").as_deref(), Ok("$.tmp $1"));
        let e = x("$NOPE/x").expect_err("unset");
        assert!(e.contains("$NOPE is not set") && e.contains("$$"), "{e}");
        assert!(x("${HOME").expect_err("unclosed").contains("closing"));
        assert!(
            x("${a-b}")
                .expect_err("bad name")
                .contains("not a variable name")
        );
    }

    #[test]
    fn comments_blanks_and_white_space_are_dropped() {
        let text = b"\xEF\xBB\xBF# caches\n\n  *.tmp  \r\n\t# indented comment\n$HOME/.cache\r\nlogs/*.log\n";
        let got = parse_pattern_lines(text, &env).expect("parse");
        assert_eq!(got, ["*.tmp", "/home/ann/.cache", "logs/*.log"]);
    }

    #[test]
    fn a_bad_line_is_named() {
        let err = parse_pattern_lines(b"*.tmp\n\nbad[\n", &env).expect_err("bad");
        assert_eq!(err.0, 3);
        assert!(err.1.contains("bad["), "{}", err.1);
        let err = parse_pattern_lines(b"ok\n$UNSET/x\n", &env).expect_err("unset");
        assert_eq!(err.0, 2);
        let err = parse_pattern_lines(b"ok\n\xff\n", &env).expect_err("binary");
        assert_eq!(err, (2, "is not UTF-8 text".to_string()));
        let err = parse_pattern_lines(b"!keep\n", &env).expect_err("negated");
        assert!(err.1.contains("re-includes"), "{}", err.1);
    }

    #[test]
    fn a_missing_file_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nope.txt");
        let e = read_pattern_file(&missing)
            .expect_err("missing")
            .to_string();
        assert!(e.contains("nope.txt") && e.contains("cannot read"), "{e}");
        let bad = dir.path().join("bad.txt");
        std::fs::write(&bad, "a\nb[\n").expect("write");
        let e = read_pattern_file(&bad).expect_err("bad").to_string();
        assert!(e.contains("bad.txt, line 2"), "{e}");
    }
}
