//! Judging a `[[source]]`'s exclude keys, restic's options under the same names:
//! `exclude` and `iexclude` (patterns), `exclude_file` and `iexclude_file` (pattern files,
//! read now, so a missing file or a bad line is reported with the configuration's line
//! and the file's), `exclude_larger_than` (a size), `exclude_caches` and
//! `exclude_if_present` (marker files). A command source stores one stream whole, so
//! these keys are refused there. (`--files-from` has no key: a source names its paths.)

use super::judge::Ctx;
use super::raw::RawSource;
use crate::exclude::{
    ExcludeRules, Excludes, Marker, check_exclude_pattern, parse_size, read_pattern_file,
};
use std::ops::Range;
use std::path::PathBuf;
use toml::Spanned;

/// The exclude rules of a source of `paths`, each unusable value reported at its line.
pub(super) fn judge(cx: &mut Ctx<'_, '_>, s: &RawSource, paths: &[PathBuf]) -> ExcludeRules {
    let mut rules = ExcludeRules {
        patterns: patterns(cx, "exclude", &s.exclude),
        ipatterns: patterns(cx, "iexclude", &s.iexclude),
        ..ExcludeRules::default()
    };
    rules
        .patterns
        .extend(files(cx, "exclude_file", &s.exclude_file));
    rules
        .ipatterns
        .extend(files(cx, "iexclude_file", &s.iexclude_file));
    rules.larger_than =
        s.exclude_larger_than
            .as_ref()
            .and_then(|v| match parse_size(v.get_ref()) {
                Ok(n) => Some(n),
                Err(why) => cx.problem(v.span(), format!("`exclude_larger_than` = {why}")),
            });
    for m in &s.exclude_if_present {
        match Marker::parse(m.get_ref()) {
            Ok(marker) => rules.if_present.push(marker),
            Err(why) => {
                cx.problem::<()>(m.span(), format!("`exclude_if_present`: {why}"));
            }
        }
    }
    if s.exclude_caches.as_ref().is_some_and(|b| *b.get_ref()) {
        rules.if_present.push(Marker::cachedir());
    }
    refuse_excluded_paths(cx, s, paths, &rules);
    rules
}

/// Patterns given in the file, each checked.
fn patterns(cx: &mut Ctx<'_, '_>, key: &str, list: &[Spanned<String>]) -> Vec<String> {
    let mut out = Vec::new();
    for p in list {
        match check_exclude_pattern(p.get_ref()) {
            Ok(()) => out.push(p.get_ref().clone()),
            Err(why) => {
                cx.problem::<()>(p.span(), format!("`{key}` pattern: {why}"));
            }
        }
    }
    out
}

/// The patterns of each pattern file, read now.
fn files(cx: &mut Ctx<'_, '_>, key: &str, list: &[Spanned<String>]) -> Vec<String> {
    let mut out = Vec::new();
    for f in list {
        let Some(path) = cx.abs_path(key, f) else {
            continue;
        };
        match read_pattern_file(&path) {
            Ok(p) => out.extend(p),
            Err(e) => {
                cx.problem::<()>(f.span(), format!("`{key}`: {e}"));
            }
        }
    }
    out
}

/// A pattern that matches a source path itself would leave the whole source out (restic
/// applies excludes to the paths it is given): surely not meant, so said before it runs.
fn refuse_excluded_paths(
    cx: &mut Ctx<'_, '_>,
    s: &RawSource,
    paths: &[PathBuf],
    rules: &ExcludeRules,
) {
    let only_patterns = ExcludeRules {
        patterns: rules.patterns.clone(),
        ipatterns: rules.ipatterns.clone(),
        ..ExcludeRules::default()
    };
    let Ok(excludes) = Excludes::from_rules(&only_patterns) else {
        return;
    };
    let span = s.paths.as_ref().map_or(0..0, |p| p.span());
    for p in paths {
        if p.file_name().is_some_and(|n| excludes.matches(p, n)) {
            cx.problem::<()>(
                span.clone(),
                format!(
                    "the source path {} is itself matched by the source's exclude patterns, so nothing of it would be stored: remove that pattern, or make it match only what lies below",
                    p.display()
                ),
            );
        }
    }
}

/// A command source: its output is stored whole, so every exclude key is refused.
pub(super) fn refuse_for_command(cx: &mut Ctx<'_, '_>, s: &RawSource) {
    let first = |l: &[Spanned<String>]| l.first().map(|v| v.span());
    let given: [(&str, Option<Range<usize>>); 7] = [
        ("exclude", first(&s.exclude)),
        ("exclude_file", first(&s.exclude_file)),
        ("iexclude", first(&s.iexclude)),
        ("iexclude_file", first(&s.iexclude_file)),
        (
            "exclude_larger_than",
            s.exclude_larger_than.as_ref().map(|v| v.span()),
        ),
        (
            "exclude_caches",
            s.exclude_caches.as_ref().map(|v| v.span()),
        ),
        ("exclude_if_present", first(&s.exclude_if_present)),
    ];
    for (key, span) in given {
        if let Some(span) = span {
            cx.problem::<()>(
                span,
                format!(
                    "`{key}` applies to `paths` only: a command's output is stored whole; remove it"
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::daemon::config::parse;
    use std::path::Path;

    fn config(source_keys: &str) -> String {
        format!(
            "state_dir = \"/var/lib/cairn\"\npassword_file = \"/etc/cairn/passphrase\"\n\n[[source]]\npaths = [\"/srv/data\"]\n{source_keys}\n\n[[destination]]\nname = \"disk\"\nrepo = \"/mnt/backup/cairn\"\n"
        )
    }

    fn problems(text: &str) -> Vec<String> {
        parse(Path::new("t.toml"), text)
            .err()
            .map(|e| e.problems.iter().map(|p| p.to_string()).collect())
            .unwrap_or_default()
    }

    #[test]
    fn every_exclude_key_is_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("ex.txt");
        std::fs::write(&file, "# build output\n*.o\n\ntarget/\n").expect("write");
        let ifile = dir.path().join("iex.txt");
        std::fs::write(&ifile, "*.MOV\n").expect("write");
        let text = config(&format!(
            "exclude = [\"*.tmp\"]\nexclude_file = [\"{}\"]\niexclude = [\"*.JPG\"]\niexclude_file = [\"{}\"]\nexclude_larger_than = \"1.5G\"\nexclude_caches = true\nexclude_if_present = [\".nobackup\", \"KEEP:out\"]",
            file.display(),
            ifile.display()
        ));
        let c = parse(Path::new("t.toml"), &text).expect("valid");
        let ex = &c.sources[0].excludes;
        assert_eq!(ex.patterns, ["*.tmp", "*.o", "target/"]);
        assert_eq!(ex.ipatterns, ["*.JPG", "*.MOV"]);
        assert_eq!(ex.larger_than, Some(3 << 29));
        let specs: Vec<String> = ex.if_present.iter().map(|m| m.spec()).collect();
        assert_eq!(
            specs,
            [
                ".nobackup",
                "KEEP:out",
                "CACHEDIR.TAG:Signature: 8a477f597d28d172789f06886806bc55"
            ]
        );
    }

    #[test]
    fn bad_exclude_values_are_named_with_their_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bad = dir.path().join("bad.txt");
        std::fs::write(&bad, "ok\n# fine\nbro[ken\n").expect("write");
        let missing = dir.path().join("missing.txt");
        let text = config(&format!(
            "exclude_file = [\"{}\", \"{}\", \"relative.txt\"]\niexclude = [\"a[\"]\nexclude_larger_than = \"1 MB\"\nexclude_if_present = [\":x\"]\nexclude_caches = \"yes\"",
            bad.display(),
            missing.display()
        ));
        let p = problems(&text);
        for want in [
            "line 6: `exclude_file`: exclude file",
            "bad.txt, line 3: exclude pattern \"bro[ken\" is invalid",
            "line 6: `exclude_file`: cannot read the exclude file",
            "missing.txt",
            "`exclude_file` = \"relative.txt\" is relative",
            "line 7: `iexclude` pattern",
            "line 8: `exclude_larger_than` = \"1 MB\" is not a size",
            "line 9: `exclude_if_present`: exclude-if-present \":x\" names no file",
            "line 10: source.exclude_caches is true or false",
        ] {
            assert!(p.iter().any(|m| m.contains(want)), "{want}\nin {p:#?}");
        }
        assert_eq!(p.len(), 7, "{p:#?}");
    }

    #[test]
    fn a_pattern_matching_the_source_itself_is_refused() {
        let p = problems(&config("exclude = [\"data\"]"));
        assert!(
            p.iter().any(|m| m.contains("/srv/data is itself matched")),
            "{p:?}"
        );
        let p = problems(&config("iexclude = [\"/SRV/DATA\"]"));
        assert!(
            p.iter().any(|m| m.contains("/srv/data is itself matched")),
            "{p:?}"
        );
    }

    #[test]
    fn exclude_keys_are_refused_for_a_command_source() {
        let text = config("").replace(
            "paths = [\"/srv/data\"]",
            "command = [\"true\"]\nfilename = \"x.dump\"\nexclude_caches = true\nexclude_larger_than = \"1G\"",
        );
        let p = problems(&text);
        assert!(
            p.iter()
                .any(|m| m.contains("`exclude_caches` applies to `paths` only")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|m| m.contains("`exclude_larger_than` applies to `paths` only")),
            "{p:?}"
        );
    }
}
