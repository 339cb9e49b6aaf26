//! Walking a snapshot's trees and building new ones from them: `rewrite` drops entries,
//! `copy` to a repository on other keys maps every blob id. The walk is depth first with
//! its own stack (a tree 100,000 levels deep must not exhaust the thread's), children
//! before their directory, so a directory's new tree names its children's new ids. What
//! changes and where new trees go is the caller's [`NodeRewrite`].

use crate::error::Result;
use crate::format::tree::{Node, NodeKind, Tree};
use crate::hash::BlobId;
use crate::index::MasterIndex;
use crate::repo::Repository;
use crate::tree_loader::decode;
use async_trait::async_trait;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// What a rewrite does to each entry and tree.
#[async_trait]
pub trait NodeRewrite: Send {
    /// Whether the entry at snapshot path `path` stays in the new tree.
    fn keep(&mut self, path: &Path, node: &Node) -> bool;

    /// A file's content blob ids in the new tree.
    async fn content(&mut self, path: &Path, content: &[BlobId]) -> Result<Vec<BlobId>>;

    /// The id of the new tree of directory `path`, given the tree it replaces (`old`) and
    /// whether any entry was dropped or changed; stores it where it belongs.
    async fn tree(&mut self, path: &Path, old: BlobId, tree: Tree, changed: bool)
    -> Result<BlobId>;

    /// Whether a subtree becomes the same new tree wherever it lies (nothing depends on
    /// its path): then each is walked once, however many snapshots and places share it.
    fn by_id(&self) -> bool;
}

/// One directory being rebuilt (its path is the walk's current path: one buffer, a
/// name pushed per level, so a deep tree costs memory in its depth, not its square).
struct Frame {
    old: BlobId,
    nodes: std::vec::IntoIter<Node>,
    out: Vec<Node>,
    changed: bool,
    /// This directory's entry in its parent, waiting for the new subtree id.
    entry: Option<Node>,
}

/// Rebuild the tree `root` of `src` (read through `index`) with `rw`; the new root id.
/// `memo` maps old tree ids to new ones across calls when [`NodeRewrite::by_id`].
pub async fn rewrite_tree(
    src: &Repository,
    index: &MasterIndex,
    root: BlobId,
    rw: &mut dyn NodeRewrite,
    memo: &mut HashMap<BlobId, BlobId>,
) -> Result<BlobId> {
    if let Some(done) = memo.get(&root).filter(|_| rw.by_id()) {
        return Ok(*done);
    }
    let mut path = PathBuf::from("/");
    let mut stack = vec![open(src, index, root, &path, None).await?];
    loop {
        let Some(frame) = stack.last_mut() else {
            unreachable!("the stack is left only by the return below")
        };
        if let Some(mut node) = frame.nodes.next() {
            path.push(OsStr::from_bytes(&node.name.0));
            if !rw.keep(&path, &node) {
                frame.changed = true;
                path.pop();
                continue;
            }
            match (node.kind, node.subtree) {
                (NodeKind::Dir, Some(sub)) => {
                    if let Some(new) = memo.get(&sub).copied().filter(|_| rw.by_id()) {
                        frame.changed |= new != sub;
                        node.subtree = Some(new);
                        frame.out.push(node);
                    } else {
                        let child = open(src, index, sub, &path, Some(node)).await?;
                        stack.push(child);
                        // The directory's name stays on the path until its frame ends.
                        continue;
                    }
                }
                (NodeKind::File, _) => {
                    let content = rw.content(&path, &node.content).await?;
                    frame.changed |= content != node.content;
                    node.content = content;
                    frame.out.push(node);
                }
                _ => frame.out.push(node),
            }
            path.pop();
            continue;
        }
        let Some(done) = stack.pop() else {
            unreachable!("a frame was just looked at")
        };
        let new = rw
            .tree(&path, done.old, Tree { nodes: done.out }, done.changed)
            .await?;
        // Back to the parent's path (the root's, `/`, stays).
        path.pop();
        if rw.by_id() {
            memo.insert(done.old, new);
        }
        let Some(parent) = stack.last_mut() else {
            return Ok(new);
        };
        if let Some(mut entry) = done.entry {
            parent.changed |= entry.subtree != Some(new);
            entry.subtree = Some(new);
            parent.out.push(entry);
        }
    }
}

async fn open(
    src: &Repository,
    index: &MasterIndex,
    id: BlobId,
    path: &Path,
    entry: Option<Node>,
) -> Result<Frame> {
    let plain = src.read_blob(index, &id).await?;
    let tree = decode(&plain, &id, path)?;
    Ok(Frame {
        old: id,
        out: Vec::with_capacity(tree.nodes.len()),
        nodes: tree.nodes.into_iter(),
        changed: false,
        entry,
    })
}
