//! Judging `[[source]]` sections: a set of watched paths, or a command whose output is
//! stored as one file (`command`, `filename`, `every`, `user`), and the hooks around
//! either (`before`, `after`, `on_failure`, `hook_timeout`). A program that is not
//! installed, a user that does not exist, and keys that do not fit the kind of source
//! are reported with their line, before the daemon ever runs them.

use super::judge::Ctx;
use super::raw::RawSource;
use super::{CommandSource, SourceConfig};
use crate::external::{DEFAULT_HOOK_TIMEOUT, Hooks};
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;
use toml::Spanned;

/// How often a command source runs when `every` is not given.
pub const DEFAULT_EVERY: Duration = Duration::from_secs(3600);

/// How a command or hook is written, for the message about an empty one.
const HOOK_EXAMPLE: &str = "[\"pg_dump\", \"-Fc\", \"app\"]";

/// Each usable source, with the span its problems about paths point at.
pub(super) fn resolve_all(
    cx: &mut Ctx<'_, '_>,
    raw: &[RawSource],
) -> Vec<(SourceConfig, Range<usize>)> {
    raw.iter().filter_map(|s| resolve_one(cx, s)).collect()
}

fn resolve_one(cx: &mut Ctx<'_, '_>, s: &RawSource) -> Option<(SourceConfig, Range<usize>)> {
    let hooks = Hooks {
        before: cx.argv("before", &s.before, HOOK_EXAMPLE),
        after: cx.argv("after", &s.after, HOOK_EXAMPLE),
        on_failure: cx.argv("on_failure", &s.on_failure, HOOK_EXAMPLE),
        timeout: s
            .hook_timeout
            .as_ref()
            .and_then(|v| duration(cx, "hook_timeout", v))
            .unwrap_or(DEFAULT_HOOK_TIMEOUT),
    };
    let base = SourceConfig {
        paths: Vec::new(),
        excludes: Default::default(),
        one_file_system: s.one_file_system,
        tags: s.tags.clone(),
        allow_root_change: s.allow_root_change,
        command: None,
        hooks,
    };
    match (&s.paths, &s.command) {
        (Some(_), Some(c)) => cx.problem(
            c.span(),
            "this [[source]] has both `paths` and `command`: keep one, and put the other in a [[source]] of its own (a command's output is stored as one file; paths are watched)".into(),
        ),
        // Reported by the schema, which knows the section's line (and whether a
        // `paths` of the wrong type was there).
        (None, None) => None,
        (Some(paths), None) => {
            for (key, v) in [("filename", &s.filename), ("every", &s.every), ("user", &s.user)] {
                if let Some(v) = v {
                    cx.problem::<()>(
                        v.span(),
                        format!("`{key}` applies to a source with `command` only: remove it, or replace `paths` with a `command`"),
                    );
                }
            }
            paths_source(cx, paths, s, base)
        }
        (None, Some(command)) => command_source(cx, command, s, base),
    }
}

/// A source of watched paths.
fn paths_source(
    cx: &mut Ctx<'_, '_>,
    paths: &Spanned<Vec<Spanned<String>>>,
    s: &RawSource,
    mut base: SourceConfig,
) -> Option<(SourceConfig, Range<usize>)> {
    if paths.get_ref().is_empty() {
        cx.problem::<()>(
            paths.span(),
            "`paths` is empty: name at least one directory or file to back up".into(),
        );
    }
    base.paths = paths
        .get_ref()
        .iter()
        .filter_map(|p| cx.abs_path("paths", p))
        .collect::<Vec<PathBuf>>();
    base.excludes = super::excludes::judge(cx, s, &base.paths);
    Some((base, paths.span()))
}

/// A source that is a command's output.
fn command_source(
    cx: &mut Ctx<'_, '_>,
    command: &Spanned<Vec<Spanned<String>>>,
    s: &RawSource,
    mut base: SourceConfig,
) -> Option<(SourceConfig, Range<usize>)> {
    super::excludes::refuse_for_command(cx, s);
    let argv = cx.argv("command", &Some(command.clone()), HOOK_EXAMPLE);
    let filename = match &s.filename {
        None => cx.problem(
            command.span(),
            "a [[source]] with `command` needs `filename`, the name its output is stored under: add filename = \"app.dump\"".into(),
        ),
        Some(f) => match crate::backup::stream_path(f.get_ref()) {
            Ok(parts) => Some(parts.join("/")),
            Err(_) => cx.problem(
                f.span(),
                format!(
                    "`filename` = {:?} is not a plain file name: write it like \"app.dump\" or \"db/app.dump\" (no empty, `.` or `..` parts)",
                    f.get_ref()
                ),
            ),
        },
    };
    let every = match &s.every {
        Some(v) => duration(cx, "every", v),
        None => Some(DEFAULT_EVERY),
    };
    let user = match &s.user {
        None => Some(None),
        Some(u) => match crate::external::lookup(u.get_ref()).and_then(|who| {
            crate::external::user::may_run_as(&who)?;
            Ok(who)
        }) {
            Ok(who) => Some(Some(who)),
            Err(why) => cx.problem(u.span(), format!("`user`: {why}")),
        },
    };
    base.command = Some(CommandSource {
        argv: argv?,
        filename: filename?,
        every: every?,
        user: user?,
    });
    Some((base, command.span()))
}

/// A source's duration (`every`, `hook_timeout`): at least a second, at most a year.
fn duration(cx: &mut Ctx<'_, '_>, key: &str, v: &Spanned<String>) -> Option<Duration> {
    let examples = "\"1h\", \"30m\" or \"1h 30m\"";
    cx.duration_at(key, v, Duration::from_secs(1), examples)
}
