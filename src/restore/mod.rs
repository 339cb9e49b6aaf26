//! Restore a snapshot (or parts of it) into a target directory.
//!
//! Trees are validated on load ([`Tree::from_plain`]), so no entry name can climb out of
//! the target; existing entries are never followed through symlinks. One thread walks the
//! trees (read ahead several at a time by [`TreeLoader`]) and creates directories,
//! links, special files and empty regular files; the contents of regular files are then
//! read pack by pack, in merged ranged reads with several in flight, and written at their
//! offsets ([`packs::Batch`]), zero chunks of sparse files as holes. Directory metadata is
//! applied last, deepest first, once nothing more is created inside. A damaged object
//! fails only the entries that need it; each is reported by path and the run ends with an
//! error count.

mod holes;
mod packs;

use crate::error::{Error, Result};
use crate::format::tree::{Node, NodeKind, Tree};
use crate::fsmeta;
use crate::hash::BlobId;
use crate::heal::{BlobReader, Copy, Healed};
use crate::index::MasterIndex;
use crate::progress::Progress;
use crate::repo::Repository;
use crate::tree_loader::TreeLoader;
use crossbeam_channel::{Sender, bounded};
use packs::Batch;
use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::runtime::Handle as Runtime;

/// Where and what to restore.
#[derive(Clone, Debug)]
pub struct RestoreOptions {
    /// Target directory; created if missing.
    pub target: PathBuf,
    /// Snapshot paths to restore (with their contents); empty means everything.
    pub includes: Vec<PathBuf>,
    /// Allow a non-empty target and replace entries in it.
    pub overwrite: bool,
    /// Live counters for a progress display (files and bytes written, current file).
    pub progress: Arc<Progress>,
}

/// What a restore did.
#[derive(Debug, Default)]
pub struct RestoreReport {
    /// Files written (hard links included).
    pub files: u64,
    /// Directories created.
    pub dirs: u64,
    /// Other entries (symlinks, special files).
    pub others: u64,
    /// File bytes written.
    pub bytes: u64,
    /// Entries that could not be restored, with the reason.
    pub errors: Vec<(PathBuf, String)>,
    /// Blobs the primary repository could not serve and a copy did.
    pub healed: Vec<Healed>,
    /// Files restored as the backup stored them while they kept changing (`changing` in
    /// their nodes): their content may mix older and newer bytes, so the user is told.
    pub changing: Vec<PathBuf>,
}

/// Restore the tree `root` into `opts.target`. Must be called from a thread that is not
/// driving the tokio runtime.
pub fn restore(
    repo: &Repository,
    rt: &Runtime,
    index: &MasterIndex,
    root: &BlobId,
    opts: &RestoreOptions,
) -> Result<RestoreReport> {
    let reader = BlobReader::alone(Copy { repo, index });
    restore_with(&reader, rt, root, opts)
}

/// Restore reading blobs through `reader`, which may heal from copies of the repository.
pub fn restore_with(
    reader: &BlobReader<'_>,
    rt: &Runtime,
    root: &BlobId,
    opts: &RestoreOptions,
) -> Result<RestoreReport> {
    prepare_target(&opts.target, opts.overwrite)?;
    // One loader for the includes' paths and the walk: the trees the check reads (with
    // their neighbours) are the first the walk needs.
    let trees = TreeLoader::new(reader);
    if !opts.includes.is_empty() {
        check_includes(&trees, rt, root, &opts.includes)?;
    }
    let shared = Shared {
        reader,
        rt,
        chown: fsmeta::can_chown(),
        report: Mutex::new(RestoreReport::default()),
        progress: &opts.progress,
    };
    // One batch is written while the walk fills the next: the walk (tree reads, file
    // creation) overlaps the content reads, and memory holds at most two batches.
    let walked = std::thread::scope(|s| {
        let (batches, queue) = bounded::<Batch>(0);
        let shared = &shared;
        s.spawn(move || {
            for mut b in queue.iter() {
                b.run(shared);
            }
        });
        let mut r = Restorer {
            shared,
            trees: &trees,
            opts,
            links: HashMap::new(),
            dirs: Vec::new(),
            batch: Batch::first(),
            batches,
        };
        let walked = r
            .load_tree(root, Path::new("/"))
            .map(|tree| r.restore_tree(&tree, Path::new("/"), &opts.target));
        let Restorer {
            dirs,
            batch,
            batches,
            ..
        } = r;
        let sent = batches.send(batch);
        // Closing the queue lets the runner finish; the scope waits for it.
        drop(batches);
        match sent {
            Ok(()) => walked.map(|()| dirs),
            Err(_) => Err(Error::Internal("the restore writer stopped".into())),
        }
    });
    let dirs = walked?;
    for (dest, node) in dirs.iter().rev() {
        if let Err(e) = fsmeta::apply_metadata(dest, node, shared.chown) {
            shared.fail(dest, Error::io("set metadata of", dest, e));
        }
    }
    // One file-system-wide flush instead of an fsync per file; a write-back error
    // (EIO, ENOSPC on a network file system) must not end in a successful restore.
    let dir = fs::File::open(&opts.target).map_err(|e| Error::io("open", &opts.target, e))?;
    {
        use std::os::fd::AsRawFd;
        // SAFETY: `dir` is an open descriptor for the duration of the call.
        if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
            return Err(Error::io("flush", &opts.target, io::Error::last_os_error()));
        }
    }
    let mut report = shared.report.into_inner().unwrap_or_default();
    report.healed = reader.healed();
    Ok(report)
}

/// Every `--include` must name something in the snapshot: a typo must not end in an
/// empty, successful restore.
fn check_includes(
    trees: &TreeLoader<'_>,
    rt: &Runtime,
    root: &BlobId,
    includes: &[PathBuf],
) -> Result<()> {
    for inc in includes {
        let found = inc == Path::new("/") || crate::ls::lookup(trees, rt, root, inc)?.is_some();
        if !found {
            return Err(Error::InvalidInput(format!(
                "--include {} is not in the snapshot: list it with `cairn ls SNAPSHOT`",
                inc.display()
            )));
        }
    }
    Ok(())
}

fn prepare_target(target: &Path, overwrite: bool) -> Result<()> {
    match fs::symlink_metadata(target) {
        Ok(m) if m.is_dir() => {
            let mut rd = fs::read_dir(target).map_err(|e| Error::io("list", target, e))?;
            if rd.next().is_some() && !overwrite {
                return Err(Error::TargetNotEmpty(target.to_path_buf()));
            }
            Ok(())
        }
        Ok(_) => Err(Error::InvalidInput(format!(
            "restore target {} exists and is not a directory: choose a directory",
            target.display()
        ))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(target).map_err(|e| Error::io("create", target, e))
        }
        Err(e) => Err(Error::io("stat", target, e)),
    }
}

/// What the walker and the file writers share.
struct Shared<'a> {
    reader: &'a BlobReader<'a>,
    rt: &'a Runtime,
    chown: bool,
    report: Mutex<RestoreReport>,
    progress: &'a Progress,
}

struct Restorer<'a, 's> {
    shared: &'s Shared<'a>,
    opts: &'a RestoreOptions,
    links: HashMap<(u64, u64), PathBuf>,
    /// Directories created, in creation order, for metadata at the end.
    dirs: Vec<(PathBuf, Node)>,
    /// Regular files created and waiting for their contents.
    batch: Batch,
    /// Full batches go to the thread that writes them.
    batches: Sender<Batch>,
    trees: &'s TreeLoader<'a>,
}

/// Whether a restore with these `--include` paths takes the entry at `snap_path`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Selection {
    /// Inside an included path: restore everything below.
    All,
    /// An ancestor of an included path: create it, descend selectively.
    Ancestor,
    /// Not wanted.
    Skip,
}

/// The one rule for what a restore with `includes` (empty: everything) takes; `--verify`
/// reads back by the same rule, so it checks exactly what was restored.
pub fn select(includes: &[PathBuf], snap_path: &Path) -> Selection {
    if includes.is_empty() || includes.iter().any(|i| snap_path.starts_with(i)) {
        Selection::All
    } else if includes.iter().any(|i| i.starts_with(snap_path)) {
        Selection::Ancestor
    } else {
        Selection::Skip
    }
}

impl Restorer<'_, '_> {
    fn select(&self, snap_path: &Path) -> Selection {
        select(&self.opts.includes, snap_path)
    }

    fn load_tree(&self, id: &BlobId, snap_path: &Path) -> Result<Tree> {
        let plain = self.trees.load(self.shared.rt, id)?;
        Tree::from_plain(&plain).map_err(|e| {
            Error::corrupt_format(format!("tree {} of {}", id.short(), snap_path.display()), e)
        })
    }

    fn restore_tree(&mut self, tree: &Tree, snap_dir: &Path, dest_dir: &Path) {
        for node in &tree.nodes {
            let name = node.name.to_os();
            let snap_path = snap_dir.join(&name);
            let dest = dest_dir.join(&name);
            let sel = self.select(&snap_path);
            if matches!(sel, Selection::Skip) {
                continue;
            }
            if let Err(e) = self.restore_node(node, &snap_path, &dest, sel) {
                self.shared.fail(&dest, e);
            }
        }
    }

    fn restore_node(
        &mut self,
        node: &Node,
        snap_path: &Path,
        dest: &Path,
        sel: Selection,
    ) -> Result<()> {
        if matches!(sel, Selection::Ancestor) && node.kind != NodeKind::Dir {
            return Ok(());
        }
        self.clear_for(dest, node.kind == NodeKind::Dir)?;
        match node.kind {
            NodeKind::Dir => {
                // Only an overwrite finds directories already there (`clear_for` keeps
                // them); otherwise the target was empty, and an entry that appeared
                // since fails the creation. Created 0700 until its real mode is set at
                // the end: files restored inside are never readable by others in
                // between, whatever their own modes.
                if !self.opts.overwrite || fs::symlink_metadata(dest).is_err() {
                    fs::DirBuilder::new()
                        .mode(0o700)
                        .create(dest)
                        .map_err(|e| Error::io("create directory", dest, e))?;
                }
                self.shared.count(|r| r.dirs += 1);
                let mut meta = node.clone();
                meta.content.clear();
                self.dirs.push((dest.to_path_buf(), meta));
                let id = node.subtree.ok_or_else(|| Error::Corrupt {
                    object: format!("tree entry {}", snap_path.display()),
                    reason: "directory without subtree".into(),
                })?;
                match self.load_tree(&id, snap_path) {
                    Ok(t) => self.restore_tree(&t, snap_path, dest),
                    Err(e) => self.shared.fail(dest, e),
                }
                // Its metadata comes at the end, once nothing more is created inside.
                return Ok(());
            }
            NodeKind::File => return self.restore_file(node, dest),
            NodeKind::Symlink => {
                let target = node
                    .link_target
                    .as_ref()
                    .map(|t| t.to_os())
                    .unwrap_or_default();
                std::os::unix::fs::symlink(&target, dest)
                    .map_err(|e| Error::io("create symlink", dest, e))?;
                self.shared.count(|r| r.others += 1);
            }
            NodeKind::Fifo | NodeKind::Socket | NodeKind::Chardev | NodeKind::Blockdev => {
                fsmeta::make_special(dest, node)
                    .map_err(|e| Error::io("create special file", dest, e))?;
                self.shared.count(|r| r.others += 1);
            }
        }
        fsmeta::apply_metadata(dest, node, self.shared.chown)
            .map_err(|e| Error::io("set metadata of", dest, e))
    }

    /// Make room for an entry at `dest` when overwriting: remove what is there unless it
    /// is a directory that stays a directory. Never follows a symlink. Without
    /// `overwrite` nothing is looked up: the target was empty, every entry is created
    /// exclusively (`O_EXCL`, `mkdir`, `symlink`, `link`, `mknod`), and one that appeared
    /// meanwhile fails its creation with "File exists" (a lookup per entry was 63,000
    /// `statx` calls in a restore of the benchmark corpus).
    fn clear_for(&self, dest: &Path, want_dir: bool) -> Result<()> {
        if !self.opts.overwrite {
            return Ok(());
        }
        let Ok(m) = fs::symlink_metadata(dest) else {
            return Ok(());
        };
        if m.is_dir() {
            if !want_dir {
                fs::remove_dir_all(dest).map_err(|e| Error::io("remove", dest, e))?;
            }
        } else {
            fs::remove_file(dest).map_err(|e| Error::io("remove", dest, e))?;
        }
        Ok(())
    }

    /// Create the file now, so hard links to it can follow at once in walk order, and
    /// queue its contents; the batch runs whenever it is full, and at the end.
    fn restore_file(&mut self, node: &Node, dest: &Path) -> Result<()> {
        if node.changing {
            self.shared.count(|r| r.changing.push(dest.to_path_buf()));
        }
        if node.links > 1 && node.inode != 0 {
            let key = (node.device, node.inode);
            if let Some(first) = self.links.get(&key) {
                fs::hard_link(first, dest).map_err(|e| Error::io("hard link", dest, e))?;
                self.shared.count(|r| r.files += 1);
                return Ok(());
            }
            self.links.insert(key, dest.to_path_buf());
        }
        create_file(dest)?;
        self.batch
            .add(self.shared, node.clone(), dest.to_path_buf());
        if self.batch.is_full() {
            let next = self.batch.successor();
            self.batches
                .send(std::mem::replace(&mut self.batch, next))
                .map_err(|_| Error::Internal("the restore writer stopped".into()))?;
        }
        Ok(())
    }
}

/// A new, empty regular file, never through a symlink.
fn create_file(dest: &Path) -> Result<fs::File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(dest)
        .map_err(|e| Error::io("create file", dest, e))
}

impl Shared<'_> {
    fn fail(&self, path: &Path, e: impl std::fmt::Display) {
        let msg = e.to_string();
        tracing::debug!("{}: {msg}", path.display());
        self.count(|r| r.errors.push((path.to_path_buf(), msg)));
    }

    fn count(&self, f: impl FnOnce(&mut RestoreReport)) {
        if let Ok(mut r) = self.report.lock() {
            f(&mut r);
        }
    }

    /// Fill one created, empty regular file blob by blob through the healing reader,
    /// then set its metadata: for files with blobs the primary index does not know.
    fn write_file(&self, node: &Node, dest: &Path) -> Result<()> {
        let f = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(dest)
            .map_err(|e| Error::io("open", dest, e))?;
        let mut written: u64 = 0;
        let mut holes = false;
        self.progress.set_current(&dest.to_string_lossy());
        for id in &node.content {
            let plain = self.rt.block_on(self.reader.read(id))?;
            Progress::add(&self.progress.bytes_done, plain.len() as u64);
            let layout = holes::layout(&plain, written);
            holes |= layout.holes;
            layout
                .write(&f, &plain, written)
                .map_err(|e| Error::io("write", dest, e))?;
            written += plain.len() as u64;
        }
        if holes {
            f.set_len(written)
                .map_err(|e| Error::io("extend", dest, e))?;
        }
        drop(f);
        Progress::add(&self.progress.files, 1);
        self.count(|r| {
            r.files += 1;
            r.bytes += written;
        });
        if written != node.size {
            return Err(Error::Corrupt {
                object: format!("content list of {}", dest.display()),
                reason: format!(
                    "restored {written} bytes but the snapshot records {}",
                    node.size
                ),
            });
        }
        fsmeta::apply_metadata(dest, node, self.chown)
            .map_err(|e| Error::io("set metadata of", dest, e))
    }
}
