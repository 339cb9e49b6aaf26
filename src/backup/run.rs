//! One backup from start to end, in order: check the source paths and find the parent
//! snapshot (while stale multipart uploads are cleaned up), run the pipeline of threads,
//! take what was stored into the caller's index, and commit: write the snapshot only now
//! that every pack and index object is durable, or answer "unchanged" with the parent.

use super::context::BackupContext;
use super::parent::{find_parent, parent_still_stored};
use super::pipeline::{Finished, run_threads};
use super::plan::Plan;
use super::roots::{display_paths, prepare_roots};
use super::walk::Walked;
use super::{BackupOptions, BackupReport};
use crate::error::{Error, Result};
use crate::exclude::Excludes;
use crate::format::snapshot::Snapshot;
use crate::progress::Phase;
use crate::repo::Repository;
use std::path::PathBuf;
use std::time::Duration;
use tokio::runtime::Handle as Runtime;

/// Refuse a backup whose every source path is itself excluded (a pattern, the size limit,
/// a marker beside it): its snapshot would be empty, which is never what was meant.
fn refuse_all_excluded(roots: &[PathBuf], excludes: &Excludes) -> Result<()> {
    let excluded = |r: &PathBuf| {
        std::fs::symlink_metadata(r).is_ok_and(|meta| excludes.excludes_root(r, &meta))
    };
    if !roots.is_empty() && roots.iter().all(excluded) {
        let names: Vec<String> = roots.iter().map(|r| r.display().to_string()).collect();
        return Err(Error::InvalidInput(format!(
            "nothing to back up: every path given is excluded by the exclude options ({}); name other paths, or loosen the excludes",
            names.join(", ")
        )));
    }
    Ok(())
}

/// One backup from start to end: prepare the source paths and find the parent, run the
/// pipeline, record what it stored in `ctx`, and write the snapshot (or report the
/// parent unchanged).
pub(super) fn run(
    repo: &Repository,
    rt: &Runtime,
    opts: &BackupOptions,
    ctx: &mut BackupContext,
) -> Result<BackupReport> {
    let excludes =
        Excludes::from_rules(&opts.excludes).map_err(|e| Error::InvalidInput(e.to_string()))?;
    let roots = prepare_roots(&opts.paths)?;
    refuse_all_excluded(&roots, &excludes)?;
    let display_paths = display_paths(&roots);
    // Multipart uploads left by a crashed run cost storage; a day is far longer than any
    // upload of a running backup elsewhere. Best effort: not every server lists uploads.
    // Looked for while the parent is found, where this run looks for it: each is a
    // round trip or more.
    let cleanup = async {
        match repo
            .backend()
            .cleanup_stale_uploads(Duration::from_secs(24 * 3600))
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!("aborted {n} stale multipart upload(s)"),
            Err(e) => tracing::debug!("stale upload cleanup skipped: {e}"),
        }
    };
    let find_parent = find_parent(repo, opts, &roots);
    let ((), parent) = rt.block_on(async { tokio::join!(cleanup, find_parent) });
    let parent = parent?;
    // Without a parent there is nothing to carry over: compare everything.
    let changed = opts.changed.as_ref().filter(|_| parent.is_some());

    let plan = Plan {
        repo,
        rt,
        opts,
        index: &ctx.index,
        cache: ctx.cache.as_ref(),
        roots: &roots,
        excludes: &excludes,
        parent: parent.as_ref().map(|(_, p)| p),
        changed,
    };
    let Finished { walk, packed, read } = run_threads(&plan);
    // A packer failure explains a walker failure (the walker sees only a closed channel).
    read?;
    let packed = packed??;
    ctx.add_stored(&packed);
    let Walked {
        root,
        mut summary,
        warnings,
        trees_seen,
        multi_link_files,
    } = walk?;
    let root = root?;
    opts.control.check()?;
    opts.control.progress.set_phase(Phase::Committing);
    summary.data_added_packed = packed.bytes;
    summary.warnings = warnings.len() as u64;

    if opts.skip_if_unchanged
        && warnings.is_empty()
        && let Some((pid, psnap)) = &parent
        && psnap.tree == root
        && psnap.tags == opts.tags
        && (!opts.verify_parent || parent_still_stored(repo, rt, *pid)?)
    {
        return Ok(BackupReport {
            id: *pid,
            snapshot: psnap.clone(),
            warnings,
            unchanged: true,
            multi_link_files,
        });
    }
    let snapshot = Snapshot {
        time: opts.time.clone(),
        parent: parent.map(|(id, _)| id),
        tree: root,
        paths: display_paths,
        hostname: opts.hostname.clone(),
        username: opts.username.clone(),
        // SAFETY: getuid/getgid have no preconditions and cannot fail.
        uid: unsafe { libc::getuid() },
        gid: unsafe { libc::getgid() },
        tags: opts.tags.clone(),
        program_version: format!("cairn {}", env!("CARGO_PKG_VERSION")),
        summary: Some(summary),
        origin: None,
        original: None,
    };
    let id = rt.block_on(repo.save_snapshot(&snapshot))?;
    if let (Some(c), Some(seen), true) = (ctx.cache.as_ref(), trees_seen, opts.trim_cache) {
        c.retain_trees(&seen);
    }
    Ok(BackupReport {
        id,
        snapshot,
        warnings,
        unchanged: false,
        multi_link_files,
    })
}
