//! The snapshot walk of a check: every snapshot's trees, depth first, proving each
//! tree and file blob indexed at an undamaged location and each tree readable, and
//! tracing what is not to the snapshot paths that need it ([`Affected`]). It runs after
//! the pack checks, so blobs those found damaged count as unusable here.

use super::{Affected, CheckReport, Finding};
use crate::error::Error;
use crate::format::tree::{NodeKind, Tree};
use crate::hash::{BlobId, SnapshotId};
use crate::index::MasterIndex;
use crate::repo::Repository;
use crate::tree_loader::TreeLoader;
use std::collections::HashSet;
use std::path::Path;
use tokio::runtime::Handle as Runtime;

/// Walk every snapshot of `snapshot_ids` (one forgotten since it was listed is passed
/// over), counting them in `report` and adding what is damaged below each.
pub(super) fn walk_snapshots(
    repo: &Repository,
    rt: &Runtime,
    index: &MasterIndex,
    snapshot_ids: Vec<SnapshotId>,
    report: &mut CheckReport,
) {
    // Snapshots and trees, each tree with its neighbours in one request (one GET per
    // tree took a round trip each); a tree that fails there is read again on its own, and
    // that error is the one reported.
    let trees = TreeLoader::for_repo(repo, index);
    let mut walker = TreeWalk {
        trees: &trees,
        rt,
        index,
        clean: HashSet::new(),
        report,
    };
    // Snapshots are small; they are read several at a time, in order, ahead of the walk.
    let snapshots = rt.block_on(repo.load_snapshots(snapshot_ids));
    for (id, snapshot) in snapshots {
        match snapshot {
            // Forgotten after the listing (a `forget` running meanwhile): not damage.
            Err(Error::Backend(e)) if e.is_not_found() => {
                tracing::debug!("snapshots/{id} was forgotten after it was listed");
                continue;
            }
            Ok(s) => {
                walker.report.snapshots += 1;
                walker.walk(&s.tree, Path::new("/"), id);
            }
            Err(e) => {
                walker.report.snapshots += 1;
                walker.report.problems.push(Finding {
                    object: format!("snapshot {}", id.short()),
                    message: e.to_string(),
                });
            }
        }
    }
}

/// One walk over the trees of a check's snapshots: what it reads trees with and
/// looks blobs up in, and the report it adds to.
struct TreeWalk<'a> {
    trees: &'a TreeLoader<'a>,
    rt: &'a Runtime,
    index: &'a MasterIndex,
    /// Trees known to have no damage below them.
    clean: HashSet<BlobId>,
    report: &'a mut CheckReport,
}

impl TreeWalk<'_> {
    /// Whether the blob is usable: indexed, and at least one location undamaged.
    fn usable(&self, id: &BlobId) -> bool {
        match self.index.get(id) {
            None => false,
            Some(loc) => !self
                .report
                .damaged
                .get(id)
                .is_some_and(|locs| locs.contains(&(loc.pack, loc.offset))),
        }
    }

    /// Record a referenced blob that no index lists, once per blob.
    fn note_missing(&mut self, blob: &BlobId) {
        if self.index.get(blob).is_none() && self.report.missing.insert(*blob) {
            self.report.problems.push(Finding {
                object: format!("blob {}", blob.short()),
                message: "is referenced but in no index".into(),
            });
        }
    }

    fn affected(&mut self, snap: SnapshotId, path: &Path, blob: &BlobId) {
        self.note_missing(blob);
        self.report.affected.push(Affected {
            snapshot: snap.short(),
            path: path.to_string_lossy().into_owned(),
            blob: blob.to_hex(),
        });
    }

    /// Walk a tree; returns whether anything below is damaged. Entries are looked at in
    /// name order, each directory's below it before the next entry, as a recursive walk
    /// would; but iteratively, one frame per directory level holding that level's
    /// entries still to look at, so a hostile or very deep tree (100,000 levels) costs
    /// memory in proportion to its depth, never the thread's stack. The current path is
    /// one buffer, a name pushed per level.
    fn walk(&mut self, root: &BlobId, at: &Path, snap: SnapshotId) -> bool {
        let mut path = at.to_path_buf();
        let mut stack: Vec<WalkFrame> = match self.enter(root, &path, snap) {
            Entered::Done(damaged) => return damaged,
            Entered::Frame(f) => vec![f],
        };
        loop {
            let Some(top) = stack.last_mut() else {
                return false;
            };
            let Some(node) = top.nodes.next() else {
                let done = stack
                    .pop()
                    .unwrap_or_else(|| unreachable!("a frame was on top"));
                if !done.damaged {
                    self.clean.insert(done.id);
                }
                match stack.last_mut() {
                    Some(parent) => {
                        parent.damaged |= done.damaged;
                        path.pop();
                    }
                    None => return done.damaged,
                }
                continue;
            };
            let tree_id = top.id;
            match node.kind {
                NodeKind::Dir => match node.subtree {
                    Some(sub) => {
                        path.push(node.name.to_os());
                        match self.enter(&sub, &path, snap) {
                            Entered::Done(damaged) => {
                                path.pop();
                                if let Some(top) = stack.last_mut() {
                                    top.damaged |= damaged;
                                }
                            }
                            Entered::Frame(f) => stack.push(f),
                        }
                    }
                    None => {
                        self.report.problems.push(Finding {
                            object: format!("tree {} ({})", tree_id.short(), path.display()),
                            message: format!(
                                "directory {} has no subtree",
                                path.join(node.name.to_os()).display()
                            ),
                        });
                        if let Some(top) = stack.last_mut() {
                            top.damaged = true;
                        }
                    }
                },
                NodeKind::File => {
                    // Listed once, with its first bad blob: a hostile content list of a
                    // million missing ids is one affected file, not a million entries.
                    // Every missing blob is still recorded once for repair.
                    let mut listed = false;
                    let mut damaged = false;
                    for b in &node.content {
                        if self.usable(b) {
                            continue;
                        }
                        damaged = true;
                        if listed {
                            self.note_missing(b);
                        } else {
                            self.affected(snap, &path.join(node.name.to_os()), b);
                            listed = true;
                        }
                    }
                    if damaged && let Some(top) = stack.last_mut() {
                        top.damaged = true;
                    }
                }
                _ => {}
            }
        }
    }

    /// Look at one tree before walking its entries: whether it is known clean,
    /// unusable or unreadable (then nothing below it is walked), or its entries.
    fn enter(&mut self, id: &BlobId, path: &Path, snap: SnapshotId) -> Entered {
        if self.clean.contains(id) {
            return Entered::Done(false);
        }
        if !self.usable(id) {
            self.affected(snap, path, id);
            return Entered::Done(true);
        }
        match self.trees.load(self.rt, id).and_then(|p| {
            Tree::from_plain(&p)
                .map_err(|e| Error::corrupt_format(format!("tree {}", id.short()), e))
        }) {
            Ok(tree) => Entered::Frame(WalkFrame {
                id: *id,
                damaged: false,
                nodes: tree.nodes.into_iter(),
            }),
            Err(e) => {
                let proven = matches!(e, Error::Corrupt { .. })
                    || matches!(&e, Error::Backend(b) if b.is_not_found());
                if proven && let Some(loc) = self.index.get(id) {
                    let at = (loc.pack, loc.offset);
                    self.report.damaged.entry(*id).or_default().push(at);
                }
                self.report.problems.push(Finding {
                    object: format!("tree {} ({})", id.short(), path.display()),
                    message: e.to_string(),
                });
                self.affected(snap, path, id);
                Entered::Done(true)
            }
        }
    }
}

/// One directory level of [`TreeWalk::walk`].
struct WalkFrame {
    id: BlobId,
    /// Whether anything seen so far below it is damaged.
    damaged: bool,
    /// Its entries still to look at, in name order.
    nodes: std::vec::IntoIter<crate::format::tree::Node>,
}

/// What looking at a tree came to.
enum Entered {
    /// Nothing to walk below it; whether it is damaged.
    Done(bool),
    /// Its entries are to be walked.
    Frame(WalkFrame),
}
