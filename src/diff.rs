//! What changed between two snapshots, for `cairn diff`. Trees are content-addressed, so
//! a subtree with the same id in both is skipped unread: a diff costs the changed part.

use crate::error::Result;
use crate::format::tree::{Node, NodeKind, Tree};
use crate::hash::BlobId;
use crate::index::MasterIndex;
use crate::repo::Repository;
use crate::tree_loader::TreeLoader;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tokio::runtime::Handle as Runtime;

/// How one path differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// Only in the second snapshot.
    Added,
    /// Only in the first snapshot.
    Removed,
    /// Same kind, different content (file data or symlink target).
    Modified,
    /// A file became a directory, a symlink a file, and so on.
    TypeChanged,
    /// Same content, different metadata (mode, owner, times, extended attributes); only
    /// reported when asked for, as most such changes are noise (a directory's mtime).
    Metadata,
}

impl Change {
    /// The one-letter mark restic's `diff` uses.
    pub fn mark(self) -> char {
        match self {
            Change::Added => '+',
            Change::Removed => '-',
            Change::Modified => 'M',
            Change::TypeChanged => 'T',
            Change::Metadata => 'U',
        }
    }
}

/// One changed path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DiffEntry {
    /// Path in the snapshots, with a trailing `/` for directories.
    pub path: String,
    /// What changed.
    pub change: Change,
    /// Size in the first snapshot (files).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old_size: Option<u64>,
    /// Size in the second snapshot (files).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_size: Option<u64>,
}

/// Totals of a diff.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DiffStats {
    /// Files and other entries only in the second snapshot.
    pub added: u64,
    /// Entries only in the first.
    pub removed: u64,
    /// Entries with different content or kind.
    pub modified: u64,
    /// Entries with only different metadata (counted even when not listed).
    pub metadata_only: u64,
    /// File bytes of added entries.
    pub added_bytes: u64,
    /// File bytes of removed entries.
    pub removed_bytes: u64,
}

/// Compare two snapshot trees; `visit` gets every changed path in name order (metadata-
/// only changes only if `metadata` is set). Must be called off the runtime's threads.
pub fn diff(
    repo: &Repository,
    rt: &Runtime,
    index: &MasterIndex,
    a: &BlobId,
    b: &BlobId,
    metadata: bool,
    visit: &mut dyn FnMut(&DiffEntry),
) -> Result<DiffStats> {
    let mut d = Differ {
        trees: TreeLoader::for_repo(repo, index),
        rt,
        metadata,
        visit,
        stats: DiffStats::default(),
    };
    d.trees(a, b, Path::new("/"))?;
    Ok(d.stats)
}

struct Differ<'a, 'v> {
    /// Each tree with its neighbours in one request.
    trees: TreeLoader<'a>,
    rt: &'a Runtime,
    metadata: bool,
    visit: &'v mut dyn FnMut(&DiffEntry),
    stats: DiffStats,
}

fn display(path: &Path, kind: NodeKind) -> String {
    let mut s = path.to_string_lossy().into_owned();
    if kind == NodeKind::Dir {
        s.push('/');
    }
    s
}

fn file_size(n: &Node) -> Option<u64> {
    (n.kind == NodeKind::File).then_some(n.size)
}

/// Whether two nodes of the same kind hold the same content.
fn same_content(x: &Node, y: &Node) -> bool {
    x.content == y.content && x.link_target == y.link_target && x.rdev == y.rdev
}

/// Whether two nodes' metadata (not content) are equal.
fn same_metadata(x: &Node, y: &Node) -> bool {
    x.mode == y.mode
        && x.uid == y.uid
        && x.gid == y.gid
        && x.mtime == y.mtime
        && x.mtime_nsec == y.mtime_nsec
        && x.xattrs == y.xattrs
}

impl Differ<'_, '_> {
    fn trees(&mut self, a: &BlobId, b: &BlobId, at: &Path) -> Result<()> {
        if a == b {
            return Ok(());
        }
        let ta = self.trees.tree(self.rt, a, at)?;
        let tb = self.trees.tree(self.rt, b, at)?;
        let mut both: BTreeMap<Vec<u8>, (Option<&Node>, Option<&Node>)> = BTreeMap::new();
        for n in &ta.nodes {
            both.entry(n.name.0.clone()).or_default().0 = Some(n);
        }
        for n in &tb.nodes {
            both.entry(n.name.0.clone()).or_default().1 = Some(n);
        }
        for (x, y) in both.into_values() {
            let name = x.or(y).map(|n| n.name.to_os()).unwrap_or_default();
            let path = at.join(name);
            match (x, y) {
                (Some(x), None) => self.whole(x, &path, Change::Removed)?,
                (None, Some(y)) => self.whole(y, &path, Change::Added)?,
                (Some(x), Some(y)) => self.pair(x, y, &path)?,
                (None, None) => {}
            }
        }
        Ok(())
    }

    fn pair(&mut self, x: &Node, y: &Node, path: &Path) -> Result<()> {
        if x.kind != y.kind {
            self.emit(
                path,
                y.kind,
                Change::TypeChanged,
                file_size(x),
                file_size(y),
            );
            self.stats.modified += 1;
            return Ok(());
        }
        if x.kind == NodeKind::Dir {
            if !same_metadata(x, y) {
                self.metadata_change(x, y, path);
            }
            return match (x.subtree, y.subtree) {
                (Some(a), Some(b)) => self.trees(&a, &b, path),
                _ => Ok(()),
            };
        }
        if !same_content(x, y) {
            self.emit(path, x.kind, Change::Modified, file_size(x), file_size(y));
            self.stats.modified += 1;
        } else if !same_metadata(x, y) {
            self.metadata_change(x, y, path);
        }
        Ok(())
    }

    fn metadata_change(&mut self, x: &Node, y: &Node, path: &Path) {
        self.stats.metadata_only += 1;
        if self.metadata {
            self.emit(path, x.kind, Change::Metadata, file_size(x), file_size(y));
        }
    }

    /// An entry present on one side only: it and everything below it.
    fn whole(&mut self, n: &Node, path: &Path, change: Change) -> Result<()> {
        let size = file_size(n);
        let (old, new) = match change {
            Change::Removed => (size, None),
            _ => (None, size),
        };
        self.emit(path, n.kind, change, old, new);
        let bytes = size.unwrap_or(0);
        if change == Change::Removed {
            self.stats.removed += 1;
            self.stats.removed_bytes += bytes;
        } else {
            self.stats.added += 1;
            self.stats.added_bytes += bytes;
        }
        if let (NodeKind::Dir, Some(sub)) = (n.kind, n.subtree) {
            let tree: Tree = self.trees.tree(self.rt, &sub, path)?;
            for child in &tree.nodes {
                self.whole(child, &path.join(child.name.to_os()), change)?;
            }
        }
        Ok(())
    }

    fn emit(
        &mut self,
        path: &Path,
        kind: NodeKind,
        change: Change,
        old_size: Option<u64>,
        new_size: Option<u64>,
    ) {
        (self.visit)(&DiffEntry {
            path: display(path, kind),
            change,
            old_size,
            new_size,
        });
    }
}

/// The path under which a diff entry is listed, without the trailing `/`.
pub fn entry_path(e: &DiffEntry) -> PathBuf {
    PathBuf::from(e.path.trim_end_matches('/'))
}
