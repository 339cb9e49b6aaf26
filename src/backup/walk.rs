//! The walker: one thread that goes through the source paths in order and builds the new
//! snapshot's trees, bottom up. It compares each entry with the parent snapshot's tree at
//! the same place (read from the local cache or the repository) and, given the paths
//! that changed, carries untouched entries over without looking at them. How a single
//! entry becomes a node is [`super::entry`]'s job.

use super::Warning;
use super::plan::{Plan, ReadJob};
use super::reader::{FileRead, FileReader, StoredFile};
use super::roots::check_root;
use super::sink::{BlobSender, BlobSink};
use crate::cache::MetadataCache;
use crate::changes::ChangedPaths;
use crate::error::{Error, Result};
use crate::exclude::Excludes;
use crate::format::index::BlobKind;
use crate::format::name::ByteName;
use crate::format::snapshot::{Snapshot, Summary};
use crate::format::tree::{Node, NodeKind, Tree};
use crate::fsmeta;
use crate::hash::BlobId;
use crate::index::MasterIndex;
use crate::progress::{Phase, RunControl};
use crate::repo::Repository;
use crate::tree_loader::TreeLoader;
use crossbeam_channel::{Receiver, Sender};
use std::collections::{HashMap, HashSet};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::Ordering;
use tokio::runtime::Handle as Runtime;

/// Files a directory may have with readers still on them before the walker waits for
/// the first: bounds the walker's bookkeeping, not the readers' parallelism.
const MAX_PENDING_PER_DIR: usize = 256;

/// An entry of a directory being walked: a finished node, a file a reader has yet to
/// finish, or a file that was not stored (its warning already given).
pub(super) enum Slot {
    /// The node is complete.
    Ready(Node),
    /// Left out of the tree (already reported).
    Skipped,
    /// Waiting for a reader: the node so far, and where the reader's result comes.
    Pending {
        node: Node,
        path: PathBuf,
        had_parent: bool,
        reply: Receiver<Result<FileRead>>,
    },
}

/// What a finished walk hands back to the run.
pub(super) struct Walked {
    /// The new snapshot's root tree, or why the walk failed.
    pub(super) root: Result<BlobId>,
    /// Counts for the snapshot, the sink's blob counts included.
    pub(super) summary: Summary,
    /// Paths skipped or stored while changing.
    pub(super) warnings: Vec<Warning>,
    /// Every tree of the new snapshot, on a full walk (to trim the cache to them).
    pub(super) trees_seen: Option<HashSet<BlobId>>,
    /// Files with several hard links that were looked at.
    pub(super) multi_link_files: Vec<PathBuf>,
}

/// The walk of one backup, on its own thread: it builds every tree of the new snapshot,
/// compares each entry with the parent's and hands changed files to the readers.
pub(super) struct Walker<'a> {
    repo: &'a Repository,
    rt: &'a Runtime,
    /// What is stored: carried-over entries must still find their blobs in it.
    pub(super) index: &'a MasterIndex,
    sink: &'a BlobSink<'a>,
    /// The reader threads' queue.
    pub(super) readers: Sender<ReadJob>,
    /// For files the walker reads itself (hard links, whose content it remembers).
    pub(super) reader: FileReader<'a>,
    cache: Option<&'a MetadataCache>,
    /// Reads the parent's trees the cache lacks, straight from this repository, with
    /// their neighbours in one request (made on the first miss: it groups the index's
    /// trees by pack).
    parent_trees: Option<TreeLoader<'a>>,
    changed: Option<&'a ChangedPaths>,
    /// See [`BackupOptions::one_file_system`](super::BackupOptions::one_file_system).
    pub(super) one_file_system: bool,
    /// See [`BackupOptions::guard_roots`](super::BackupOptions::guard_roots).
    guard_roots: bool,
    /// Device of the source path being walked (for `one_file_system`).
    pub(super) dev: u64,
    /// Every tree of the new snapshot, on a full walk (to trim the cache to them).
    trees_seen: Option<HashSet<BlobId>>,
    /// Files with several hard links seen.
    pub(super) multi_link: Vec<PathBuf>,
    /// Stop flag and live counters.
    pub(super) control: &'a RunControl,
    excludes: &'a Excludes,
    /// What the first link of a file with several was stored as, by device and inode.
    pub(super) hardlinks: HashMap<(u64, u64), StoredFile>,
    /// Counts for the snapshot's summary.
    pub(super) summary: Summary,
    warnings: Vec<Warning>,
}

impl<'a> Walker<'a> {
    /// A walker for one run of `plan`: files go to the readers through `readers`, and
    /// blobs (trees, and files the walker reads itself) to the packer through `blobs`.
    pub(super) fn new(
        plan: &Plan<'a>,
        sink: &'a BlobSink<'a>,
        readers: Sender<ReadJob>,
        blobs: BlobSender,
    ) -> Self {
        let opts = plan.opts;
        Walker {
            repo: plan.repo,
            rt: plan.rt,
            index: plan.index,
            sink,
            readers,
            reader: FileReader::new(sink, blobs, &opts.control),
            cache: plan.cache,
            parent_trees: None,
            changed: plan.changed,
            one_file_system: opts.one_file_system,
            guard_roots: opts.guard_roots,
            dev: 0,
            trees_seen: plan.changed.is_none().then(HashSet::new),
            multi_link: Vec::new(),
            control: &opts.control,
            excludes: plan.excludes,
            hardlinks: HashMap::new(),
            summary: Summary::default(),
            warnings: Vec::new(),
        }
    }

    /// Walk every source path from `/` down, against the parent's tree, and hand back
    /// the root tree with what was counted. Consumes the walker: dropping it closes the
    /// readers' queue (and the walker's end of the blob channel) so that the pipeline
    /// behind it can drain.
    pub(super) fn walk_roots(mut self, roots: &[PathBuf], parent: Option<&Snapshot>) -> Walked {
        let parent_tree = parent.and_then(|p| self.load_tree(&p.tree));
        // No snapshot records `/` itself: its device now stands for then (the
        // root file system is the one thing that stays mounted).
        let slash = fs::metadata("/").map(|m| m.dev()).ok();
        let root = self.walk_virtual(Path::new("/"), roots, parent_tree.as_ref(), slash);
        let sink = self.sink;
        if root.is_err() {
            sink.abandoned.store(true, Ordering::Release);
        }
        self.control.progress.set_phase(Phase::Uploading);
        let mut summary = self.summary;
        summary.data_blobs = sink.data_blobs.load(Ordering::Relaxed);
        summary.tree_blobs = sink.tree_blobs.load(Ordering::Relaxed);
        summary.data_added = sink.data_added.load(Ordering::Relaxed);
        summary.data_read = sink.data_read.load(Ordering::Relaxed);
        Walked {
            root,
            summary,
            warnings: self.warnings,
            trees_seen: self.trees_seen,
            multi_link_files: self.multi_link,
        }
    }
}

impl Walker<'_> {
    /// Note a path that could not be stored (or part of it), for the report.
    pub(super) fn warn(&mut self, path: &Path, reason: impl Into<String>) {
        let reason = reason.into();
        tracing::debug!("{}: {reason}", path.display());
        self.warnings.push(Warning {
            path: path.to_path_buf(),
            reason,
            stored: false,
        });
    }

    /// A file that is in the snapshot only as read while it changed (its node marked).
    pub(super) fn warn_stored(&mut self, path: &Path, reason: String) {
        tracing::debug!("{}: {reason}", path.display());
        self.warnings.push(Warning {
            path: path.to_path_buf(),
            reason,
            stored: true,
        });
    }

    /// Store a tree or data blob this walk made (a tree also goes to the local cache and
    /// to the trees seen); refuses a tree too large for any reader to accept.
    pub(super) fn store_blob(&mut self, kind: BlobKind, plain: Vec<u8>) -> Result<BlobId> {
        if plain.len() > crate::pack::MAX_BLOB_LEN as usize {
            // Only a tree can be this large (chunks are at most 64 MiB); a reader would
            // refuse it, so refuse to write a snapshot that could not be restored.
            return Err(Error::InvalidInput(format!(
                "a directory listing of {} bytes exceeds the {}-byte limit for one tree: split the directory or exclude part of it",
                plain.len(),
                crate::pack::MAX_BLOB_LEN
            )));
        }
        let id = self.repo.keys().blob_id(&plain);
        if kind == BlobKind::Tree {
            if let Some(c) = self.cache {
                c.put_tree(self.repo.keys(), &id, &plain);
            }
            if let Some(seen) = &mut self.trees_seen {
                seen.insert(id);
            }
        }
        self.sink.store(&self.reader.tx, id, kind, &plain)?;
        Ok(id)
    }

    /// Whether what a carried-over entry references is still indexed (a prune may have
    /// removed the data of a forgotten parent). A tree that is indexed is whole: prune
    /// keeps everything below a tree any snapshot still uses.
    fn still_stored(&self, node: &Node) -> bool {
        node.subtree.is_none_or(|t| self.index.contains(&t))
            && node.content.iter().all(|b| self.index.contains(b))
    }

    /// One of the parent's trees, from the local cache or else the repository; `None`
    /// when it cannot be read, so that what is below it is compared as new.
    pub(super) fn load_tree(&mut self, id: &BlobId) -> Option<Tree> {
        if let Some(plain) = self.cache.and_then(|c| c.tree(self.repo.keys(), id))
            && let Ok(tree) = Tree::from_plain(&plain)
        {
            return Some(tree);
        }
        let (repo, index) = (self.repo, self.index);
        let loader = self
            .parent_trees
            .get_or_insert_with(|| TreeLoader::for_repo(repo, index));
        // A tree that cannot be read makes the walker read the files again, which loses
        // nothing.
        let plain = match loader.load(self.rt, id) {
            Ok(p) => {
                if let Some(c) = self.cache {
                    c.put_tree(self.repo.keys(), id, &p);
                }
                p
            }
            Err(e) => {
                tracing::warn!("parent tree {id:?} unreadable, reading files again: {e}");
                return None;
            }
        };
        Tree::from_plain(&plain).ok()
    }

    /// The tree of `prefix`, holding only the parts that lead to `roots`. `prefix_then`
    /// is the device `prefix` was on in the parent snapshot, where known.
    fn walk_virtual(
        &mut self,
        prefix: &Path,
        roots: &[PathBuf],
        parent: Option<&Tree>,
        prefix_then: Option<u64>,
    ) -> Result<BlobId> {
        if roots.iter().any(|r| r == prefix) {
            self.dev = fs::metadata(prefix).map(|m| m.dev()).unwrap_or(0);
            return self.walk_dir(prefix, parent);
        }
        let mut children: Vec<&std::ffi::OsStr> = roots
            .iter()
            .filter_map(|r| r.strip_prefix(prefix).ok()?.components().next())
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n),
                _ => None,
            })
            .collect();
        children.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        children.dedup();
        let mut tree = Tree::default();
        for name in children {
            let path = prefix.join(name);
            let prev = find(parent, name.as_bytes());
            let node = if roots.contains(&path) {
                let meta = match fs::symlink_metadata(&path) {
                    Ok(m) => m,
                    Err(e) => {
                        self.warn(&path, format!("cannot read metadata: {e}"));
                        continue;
                    }
                };
                if self.excludes.excludes_root(&path, &meta) {
                    continue;
                }
                self.dev = meta.dev();
                if self.guard_roots {
                    check_root(&path, &meta, prev, prefix, prefix_then, |id| {
                        self.load_tree(id)
                    })?;
                }
                match self.node_for(&path, ByteName::from_os(name), &meta, prev)? {
                    Some(slot) => self.resolve(slot)?,
                    None => None,
                }
            } else {
                // An intermediate component is stored as the directory it leads to, even
                // when it is a symlink (read_dir below follows it too).
                let meta = fs::metadata(&path).map_err(|e| Error::io("stat", &path, e))?;
                let prev_tree = match prev.and_then(|n| n.subtree) {
                    Some(id) => self.load_tree(&id),
                    None => None,
                };
                let sub: Vec<PathBuf> = roots
                    .iter()
                    .filter(|r| r.starts_with(&path))
                    .cloned()
                    .collect();
                let mut node =
                    fsmeta::node_from_metadata(ByteName::from_os(name), NodeKind::Dir, &meta);
                let then = prev.map(|p| p.device).filter(|d| *d != 0);
                node.subtree = Some(self.walk_virtual(&path, &sub, prev_tree.as_ref(), then)?);
                self.summary.dirs_processed += 1;
                Some(node)
            };
            if let Some(n) = node {
                tree.nodes.push(n);
            }
        }
        self.store_blob(BlobKind::Tree, tree.to_plain())
    }

    /// Store a real directory's entries; returns its tree id.
    pub(super) fn walk_dir(&mut self, dir: &Path, parent: Option<&Tree>) -> Result<BlobId> {
        let mut entries: Vec<(std::ffi::OsString, PathBuf)> = Vec::new();
        match fs::read_dir(dir) {
            Ok(rd) => {
                for e in rd {
                    match e {
                        Ok(e) => entries.push((e.file_name(), e.path())),
                        Err(err) => self.warn(dir, format!("cannot list directory: {err}")),
                    }
                }
            }
            Err(e) => self.warn(dir, format!("cannot list directory: {e}")),
        }
        entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        // A marker file (`--exclude-caches`, `--exclude-if-present`) leaves out everything
        // here but itself, carried-over entries included.
        let marks = self.excludes.marks(dir);
        for why in &marks.problems {
            tracing::warn!("{why}");
        }
        // Entries in order; files still being read are resolved from the front once too
        // many are outstanding, so a huge directory does not hold a result slot per file.
        let mut slots: Vec<Slot> = Vec::with_capacity(entries.len());
        let mut pending = std::collections::VecDeque::new();
        for (name, path) in entries {
            self.control.check()?;
            while pending.len() >= MAX_PENDING_PER_DIR {
                let Some(at) = pending.pop_front() else { break };
                let slot = std::mem::replace(&mut slots[at], Slot::Skipped);
                slots[at] = self.resolve(slot)?.map_or(Slot::Skipped, Slot::Ready);
            }
            if marks.excludes(&name) || self.excludes.matches(&path, &name) {
                continue;
            }
            if let Some(changed) = self.changed
                && !changed.touches(&path)
                && let Some(prev) = find(parent, name.as_bytes())
                && !prev.changing
                && self.still_stored(prev)
            {
                // Nothing was reported here since the parent snapshot: carry it over
                // (unless the size limit leaves it out now).
                if !(prev.kind == NodeKind::File && self.excludes.too_large(prev.size)) {
                    slots.push(Slot::Ready(prev.clone()));
                }
                continue;
            }
            let meta = match fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(e) => {
                    self.warn(&path, format!("vanished or unreadable: {e}"));
                    continue;
                }
            };
            if self.excludes.too_large_entry(&meta) {
                continue;
            }
            let prev = find(parent, name.as_bytes());
            if let Some(slot) = self.node_for(&path, ByteName::from_os(&name), &meta, prev)? {
                if matches!(slot, Slot::Pending { .. }) {
                    pending.push_back(slots.len());
                }
                slots.push(slot);
            }
        }
        // In order: waits for each file still being read.
        let mut tree = Tree::default();
        for slot in slots {
            if let Some(node) = self.resolve(slot)? {
                tree.nodes.push(node);
            }
        }
        self.count_removed(parent, &tree);
        self.store_blob(BlobKind::Tree, tree.to_plain())
    }

    /// Count, for the summary, the files of the parent's directory that the new one
    /// lacks: a file gone (deleted, excluded, unreadable) or now something else, and every
    /// file below a directory gone. Only a full walk counts them: a walk pruned to the
    /// changed paths never looks at most of the tree. A directory in both is counted when
    /// the walk goes into it; what is below a directory gone is read from the cache or the
    /// repository, without recursion however deep it is.
    fn count_removed(&mut self, parent: Option<&Tree>, tree: &Tree) {
        let Some(parent) = parent.filter(|_| self.changed.is_none()) else {
            return;
        };
        let mut gone_dirs = Vec::new();
        for old in &parent.nodes {
            if find(Some(tree), &old.name.0).is_some_and(|now| now.kind == old.kind) {
                continue;
            }
            match old.kind {
                NodeKind::File => self.summary.files_removed += 1,
                NodeKind::Dir => gone_dirs.extend(old.subtree),
                _ => {}
            }
        }
        while let Some(id) = gone_dirs.pop() {
            let Some(below) = self.load_tree(&id) else {
                continue;
            };
            for n in &below.nodes {
                match n.kind {
                    NodeKind::File => self.summary.files_removed += 1,
                    NodeKind::Dir => gone_dirs.extend(n.subtree),
                    _ => {}
                }
            }
        }
    }
}

/// The entry called `name` in one of the parent's trees (kept sorted by name).
fn find<'t>(tree: Option<&'t Tree>, name: &[u8]) -> Option<&'t Node> {
    let t = tree?;
    t.nodes
        .binary_search_by(|n| n.name.0.as_slice().cmp(name))
        .ok()
        .map(|i| &t.nodes[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::backup::{BackupOptions, BackupReport, backup};
    use crate::hash::SnapshotId;
    use crate::repo::test_repo as repo;

    fn run_backup(
        repo: &Repository,
        rt: &tokio::runtime::Runtime,
        src: &Path,
        parent: Option<SnapshotId>,
        changed: Option<ChangedPaths>,
    ) -> BackupReport {
        let mut o = BackupOptions::new(
            vec![src.to_path_buf()],
            "h".into(),
            "u".into(),
            "2026-01-01T00:00:00Z".into(),
        );
        o.parent = parent;
        o.changed = changed;
        backup(repo, rt.handle(), &o).expect("backup")
    }

    /// The tree of `path` inside the snapshot tree `root`. The tests compare the source's
    /// own tree: the directories above it (`/tmp` and the like) are recorded too, and
    /// other tests running meanwhile change them.
    fn tree_of(
        repo: &Repository,
        rt: &tokio::runtime::Runtime,
        root: &BlobId,
        path: &Path,
    ) -> BlobId {
        let index = rt.block_on(repo.load_index()).expect("index");
        let loader = TreeLoader::for_repo(repo, &index);
        let mut id = *root;
        for part in path.components().skip(1) {
            let tree = loader.tree(rt.handle(), &id, path).expect("tree");
            let node = tree
                .nodes
                .iter()
                .find(|n| n.name.to_os() == part.as_os_str())
                .expect("the path is in the snapshot");
            id = node.subtree.expect("a directory");
        }
        id
    }

    /// The pruned walk must produce exactly the tree a full walk produces, as long as
    /// every change is in the set; and it must really skip what is not in the set.
    #[test]
    fn a_walk_pruned_to_the_changed_paths_equals_a_full_walk() {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let tmp = tempfile::tempdir().expect("tempdir");
        let src = tmp.path().join("src");
        for d in ["a/b/c", "d/e", "g"] {
            fs::create_dir_all(src.join(d)).expect("mkdir");
        }
        fs::write(src.join("a/b/c/file1"), b"one").expect("write");
        fs::write(src.join("a/b/keep"), b"keep").expect("write");
        fs::write(src.join("d/e/x"), b"x").expect("write");
        fs::write(src.join("f.txt"), b"f").expect("write");
        fs::write(src.join("g/untouched"), b"g").expect("write");
        let repo = repo(&rt, &tmp.path().join("repo"));
        let first = run_backup(&repo, &rt, &src, None, None);

        let mut changed = ChangedPaths::new();
        let mut note = |rel: &str| changed.insert(&src.join(rel));
        fs::write(src.join("a/b/c/file1"), b"one, longer").expect("modify");
        note("a/b/c/file1");
        fs::write(src.join("d/new.txt"), b"new").expect("create");
        note("d/new.txt");
        fs::rename(src.join("a/b"), src.join("a/b2")).expect("rename");
        note("a/b");
        note("a/b2");
        fs::remove_file(src.join("f.txt")).expect("delete");
        note("f.txt");
        fs::set_permissions(
            src.join("d/e"),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .expect("chmod");
        note("d/e");

        let pruned = run_backup(&repo, &rt, &src, Some(first.id), Some(changed.clone()));
        let full = run_backup(&repo, &rt, &src, Some(first.id), None);
        let src_tree = |r: &BackupReport| tree_of(&repo, &rt, &r.snapshot.tree, &src);
        assert_eq!(src_tree(&pruned), src_tree(&full));
        assert_ne!(src_tree(&pruned), src_tree(&first));

        // A change the set does not mention is carried over unseen (the periodic full
        // rescan is what finds such a change).
        fs::write(
            src.join("g/untouched"),
            b"changed behind the watcher's back",
        )
        .expect("w");
        let pruned = run_backup(&repo, &rt, &src, Some(full.id), Some(changed));
        let full2 = run_backup(&repo, &rt, &src, Some(full.id), None);
        assert_ne!(src_tree(&pruned), src_tree(&full2));
        // Only the files on changed paths were looked at.
        let looked_at = pruned.snapshot.summary.map(|s| s.total_files_processed);
        // a/b2/c/file1, a/b2/keep (below a renamed directory), d/e/x (below a changed
        // directory) and d/new.txt; not g/untouched.
        assert_eq!(looked_at, Some(4));
    }

    /// A full walk counts the parent's files the new snapshot lacks: a file deleted, a
    /// file become a directory, and every file below a directory deleted.
    #[test]
    fn a_full_walk_counts_the_files_removed_since_the_parent() {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let tmp = tempfile::tempdir().expect("tempdir");
        let src = tmp.path().join("src");
        for d in ["gone/deeper", "stays"] {
            fs::create_dir_all(src.join(d)).expect("mkdir");
        }
        for f in ["gone/a", "gone/deeper/b", "stays/c", "stays/d", "e", "f"] {
            fs::write(src.join(f), f).expect("write");
        }
        let repo = repo(&rt, &tmp.path().join("repo"));
        let removed = |r: &BackupReport| r.snapshot.summary.as_ref().map(|s| s.files_removed);
        let first = run_backup(&repo, &rt, &src, None, None);
        assert_eq!(removed(&first), Some(0));

        fs::remove_dir_all(src.join("gone")).expect("rm");
        fs::remove_file(src.join("stays/d")).expect("rm");
        fs::remove_file(src.join("f")).expect("rm");
        fs::create_dir(src.join("f")).expect("mkdir");
        let second = run_backup(&repo, &rt, &src, Some(first.id), None);
        // gone/a, gone/deeper/b, stays/d and the file f.
        assert_eq!(removed(&second), Some(4));
        let third = run_backup(&repo, &rt, &src, Some(second.id), None);
        assert_eq!(removed(&third), Some(0));
    }
}
