//! The source paths of a backup: made absolute and clean without following symlinks,
//! checked to exist before anything is read or written, and recorded in the snapshot in
//! one canonical form (which also decides the snapshot series a parent is chosen from).
//! Also the guard that refuses a source that looks like a disk that did not mount.

use crate::error::{Error, Result};
use crate::format::tree::{Node, NodeKind, Tree};
use crate::hash::BlobId;
use std::fs::{self, Metadata};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

/// Lexically absolute and clean: `.` and `..` resolved without following symlinks, so
/// the path that is stored is the path the user named.
pub fn clean_absolute(p: &Path) -> Result<PathBuf> {
    let abs = std::path::absolute(p).map_err(|e| Error::io("resolve", p, e))?;
    let mut out = PathBuf::from("/");
    for c in abs.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    Ok(out)
}

/// The source paths as a snapshot records them: absolute, clean, sorted, and without
/// paths nested in others. Snapshots with equal lists belong to one series (a parent is
/// chosen among them).
pub fn snapshot_paths(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut roots = Vec::new();
    for p in paths {
        roots.push(clean_absolute(p)?);
    }
    roots.sort();
    roots.dedup();
    let all = roots.clone();
    roots.retain(|r| !all.iter().any(|o| o != r && r.starts_with(o)));
    Ok(roots)
}

/// Source paths as a snapshot records them.
pub(super) fn display_paths(roots: &[PathBuf]) -> Vec<String> {
    roots
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect()
}

/// Clean, check and de-overlap the source paths; a missing path fails before anything
/// is read or written.
pub fn prepare_roots(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    if paths.is_empty() {
        return Err(Error::InvalidInput(
            "no paths to back up: name at least one file or directory".into(),
        ));
    }
    for p in paths {
        fs::symlink_metadata(clean_absolute(p)?).map_err(|e| {
            Error::InvalidInput(format!("backup path {} cannot be read: {e}", p.display()))
        })?;
    }
    snapshot_paths(paths)
}

/// Refuse a source directory that was a mount point in the parent snapshot (on another
/// device than the directory holding it) and is not now, or that is empty where the
/// parent's was not (see [`BackupOptions::guard_roots`](super::BackupOptions::guard_roots)).
/// Device numbers themselves may change (a reboot, a remount), so only whether it is a
/// mount point is compared. `prev` is the source's node in the parent snapshot, `prefix` the
/// directory holding it and `prefix_then` that directory's device in the parent;
/// `load_tree` reads one of the parent's trees (the walker's cache and loader).
pub(super) fn check_root(
    path: &Path,
    meta: &Metadata,
    prev: Option<&Node>,
    prefix: &Path,
    prefix_then: Option<u64>,
    load_tree: impl FnOnce(&BlobId) -> Option<Tree>,
) -> Result<()> {
    let Some(prev) = prev.filter(|p| p.kind == NodeKind::Dir && meta.is_dir()) else {
        return Ok(());
    };
    let fix = "a disk that is not mounted? Mount it; if the change is meant, set `allow_root_change = true` in the source's section";
    let was_mount = prev.device != 0 && prefix_then.is_some_and(|d| d != prev.device);
    let is_mount = fs::metadata(prefix).is_ok_and(|m| m.dev() != meta.dev());
    if was_mount && !is_mount {
        return Err(Error::InvalidInput(format!(
            "source {} was a mount point at the last snapshot and is not now (its file system is not mounted): {fix}",
            path.display(),
        )));
    }
    let empty_now = fs::read_dir(path)
        .map(|mut d| d.next().is_none())
        .unwrap_or(false);
    let had = match prev.subtree.and_then(|id| load_tree(&id)) {
        Some(t) => t.nodes.len(),
        None => 0,
    };
    if empty_now && had > 0 {
        return Err(Error::InvalidInput(format!(
            "source {} is empty, but held {had} entries at the last snapshot: {fix}",
            path.display()
        )));
    }
    Ok(())
}
