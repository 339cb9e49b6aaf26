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
    #[arg(required_unless_present_any = ["now", "stdin", "files_from", "files_from_verbatim", "files_from_raw"])]
    pub(crate) paths: Vec<PathBuf>,
    /// Ask the running daemon for a snapshot in every destination now, and wait.
    #[arg(long, conflicts_with_all = ["tags", "host", "time", "one_file_system", "upload_concurrency", "stdin", "stdin_from_command", "before", "after", "on_failure", "selection", "compression"])]
    pub(crate) now: bool,
    /// Store what arrives on standard input as one file (see --stdin-filename). At the
    /// end of a pipe cairn cannot tell a program that failed from one that finished:
    /// for a dump, use --stdin-from-command, which saves only if it exits 0.
    #[arg(long, conflicts_with_all = ["one_file_system", "stdin_from_command", "selection"])]
    pub(crate) stdin: bool,
    /// Run the command given after `--` and store its output as one file; the snapshot
    /// is saved only if the command exits 0, e.g. `cairn backup --stdin-from-command
    /// --stdin-filename app.dump -- pg_dump -Fc app`.
    #[arg(long, conflicts_with_all = ["one_file_system", "selection"])]
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
    /// What to leave out, and where else the paths come from (boxed: the other commands'
    /// arguments need not be as large).
    #[command(flatten)]
    pub(crate) selection: Box<Selection>,
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

/// `cairn backup`'s exclude options and path lists, restic's under the same names. The
/// excludes apply to the paths given too (restic's rule), and a backup whose every path is
/// excluded is refused.
#[derive(Debug, clap::Args)]
#[group(id = "selection", multiple = true)]
pub(crate) struct Selection {
    /// Exclude entries matching a glob (repeatable): a pattern without `/` matches a name
    /// at any depth, one with `/` the whole path; `*` stays within a name, `**` crosses.
    #[arg(short = 'e', long = "exclude", value_name = "PATTERN")]
    pub(crate) excludes: Vec<String>,
    /// Like --exclude, ignoring upper and lower case (repeatable).
    #[arg(long = "iexclude", value_name = "PATTERN")]
    pub(crate) iexcludes: Vec<String>,
    /// Read --exclude patterns from FILE (repeatable): one per line, surrounding blanks
    /// trimmed, empty lines and lines starting with # skipped; $NAME and ${NAME} are
    /// replaced by environment variables (one not set is an error; $$ is a literal $).
    #[arg(long = "exclude-file", value_name = "FILE")]
    pub(crate) exclude_files: Vec<PathBuf>,
    /// Like --exclude-file, the patterns ignoring case (repeatable).
    #[arg(long = "iexclude-file", value_name = "FILE")]
    pub(crate) iexclude_files: Vec<PathBuf>,
    /// Leave out regular files larger than SIZE (directories never): bytes, or with a
    /// 1024-based unit, e.g. 500k, 100M, 2G, 1T, 1.5GiB.
    #[arg(long, value_name = "SIZE", value_parser = cairn::exclude::parse_size)]
    pub(crate) exclude_larger_than: Option<u64>,
    /// Leave out the contents of folders holding a CACHEDIR.TAG file that starts with
    /// the cache-directory signature (https://bford.info/cachedir/); the folder and its
    /// tag are kept. Same as --exclude-if-present 'CACHEDIR.TAG:Signature:
    /// 8a477f597d28d172789f06886806bc55'.
    #[arg(long)]
    pub(crate) exclude_caches: bool,
    /// Leave out the contents of folders holding a file named FILE (that starts with
    /// HEADER, if given); the folder and FILE are kept (repeatable).
    #[arg(long, value_name = "FILE[:HEADER]", value_parser = cairn::exclude::Marker::parse)]
    pub(crate) exclude_if_present: Vec<cairn::exclude::Marker>,
    /// Back up the paths listed in FILE as well (repeatable; - reads standard input):
    /// one per line, surrounding blanks trimmed, empty lines and lines starting with #
    /// skipped, glob patterns (*, ?, [...]) expanded; a pattern matching nothing is
    /// skipped with a warning.
    #[arg(long, value_name = "FILE")]
    pub(crate) files_from: Vec<PathBuf>,
    /// Like --files-from, each line taken literally (no comments, no patterns, blanks
    /// kept; only empty lines skipped).
    #[arg(long, value_name = "FILE")]
    pub(crate) files_from_verbatim: Vec<PathBuf>,
    /// Like --files-from-verbatim, the paths separated by NUL bytes (`find -print0`).
    #[arg(long, value_name = "FILE")]
    pub(crate) files_from_raw: Vec<PathBuf>,
}

/// Normalise a user-given RFC 3339 time.
pub(crate) fn parse_time(t: &str) -> Result<String> {
    use time::format_description::well_known::Rfc3339;
    let parsed = time::OffsetDateTime::parse(t, &Rfc3339).with_context(|| {
        format!("--time {t:?} is not an RFC 3339 time: write it like 2026-01-31T14:00:00Z")
    })?;
    Ok(parsed.format(&Rfc3339)?)
}
