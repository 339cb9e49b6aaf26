//! Deletion records (`deletions/`): what a prune took out of the index, kept until its
//! grace period is over, so that readers still find those blobs and the next prune can
//! take back what a snapshot came to use (`docs/FORMAT.md`, section 15). Loading them
//! (readers, check and prune all do) and writing them, split so that each stays well
//! under what a reader accepts.

use crate::backend::{FileType, Handle};
use crate::crypto::Purpose;
use crate::error::{Error, Result};
use crate::format::compress;
use crate::format::deletion::{DeletionFile, MAX_DELETION_LEN};
use crate::hash::Id;
use crate::repo::{INDEX_READ_AHEAD, Repository, in_order};
use futures_util::StreamExt;
use tokio::runtime::Handle as Runtime;

impl Repository {
    /// Every `deletions/` object, each loaded or with the reason it could not be; the
    /// caller decides whether a damaged one matters. In listing order, read ahead within
    /// [`INDEX_READ_AHEAD`] (they are about as large as index objects).
    pub async fn load_deletions(&self) -> Result<Vec<(Id, Result<DeletionFile>)>> {
        let listed: Vec<(Id, u64)> = self
            .backend()
            .list(FileType::Deletion)
            .await?
            .iter()
            .filter_map(|info| Some((Id::from_object_name(&info.name)?, info.size)))
            .collect();
        Ok(in_order(listed, INDEX_READ_AHEAD, |id| async move {
            (id, self.load_deletion(id).await)
        })
        .collect()
        .await)
    }

    /// Load one `deletions/` object.
    pub async fn load_deletion(&self, id: Id) -> Result<DeletionFile> {
        let plain = self
            .load_object(FileType::Deletion, id, Purpose::Deletion, MAX_DELETION_LEN)
            .await?;
        DeletionFile::from_plain(&plain)
            .map_err(|e| Error::corrupt_format(format!("deletions/{}", id.to_hex()), e))
    }
}

/// Store what `record` holds in as many deletion records as keep each well under what a
/// reader accepts (a prune of a large repository can take out millions of entries); a
/// record with nothing in it is not stored.
pub(super) fn write_record(repo: &Repository, rt: &Runtime, record: DeletionFile) -> Result<()> {
    let parts = if record.packs.is_empty() && record.dropped.is_empty() {
        Vec::new()
    } else {
        split_record(record, MAX_DELETION_LEN / 4)
    };
    for part in parts {
        let sealed = repo.keys().seal(Purpose::Deletion, &compress(&part))?;
        let id = Id::of_stored(&sealed);
        rt.block_on(repo.backend().put(
            &Handle::new(FileType::Deletion, id.to_hex()),
            bytes::Bytes::from(sealed),
        ))?;
    }
    Ok(())
}

/// The plaintexts of deletion records holding together what `record` holds, each at
/// most `limit` bytes (or a single pack's entries, if one pack alone is larger). Every
/// part has the record's time, so each waits the same grace period.
fn split_record(record: DeletionFile, limit: usize) -> Vec<Vec<u8>> {
    let plain = record.to_plain();
    let parts = record.packs.len() + record.dropped.len();
    if plain.len() <= limit || parts <= 1 {
        return vec![plain];
    }
    let (mut first, mut second) = (record.clone(), record);
    if first.packs.len() > 1 || first.dropped.is_empty() {
        let half = first.packs.len() / 2;
        second.packs = first.packs.split_off(half);
        first.dropped = Vec::new();
    } else {
        let half = first.dropped.len() / 2;
        second.dropped = first.dropped.split_off(half);
        second.packs = Vec::new();
    }
    let mut out = split_record(first, limit);
    out.extend(split_record(second, limit));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::index::{BlobKind, IndexPack, PackedBlob};
    use crate::hash::{BlobId, PackId};

    fn pack(n: u8, blobs: usize) -> IndexPack {
        IndexPack {
            id: PackId(Id([n; 32])),
            blobs: (0..blobs)
                .map(|i| PackedBlob {
                    id: BlobId(Id([(i % 251) as u8; 32])),
                    kind: BlobKind::Data,
                    offset: i as u64 * 100,
                    length: 100,
                    raw_length: 90,
                    compressed: false,
                })
                .collect(),
        }
    }

    #[test]
    fn a_large_deletion_record_is_split_and_nothing_is_lost() {
        let record = DeletionFile {
            version: 1,
            created: "2030-01-01T00:00:00Z".into(),
            packs: (0..40).map(|n| pack(n, 200)).collect(),
            dropped: (40..50).map(|n| pack(n, 300)).collect(),
        };
        let whole = record.to_plain().len();
        let limit = whole / 7;
        let parts = split_record(record.clone(), limit);
        assert!(parts.len() >= 7, "{} parts", parts.len());
        let (mut packs, mut dropped) = (Vec::new(), Vec::new());
        for p in &parts {
            assert!(p.len() <= limit, "a part of {} bytes", p.len());
            let d = DeletionFile::from_plain(p).expect("parse");
            assert_eq!(d.created, record.created);
            packs.extend(d.packs);
            dropped.extend(d.dropped);
        }
        assert_eq!(packs, record.packs);
        assert_eq!(dropped, record.dropped);
        // A small record stays one.
        assert_eq!(split_record(record, whole).len(), 1);
    }
}
