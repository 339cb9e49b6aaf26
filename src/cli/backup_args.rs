//! `cairn backup`'s arguments, shared by the backup of paths ([`super::backup`]) and of
//! a stream ([`super::backup_stream`]).

use anyhow::{Context, Result};
use cairn::compression::CompressionMode;
use cairn::daemon::config;
use std::path::PathBuf;

/// `cairn backup` arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct BackupArgs {
    /// Where the repository is and how to open it.
    #[command(flatten)]
    pub(crate) repo: super::RepoArgs,
    /// Files and directories to back up; with --stdin-from-command, the command and its
    /// arguments (after `--`).
    #[arg(required_unless_present_any = ["now", "stdin"])]
    pub(crate) paths: Vec<PathBuf>,
    /// Ask the running daemon for a snapshot in every destination now, and wait.
    #[arg(long, conflicts_with_all = ["tags", "host", "time", "excludes", "one_file_system", "upload_concurrency", "stdin", "stdin_from_command", "before", "after", "on_failure", "compression"])]
    pub(crate) now: bool,
    /// Store what arrives on standard input as one file (see --stdin-filename). At the
    /// end of a pipe cairn cannot tell a program that failed from one that finished:
    /// for a dump, use --stdin-from-command, which saves only if it exits 0.
    #[arg(long, conflicts_with_all = ["excludes", "one_file_system", "stdin_from_command"])]
    pub(crate) stdin: bool,
    /// Run the command given after `--` and store its output as one file; the snapshot
    /// is saved only if the command exits 0, e.g. `cairn backup --stdin-from-command
    /// --stdin-filename app.dump -- pg_dump -Fc app`.
    #[arg(long, conflicts_with_all = ["excludes", "one_file_system"])]
    pub(crate) stdin_from_command: bool,
    /// The name of the stored file for --stdin and --stdin-from-command (default
    /// "stdin"); may name folders too ("db/app.dump").
    #[arg(long, value_name = "NAME")]
    pub(crate) stdin_filename: Option<String>,
    /// Run this command before the snapshot (split into words like a shell would, but
    /// not run by one: write `sh -c '...'` for pipes); if it fails, no snapshot is made.
    #[arg(long, value_name = "COMMAND")]
    pub(crate) before: Option<String>,
    /// Run this command after the snapshot, whether it was saved or not (it gets
    /// CAIRN_SNAPSHOT_ID when it was, CAIRN_ERROR when not).
    #[arg(long, value_name = "COMMAND")]
    pub(crate) after: Option<String>,
    /// Run this command when the backup or a hook failed (it gets CAIRN_ERROR).
    #[arg(long, value_name = "COMMAND")]
    pub(crate) on_failure: Option<String>,
    /// How long each hook may run before it is stopped (default 5m).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub(crate) hook_timeout: Option<std::time::Duration>,
    /// Daemon configuration (with --now: where to find its control socket).
    #[arg(long, default_value = config::DEFAULT_CONFIG)]
    pub(crate) config: PathBuf,
    /// Control socket of the daemon (with --now), instead of the configuration's.
    #[arg(long)]
    pub(crate) socket: Option<PathBuf>,
    /// Tag the snapshot (repeatable).
    #[arg(long = "tag")]
    pub(crate) tags: Vec<String>,
    /// Host name to record instead of this machine's.
    #[arg(long)]
    pub(crate) host: Option<String>,
    /// Snapshot time to record, RFC 3339 (default: now).
    #[arg(long)]
    pub(crate) time: Option<String>,
    /// Exclude entries matching a glob (repeatable).
    #[arg(short = 'e', long = "exclude")]
    pub(crate) excludes: Vec<String>,
    /// Do not cross into other file systems below the given paths.
    #[arg(short = 'x', long)]
    pub(crate) one_file_system: bool,
    /// Keep no local metadata cache (by default trees and index objects are kept in
    /// $CAIRN_CACHE_DIR, else $XDG_CACHE_HOME/cairn or ~/.cache/cairn, so the next
    /// backup compares against its parent without downloading it).
    #[arg(long)]
    pub(crate) no_cache: bool,
    /// Pack uploads in flight at once (default 2). Each holds a pack in memory; more
    /// keep a distant or slow link busy. Past 8, raise `-o s3.connections` as well.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub(crate) upload_concurrency: Option<u16>,
    /// How to compress file contents: auto (zstd level 3), off, fastest (level 1),
    /// better (level 7), max (level 19), or a zstd level from 1 to 22. Default: the
    /// repository's (`cairn compression`), else auto. Metadata is compressed either way.
    #[arg(long, value_name = "MODE", env = "CAIRN_COMPRESSION", value_parser = parse_compression)]
    pub(crate) compression: Option<CompressionMode>,
}

/// A `--compression` mode (or `CAIRN_COMPRESSION`'s), with the accepted forms when it
/// is none.
pub(crate) fn parse_compression(s: &str) -> Result<CompressionMode, String> {
    s.parse()
}

/// Normalise a user-given RFC 3339 time.
pub(crate) fn parse_time(t: &str) -> Result<String> {
    use time::format_description::well_known::Rfc3339;
    let parsed = time::OffsetDateTime::parse(t, &Rfc3339).with_context(|| {
        format!("--time {t:?} is not an RFC 3339 time: write it like 2026-01-31T14:00:00Z")
    })?;
    Ok(parsed.format(&Rfc3339)?)
}
