//! What `cairn backup` stores: the paths (from the command line and the `--files-from`
//! lists) and the exclude rules (with the pattern files read), both settled before the
//! repository is opened, so a bad list or pattern file stops the backup before anything
//! is read or written.

use super::backup_args::Selection;
use anyhow::{Context, Result, bail};
use cairn::exclude::{ExcludeRules, Excludes, Marker, read_pattern_file};
use cairn::files_from::{ListEntry, ListForm, expand_glob, parse_list};
use std::io::Read;
use std::path::{Path, PathBuf};

/// The exclude rules of the command line, pattern files read and every pattern checked.
pub(crate) fn exclude_rules(sel: &Selection) -> Result<ExcludeRules> {
    let mut rules = ExcludeRules {
        patterns: sel.excludes.clone(),
        ipatterns: sel.iexcludes.clone(),
        larger_than: sel.exclude_larger_than,
        if_present: sel.exclude_if_present.clone(),
    };
    for f in &sel.exclude_files {
        rules.patterns.extend(read_pattern_file(f)?);
    }
    for f in &sel.iexclude_files {
        rules.ipatterns.extend(read_pattern_file(f)?);
    }
    if sel.exclude_caches {
        rules.if_present.push(Marker::cachedir());
    }
    // A bad --exclude or --iexclude is named now, before the repository is opened.
    Excludes::from_rules(&rules)?;
    Ok(rules)
}

/// The paths to back up: those of the `--files-from` lists, then those given as
/// arguments (restic's order). An empty result is an error.
pub(crate) fn source_paths(args: &[PathBuf], sel: &Selection) -> Result<Vec<PathBuf>> {
    let mut stdin_used = false;
    let mut paths = Vec::new();
    let lists = [
        (ListForm::Patterns, &sel.files_from),
        (ListForm::Verbatim, &sel.files_from_verbatim),
        (ListForm::Raw, &sel.files_from_raw),
    ];
    for (form, files) in lists {
        for file in files {
            let data = read_list(form, file, &mut stdin_used)?;
            let entries = parse_list(form, &data)
                .with_context(|| format!("{} {}: unusable list", form.flag(), file.display()))?;
            for entry in entries {
                match entry {
                    ListEntry::Path(p) => paths.push(p),
                    ListEntry::Pattern(line, pattern) => {
                        let found = expand_glob(&pattern).map_err(|why| {
                            anyhow::anyhow!(
                                "{} {}, line {line}: {why}",
                                form.flag(),
                                file.display()
                            )
                        })?;
                        if found.is_empty() {
                            eprintln!(
                                "warning: {} {}, line {line}: pattern {:?} matches nothing; skipped",
                                form.flag(),
                                file.display(),
                                pattern.display()
                            );
                        }
                        paths.extend(found);
                    }
                }
            }
        }
    }
    paths.extend(args.iter().cloned());
    if paths.is_empty() {
        bail!(
            "nothing to back up: the --files-from lists name no path (or only patterns that match nothing); name at least one file or directory"
        );
    }
    Ok(paths)
}

/// A list's bytes, from its file or (for `-`, once) standard input.
fn read_list(form: ListForm, file: &Path, stdin_used: &mut bool) -> Result<Vec<u8>> {
    if file == Path::new("-") {
        if std::mem::replace(stdin_used, true) {
            bail!(
                "{} -: standard input is already read by another list; give the others as files",
                form.flag()
            );
        }
        let mut data = Vec::new();
        std::io::stdin()
            .read_to_end(&mut data)
            .with_context(|| format!("{} -: reading standard input", form.flag()))?;
        return Ok(data);
    }
    std::fs::read(file).with_context(|| {
        format!(
            "cannot read the {} list {}: check the path",
            form.flag(),
            file.display()
        )
    })
}
