//! `copy`: snapshots from one repository into another, with everything they need.
//!
//! Between repositories on the same keys (`init --from-repo`, or the daemon's
//! destinations sharing a passphrase) stored objects move byte for byte ([`raw`]): a
//! pack the target lacks entirely is copied whole, under its own name, then the source's
//! index objects naming only packs the target now holds, then each snapshot object; so a
//! copy of every snapshot is made of the very objects of its source. Sealed blobs are
//! authenticated on the way, never decrypted into plaintext and sealed again.
//!
//! Between repositories on different keys every blob is read, checked, and stored again
//! under the target's keys ([`reencrypt`]): blob ids are keyed, so every tree is rebuilt
//! with the new ids, and the copy records the id of the snapshot it was copied from as
//! its `original`.
//!
//! Either way only what the target lacks is sent, the target's data is durable before
//! its index and its index before the snapshot (docs/FORMAT.md, section 14), and a
//! snapshot already in the target is not copied again ([`already_copied`]): a second run
//! sends nothing, and a run cut short sends, next time, only what it had not stored yet.
//! What the target holds is what its index objects list; blobs a prune there took out
//! but has not deleted yet count as missing, as they do for a backup.

mod raw;
mod reencrypt;

use crate::error::Result;
use crate::format::snapshot::Snapshot;
use crate::hash::SnapshotId;
use crate::repo::{Repository, SnapshotEntry};

/// What a copy did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct CopyReport {
    /// Whether the two repositories share keys (objects copied byte for byte).
    pub same_keys: bool,
    /// Each snapshot copied: its id in the source and in the target.
    pub copied: Vec<(SnapshotId, SnapshotId)>,
    /// Snapshots already in the target (source ids).
    pub already_there: Vec<SnapshotId>,
    /// Packs copied whole.
    pub packs_copied: u64,
    /// Packs a run cut short had copied already (found in the target, not sent again).
    pub packs_found: u64,
    /// Index objects copied whole.
    pub index_objects_copied: u64,
    /// Blobs stored in new packs (moved out of packs not copied whole, or re-encrypted).
    pub blobs_stored: u64,
    /// Bytes uploaded: packs, index objects, new packs and snapshots.
    pub bytes_sent: u64,
}

/// Whether `s` (from the source) is in the target already, as one of `there`. On the
/// same keys: the same object, or (as restic decides) a snapshot of the same time, host,
/// user, paths, tags and origin with the same tree. On other keys trees cannot be
/// compared, so only a copy of this very snapshot counts: one that records its id as
/// `original` (a snapshot changed in the source since, by `tag` or `rewrite`, has a new
/// id and is copied again).
pub fn already_copied(
    id: &SnapshotId,
    s: &Snapshot,
    there: &[SnapshotEntry],
    same_keys: bool,
) -> bool {
    there.iter().any(|t| {
        let u = &t.snapshot;
        if !same_keys {
            return t.id == *id || u.original == Some(*id);
        }
        t.id == *id
            || (u.time == s.time
                && u.hostname == s.hostname
                && u.username == s.username
                && u.paths == s.paths
                && u.tags == s.tags
                && u.origin == s.origin
                && u.tree == s.tree)
    })
}

/// Copy the snapshots `wanted` of `src` into `dst`, with everything they need (see the
/// module doc). Snapshots go in oldest first.
pub async fn copy(
    src: &Repository,
    dst: &Repository,
    mut wanted: Vec<SnapshotEntry>,
) -> Result<CopyReport> {
    let mut report = CopyReport {
        same_keys: src.shares_keys_with(dst),
        ..CopyReport::default()
    };
    let there = dst.list_snapshots().await?;
    wanted.sort_by_key(|e| (e.snapshot.timestamp(), e.id));
    let (skip, todo): (Vec<_>, Vec<_>) = wanted
        .into_iter()
        .partition(|e| already_copied(&e.id, &e.snapshot, &there, report.same_keys));
    report.already_there = skip.into_iter().map(|e| e.id).collect();
    if todo.is_empty() {
        return Ok(report);
    }
    let (src_index, (dst_index, _taken_out)) =
        futures_util::future::try_join(src.load_index(), dst.load_index_parts(None)).await?;
    if report.same_keys {
        raw::copy(src, dst, &src_index, &dst_index, &todo, &mut report).await?;
    } else {
        reencrypt::copy(src, dst, &src_index, &dst_index, &todo, &mut report).await?;
    }
    Ok(report)
}
