//! The judging context every section of a configuration is checked with: it maps spans
//! to lines and collects problems, so each check reports and goes on and one run lists
//! every problem; plus the checks several sections share (paths, durations,
//! passphrase sources).

use super::raw::Lines;
use super::{MAX_DURATION, PasswordSource, Problem};
use std::path::PathBuf;
use std::time::Duration;
use toml::Spanned;

/// Collects the problems of one file while its values are judged: each check reports and
/// goes on, so one run lists every problem.
pub(super) struct Ctx<'a, 'b> {
    pub(super) lines: &'a Lines<'b>,
    pub(super) problems: &'a mut Vec<Problem>,
}

impl Ctx<'_, '_> {
    /// Report a problem at `span`; returns `None` so a caller can write `cx.problem(..)?`-like fallbacks.
    pub(super) fn problem<T>(
        &mut self,
        span: std::ops::Range<usize>,
        message: String,
    ) -> Option<T> {
        self.problems.push(Problem {
            line: Some(self.lines.of(span.start)),
            message,
        });
        None
    }

    /// An absolute path, or a problem: a service runs in `/`, so a relative path is never guessed at.
    pub(super) fn abs_path(&mut self, key: &str, v: &Spanned<String>) -> Option<PathBuf> {
        let p = PathBuf::from(v.get_ref());
        if v.get_ref().is_empty() {
            return self.problem(v.span(), format!("`{key}` is empty: give an absolute path"));
        }
        if !p.is_absolute() {
            return self.problem(
                v.span(),
                format!(
                    "`{key}` = {:?} is relative: write it as an absolute path (the service runs in /)",
                    v.get_ref()
                ),
            );
        }
        Some(p)
    }

    /// A `[schedule]` duration, or the default after reporting why the value is unusable.
    pub(super) fn duration(
        &mut self,
        key: &str,
        v: &Option<Spanned<String>>,
        default: Duration,
    ) -> Duration {
        let Some(v) = v else { return default };
        let name = format!("schedule.{key}");
        self.duration_at(&name, v, Duration::ZERO, "\"2s\", \"500ms\" or \"1h 30m\"")
            .unwrap_or(default)
    }

    /// A duration from `min` to a year for the key `name` (as messages name it), or a
    /// problem that says how to write one, like `examples`.
    pub(super) fn duration_at(
        &mut self,
        name: &str,
        v: &Spanned<String>,
        min: Duration,
        examples: &str,
    ) -> Option<Duration> {
        match humantime::parse_duration(v.get_ref()) {
            Ok(d) if d < min => self.problem(
                v.span(),
                format!(
                    "`{name}` = {:?} is shorter than {}: write at least \"{}\"",
                    v.get_ref(),
                    humantime::format_duration(min),
                    humantime::format_duration(min)
                ),
            ),
            Ok(d) if d > MAX_DURATION => self.problem(
                v.span(),
                format!(
                    "`{name}` = {:?} is longer than a year: choose a shorter one",
                    v.get_ref()
                ),
            ),
            Ok(d) => Some(d),
            Err(e) => self.problem(
                v.span(),
                format!(
                    "`{name}` = {:?} is not a duration ({e}): write it like {examples}",
                    v.get_ref()
                ),
            ),
        }
    }

    /// The passphrase source named by `password_file`, `password_credential` or
    /// `password_command` (at most one).
    pub(super) fn password(
        &mut self,
        scope: &str,
        file: &Option<Spanned<String>>,
        credential: &Option<Spanned<String>>,
        command: &Option<Spanned<Vec<Spanned<String>>>>,
    ) -> Option<PasswordSource> {
        let given: Vec<(&str, std::ops::Range<usize>)> = [
            ("password_file", file.as_ref().map(Spanned::span)),
            (
                "password_credential",
                credential.as_ref().map(Spanned::span),
            ),
            ("password_command", command.as_ref().map(Spanned::span)),
        ]
        .into_iter()
        .filter_map(|(k, span)| span.map(|s| (k, s)))
        .collect();
        if given.len() > 1 {
            let keys: Vec<String> = given.iter().map(|(k, _)| format!("`{k}`")).collect();
            let first = given.iter().map(|(_, s)| s.start).min().unwrap_or(0);
            let (all, last) = keys.split_at(keys.len() - 1);
            return self.problem(
                first..first,
                format!(
                    "{scope}{} and {} are set: keep one of them as the passphrase source",
                    all.join(", "),
                    last.join("")
                ),
            );
        }
        if let Some(f) = file {
            return self.abs_path("password_file", f).map(PasswordSource::File);
        }
        if command.is_some() {
            return self
                .argv(
                    "password_command",
                    command,
                    "[\"pass\", \"show\", \"backup/cairn\"]",
                )
                .map(PasswordSource::Command);
        }
        let c = credential.as_ref()?;
        let name = c.get_ref();
        if name.is_empty() || name.contains('/') {
            self.problem(
                c.span(),
                format!(
                    "`password_credential` = {name:?} must be a systemd credential name (as in LoadCredential=NAME:PATH), without '/'"
                ),
            )
        } else {
            Some(PasswordSource::Credential(name.clone()))
        }
    }

    /// The argument vector of `key` (a source's `command`, a hook, `password_command`):
    /// not empty, and its program installed. `example` shows how one is written.
    pub(super) fn argv(
        &mut self,
        key: &str,
        v: &Option<Spanned<Vec<Spanned<String>>>>,
        example: &str,
    ) -> Option<Vec<String>> {
        let v = v.as_ref()?;
        let Some(program) = v.get_ref().first() else {
            return self.problem(
                v.span(),
                format!("`{key}` is empty: write the program and its arguments, e.g. {key} = {example} (no shell runs it; write [\"sh\", \"-c\", \"...\"] for one)"),
            );
        };
        if crate::external::find_program(program.get_ref()).is_none() {
            let where_ = if program.get_ref().contains('/') {
                "there is no executable file there".to_string()
            } else {
                "it is not found in PATH".to_string()
            };
            return self.problem(
                program.span(),
                format!(
                    "`{key}` runs {:?}, but {where_}: install it, or write its full path",
                    program.get_ref()
                ),
            );
        }
        Some(v.get_ref().iter().map(|a| a.get_ref().clone()).collect())
    }
}
