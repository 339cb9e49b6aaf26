//! Listing a snapshot's entries, depth first in name order, for `cairn ls`.

use crate::error::{Error, Result};
use crate::format::tree::{Node, NodeKind};
use crate::hash::BlobId;
use crate::index::MasterIndex;
use crate::repo::Repository;
use crate::tree_loader::TreeLoader;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use tokio::runtime::Handle as Runtime;

/// Call `visit` with the snapshot path and node of every entry at or below `under`
/// (`/` for everything). A `Break` from `visit` (its reader went away) ends the walk
/// there, reading no more trees. Must be called from a thread not driving the runtime.
pub fn walk(
    repo: &Repository,
    rt: &Runtime,
    index: &MasterIndex,
    root: &BlobId,
    under: &Path,
    visit: &mut dyn FnMut(&Path, &Node) -> ControlFlow<()>,
) -> Result<()> {
    // Each tree with its neighbours in one request: one GET per tree took a round trip
    // each, minutes for a large snapshot.
    let trees = TreeLoader::for_repo(repo, index);
    let mut stack: Vec<(PathBuf, BlobId)> = vec![(PathBuf::from("/"), *root)];
    let mut found = under == Path::new("/");
    while let Some((dir, id)) = stack.pop() {
        let tree = trees.tree(rt, &id, &dir)?;
        let mut subdirs = Vec::new();
        for node in &tree.nodes {
            let path = dir.join(node.name.to_os());
            let inside = path.starts_with(under);
            if inside {
                found = true;
                if visit(&path, node).is_break() {
                    return Ok(());
                }
            }
            if node.kind == NodeKind::Dir
                && (inside || under.starts_with(&path))
                && let Some(sub) = node.subtree
            {
                subdirs.push((path, sub));
            }
        }
        stack.extend(subdirs.into_iter().rev());
    }
    if !found {
        return Err(Error::InvalidInput(format!(
            "{} is not in the snapshot: list its top level with `cairn ls SNAPSHOT`",
            under.display()
        )));
    }
    Ok(())
}

/// The entry at exactly `path` (not `/`) and the id of the tree that lists it, reading
/// only the trees on the way; `None` if the snapshot holds no such entry. Through
/// `trees` ([`TreeLoader::tree_on_path`]), which fetches a tree with the trees stored
/// just before it: a directory's tree is stored right after the trees below it, so the
/// trees of a deep path come in a read or a few rather than one round trip per level,
/// and a restore of `--include` paths, which walks them again with the same loader,
/// finds them already read.
pub fn lookup(
    trees: &TreeLoader<'_>,
    rt: &Runtime,
    root: &BlobId,
    path: &Path,
) -> Result<Option<(Node, BlobId)>> {
    let mut tree_id = *root;
    let mut here = PathBuf::from("/");
    let parts: Vec<_> = path.components().skip(1).collect();
    for (i, part) in parts.iter().enumerate() {
        let tree = trees.tree_on_path(rt, &tree_id, &here)?;
        let name = part.as_os_str();
        let Some(node) = tree.nodes.iter().find(|n| n.name.to_os() == name) else {
            return Ok(None);
        };
        here.push(name);
        if i + 1 == parts.len() {
            return Ok(Some((node.clone(), tree_id)));
        }
        match (node.kind, node.subtree) {
            (NodeKind::Dir, Some(sub)) => tree_id = sub,
            _ => return Ok(None),
        }
    }
    Ok(None)
}
