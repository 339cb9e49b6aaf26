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
    pub fn search(&mut self, root: &BlobId) -> Result<Vec<Found>> {
        self.dir(Path::new("/"), root)
    }

    fn dir(&mut self, at: &Path, id: &BlobId) -> Result<Vec<Found>> {
        let key = (at.to_path_buf(), *id);
        if let Some(hit) = self.memo.get(&key) {
            return Ok(hit.clone());
        }
        let tree = self.trees.tree(self.rt, id, at)?;
        let mut out = Vec::new();
        for node in &tree.nodes {
            let path = at.join(node.name.to_os());
            if matches(self.patterns, &path) {
                let mut n = node.clone();
                n.content.clear();
                out.push(Found {
                    path: path.clone(),
                    node: n,
                });
            }
            if let (NodeKind::Dir, Some(sub)) = (node.kind, node.subtree) {
                out.extend(self.dir(&path, &sub)?);
            }
        }
        self.memo.insert(key, out.clone());
        Ok(out)
    }
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
