//! Writing blobs into a repository outside a backup: `copy` (blobs re-encrypted for
//! another repository's keys, or sealed blobs moved as they are) and `rewrite` (new
//! trees). Blobs go into packs of the repository's size, data and trees apart as backups
//! store them; packs are uploaded as they fill. Index objects are stored only after the
//! packs they name (docs/FORMAT.md, section 14), and trees only after data: data packs
//! are indexed every [`INDEX_FLUSH_PACKS`] packs (as a backup's are) and at the end, tree packs only at the very
//! end, after the last data is indexed, so an indexed tree never lacks its data in the
//! index (which a journal replay takes on trust). A run cut short leaves packs in no
//! index (swept by a prune) and index objects whose packs are all stored; the data it
//! indexed is not sent again.

use crate::backend::{FileType, Handle};
use crate::error::Result;
use crate::format::index::{BlobKind, IndexPack};
use crate::hash::BlobId;
use crate::index::MasterIndex;
use crate::pack::{PackBuilder, SealedBlob, seal_blob};
use crate::packer::INDEX_FLUSH_PACKS;
use crate::repo::Repository;
use std::collections::HashSet;

/// What a writer stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Written {
    /// Blobs stored.
    pub blobs: u64,
    /// Their plaintext bytes.
    pub bytes: u64,
    /// Their stored (sealed) bytes.
    pub stored_bytes: u64,
    /// Packs uploaded.
    pub packs: u64,
    /// Index objects stored.
    pub index_objects: u64,
}

/// Packs blobs the repository lacks and stores them (see the module doc).
pub struct BlobWriter<'a> {
    repo: &'a Repository,
    known: &'a MasterIndex,
    added: HashSet<BlobId>,
    data: PackBuilder,
    trees: PackBuilder,
    /// Packs stored but not yet named by an index object: data, and trees.
    unindexed: Vec<IndexPack>,
    unindexed_trees: Vec<IndexPack>,
    written: Written,
}

impl<'a> BlobWriter<'a> {
    /// A writer into `repo`, whose blobs listed in `known` (its index) are never stored
    /// again.
    pub fn new(repo: &'a Repository, known: &'a MasterIndex) -> Self {
        BlobWriter {
            repo,
            known,
            added: HashSet::new(),
            data: PackBuilder::default(),
            trees: PackBuilder::default(),
            unindexed: Vec::new(),
            unindexed_trees: Vec::new(),
            written: Written::default(),
        }
    }

    /// Whether the repository holds the blob, or this writer stored it.
    pub fn holds(&self, id: &BlobId) -> bool {
        self.known.contains(id) || self.added.contains(id)
    }

    /// Store `plain` as a blob of `kind` unless the repository holds it already,
    /// compressed as the repository's default says and sealed with its keys; its id
    /// either way.
    pub async fn add_plain(&mut self, kind: BlobKind, plain: &[u8]) -> Result<BlobId> {
        let id = self.repo.keys().blob_id(plain);
        if !self.holds(&id) {
            let compression = self.repo.compression_for(None);
            let sealed = seal_blob(self.repo.keys(), id, kind, plain, compression)?;
            self.add_sealed(sealed).await?;
        }
        Ok(id)
    }

    /// Store a blob already sealed with the repository's keys (taken from a copy on the
    /// same keys) unless the repository holds it.
    pub async fn add_sealed(&mut self, blob: SealedBlob) -> Result<()> {
        if self.holds(&blob.id) {
            return Ok(());
        }
        self.added.insert(blob.id);
        self.written.blobs += 1;
        self.written.bytes += u64::from(blob.raw_length);
        self.written.stored_bytes += blob.bytes.len() as u64;
        let builder = match blob.kind {
            BlobKind::Data => &mut self.data,
            BlobKind::Tree => &mut self.trees,
        };
        builder.add(blob);
        if builder.is_full(self.repo.config().pack_size as usize) {
            let builder = std::mem::take(builder);
            self.upload(builder).await?;
        }
        Ok(())
    }

    /// Note a pack stored by other means (copied whole), to be named by one of the
    /// writer's index objects (with the trees, at the end, if it holds any tree).
    pub async fn add_stored_pack(&mut self, pack: IndexPack) -> Result<()> {
        self.added.extend(pack.blobs.iter().map(|b| b.id));
        self.queue(pack).await
    }

    async fn queue(&mut self, pack: IndexPack) -> Result<()> {
        if pack.blobs.iter().any(|b| b.kind == BlobKind::Tree) {
            self.unindexed_trees.push(pack);
            return Ok(());
        }
        self.unindexed.push(pack);
        if self.unindexed.len() >= INDEX_FLUSH_PACKS {
            self.save_index().await?;
        }
        Ok(())
    }

    async fn upload(&mut self, builder: PackBuilder) -> Result<()> {
        if builder.is_empty() {
            return Ok(());
        }
        let pack = builder.finish(self.repo.keys(), self.repo.config().version)?;
        self.repo
            .backend()
            .put(&Handle::new(FileType::Pack, pack.id.to_hex()), pack.bytes)
            .await?;
        self.written.packs += 1;
        self.queue(pack.index).await
    }

    async fn save_index(&mut self) -> Result<()> {
        if self.unindexed.is_empty() {
            return Ok(());
        }
        self.repo
            .save_index(std::mem::take(&mut self.unindexed))
            .await?;
        self.written.index_objects += 1;
        Ok(())
    }

    /// Upload the data blobs still held and index every data pack not yet indexed:
    /// after this, an index object naming trees whose data went through this writer
    /// may be stored.
    pub async fn finish_data(&mut self) -> Result<()> {
        let data = std::mem::take(&mut self.data);
        self.upload(data).await?;
        self.save_index().await
    }

    /// Upload what is left and index every pack not yet indexed, data first, then
    /// trees: after this, a snapshot referring to the blobs may be stored.
    pub async fn finish(mut self) -> Result<Written> {
        self.finish_data().await?;
        let trees = std::mem::take(&mut self.trees);
        self.upload(trees).await?;
        self.unindexed = std::mem::take(&mut self.unindexed_trees);
        self.save_index().await?;
        Ok(self.written)
    }
}
