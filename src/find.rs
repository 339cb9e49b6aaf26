//! Which snapshots hold a path, for `cairn find`. A pattern without `/` matches entry
//! names, one with `/` whole snapshot paths (as for excludes). A subtree already searched
//! at the same place in an earlier snapshot is not read again.

use crate::error::{Error, Result};
use crate::format::tree::{Node, NodeKind};
use crate::hash::BlobId;
use crate::index::MasterIndex;
use crate::ls::read_tree;
use crate::repo::Repository;
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tokio::runtime::Handle as Runtime;

/// Compiled `find` patterns.
pub struct Patterns {
    by_name: GlobSet,
    by_path: GlobSet,
}

impl Patterns {
    /// Compile glob patterns (`*`, `?`, `[..]`, `**`); the error names a bad one.
    pub fn new(patterns: &[String]) -> Result<Self> {
        let mut by_name = GlobSetBuilder::new();
        let mut by_path = GlobSetBuilder::new();
        for p in patterns {
            let (set, pat) = if p.contains('/') {
                let pat = if p.starts_with('/') || p.starts_with("**") {
                    p.clone()
                } else {
                    format!("**/{p}")
                };
                (&mut by_path, pat)
            } else {
                (&mut by_name, p.clone())
            };
            let glob = GlobBuilder::new(&pat)
                .literal_separator(true)
                .build()
                .map_err(|e| {
                    Error::InvalidInput(format!(
                        "pattern {p:?} is not a valid glob ({e}): use *, ?, [abc] or **"
                    ))
                })?;
            set.add(glob);
        }
        let build = |b: GlobSetBuilder| {
            b.build()
                .map_err(|e| Error::InvalidInput(format!("find patterns: {e}")))
        };
        Ok(Patterns {
            by_name: build(by_name)?,
            by_path: build(by_path)?,
        })
    }

    /// Whether the entry at `path` matches.
    pub fn matches(&self, path: &Path) -> bool {
        path.file_name().is_some_and(|n| self.by_name.is_match(n)) || self.by_path.is_match(path)
    }
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
    repo: &'a Repository,
    rt: &'a Runtime,
    index: &'a MasterIndex,
    patterns: &'a Patterns,
    memo: HashMap<(PathBuf, BlobId), Vec<Found>>,
}

impl<'a> Finder<'a> {
    /// A finder over one repository.
    pub fn new(
        repo: &'a Repository,
        rt: &'a Runtime,
        index: &'a MasterIndex,
        patterns: &'a Patterns,
    ) -> Self {
        Finder {
            repo,
            rt,
            index,
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
        let tree = read_tree(self.repo, self.rt, self.index, id, at)?;
        let mut out = Vec::new();
        for node in &tree.nodes {
            let path = at.join(node.name.to_os());
            if self.patterns.matches(&path) {
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
        let p = Patterns::new(&["*.txt".into(), "docs/*.md".into()]).expect("compile");
        assert!(p.matches(Path::new("/home/a/notes.txt")));
        assert!(!p.matches(Path::new("/home/a/notes.txt.bak")));
        assert!(p.matches(Path::new("/srv/docs/readme.md")));
        assert!(!p.matches(Path::new("/srv/docs/sub/readme.md")));
        assert!(Patterns::new(&["a[".into()]).is_err());
    }
}
