//! `rewrite`: a snapshot's trees without the entries a pattern matches (a secret backed
//! up by mistake, a huge file that never belonged). Only the trees on the way to a
//! removed entry are new; every other tree and all file data are shared with the
//! original, so a rewrite stores a few small blobs, and a `prune` after the original is
//! forgotten frees what only the removed entries used.

use crate::blob_writer::BlobWriter;
use crate::error::Result;
use crate::format::index::BlobKind;
use crate::format::tree::{Node, NodeKind, Tree};
use crate::hash::BlobId;
use crate::index::MasterIndex;
use crate::repo::Repository;
use crate::tree_rewrite::{NodeRewrite, rewrite_tree};
use async_trait::async_trait;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// Whether the entry at a snapshot path, with this name, is to be removed.
pub type Matcher<'a> = &'a (dyn Fn(&Path, &OsStr) -> bool + Sync);

/// One entry a rewrite removes (with everything below it, for a directory).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Removed {
    /// Its path in the snapshot.
    pub path: PathBuf,
    /// `file`, `dir`, ...
    pub kind: NodeKind,
    /// Its size, for a file.
    pub size: u64,
}

/// What rewriting one snapshot's tree gave.
#[derive(Clone, Debug, Default)]
pub struct Rewritten {
    /// The entries removed, in tree order.
    pub removed: Vec<Removed>,
    /// The new root tree; `None` when nothing matched (no new snapshot is needed).
    pub tree: Option<BlobId>,
}

struct Dropper<'a, 'w> {
    repo: &'a Repository,
    matcher: Matcher<'a>,
    writer: Option<&'a mut BlobWriter<'w>>,
    removed: Vec<Removed>,
}

#[async_trait]
impl NodeRewrite for Dropper<'_, '_> {
    fn keep(&mut self, path: &Path, node: &Node) -> bool {
        let name = path.file_name().unwrap_or_default();
        if (self.matcher)(path, name) {
            self.removed.push(Removed {
                path: path.to_path_buf(),
                kind: node.kind,
                size: node.size,
            });
            return false;
        }
        true
    }

    async fn content(&mut self, _path: &Path, content: &[BlobId]) -> Result<Vec<BlobId>> {
        Ok(content.to_vec())
    }

    async fn tree(
        &mut self,
        _path: &Path,
        old: BlobId,
        tree: Tree,
        changed: bool,
    ) -> Result<BlobId> {
        if !changed {
            return Ok(old);
        }
        let plain = tree.to_plain();
        match self.writer.as_deref_mut() {
            Some(w) => w.add_plain(BlobKind::Tree, &plain).await,
            None => Ok(self.repo.keys().blob_id(&plain)),
        }
    }

    fn by_id(&self) -> bool {
        // Patterns with a `/` depend on where a tree lies.
        false
    }
}

/// Rewrite the tree `root` of a snapshot of `repo` without the entries `matcher` picks.
/// New trees are stored through `writer`; without one (a dry run) nothing is stored and
/// only what would be removed is found.
pub async fn without_matches(
    repo: &Repository,
    index: &MasterIndex,
    root: BlobId,
    matcher: Matcher<'_>,
    writer: Option<&mut BlobWriter<'_>>,
) -> Result<Rewritten> {
    let mut d = Dropper {
        repo,
        matcher,
        writer,
        removed: Vec::new(),
    };
    let new = rewrite_tree(repo, index, root, &mut d, &mut HashMap::new()).await?;
    Ok(Rewritten {
        tree: (new != root).then_some(new),
        removed: d.removed,
    })
}
