//! The parent snapshot: the one a backup compares against, so that files whose size,
//! times and inode did not change are carried over without being read. It is the latest
//! snapshot of the same host and the same source paths, unless the caller names one.

use super::BackupOptions;
use super::roots::display_paths;
use crate::error::Result;
use crate::format::snapshot::Snapshot;
use crate::hash::SnapshotId;
use crate::repo::Repository;
use std::path::PathBuf;
use tokio::runtime::Handle as Runtime;

/// The parent a run of `opts` over `roots` compares against, with its content: the one
/// the options name (read unless given), else the latest of the series when
/// [`BackupOptions::find_parent`] is on, else none.
pub(super) async fn find_parent(
    repo: &Repository,
    opts: &BackupOptions,
    roots: &[PathBuf],
) -> Result<Option<(SnapshotId, Snapshot)>> {
    Ok(match (opts.parent, &opts.parent_snapshot) {
        (Some(id), Some(snap)) => Some((id, snap.clone())),
        (Some(id), None) => Some((id, repo.load_snapshot(id).await?)),
        (None, _) if opts.find_parent => {
            parent_in(repo.list_snapshots().await?, &opts.hostname, roots)
        }
        (None, _) => None,
    })
}

/// The snapshot a backup of `roots` (from [`prepare_roots`](super::prepare_roots)) from
/// `hostname` compares against: the latest in `list` with the same host and exactly the
/// same paths (as snapshots record them). Public so that a caller can list snapshots while it loads the
/// index, then hand the parent over in [`BackupOptions::parent`] and
/// [`BackupOptions::parent_snapshot`] (and set [`BackupOptions::find_parent`] off).
pub fn parent_in(
    list: Vec<crate::repo::SnapshotEntry>,
    hostname: &str,
    roots: &[PathBuf],
) -> Option<(SnapshotId, Snapshot)> {
    let paths = display_paths(roots);
    list.into_iter()
        .rev()
        .find(|e| e.snapshot.hostname == hostname && e.snapshot.paths == paths)
        .map(|e| (e.id, e.snapshot))
}

/// Whether the parent snapshot is still in the repository. "Unchanged" answers with the
/// parent's id, so a parent that a `forget` removed meanwhile (the daemon remembers its
/// last snapshot) must not be named as saved: a new snapshot is written instead.
pub(super) fn parent_still_stored(repo: &Repository, rt: &Runtime, id: SnapshotId) -> Result<bool> {
    let handle = crate::backend::Handle::new(crate::backend::FileType::Snapshot, id.to_hex());
    match rt.block_on(repo.backend().stat(&handle)) {
        Ok(_) => Ok(true),
        Err(e) if e.is_not_found() => {
            tracing::warn!(
                "the parent snapshot {} is no longer in the repository (forgotten); writing a new snapshot",
                id.short()
            );
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}
