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
use std::ops::ControlFlow;
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
/// only changes only if `metadata` is set). A `Break` from `visit` (its reader went away)
/// stops the comparison there, reading no more trees; the totals then count what was
/// compared so far. Must be called off the runtime's threads.
pub fn diff(
    repo: &Repository,
    rt: &Runtime,
    index: &MasterIndex,
    a: &BlobId,
    b: &BlobId,
    metadata: bool,
    visit: &mut dyn FnMut(&DiffEntry) -> ControlFlow<()>,
) -> Result<DiffStats> {
    let mut d = Differ {
        trees: TreeLoader::for_repo(repo, index),
        rt,
        metadata,
        visit,
        stopped: false,
        stats: DiffStats::default(),
    };
    // Iterative: a stack of what is left to compare, each directory's entries pushed in
    // reverse so they come off in name order, and everything below one entry before the
    // next. A very deep tree (100,000 levels) needs memory, not stack.
    let mut todo = vec![Task::Trees(*a, *b, PathBuf::from("/"))];
    while let Some(task) = todo.pop() {
        if d.stopped {
            break;
        }
        let start = todo.len();
        match task {
            Task::Trees(a, b, at) => d.trees(&a, &b, &at, &mut todo)?,
            Task::Pair(pair, path) => d.pair(&pair.0, &pair.1, &path, &mut todo),
            Task::Whole(n, path, change) => d.whole(&n, &path, change, &mut todo)?,
        }
        todo[start..].reverse();
    }
    Ok(d.stats)
}

/// What is left to compare.
enum Task {
    /// Two directories' trees, at a path.
    Trees(BlobId, BlobId, PathBuf),
    /// An entry present on both sides.
    Pair(Box<(Node, Node)>, PathBuf),
    /// An entry present on one side only, and everything below it.
    Whole(Node, PathBuf, Change),
}

struct Differ<'a, 'v> {
    /// Each tree with its neighbours in one request.
    trees: TreeLoader<'a>,
    rt: &'a Runtime,
    metadata: bool,
    visit: &'v mut dyn FnMut(&DiffEntry) -> ControlFlow<()>,
    /// `visit` asked to stop.
    stopped: bool,
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
    /// Compare two trees: their entries go onto `todo`, in name order.
    fn trees(&mut self, a: &BlobId, b: &BlobId, at: &Path, todo: &mut Vec<Task>) -> Result<()> {
        if a == b {
            return Ok(());
        }
        let ta = self.trees.tree(self.rt, a, at)?;
        let tb = self.trees.tree(self.rt, b, at)?;
        let mut both: BTreeMap<Vec<u8>, (Option<Node>, Option<Node>)> = BTreeMap::new();
        for n in ta.nodes {
            let key = n.name.0.clone();
            both.entry(key).or_default().0 = Some(n);
        }
        for n in tb.nodes {
            let key = n.name.0.clone();
            both.entry(key).or_default().1 = Some(n);
        }
        for (x, y) in both.into_values() {
            let name = x
                .as_ref()
                .or(y.as_ref())
                .map(|n| n.name.to_os())
                .unwrap_or_default();
            let path = at.join(name);
            match (x, y) {
                (Some(x), None) => todo.push(Task::Whole(x, path, Change::Removed)),
                (None, Some(y)) => todo.push(Task::Whole(y, path, Change::Added)),
                (Some(x), Some(y)) => todo.push(Task::Pair(Box::new((x, y)), path)),
                (None, None) => {}
            }
        }
        Ok(())
    }

    fn pair(&mut self, x: &Node, y: &Node, path: &Path, todo: &mut Vec<Task>) {
        if x.kind != y.kind {
            self.emit(
                path,
                y.kind,
                Change::TypeChanged,
                file_size(x),
                file_size(y),
            );
            self.stats.modified += 1;
            return;
        }
        if x.kind == NodeKind::Dir {
            if !same_metadata(x, y) {
                self.metadata_change(x, y, path);
            }
            if let (Some(a), Some(b)) = (x.subtree, y.subtree) {
                todo.push(Task::Trees(a, b, path.to_path_buf()));
            }
            return;
        }
        if !same_content(x, y) {
            self.emit(path, x.kind, Change::Modified, file_size(x), file_size(y));
            self.stats.modified += 1;
        } else if !same_metadata(x, y) {
            self.metadata_change(x, y, path);
        }
    }

    fn metadata_change(&mut self, x: &Node, y: &Node, path: &Path) {
        self.stats.metadata_only += 1;
        if self.metadata {
            self.emit(path, x.kind, Change::Metadata, file_size(x), file_size(y));
        }
    }

    /// An entry present on one side only: it now, and everything below it onto `todo`.
    fn whole(&mut self, n: &Node, path: &Path, change: Change, todo: &mut Vec<Task>) -> Result<()> {
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
            for child in tree.nodes {
                let child_path = path.join(child.name.to_os());
                todo.push(Task::Whole(child, child_path, change));
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
        if self.stopped {
            return;
        }
        let flow = (self.visit)(&DiffEntry {
            path: display(path, kind),
            change,
            old_size,
            new_size,
        });
        self.stopped = flow.is_break();
    }
}

/// The path under which a diff entry is listed, without the trailing `/`.
pub fn entry_path(e: &DiffEntry) -> PathBuf {
    PathBuf::from(e.path.trim_end_matches('/'))
}
