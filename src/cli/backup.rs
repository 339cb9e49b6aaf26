//! `cairn backup`: one snapshot of the given paths into the repository, with the latest
//! snapshot of this host and paths as its parent; or, with `--now`, a request to the
//! running daemon for a snapshot in every destination.

pub(crate) use super::backup_args::BackupArgs;
use super::backup_args::parse_time;
use super::backup_select as select;
use super::backup_summary::{print_summary, print_warnings};
use super::common::{self, RepoArgs};
use super::exit::EXIT_WARNINGS;
use super::progress::{Output, Reporter};
use super::{hostname, now_rfc3339, username};
use anyhow::Result;
use cairn::backup::{BackupContext, BackupOptions, backup_with};
use cairn::exclude::{ExcludeRules, Excludes};
use cairn::hash::SnapshotId;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use tokio::runtime::Runtime;

/// `cairn backup`: exits [`EXIT_WARNINGS`] when the snapshot was saved but some paths
/// could not be stored or never stood still, so scripts notice an incomplete snapshot.
pub(crate) fn run(rt: &Runtime, args: &RepoArgs, b: &BackupArgs, out: Output) -> Result<i32> {
    if b.now {
        return super::daemon::cmd_backup_now(&b.config, b.socket.as_deref(), out.json());
    }
    if b.stdin || b.stdin_from_command {
        return super::backup_stream::run(rt, args, b, out);
    }
    let source = Source {
        paths: select::source_paths(&b.paths, &b.selection)?,
        excludes: select::exclude_rules(&b.selection)?,
    };
    let hooks = super::backup_stream::hooks(b)?;
    if !hooks.is_empty() {
        // The paths as the snapshot records them: absolute and clean.
        let shown = cairn::backup::snapshot_paths(&source.paths)?
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>();
        return super::backup_stream::with_hooks(&hooks, &shown.join(" "), args, || {
            run_paths(rt, args, b, &source, out)
        });
    }
    run_paths(rt, args, b, &source, out).map(|(code, _)| code)
}

/// What a backup of files and folders stores: its paths (the `--files-from` lists'
/// included) and what it leaves out (the pattern files read).
struct Source {
    paths: Vec<PathBuf>,
    excludes: ExcludeRules,
}

/// A backup of files and folders: the snapshot, its summary and warnings.
fn run_paths(
    rt: &Runtime,
    args: &RepoArgs,
    b: &BackupArgs,
    source: &Source,
    out: Output,
) -> Result<(i32, SnapshotId)> {
    let started = Instant::now();
    let time = match &b.time {
        Some(t) => parse_time(t)?,
        None => now_rfc3339(),
    };
    let excludes = Excludes::from_rules(&source.excludes)?;
    // The disk reads the sources' metadata while the key is derived and the index loaded,
    // from the same roots (absolute and clean, as excludes expect) the backup walks.
    let _read_ahead = cairn::backup::snapshot_paths(&source.paths)
        .ok()
        .map(|roots| {
            cairn::warm::MetadataWarmer::start(roots, excludes.clone(), b.one_file_system)
        });
    let repo = common::open(rt, args)?;
    let host = b.host.clone().unwrap_or_else(hostname);
    let mut opts = BackupOptions::new(source.paths.clone(), host, username(), time);
    opts.read_ahead = false;
    opts.excludes = source.excludes.clone();
    opts.tags = b.tags.clone();
    opts.one_file_system = b.one_file_system;
    if let Some(n) = b.upload_concurrency {
        opts.max_uploads = usize::from(n);
    }
    opts.compression = b.compression.map(|m| m.compression());
    let mut ctx = BackupContext::new(common::backup_cache(&repo, b.no_cache));
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
