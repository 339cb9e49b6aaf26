//! Which snapshots hold a path, for `cairn find`. A pattern without `/` matches entry
//! names, one with `/` whole snapshot paths (as for excludes). A subtree already searched
//! at the same place in an earlier snapshot is not read again.

use crate::error::{Error, Result};
use crate::exclude::Excludes;
use crate::format::tree::{Node, NodeKind};
use crate::hash::BlobId;
use crate::index::MasterIndex;
use crate::repo::Repository;
use crate::tree_loader::TreeLoader;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tokio::runtime::Handle as Runtime;

/// Compile `find` patterns: excludes' rules (a pattern without `/` matches names, one
/// with `/` whole paths; `*`, `?`, `[..]`, `**`), so the two never disagree.
pub fn patterns(patterns: &[String]) -> Result<Excludes> {
    Excludes::compile(patterns, "find pattern")
        .map_err(|e| Error::InvalidInput(format!("{e}: write a glob with *, ?, [abc] or **")))
}

/// Whether the entry at `path` matches.
fn matches(p: &Excludes, path: &Path) -> bool {
    p.matches(path, path.file_name().unwrap_or_default())
}

/// One match: the snapshot path and its entry (without content lists).
#[derive(Clone, Debug)]
pub struct Found {
    /// Path in the snapshot.
    pub path: PathBuf,
    /// The entry's metadata.
    pub node: Node,
}

/// Searches snapshot after snapshot, remembering what each (directory, tree) held.
pub struct Finder<'a> {
    /// Each tree with its neighbours in one request.
    trees: TreeLoader<'a>,
    rt: &'a Runtime,
    patterns: &'a Excludes,
    memo: HashMap<(PathBuf, BlobId), Vec<Found>>,
}

impl<'a> Finder<'a> {
    /// A finder over one repository.
    pub fn new(
        repo: &'a Repository,
        rt: &'a Runtime,
        index: &'a MasterIndex,
        patterns: &'a Excludes,
    ) -> Self {
        Finder {
            trees: TreeLoader::for_repo(repo, index),
            rt,
            patterns,
            memo: HashMap::new(),
        }
    }

    /// Every matching entry of the snapshot with root tree `root`, in name order.
    /// Iterative, one frame per directory level, so a very deep tree (100,000 levels)
    /// needs memory, not stack. What was found below a directory is remembered for the
    /// next snapshot only near the top ([`MEMO_DEPTH`]), where snapshots share most and
    /// the copies stay few.
    pub fn search(&mut self, root: &BlobId) -> Result<Vec<Found>> {
        let mut out = Vec::new();
        let mut at = PathBuf::from("/");
        let mut stack = Vec::new();
        if let Some(f) = self.open(&at, root, 0, &mut out)? {
            stack.push(f);
        }
        while let Some(top) = stack.last_mut() {
            let Some(node) = top.nodes.next() else {
                let done = stack
                    .pop()
                    .unwrap_or_else(|| unreachable!("a frame was on top"));
                if let Some(key) = done.memo_key {
                    self.memo.insert(key, out[done.start..].to_vec());
                }
                if !stack.is_empty() {
                    at.pop();
                }
                continue;
            };
            let depth = stack.len();
            at.push(node.name.to_os());
            let below = (node.kind == NodeKind::Dir)
                .then_some(node.subtree)
                .flatten();
            if matches(self.patterns, &at) {
                let mut node = node;
                node.content.clear();
                out.push(Found {
                    path: at.clone(),
                    node,
                });
            }
            if let Some(sub) = below
                && let Some(f) = self.open(&at, &sub, depth, &mut out)?
            {
                stack.push(f);
                continue;
            }
            at.pop();
        }
        Ok(out)
    }

    /// A directory to search: what was remembered of it (added to `out`, `None`), or its
    /// entries to go through.
    fn open(
        &mut self,
        at: &Path,
        id: &BlobId,
        depth: usize,
        out: &mut Vec<Found>,
    ) -> Result<Option<Frame>> {
        let key = (at.to_path_buf(), *id);
        if let Some(hit) = self.memo.get(&key) {
            out.extend(hit.iter().cloned());
            return Ok(None);
        }
        let tree = self.trees.tree(self.rt, id, at)?;
        Ok(Some(Frame {
            memo_key: (depth < MEMO_DEPTH).then_some(key),
            start: out.len(),
            nodes: tree.nodes.into_iter(),
        }))
    }
}

/// Directory levels whose findings are remembered between snapshots.
const MEMO_DEPTH: usize = 32;

/// One directory level of [`Finder::search`].
struct Frame {
    /// Where to remember what was found below it, if it is near the top.
    memo_key: Option<(PathBuf, BlobId)>,
    /// Where its findings start in the output.
    start: usize,
    /// Its entries still to go through.
    nodes: std::vec::IntoIter<Node>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths() {
        let p = patterns(&["*.txt".into(), "docs/*.md".into()]).expect("compile");
        assert!(matches(&p, Path::new("/home/a/notes.txt")));
        assert!(!matches(&p, Path::new("/home/a/notes.txt.bak")));
        assert!(matches(&p, Path::new("/srv/docs/readme.md")));
        assert!(!matches(&p, Path::new("/srv/docs/sub/readme.md")));
        assert!(patterns(&["a[".into()]).is_err());
    }
}
