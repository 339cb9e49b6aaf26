//! `cairn backup`: one snapshot of the given paths into the repository, with the latest
//! snapshot of this host and paths as its parent; or, with `--now`, a request to the
//! running daemon for a snapshot in every destination.

use super::common::{self, RepoArgs};
use super::exit::EXIT_WARNINGS;
use super::output::count;
use super::progress::{Output, Reporter, bytes};
use super::stdout::outln;
use super::{hostname, now_rfc3339, username};
use anyhow::{Context, Result};
use cairn::backup::{BackupContext, BackupOptions, BackupReport, backup_with};
use cairn::cache::MetadataCache;
use cairn::daemon::config;
use cairn::hash::SnapshotId;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use tokio::runtime::Runtime;

/// `cairn backup` arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct BackupArgs {
    /// Where the repository is and how to open it.
    #[command(flatten)]
    pub(crate) repo: super::RepoArgs,
    /// Files and directories to back up; with --stdin-from-command, the command and its
    /// arguments (after `--`).
    #[arg(required_unless_present_any = ["now", "stdin"])]
    pub(super) paths: Vec<PathBuf>,
    /// Ask the running daemon for a snapshot in every destination now, and wait.
    #[arg(long, conflicts_with_all = ["tags", "host", "time", "excludes", "one_file_system", "upload_concurrency", "stdin", "stdin_from_command", "before", "after", "on_failure"])]
    now: bool,
    /// Store what arrives on standard input as one file (see --stdin-filename), e.g.
    /// `pg_dump -Fc app | cairn backup --stdin --stdin-filename app.dump`.
    #[arg(long, conflicts_with_all = ["excludes", "one_file_system", "stdin_from_command"])]
    pub(super) stdin: bool,
    /// Run the command given after `--` and store its output as one file; the snapshot
    /// is saved only if the command exits 0, e.g. `cairn backup --stdin-from-command
    /// --stdin-filename app.dump -- pg_dump -Fc app`.
    #[arg(long, conflicts_with_all = ["excludes", "one_file_system"])]
    pub(super) stdin_from_command: bool,
    /// The name of the stored file for --stdin and --stdin-from-command (default
    /// "stdin"); may name folders too ("db/app.dump").
    #[arg(long, value_name = "NAME")]
    pub(super) stdin_filename: Option<String>,
    /// Run this command before the snapshot (split into words like a shell would, but
    /// not run by one: write `sh -c '...'` for pipes); if it fails, no snapshot is made.
    #[arg(long, value_name = "COMMAND")]
    pub(super) before: Option<String>,
    /// Run this command after the snapshot, whether it was saved or not (it gets
    /// CAIRN_SNAPSHOT_ID when it was, CAIRN_ERROR when not).
    #[arg(long, value_name = "COMMAND")]
    pub(super) after: Option<String>,
    /// Run this command when the backup or a hook failed (it gets CAIRN_ERROR).
    #[arg(long, value_name = "COMMAND")]
    pub(super) on_failure: Option<String>,
    /// How long each hook may run before it is stopped (default 5m).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub(super) hook_timeout: Option<std::time::Duration>,
    /// Daemon configuration (with --now: where to find its control socket).
    #[arg(long, default_value = config::DEFAULT_CONFIG)]
    config: PathBuf,
    /// Control socket of the daemon (with --now), instead of the configuration's.
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Tag the snapshot (repeatable).
    #[arg(long = "tag")]
    pub(super) tags: Vec<String>,
    /// Host name to record instead of this machine's.
    #[arg(long)]
    pub(super) host: Option<String>,
    /// Snapshot time to record, RFC 3339 (default: now).
    #[arg(long)]
    pub(super) time: Option<String>,
    /// Exclude entries matching a glob (repeatable).
    #[arg(short = 'e', long = "exclude")]
    excludes: Vec<String>,
    /// Do not cross into other file systems below the given paths.
    #[arg(short = 'x', long)]
    one_file_system: bool,
    /// Keep no local metadata cache (by default trees and index objects are kept in
    /// $CAIRN_CACHE_DIR, else $XDG_CACHE_HOME/cairn or ~/.cache/cairn, so the next
    /// backup compares against its parent without downloading it).
    #[arg(long)]
    pub(super) no_cache: bool,
    /// Pack uploads in flight at once (default 2). Each holds a pack in memory; more
    /// keep a distant or slow link busy. Past 8, raise `-o s3.connections` as well.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub(super) upload_concurrency: Option<u16>,
}

/// Normalise a user-given RFC 3339 time.
pub(super) fn parse_time(t: &str) -> Result<String> {
    use time::format_description::well_known::Rfc3339;
    let parsed = time::OffsetDateTime::parse(t, &Rfc3339).with_context(|| {
        format!("--time {t:?} is not an RFC 3339 time: write it like 2026-01-31T14:00:00Z")
    })?;
    Ok(parsed.format(&Rfc3339)?)
}

/// `cairn backup`: exits [`EXIT_WARNINGS`] when the snapshot was saved but some paths
/// could not be stored or never stood still, so scripts notice an incomplete snapshot.
pub(crate) fn run(rt: &Runtime, args: &RepoArgs, b: &BackupArgs, out: Output) -> Result<i32> {
    if b.now {
        return super::daemon::cmd_backup_now(&b.config, b.socket.as_deref(), out.json());
    }
    if b.stdin || b.stdin_from_command {
        return super::backup_stream::run(rt, args, b, out);
    }
    let hooks = super::backup_stream::hooks(b)?;
    if !hooks.is_empty() {
        let source = b
            .paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>();
        return super::backup_stream::with_hooks(&hooks, &source.join(" "), args, || {
            run_paths(rt, args, b, out)
        });
    }
    run_paths(rt, args, b, out).map(|(code, _)| code)
}

/// A backup of files and folders: the snapshot, its summary and warnings.
fn run_paths(
    rt: &Runtime,
    args: &RepoArgs,
    b: &BackupArgs,
    out: Output,
) -> Result<(i32, SnapshotId)> {
    let started = Instant::now();
    let time = match &b.time {
        Some(t) => parse_time(t)?,
        None => now_rfc3339(),
    };
    let excludes = cairn::exclude::Excludes::new(&b.excludes).map_err(anyhow::Error::msg)?;
    // The disk reads the sources' metadata while the key is derived and the index loaded,
    // from the same roots (absolute and clean, as excludes expect) the backup walks.
    let _read_ahead = cairn::backup::snapshot_paths(&b.paths).ok().map(|roots| {
        cairn::warm::MetadataWarmer::start(roots, excludes.clone(), b.one_file_system)
    });
    let repo = common::open(rt, args)?;
    let host = b.host.clone().unwrap_or_else(hostname);
    let mut opts = BackupOptions::new(b.paths.clone(), host, username(), time);
    opts.read_ahead = false;
    opts.excludes = b.excludes.clone();
    opts.tags = b.tags.clone();
    opts.one_file_system = b.one_file_system;
    if let Some(n) = b.upload_concurrency {
        opts.max_uploads = usize::from(n);
    }
    // The cache only saves downloads: every entry is verified on use, and a cache that
    // cannot be written is the same as none.
    let cache = common::cache_root()
        .filter(|_| !b.no_cache)
        .map(|root| MetadataCache::new(&root, &repo.config().id));
    let mut ctx = BackupContext::new(cache);
    // A path that cannot be read fails before anything is fetched.
    let roots = cairn::backup::prepare_roots(&opts.paths)?;
    // The index (from the cache, and what it lacks from the bucket) and the snapshots at
    // once, each a few round trips; the parent is the latest of this host and paths. The
    // listings' order does not matter here, unlike for a restore: an unchanged file keeps
    // its parent's content only if the index holds all of it, and is read otherwise.
    let (_, snapshots) = rt.block_on(async {
        futures_util::future::try_join(ctx.refresh(&repo), repo.list_snapshots()).await
    })?;
    let parent = cairn::backup::parent_in(snapshots, &opts.hostname, &roots);
    opts.find_parent = false;
    if let Some((id, snap)) = parent {
        opts.parent = Some(id);
        opts.parent_snapshot = Some(snap);
    }
    let progress = opts.control.progress.clone();
    let reporter = Reporter::start("backup", "files", progress.clone(), out);
    let done = AtomicBool::new(false);
    let result = std::thread::scope(|s| {
        if out.shows_progress() {
            let (paths, progress, done) = (&opts.paths, &progress, &done);
            s.spawn(move || {
                cairn::scan::count_totals(paths, &excludes, opts.one_file_system, progress, &|| {
                    done.load(Ordering::Relaxed)
                })
            });
        }
        let r = backup_with(&repo, rt.handle(), &opts, &mut ctx);
        done.store(true, Ordering::Relaxed);
        r
    });
    reporter.finish();
    let report = result?;
    print_summary(&report, started.elapsed().as_secs_f64(), out)?;
    if report.warnings.is_empty() {
        return Ok((0, report.id));
    }
    print_warnings(&report);
    Ok((EXIT_WARNINGS, report.id))
}

/// The snapshot's summary: a JSON line, or three lines on stderr and the id on stdout.
pub(super) fn print_summary(report: &BackupReport, seconds: f64, out: Output) -> Result<()> {
    let sum = report.snapshot.summary.clone().unwrap_or_default();
    if out.json() {
        // The summary's fields, then the id and the skipped paths themselves in place of
        // their count.
        let mut v = serde_json::to_value(&sum)?;
        v["message_type"] = "summary".into();
        // Always present here, though the stored summary leaves a 0 out.
        v["files_removed"] = sum.files_removed.into();
        v["snapshot_id"] = report.id.to_hex().into();
        v["total_duration"] = ((seconds * 1000.0).round() / 1000.0).into();
        v["warnings"] = report
            .warnings
            .iter()
            .map(|w| {
                serde_json::json!({
                    "path": w.path.to_string_lossy(),
                    "reason": w.reason,
                    "stored": w.stored,
                })
            })
            .collect();
        outln!("{v}")?;
    } else {
        eprintln!(
            "Files:   {} new, {} changed, {} unmodified, removed {} ({})",
            sum.files_new,
            sum.files_changed,
            sum.files_unmodified,
            count(sum.files_removed, "file"),
            count(sum.dirs_processed, "directory")
        );
        eprintln!(
            "Added:   {} ({} stored after compression and encryption) in {}",
            bytes(sum.data_added),
            bytes(sum.data_added_packed),
            count(sum.data_blobs + sum.tree_blobs, "blob"),
        );
        eprintln!(
            "Total:   {}, {}; read {} in {:.1} s",
            count(sum.total_files_processed, "file"),
            bytes(sum.total_bytes_processed),
            bytes(sum.data_read),
            seconds
        );
        outln!("snapshot {} saved", report.id.to_hex())?;
    }
    Ok(())
}

/// The paths the snapshot lacks and those stored while they changed, said even with
/// `--json` and `--quiet`, since the snapshot is not what a clean backup would hold.
fn print_warnings(report: &BackupReport) {
    let (changing, skipped): (Vec<_>, Vec<_>) = report.warnings.iter().partition(|w| w.stored);
    if !skipped.is_empty() {
        eprintln!(
            "warning: {} could not be stored (the snapshot has everything else):",
            count(skipped.len() as u64, "path")
        );
        for w in skipped {
            eprintln!("  {}: {}", w.path.display(), w.reason);
        }
    }
    if !changing.is_empty() {
        eprintln!(
            "warning: {} never stood still and {} stored as read, marked as changing (a restore names them):",
            count(changing.len() as u64, "file"),
            if changing.len() == 1 { "is" } else { "are" }
        );
        for w in changing {
            eprintln!("  {}: {}", w.path.display(), w.reason);
        }
    }
}
