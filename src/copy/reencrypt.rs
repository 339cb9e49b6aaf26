//! A copy between repositories on different keys: every blob the snapshots use is read
//! and authenticated with the source's keys and stored with the target's, under the id
//! the target's key gives it; trees are rebuilt with those ids. Chunks keep their
//! boundaries (the source's chunker made them), so a later backup into the target may
//! store some data once more beside them; what the target holds already (by its own id)
//! is not sent again.

use super::CopyReport;
use crate::blob_writer::BlobWriter;
use crate::error::Result;
use crate::format::index::BlobKind;
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Node, Tree};
use crate::hash::BlobId;
use crate::index::MasterIndex;
use crate::repo::{Repository, SnapshotEntry};
use crate::tree_rewrite::{NodeRewrite, rewrite_tree};
use async_trait::async_trait;
use std::collections::HashMap;
use std::path::Path;

struct Reencrypt<'a, 'w> {
    src: &'a Repository,
    src_index: &'a MasterIndex,
    writer: &'a mut BlobWriter<'w>,
    data: HashMap<BlobId, BlobId>,
}

#[async_trait]
impl NodeRewrite for Reencrypt<'_, '_> {
    fn keep(&mut self, _path: &Path, _node: &Node) -> bool {
        true
    }

    async fn content(&mut self, _path: &Path, content: &[BlobId]) -> Result<Vec<BlobId>> {
        let mut out = Vec::with_capacity(content.len());
        for id in content {
            let new = match self.data.get(id) {
                Some(new) => *new,
                None => {
                    let plain = self.src.read_blob(self.src_index, id).await?;
                    let new = self.writer.add_plain(BlobKind::Data, &plain).await?;
                    self.data.insert(*id, new);
                    new
                }
            };
            out.push(new);
        }
        Ok(out)
    }

    async fn tree(
        &mut self,
        _path: &Path,
        _old: BlobId,
        tree: Tree,
        _changed: bool,
    ) -> Result<BlobId> {
        self.writer
            .add_plain(BlobKind::Tree, &tree.to_plain())
            .await
    }

    fn by_id(&self) -> bool {
        true
    }
}

pub(super) async fn copy(
    src: &Repository,
    dst: &Repository,
    src_index: &MasterIndex,
    dst_index: &MasterIndex,
    todo: &[SnapshotEntry],
    report: &mut CopyReport,
) -> Result<()> {
    let mut writer = BlobWriter::new(dst, dst_index);
    let mut trees = HashMap::new();
    let mut roots = Vec::with_capacity(todo.len());
    {
        let mut rw = Reencrypt {
            src,
            src_index,
            writer: &mut writer,
            data: HashMap::new(),
        };
        for e in todo {
            roots.push(rewrite_tree(src, src_index, e.snapshot.tree, &mut rw, &mut trees).await?);
        }
    }
    let written = writer.finish().await?;
    report.blobs_stored += written.blobs;
    report.bytes_sent += written.stored_bytes;
    for (e, tree) in todo.iter().zip(roots) {
        let snap = Snapshot {
            tree,
            // The parent is a snapshot of the source, which the target does not know.
            parent: None,
            // The snapshot it is a copy of: what tells a later copy it is here.
            original: Some(e.id),
            ..e.snapshot.clone()
        };
        let id = dst.save_snapshot(&snap).await?;
        report.copied.push((e.id, id));
    }
    Ok(())
}
