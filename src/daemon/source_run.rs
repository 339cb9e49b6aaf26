//! One snapshot of one source in one destination, between the source's hooks: a walk of
//! its paths, or a run of its command with the output stored as one file. A command runs
//! once per destination, as the configured user, and its snapshot is saved only if it
//! exits 0 with all of its output stored.

use super::destination::Destination;
use super::env::WorkerEnv;
use super::session::Session;
use crate::backup::{
    BackupOptions, BackupReport, StreamOptions, backup_command, backup_with, command_origin,
};
use crate::daemon::config::{CommandSource, SourceConfig};
use crate::error::{Error, Result};
use crate::external::{LineSink, Spec, shown};
use std::sync::Arc;

/// A snapshot made, and a failure of the source's `after` hook (the snapshot stands).
pub(super) struct Snapshotted {
    pub(super) report: BackupReport,
    pub(super) after_failed: Option<Error>,
}

/// Snapshot source `i` into the session's repository (`opts` for a source of paths),
/// with its hooks around it. The error is the snapshot's or the `before` hook's.
pub(super) fn snapshot_source(
    dest: &Destination,
    env: &WorkerEnv,
    s: &mut Session,
    i: usize,
    opts: &BackupOptions,
) -> Result<Snapshotted> {
    let src = &env.sources[i];
    let label = src.label();
    let vars = vec![
        ("CAIRN_SOURCE".to_string(), label.clone()),
        ("CAIRN_DESTINATION".to_string(), dest.config.name.clone()),
    ];
    let log = log_lines(&dest.config.name, &label);
    let mut body = || match &src.command {
        None => backup_with(&s.repo, &env.rt, opts, &mut s.ctx),
        Some(c) => run_command(dest, env, s, src, c, &vars, &log),
    };
    if src.hooks.is_empty() {
        return body().map(|report| Snapshotted {
            report,
            after_failed: None,
        });
    }
    let outcome = src
        .hooks
        .around(&vars, &log, &dest.control, |r: &BackupReport| r.id, body)?;
    Ok(Snapshotted {
        report: outcome.result?,
        after_failed: outcome.after_failed,
    })
}

/// Run a command source and store its output.
fn run_command(
    dest: &Destination,
    env: &WorkerEnv,
    s: &mut Session,
    src: &SourceConfig,
    c: &CommandSource,
    vars: &[(String, String)],
    log: &LineSink,
) -> Result<BackupReport> {
    let opts = StreamOptions {
        filename: c.filename.clone(),
        origin: command_origin(&c.argv),
        tags: src.tags.clone(),
        hostname: env.hostname.clone(),
        username: env.username.clone(),
        time: crate::host::now_rfc3339(),
        workers: env.cpu_threads,
        max_uploads: dest.config.upload_concurrency,
        compression: dest.config.compression,
        control: dest.control.clone(),
    };
    let spec = Spec {
        argv: c.argv.clone(),
        user: c.user.clone(),
        env: vars.to_vec(),
    };
    let who = c
        .user
        .as_ref()
        .map_or(String::new(), |u| format!(" as {}", u.name));
    tracing::info!(destination = %dest.config.name, "running `{}`{who} for {}", shown(&c.argv), src.label());
    backup_command(&s.repo, &env.rt, &opts, &spec, log.clone(), &mut s.ctx)
}

/// Hook and command output, into the log with the destination and source.
fn log_lines(destination: &str, source: &str) -> LineSink {
    let (d, s) = (destination.to_string(), source.to_string());
    Arc::new(move |line: &str| tracing::info!(destination = %d, source = %s, "{line}"))
}

/// A source's failure as the status and log say it: which source, then why.
pub(super) fn for_source(e: Error, src: &SourceConfig, several: bool) -> Error {
    match e {
        Error::SourceFailed(m) => Error::SourceFailed(format!("source {}: {m}", src.label())),
        e if several && !e.is_unreachable() => {
            Error::InvalidInput(format!("source {}: {e}", src.label()))
        }
        e => e,
    }
}
