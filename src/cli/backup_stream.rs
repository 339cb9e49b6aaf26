//! `cairn backup --stdin` and `--stdin-from-command`: one stream stored as one file, and
//! the `--before`/`--after`/`--on-failure` hooks around any command line backup. A
//! command's snapshot is saved only if it exits 0 and all of its output was stored;
//! otherwise cairn exits 1 saying how the command ended and the end of its error output.

use super::backup_args::{BackupArgs, parse_time};
use super::backup_summary::print_summary;
use super::common::{self, RepoArgs};
use super::progress::{Output, Reporter};
use super::{hostname, now_rfc3339, username};
use anyhow::{Result, bail};
use cairn::backup::{
    BackupContext, DEFAULT_STREAM_NAME, StreamOptions, backup_command, backup_stream,
};
use cairn::external::{Hooks, LineSink, Spec};
use cairn::hash::SnapshotId;
use cairn::progress::RunControl;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Instant;
use tokio::runtime::Runtime;

/// The hooks given on the command line, each split into words as a shell would (but
/// never run by one).
pub(super) fn hooks(b: &BackupArgs) -> Result<Hooks> {
    let split = |flag: &str, v: &Option<String>| -> Result<Option<Vec<String>>> {
        let Some(line) = v else { return Ok(None) };
        match shlex::split(line) {
            Some(words) if !words.is_empty() => Ok(Some(words)),
            _ => bail!(
                "{flag} {line:?} is not a command: write the program and its arguments, quoted as for a shell (`--before \"pg_ctl status\"`)"
            ),
        }
    };
    Ok(Hooks {
        before: split("--before", &b.before)?,
        after: split("--after", &b.after)?,
        on_failure: split("--on-failure", &b.on_failure)?,
        timeout: b
            .hook_timeout
            .unwrap_or(cairn::external::DEFAULT_HOOK_TIMEOUT),
    })
}

/// Where hook and command output goes on the command line: standard error, as is.
fn terminal_log() -> LineSink {
    Arc::new(|line: &str| eprintln!("{line}"))
}

/// Run a backup (`body`: its exit code and snapshot) between the hooks. A failed
/// `before` hook means no backup and exit 1; a failed `after` hook after a saved
/// snapshot is said and exits 1 too.
pub(super) fn with_hooks(
    hooks: &Hooks,
    source: &str,
    args: &RepoArgs,
    body: impl FnOnce() -> Result<(i32, SnapshotId)>,
) -> Result<i32> {
    let env = vec![
        ("CAIRN_SOURCE".to_string(), source.to_string()),
        (
            "CAIRN_DESTINATION".to_string(),
            args.repo
                .clone()
                .or_else(|| std::env::var("CAIRN_REPOSITORY").ok())
                .unwrap_or_default(),
        ),
    ];
    let outcome = hooks.around(
        &env,
        &terminal_log(),
        &RunControl::default(),
        |(_, id): &(i32, SnapshotId)| *id,
        body,
    )?;
    let (code, _) = outcome.result?;
    if let Some(e) = outcome.after_failed {
        eprintln!("error: the snapshot was saved, but {e}");
        return Ok(cairn::error::EXIT_FAILURE);
    }
    Ok(code)
}

/// `cairn backup --stdin` / `--stdin-from-command`.
pub(super) fn run(rt: &Runtime, args: &RepoArgs, b: &BackupArgs, out: Output) -> Result<i32> {
    let started = Instant::now();
    let command: Vec<String> = if b.stdin_from_command {
        let argv: Vec<String> = b
            .paths
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        if argv.is_empty() {
            bail!(
                "--stdin-from-command needs a command after `--`: `cairn backup --stdin-from-command --stdin-filename app.dump -- pg_dump -Fc app`"
            );
        }
        argv
    } else {
        if !b.paths.is_empty() {
            bail!(
                "--stdin stores standard input, so it takes no paths (got {}): back up files in a separate run",
                b.paths[0].display()
            );
        }
        if std::io::stdin().is_terminal() {
            bail!(
                "--stdin reads standard input, which is a terminal: pipe the data in (`tar -cf - dir | cairn backup --stdin --stdin-filename dir.tar`), or let cairn run the program: `cairn backup --stdin-from-command --stdin-filename app.dump -- pg_dump -Fc app`"
            );
        }
        Vec::new()
    };
    let filename = b
        .stdin_filename
        .clone()
        .unwrap_or_else(|| DEFAULT_STREAM_NAME.into());
    // A bad name fails before the repository is opened (or the command started).
    let parts = cairn::backup::stream_path(&filename)?;
    let time = match &b.time {
        Some(t) => parse_time(t)?,
        None => now_rfc3339(),
    };
    let repo = common::open(rt, args)?;
    let mut ctx = BackupContext::new(common::backup_cache(&repo, b.no_cache));
    rt.block_on(ctx.refresh(&repo))?;
    let mut opts = StreamOptions {
        filename,
        origin: if command.is_empty() {
            "stdin".into()
        } else {
            cairn::backup::command_origin(&command)
        },
        tags: b.tags.clone(),
        hostname: b.host.clone().unwrap_or_else(hostname),
        username: username(),
        time,
        workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
        max_uploads: 2,
        compression: b.compression.map(|m| m.compression()),
        control: RunControl::default(),
    };
    if let Some(n) = b.upload_concurrency {
        opts.max_uploads = usize::from(n);
    }
    let source = format!("/{}", parts.join("/"));
    let mut body = || -> Result<(i32, SnapshotId)> {
        let reporter = Reporter::start("backup", "bytes", opts.control.progress.clone(), out);
        let report = if command.is_empty() {
            let mut input = std::io::stdin();
            backup_stream(
                &repo,
                rt.handle(),
                &opts,
                &mut input,
                &mut || Ok(()),
                &mut ctx,
            )
        } else {
            let spec = Spec {
                argv: command.clone(),
                user: None,
                env: vec![("CAIRN_SOURCE".into(), source.clone())],
            };
            backup_command(&repo, rt.handle(), &opts, &spec, terminal_log(), &mut ctx)
        };
        reporter.finish();
        let report = report?;
        print_summary(&report, started.elapsed().as_secs_f64(), out)?;
        Ok((0, report.id))
    };
    let hooks = hooks(b)?;
    if hooks.is_empty() {
        return body().map(|(code, _)| code);
    }
    with_hooks(&hooks, &source, args, body)
}
