//! Repository size and how well deduplication and compression work, for `cairn stats`.
//! Pure arithmetic over the index, the object listing, the snapshots' own summaries and
//! what each snapshot references ([`crate::referenced`]): no pack is read.

use crate::backend::{FileType, ObjectInfo};
use crate::crypto::OVERHEAD;
use crate::format::index::BlobKind;
use crate::index::MasterIndex;
use crate::referenced::Referenced;
use crate::repo::SnapshotEntry;
use serde::Serialize;

/// Figures for one snapshot.
#[derive(Clone, Debug, Serialize)]
pub struct SnapshotStats {
    /// Snapshot id (hex).
    pub id: String,
    /// Snapshot time.
    pub time: String,
    /// Host name.
    pub hostname: String,
    /// Files in the snapshot.
    pub files: u64,
    /// Bytes of file content in the snapshot (its restore size).
    pub bytes: u64,
    /// Plaintext bytes of blobs this snapshot's backup added.
    pub added_bytes: u64,
    /// Bytes those blobs took in packs (compressed and sealed).
    pub added_stored_bytes: u64,
    /// Distinct blobs (trees and file contents) the snapshot references, whichever
    /// backup stored them.
    pub referenced_blobs: u64,
    /// Plaintext bytes of those blobs.
    pub referenced_bytes: u64,
    /// Bytes those blobs take in packs (compressed where that saved space, and sealed).
    pub referenced_stored_bytes: u64,
    /// `referenced_bytes` over `referenced_stored_bytes` less the sealing overhead
    /// (40 bytes a blob): how many times over compression shrinks this snapshot's data,
    /// 1.0 when nothing is compressed. Computed as the repository's `compression_ratio`.
    pub compression_ratio: f64,
}

/// Figures for the whole repository.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RepoStats {
    /// Snapshots.
    pub snapshots: u64,
    /// Pack objects.
    pub packs: u64,
    /// Bytes of every object in the repository (packs, index, snapshots, keys, ...).
    pub stored_bytes: u64,
    /// Bytes of pack objects.
    pub pack_bytes: u64,
    /// Distinct data blobs.
    pub data_blobs: u64,
    /// Distinct tree blobs.
    pub tree_blobs: u64,
    /// Plaintext bytes of the distinct blobs (what deduplication leaves).
    pub unique_bytes: u64,
    /// Bytes of the distinct blobs as stored (after compression and sealing).
    pub unique_stored_bytes: u64,
    /// Sum of every snapshot's restore size (what it would take without dedup).
    pub restore_bytes: u64,
    /// `restore_bytes / unique_bytes`: how many times over deduplication saves.
    pub dedup_ratio: f64,
    /// `unique_bytes` over the stored bytes less the sealing overhead.
    pub compression_ratio: f64,
    /// `restore_bytes / pack_bytes`: both together.
    pub space_saving_ratio: f64,
    /// Snapshots without a recorded summary (written by a restic-compatible tool or an
    /// old version): their sizes are not in `restore_bytes`.
    pub snapshots_without_summary: u64,
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        ((a as f64 / b as f64) * 100.0).round() / 100.0
    }
}

/// How many times over compression shrinks `plain` bytes stored as `stored` bytes in
/// `blobs` sealed blobs: the sealing overhead is no compression's doing, so it is left
/// out, and blobs stored uncompressed give exactly 1.
fn compression_ratio(plain: u64, stored: u64, blobs: u64) -> f64 {
    ratio(plain, stored.saturating_sub(OVERHEAD as u64 * blobs))
}

/// Compute the statistics from the loaded index, the listing of every object type, the
/// snapshots (oldest first) and what each of them references, in the same order.
pub fn compute(
    index: &MasterIndex,
    objects: &[(FileType, Vec<ObjectInfo>)],
    snapshots: &[SnapshotEntry],
    referenced: &[Referenced],
) -> (RepoStats, Vec<SnapshotStats>) {
    let mut s = RepoStats {
        snapshots: snapshots.len() as u64,
        ..RepoStats::default()
    };
    for (kind, list) in objects {
        for o in list {
            s.stored_bytes += o.size;
            if *kind == FileType::Pack {
                s.packs += 1;
                s.pack_bytes += o.size;
            }
        }
    }
    for (_, loc) in index.iter() {
        match loc.kind {
            BlobKind::Data => s.data_blobs += 1,
            BlobKind::Tree => s.tree_blobs += 1,
        }
        s.unique_bytes += u64::from(loc.raw_length);
        s.unique_stored_bytes += u64::from(loc.length);
    }
    let mut per = Vec::with_capacity(snapshots.len());
    for (i, e) in snapshots.iter().enumerate() {
        let r = referenced.get(i).copied().unwrap_or_default();
        let sum = e.snapshot.summary.clone();
        if sum.is_none() {
            s.snapshots_without_summary += 1;
        }
        let sum = sum.unwrap_or_default();
        s.restore_bytes += sum.total_bytes_processed;
        per.push(SnapshotStats {
            id: e.id.to_hex(),
            time: e.snapshot.time.clone(),
            hostname: e.snapshot.hostname.clone(),
            files: sum.total_files_processed,
            bytes: sum.total_bytes_processed,
            added_bytes: sum.data_added,
            added_stored_bytes: sum.data_added_packed,
            referenced_blobs: r.blobs,
            referenced_bytes: r.plain_bytes,
            referenced_stored_bytes: r.stored_bytes,
            compression_ratio: compression_ratio(r.plain_bytes, r.stored_bytes, r.blobs),
        });
    }
    s.dedup_ratio = ratio(s.restore_bytes, s.unique_bytes);
    s.compression_ratio = compression_ratio(
        s.unique_bytes,
        s.unique_stored_bytes,
        s.data_blobs + s.tree_blobs,
    );
    s.space_saving_ratio = ratio(s.restore_bytes, s.pack_bytes);
    (s, per)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_round_and_survive_zero() {
        assert_eq!(ratio(10, 4), 2.5);
        assert_eq!(ratio(1, 3), 0.33);
        assert_eq!(ratio(5, 0), 0.0);
        let (s, per) = compute(&MasterIndex::default(), &[], &[], &[]);
        assert_eq!(s.dedup_ratio, 0.0);
        assert!(per.is_empty());
    }

    #[test]
    fn the_compression_ratio_leaves_the_sealing_overhead_out() {
        let o = OVERHEAD as u64;
        assert_eq!(compression_ratio(1000, 1000 + 2 * o, 2), 1.0);
        assert_eq!(compression_ratio(1000, 400 + 2 * o, 2), 2.5);
        assert_eq!(compression_ratio(0, 0, 0), 0.0);
        assert_eq!(
            compression_ratio(10, o, 1),
            0.0,
            "no compressed bytes at all"
        );
    }
}
