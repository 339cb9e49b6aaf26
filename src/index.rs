//! The in-memory index: for every blob, the pack and byte range that hold it. Loaded from
//! all `index/*` objects; the backup's dedup check and restore's read planning use it.

use crate::backend::FileType;
use crate::crypto::Purpose;
use crate::error::{Error, Result};
use crate::format::index::{BlobKind, INDEX_VERSION, IndexFile, IndexPack};
use crate::hash::{BlobId, Id, IndexId, PackId};
use crate::repo::{MAX_INDEX_LEN, Repository};
use std::collections::HashMap;

/// Where one blob is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobLocation {
    /// Pack object.
    pub pack: PackId,
    /// Data or tree.
    pub kind: BlobKind,
    /// Offset of the sealed blob in the pack.
    pub offset: u64,
    /// Sealed length.
    pub length: u32,
    /// Plaintext length.
    pub raw_length: u32,
    /// Whether the payload is zstd-compressed.
    pub compressed: bool,
}

/// Blob id to location, for the whole repository.
#[derive(Default, Debug)]
pub struct MasterIndex {
    blobs: HashMap<BlobId, BlobLocation>,
    packs: usize,
}

impl MasterIndex {
    /// Record every blob of a pack. A blob stored in two packs keeps its first location:
    /// both copies are valid.
    pub fn add_pack(&mut self, pack: &IndexPack) {
        self.packs += 1;
        for b in &pack.blobs {
            self.blobs.entry(b.id).or_insert(BlobLocation {
                pack: pack.id,
                kind: b.kind,
                offset: b.offset,
                length: b.length,
                raw_length: b.raw_length,
                compressed: b.compressed,
            });
        }
    }

    /// Location of a blob, if indexed.
    pub fn get(&self, id: &BlobId) -> Option<&BlobLocation> {
        self.blobs.get(id)
    }

    /// Whether a blob is stored.
    pub fn contains(&self, id: &BlobId) -> bool {
        self.blobs.contains_key(id)
    }

    /// Number of distinct blobs.
    pub fn len(&self) -> usize {
        self.blobs.len()
    }

    /// Whether no blob is indexed.
    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }

    /// Number of pack entries read.
    pub fn pack_count(&self) -> usize {
        self.packs
    }

    /// Every indexed blob and its location, in no particular order (restore uses it to
    /// find which tree blobs share a pack, so it can fetch neighbours in one request).
    pub fn iter(&self) -> impl Iterator<Item = (&BlobId, &BlobLocation)> {
        self.blobs.iter()
    }
}

impl Repository {
    /// Load every index object. A damaged index object is an error naming it: guessing
    /// around it could make a backup skip data it wrongly believes is stored.
    pub async fn load_index(&self) -> Result<MasterIndex> {
        let mut index = MasterIndex::default();
        for info in self.backend().list(FileType::Index).await? {
            let Some(id) = Id::from_object_name(&info.name) else {
                continue;
            };
            let file = self.load_index_file(IndexId(id)).await?;
            for p in &file.packs {
                index.add_pack(p);
            }
        }
        // For reading only: blobs a prune took out of the index but has not deleted yet
        // (a snapshot made by a backup that overlapped the prune may use them; the next
        // prune takes them back). They come last, so indexed copies win. Backups load
        // their index elsewhere and never deduplicate against these.
        for (_, d) in self.load_deletions().await? {
            if let Ok(d) = d {
                for p in d.packs.iter().chain(&d.dropped) {
                    index.add_pack(p);
                }
            }
        }
        Ok(index)
    }

    /// Load one index object.
    pub async fn load_index_file(&self, id: IndexId) -> Result<IndexFile> {
        let plain = self
            .load_object(FileType::Index, id.0, Purpose::Index, MAX_INDEX_LEN)
            .await?;
        IndexFile::from_plain(&plain).map_err(|e| Error::corrupt_format(format!("index/{id}"), e))
    }

    /// Verify and decode an index object fetched earlier (from a local cache).
    pub fn open_index_file(&self, id: IndexId, stored: &[u8]) -> Result<IndexFile> {
        let plain =
            self.open_object(FileType::Index, id.0, Purpose::Index, MAX_INDEX_LEN, stored)?;
        IndexFile::from_plain(&plain).map_err(|e| Error::corrupt_format(format!("index/{id}"), e))
    }

    /// Store an index object describing packs that are already durable.
    pub async fn save_index(&self, packs: Vec<IndexPack>) -> Result<IndexId> {
        let file = IndexFile {
            version: INDEX_VERSION,
            packs,
        };
        let id = self
            .save_object(FileType::Index, Purpose::Index, &file.to_plain())
            .await?;
        Ok(IndexId(id))
    }
}
