//! One backup run: walk the source paths, store what changed, commit a snapshot.
//!
//! The walker (one thread) compares each file's size, mtime, ctime and inode with the
//! parent snapshot and reuses the stored content list when nothing changed, without
//! reading the file. Changed files go to a few reader threads, which stream them through
//! the chunker and hash the chunks, so that a cold disk has several reads in flight and
//! chunking uses every core; the walker finishes a directory's tree once its files are
//! read. A chunk not already in the index is compressed and sealed by the thread that read
//! it, straight from its read buffer into the sealed blob, and goes through a bounded
//! channel to the packer ([`crate::packer`]). Every queue is bounded, so memory does not
//! grow with file size.
//! The snapshot is written only after every pack and index object is durable, so a crash
//! at any point leaves the repository as it was plus unreferenced packs.

use crate::bufset::BufferSet;
use crate::cache::MetadataCache;
use crate::changes::ChangedPaths;
use crate::error::{Error, Result};
use crate::exclude::Excludes;
use crate::format::index::{BlobKind, IndexFile};
use crate::format::name::ByteName;
use crate::format::snapshot::{Snapshot, Summary};
use crate::format::tree::{Node, NodeKind, Tree};
use crate::fsmeta;
use crate::hash::{BlobId, IndexId, SnapshotId};
use crate::index::MasterIndex;
use crate::pack::{SealedBlob, seal_blob};
use crate::packer::run_packer;
use crate::progress::{Phase, Progress, RunControl};
use crate::repo::Repository;
use crate::tree_loader::TreeLoader;
use crossbeam_channel::{Receiver, Sender, bounded};
use std::collections::{HashMap, HashSet};
use std::fs::{self, Metadata};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::runtime::Handle as Runtime;

mod reader;
use reader::{FileRead, FileReader, StoredFile, same_file};

/// What to back up and how to label it.
#[derive(Clone, Debug)]
pub struct BackupOptions {
    /// Source paths (made absolute, not following symlinks).
    pub paths: Vec<PathBuf>,
    /// Exclude patterns (see [`crate::exclude`]).
    pub excludes: Vec<String>,
    /// Tags for the snapshot.
    pub tags: Vec<String>,
    /// Host name recorded (and used to choose the parent).
    pub hostname: String,
    /// User name recorded.
    pub username: String,
    /// RFC 3339 time of the snapshot.
    pub time: String,
    /// Snapshot to compare against; `None` picks the latest with the same host and paths
    /// (see `find_parent`).
    pub parent: Option<SnapshotId>,
    /// Without `parent`, look for the latest snapshot of the same host and paths. Off
    /// when the caller already looked ([`parent_in`]) and found none: listing and
    /// reading every snapshot again would only cost time.
    pub find_parent: bool,
    /// The parent's content when the caller already has it (saves a read, and allows a
    /// parent stored elsewhere, as for a journal standing in for its destination).
    pub parent_snapshot: Option<Snapshot>,
    /// Threads that compress and seal. The reader threads do it as they read, so there
    /// are at least this many of them.
    pub workers: usize,
    /// Files read (chunked, hashed and sealed) at once; raised to `workers` if below.
    pub readers: usize,
    /// Pack uploads in flight at once; each holds a whole pack (`pack_size`) in memory.
    pub max_uploads: usize,
    /// Do not descend into directories on another file system than their source path
    /// (the mount point itself is stored, empty).
    pub one_file_system: bool,
    /// When set (and a parent exists), only entries this set touches are looked at; the
    /// rest is carried over from the parent. `None` compares everything.
    pub changed: Option<ChangedPaths>,
    /// Stop flag and live counters.
    pub control: RunControl,
    /// Write no snapshot when the tree equals the parent's (the report then names the
    /// parent and says so): periodic rescans of unchanged data add nothing.
    pub skip_if_unchanged: bool,
    /// Fail the run once its packs exceed this many bytes (a journal's space bound).
    pub max_upload_bytes: Option<u64>,
    /// After a full walk, drop cached trees this snapshot does not use. Off when one
    /// cache serves several snapshot series (their trees would be dropped too).
    pub trim_cache: bool,
    /// Read the sources' metadata ahead of the walker on a full walk. Off when the
    /// caller already runs a [`crate::warm::ReadAhead`] over the same paths (started
    /// before opening the repository, so the disk works while the key is derived).
    pub read_ahead: bool,
    /// Refuse to make a snapshot when a source path that is a directory became empty, or
    /// was a mount point in the parent snapshot and is not now: most often a disk that
    /// did not mount, whose snapshot would push good history out of retention.
    pub guard_roots: bool,
    /// With `skip_if_unchanged`, answer "unchanged" only after seeing the parent is still
    /// stored (one request): a parent forgotten meanwhile must not be named as saved. Off
    /// only where the parent lives elsewhere (a journal builds on its destination's).
    pub verify_parent: bool,
}

/// Files read at once by default. Reading many small files from a cold disk is bound by
/// the latency of each read, so more reads in flight help (measured on the benchmark
/// corpus: 3.7 s to read it with 3 at once, 2.6 s with 6). A reader of small files holds
/// little memory; only two of them (or one per core, if more) read a file that was over
/// 1 MiB when it was opened at once (a file that grows while being read may grow its
/// reader's own buffer to a full window, which is then dropped).
pub const DEFAULT_READERS: usize = 8;

impl BackupOptions {
    /// Options with the defaults a one-off command line backup uses.
    pub fn new(paths: Vec<PathBuf>, hostname: String, username: String, time: String) -> Self {
        BackupOptions {
            paths,
            excludes: Vec::new(),
            tags: Vec::new(),
            hostname,
            username,
            time,
            parent: None,
            find_parent: true,
            parent_snapshot: None,
            workers: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            readers: DEFAULT_READERS,
            // Two keep a loopback or LAN server busy (measured: no faster with four on
            // the benchmark) and hold 32 MiB with the default pack size instead of 64.
            max_uploads: 2,
            one_file_system: false,
            guard_roots: false,
            changed: None,
            control: RunControl::default(),
            skip_if_unchanged: false,
            max_upload_bytes: None,
            trim_cache: true,
            read_ahead: true,
            verify_parent: true,
        }
    }
}

/// What a long-running caller (the daemon) keeps between backups of one repository: the
/// index, updated incrementally, and an optional local metadata cache.
#[derive(Debug, Default)]
pub struct BackupContext {
    index: MasterIndex,
    loaded: HashSet<IndexId>,
    cache: Option<MetadataCache>,
    rewritten: bool,
}

impl BackupContext {
    /// An empty context; [`BackupContext::refresh`] fills it.
    pub fn new(cache: Option<MetadataCache>) -> Self {
        BackupContext {
            index: MasterIndex::default(),
            loaded: HashSet::new(),
            cache,
            rewritten: false,
        }
    }

    /// The index as last refreshed.
    pub fn index(&self) -> &MasterIndex {
        &self.index
    }

    /// Bring the index up to date with the repository: load index objects not seen yet
    /// (from the local cache when it has them). If one seen before has gone (a prune
    /// rewrote the index), start again from scratch, so no blob is believed stored that
    /// may have been deleted.
    ///
    /// The index is a cache of what `data/` holds, never the truth: whenever index
    /// objects are loaded, `data/` is listed (after the index, so every pack a listed
    /// index object names was stored before the listing began) and entries whose pack is
    /// not there are left out, so their blobs are uploaded again. An old index object put
    /// back (a versioned bucket's undelete, or anyone with write access) would otherwise
    /// make later snapshots reference packs a prune deleted. What was left out is
    /// reported in the log, and the next backup compares everything once.
    pub async fn refresh(&mut self, repo: &Repository) -> Result<()> {
        let listing = repo.index_listing().await?;
        let listed: HashSet<IndexId> = listing.iter().map(|&(id, _)| id).collect();
        if !self.loaded.is_subset(&listed) {
            tracing::info!("the repository's index was rewritten; reloading it");
            self.index = MasterIndex::default();
            self.loaded.clear();
            self.rewritten = true;
        }
        let mut new: Vec<(IndexId, u64)> = listing
            .into_iter()
            .filter(|(id, _)| !self.loaded.contains(id))
            .collect();
        new.sort();
        if !new.is_empty() {
            let stored = repo.pack_ids().await?;
            // Several reads at once (a new machine has nothing cached), applied in order.
            let cache = self.cache.clone();
            let (index, loaded) = (&mut self.index, &mut self.loaded);
            let mut missing: Vec<(IndexId, crate::hash::PackId)> = Vec::new();
            repo.for_each_index_file(cache.as_ref(), new, |id, file| {
                let file = match file {
                    Ok(f) => f,
                    // Its blobs are simply not counted as stored: they are uploaded
                    // again if needed, which loses nothing.
                    Err(e) if skippable_index_error(&e) => {
                        if let Error::Corrupt { object, reason } = e {
                            repo.skipped().note(object, reason);
                        }
                        loaded.insert(id);
                        return Ok(());
                    }
                    Err(e) => return Err(e),
                };
                for p in &file.packs {
                    if stored.contains(&p.id) {
                        index.add_pack(p);
                    } else {
                        missing.push((id, p.id));
                    }
                }
                loaded.insert(id);
                Ok(())
            })
            .await?;
            if !missing.is_empty() {
                let objects: HashSet<IndexId> = missing.iter().map(|(i, _)| *i).collect();
                let mut names: Vec<String> = objects.iter().map(|i| format!("index/{i}")).collect();
                names.sort();
                tracing::warn!(
                    "{} pack(s) named by {} are not in data/ (deleted by a prune, an index object put back, or lost): their blobs are not counted as stored and will be uploaded again; run `cairn check` and then `cairn prune` to tidy the index",
                    missing.len(),
                    names.join(", ")
                );
                // An indexed tree is no longer known to be whole: compare everything once
                // rather than carry entries over from a parent.
                self.rewritten = true;
            }
        }
        if let Some(c) = &self.cache {
            c.retain_index(&listed);
        }
        Ok(())
    }

    /// Whether the index was rewritten (by a prune or repair) since the last call: a
    /// caller that carries entries over from a parent without reading them should
    /// compare everything once, since data the parent used may be gone.
    pub fn take_rewritten(&mut self) -> bool {
        std::mem::take(&mut self.rewritten)
    }

    /// Add packs stored elsewhere that will reach this repository before any snapshot
    /// that relies on them (a journal's), without counting their index objects as this
    /// repository's.
    pub fn add_packs(&mut self, file: &IndexFile) {
        for p in &file.packs {
            self.index.add_pack(p);
        }
    }
}

/// Whether an index object that could not be loaded may be passed over: it is damaged
/// or foreign (its blobs then count as not stored), or it was deleted after the listing
/// (a prune replaced it). Any other failure stops the load.
fn skippable_index_error(e: &Error) -> bool {
    matches!(e, Error::Corrupt { .. }) || matches!(e, Error::Backend(b) if b.is_not_found())
}

/// A source path that could not be stored, or that was stored only as read while it
/// changed; and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    /// The path.
    pub path: PathBuf,
    /// What went wrong.
    pub reason: String,
    /// True: the file is in the snapshot as read while it changed, marked `changing`.
    /// False: something could not be stored (the path itself, or part of what it has,
    /// such as its extended attributes or a directory's listing).
    pub stored: bool,
}

/// The outcome of a backup.
#[derive(Debug)]
pub struct BackupReport {
    /// The new snapshot.
    pub id: SnapshotId,
    /// Its contents.
    pub snapshot: Snapshot,
    /// Paths skipped or stored while changing; non-empty means "snapshot made, with
    /// warnings".
    pub warnings: Vec<Warning>,
    /// No new snapshot was written: nothing changed since the parent, which `id` names.
    pub unchanged: bool,
    /// Files with more than one hard link that were looked at: a write through another
    /// link changes them without an event for their path, so a watcher-driven caller
    /// should list them as changed every time.
    pub multi_link_files: Vec<PathBuf>,
}

/// Lexically absolute and clean: `.` and `..` resolved without following symlinks, so
/// the path that is stored is the path the user named.
pub fn clean_absolute(p: &Path) -> Result<PathBuf> {
    let abs = std::path::absolute(p).map_err(|e| Error::io("resolve", p, e))?;
    let mut out = PathBuf::from("/");
    for c in abs.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Run a backup. Must be called from a thread that is not driving the tokio runtime
/// (it blocks on `rt` for I/O).
pub fn backup(repo: &Repository, rt: &Runtime, opts: &BackupOptions) -> Result<BackupReport> {
    let mut ctx = BackupContext::new(None);
    rt.block_on(ctx.refresh(repo))?;
    backup_with(repo, rt, opts, &mut ctx)
}

/// Run a backup with a caller-kept context (already refreshed by the caller).
pub fn backup_with(
    repo: &Repository,
    rt: &Runtime,
    opts: &BackupOptions,
    ctx: &mut BackupContext,
) -> Result<BackupReport> {
    let progress = &opts.control.progress;
    progress.set_phase(Phase::Scanning);
    let result = run(repo, rt, opts, ctx);
    progress.set_phase(Phase::Idle);
    result
}

fn run(
    repo: &Repository,
    rt: &Runtime,
    opts: &BackupOptions,
    ctx: &mut BackupContext,
) -> Result<BackupReport> {
    let excludes = Excludes::new(&opts.excludes).map_err(Error::InvalidInput)?;
    let roots = prepare_roots(&opts.paths)?;
    let display_paths = display_paths(&roots);
    // Multipart uploads left by a crashed run cost storage; a day is far longer than any
    // upload of a running backup elsewhere. Best effort: not every server lists uploads.
    // Looked for while the parent is found, where this run looks for it: each is a
    // round trip or more.
    let cleanup = async {
        match repo
            .backend()
            .cleanup_stale_uploads(Duration::from_secs(24 * 3600))
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!("aborted {n} stale multipart upload(s)"),
            Err(e) => tracing::debug!("stale upload cleanup skipped: {e}"),
        }
    };
    let find_parent = async {
        Ok::<_, Error>(match (opts.parent, &opts.parent_snapshot) {
            (Some(id), Some(snap)) => Some((id, snap.clone())),
            (Some(id), None) => Some((id, repo.load_snapshot(id).await?)),
            (None, _) if opts.find_parent => {
                parent_in(repo.list_snapshots().await?, &opts.hostname, &roots)
            }
            (None, _) => None,
        })
    };
    let ((), parent) = rt.block_on(async { tokio::join!(cleanup, find_parent) });
    let parent = parent?;
    let index = &ctx.index;
    let cache = ctx.cache.as_ref();
    // Without a parent there is nothing to carry over: compare everything.
    let changed = opts.changed.as_ref().filter(|_| parent.is_some());
    let full_walk = changed.is_none();

    let readers = opts.readers.max(opts.workers).max(1);
    let (sealed_tx, sealed_rx) = bounded::<SealedBlob>(SEALED_QUEUE);
    let (read_tx, read_rx) = bounded::<ReadJob>(readers * 4);
    let warm_done = AtomicBool::new(false);
    let sink = BlobSink {
        repo,
        index,
        queued: Mutex::new(HashSet::new()),
        data_blobs: AtomicU64::new(0),
        tree_blobs: AtomicU64::new(0),
        data_added: AtomicU64::new(0),
        data_read: AtomicU64::new(0),
        abandoned: AtomicBool::new(false),
        // Never fewer than the cores that seal: large files are where the CPU work is.
        windows: BufferSet::new(LARGE_READS.max(opts.workers)),
    };

    let data_ahead = parent
        .is_none()
        .then(|| crate::warm::DataAhead::new(&sink.data_read));
    let (walk, packed, read) = std::thread::scope(|s| {
        let sink = &sink;
        let reader_threads: Vec<_> = (0..readers)
            .map(|_| {
                let rx = read_rx.clone();
                let tx = sealed_tx.clone();
                s.spawn(move || {
                    let mut reader = FileReader::new(sink, tx, &opts.control);
                    for job in rx.iter() {
                        let result = reader.read(&job.path, &job.meta);
                        // The walker stops waiting only when it is failing anyway.
                        let _ = job.reply.send(result);
                    }
                })
            })
            .collect();
        drop(read_rx);
        // A full walk looks at every entry: read the tree's metadata ahead of it (unless
        // the caller already does), and without a parent, where every file is read,
        // small files' data too.
        let warm = (full_walk && (opts.read_ahead || data_ahead.is_some())).then(|| {
            let (roots, excludes, warm_done) = (&roots, &excludes, &warm_done);
            let data = data_ahead.as_ref();
            s.spawn(move || {
                crate::warm::warm_metadata(roots, excludes, opts.one_file_system, warm_done, data)
            })
        });
        // The parent's trees come from the local cache one file at a time, in walk
        // order; read them all ahead so the walker does not wait on each from the disk.
        // Only when the cache is trimmed to the latest snapshot's trees: a cache shared
        // by several snapshot series keeps all of theirs.
        let warm_trees = cache
            .filter(|_| parent.is_some() && full_walk && opts.trim_cache)
            .map(|c| {
                let (dir, warm_done) = (c.trees_dir(), &warm_done);
                s.spawn(move || crate::warm::warm_files(&dir, warm_done))
            });
        let packer = s.spawn(|| {
            run_packer(
                repo,
                rt,
                sealed_rx,
                opts.max_uploads,
                opts.max_upload_bytes,
                &opts.control,
            )
        });
        let walker = std::thread::Builder::new()
            .name("cairn-walker".into())
            .stack_size(256 * 1024 * 1024)
            .spawn_scoped(s, || {
                let mut w = Walker {
                    repo,
                    rt,
                    index,
                    sink,
                    readers: read_tx,
                    reader: FileReader::new(sink, sealed_tx, &opts.control),
                    cache,
                    parent_trees: None,
                    changed,
                    one_file_system: opts.one_file_system,
                    guard_roots: opts.guard_roots,
                    dev: 0,
                    trees_seen: full_walk.then(HashSet::new),
                    multi_link: Vec::new(),
                    control: &opts.control,
                    excludes: &excludes,
                    hardlinks: HashMap::new(),
                    summary: Summary::default(),
                    warnings: Vec::new(),
                };
                let parent_tree = parent.as_ref().and_then(|(_, p)| w.load_tree(&p.tree));
                // No snapshot records `/` itself: its device now stands for then (the
                // root file system is the one thing that stays mounted).
                let slash = fs::metadata("/").map(|m| m.dev()).ok();
                let root = w.walk_virtual(Path::new("/"), &roots, parent_tree.as_ref(), slash);
                if root.is_err() {
                    sink.abandoned.store(true, Ordering::Release);
                }
                opts.control.progress.set_phase(Phase::Uploading);
                let mut summary = w.summary;
                summary.data_blobs = sink.data_blobs.load(Ordering::Relaxed);
                summary.tree_blobs = sink.tree_blobs.load(Ordering::Relaxed);
                summary.data_added = sink.data_added.load(Ordering::Relaxed);
                summary.data_read = sink.data_read.load(Ordering::Relaxed);
                // Dropping the walker closes the readers' queue (and the walker's end of
                // the blob channel) so that the pipeline behind it can drain.
                (root, summary, w.warnings, w.trees_seen, w.multi_link)
            });
        let walk = walker
            .map_err(|e| Error::io("start walker thread", "/", e))
            .and_then(|h| {
                h.join()
                    .map_err(|_| Error::Internal("the walker thread panicked".into()))
            });
        warm_done.store(true, Ordering::Release);
        // Joined here, so that a panic in one of them is this backup's error rather
        // than the scope's (the daemon would die of it).
        let read: Result<()> = reader_threads.into_iter().try_for_each(|h| {
            h.join()
                .map_err(|_| Error::Internal("a file reader thread panicked".into()))
        });
        for h in warm.into_iter().chain(warm_trees) {
            if h.join().is_err() {
                tracing::warn!("a read-ahead thread panicked; the backup goes on");
            }
        }
        let packed = packer
            .join()
            .map_err(|_| Error::Internal("the packer thread panicked".into()));
        (walk, packed, read)
    });
    // A packer failure explains a walker failure (the walker sees only a closed channel).
    read?;
    let packed = packed??;
    // What this run stored is known without reading the index back: a failed refresh
    // later (a destination going down) must not make the next run store it again.
    for (id, packs) in &packed.indexes {
        for p in packs {
            ctx.index.add_pack(p);
        }
        ctx.loaded.insert(*id);
    }
    let (root, mut summary, warnings, trees_seen, multi_link_files) = walk?;
    let root = root?;
    opts.control.check()?;
    opts.control.progress.set_phase(Phase::Committing);
    summary.data_added_packed = packed.bytes;
    summary.warnings = warnings.len() as u64;

    if opts.skip_if_unchanged
        && warnings.is_empty()
        && let Some((pid, psnap)) = &parent
        && psnap.tree == root
        && psnap.tags == opts.tags
        && (!opts.verify_parent || parent_still_stored(repo, rt, *pid)?)
    {
        return Ok(BackupReport {
            id: *pid,
            snapshot: psnap.clone(),
            warnings,
            unchanged: true,
            multi_link_files,
        });
    }
    let snapshot = Snapshot {
        time: opts.time.clone(),
        parent: parent.map(|(id, _)| id),
        tree: root,
        paths: display_paths,
        hostname: opts.hostname.clone(),
        username: opts.username.clone(),
        // SAFETY: getuid/getgid have no preconditions and cannot fail.
        uid: unsafe { libc::getuid() },
        gid: unsafe { libc::getgid() },
        tags: opts.tags.clone(),
        program_version: format!("cairn {}", env!("CARGO_PKG_VERSION")),
        summary: Some(summary),
    };
    let id = rt.block_on(repo.save_snapshot(&snapshot))?;
    if let (Some(c), Some(seen), true) = (cache, trees_seen, opts.trim_cache) {
        c.retain_trees(&seen);
    }
    Ok(BackupReport {
        id,
        snapshot,
        warnings,
        unchanged: false,
        multi_link_files,
    })
}

/// Whether the parent snapshot is still in the repository. "Unchanged" answers with the
/// parent's id, so a parent that a `forget` removed meanwhile (the daemon remembers its
/// last snapshot) must not be named as saved: a new snapshot is written instead.
fn parent_still_stored(repo: &Repository, rt: &Runtime, id: SnapshotId) -> Result<bool> {
    let handle = crate::backend::Handle::new(crate::backend::FileType::Snapshot, id.to_hex());
    match rt.block_on(repo.backend().stat(&handle)) {
        Ok(_) => Ok(true),
        Err(e) if e.is_not_found() => {
            tracing::warn!(
                "the parent snapshot {} is no longer in the repository (forgotten); writing a new snapshot",
                id.short()
            );
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

/// The source paths as a snapshot records them: absolute, clean, sorted, and without
/// paths nested in others. Snapshots with equal lists belong to one series (a parent is
/// chosen among them).
pub fn snapshot_paths(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut roots = Vec::new();
    for p in paths {
        roots.push(clean_absolute(p)?);
    }
    roots.sort();
    roots.dedup();
    let all = roots.clone();
    roots.retain(|r| !all.iter().any(|o| o != r && r.starts_with(o)));
    Ok(roots)
}

/// The snapshot a backup of `roots` (from [`prepare_roots`]) from `hostname` compares
/// against: the latest in `list` with the same host and exactly the same paths (as
/// snapshots record them). Public so that a caller can list snapshots while it loads the
/// index, then hand the parent over in [`BackupOptions::parent`] and
/// [`BackupOptions::parent_snapshot`] (and set [`BackupOptions::find_parent`] off).
pub fn parent_in(
    list: Vec<crate::repo::SnapshotEntry>,
    hostname: &str,
    roots: &[PathBuf],
) -> Option<(SnapshotId, Snapshot)> {
    let paths = display_paths(roots);
    list.into_iter()
        .rev()
        .find(|e| e.snapshot.hostname == hostname && e.snapshot.paths == paths)
        .map(|e| (e.id, e.snapshot))
}

/// Source paths as a snapshot records them.
fn display_paths(roots: &[PathBuf]) -> Vec<String> {
    roots
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect()
}

/// Clean, check and de-overlap the source paths; a missing path fails before anything
/// is read or written.
pub fn prepare_roots(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    if paths.is_empty() {
        return Err(Error::InvalidInput(
            "no paths to back up: name at least one file or directory".into(),
        ));
    }
    for p in paths {
        fs::symlink_metadata(clean_absolute(p)?).map_err(|e| {
            Error::InvalidInput(format!("backup path {} cannot be read: {e}", p.display()))
        })?;
    }
    snapshot_paths(paths)
}

/// What decides whether a blob is new, shared by the walker (trees) and the readers
/// (file data): each blob is queued once, however many files or threads produce it.
/// The senders belong to the threads, so the packer sees the channel close when the
/// last of them is done.
struct BlobSink<'a> {
    repo: &'a Repository,
    index: &'a MasterIndex,
    queued: Mutex<HashSet<BlobId>>,
    data_blobs: AtomicU64,
    tree_blobs: AtomicU64,
    data_added: AtomicU64,
    data_read: AtomicU64,
    /// The walker failed: readers drop the files still queued instead of storing them.
    abandoned: AtomicBool,
    /// Read buffers for files larger than [`SMALL_FILE`].
    windows: BufferSet,
}

/// Sealed blobs waiting for the packer. More producers than that block while the packer
/// waits for an upload slot, each holding one blob.
const SEALED_QUEUE: usize = 4;

/// Files up to this size are read with the reader's own buffer, which grows only as far
/// as they need; larger ones borrow a full read window from [`BlobSink::windows`].
const SMALL_FILE: u64 = 1024 * 1024;

/// Files of more than [`SMALL_FILE`] read at once (or [`BackupOptions::workers`], if
/// more): each holds a read window of one and a half chunks (6 MiB with the default
/// sizes). Two keep both cores of the benchmark machine busy chunking and sealing large
/// files; three were no faster and held 8 MiB more.
const LARGE_READS: usize = 2;

impl BlobSink<'_> {
    /// Seal a blob and queue it on `tx` for the packer, unless it is stored or queued
    /// already.
    fn store(&self, tx: &BlobSender, id: BlobId, kind: BlobKind, plain: &[u8]) -> Result<()> {
        if self.index.contains(&id) {
            return Ok(());
        }
        let fresh = self
            .queued
            .lock()
            .map_err(|_| Error::Internal("a backup thread panicked".into()))?
            .insert(id);
        if fresh {
            match kind {
                BlobKind::Data => &self.data_blobs,
                BlobKind::Tree => &self.tree_blobs,
            }
            .fetch_add(1, Ordering::Relaxed);
            self.data_added
                .fetch_add(plain.len() as u64, Ordering::Relaxed);
            let sealed = seal_blob(self.repo.keys(), id, kind, plain)?;
            tx.send(sealed).map_err(|_| pipeline_closed())?;
        }
        Ok(())
    }
}

/// The packer's queue.
type BlobSender = Sender<SealedBlob>;

/// A file for a reader thread, and where its result goes.
struct ReadJob {
    path: PathBuf,
    meta: Metadata,
    reply: Sender<Result<FileRead>>,
}

/// An entry of a directory being walked: a finished node, a file a reader has yet to
/// finish, or a file that was not stored (its warning already given).
enum Slot {
    Ready(Node),
    Skipped,
    Pending {
        node: Node,
        path: PathBuf,
        had_parent: bool,
        reply: Receiver<Result<FileRead>>,
    },
}

struct Walker<'a> {
    repo: &'a Repository,
    rt: &'a Runtime,
    index: &'a MasterIndex,
    sink: &'a BlobSink<'a>,
    /// The reader threads' queue.
    readers: Sender<ReadJob>,
    /// For files the walker reads itself (hard links, whose content it remembers).
    reader: FileReader<'a>,
    cache: Option<&'a MetadataCache>,
    /// Reads the parent's trees the cache lacks, straight from this repository, with
    /// their neighbours in one request (made on the first miss: it groups the index's
    /// trees by pack).
    parent_trees: Option<TreeLoader<'a>>,
    changed: Option<&'a ChangedPaths>,
    one_file_system: bool,
    /// See [`BackupOptions::guard_roots`].
    guard_roots: bool,
    /// Device of the source path being walked (for `one_file_system`).
    dev: u64,
    /// Every tree of the new snapshot, on a full walk (to trim the cache to them).
    trees_seen: Option<HashSet<BlobId>>,
    /// Files with several hard links seen.
    multi_link: Vec<PathBuf>,
    control: &'a RunControl,
    excludes: &'a Excludes,
    hardlinks: HashMap<(u64, u64), StoredFile>,
    summary: Summary,
    warnings: Vec<Warning>,
}

/// Stopped because the pipeline behind the walker failed; the packer has the reason.
fn pipeline_closed() -> Error {
    Error::Internal("the upload pipeline stopped".into())
}

fn find<'t>(tree: Option<&'t Tree>, name: &[u8]) -> Option<&'t Node> {
    let t = tree?;
    t.nodes
        .binary_search_by(|n| n.name.0.as_slice().cmp(name))
        .ok()
        .map(|i| &t.nodes[i])
}

impl Walker<'_> {
    fn warn(&mut self, path: &Path, reason: impl Into<String>) {
        let reason = reason.into();
        tracing::debug!("{}: {reason}", path.display());
        self.warnings.push(Warning {
            path: path.to_path_buf(),
            reason,
            stored: false,
        });
    }

    /// A file that is in the snapshot only as read while it changed (its node marked).
    fn warn_stored(&mut self, path: &Path, reason: String) {
        tracing::debug!("{}: {reason}", path.display());
        self.warnings.push(Warning {
            path: path.to_path_buf(),
            reason,
            stored: true,
        });
    }

    fn store_blob(&mut self, kind: BlobKind, plain: Vec<u8>) -> Result<BlobId> {
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

    fn load_tree(&mut self, id: &BlobId) -> Option<Tree> {
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
                self.dev = meta.dev();
                if self.guard_roots {
                    self.check_root(&path, &meta, prev, prefix, prefix_then)?;
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

    /// Refuse a source directory that was a mount point in the parent snapshot (on
    /// another device than the directory holding it) and is not now, or that is empty
    /// where the parent's was not (see [`BackupOptions::guard_roots`]). Device numbers
    /// themselves may change (a reboot, a remount), so only whether it is a mount point
    /// is compared.
    fn check_root(
        &mut self,
        path: &Path,
        meta: &Metadata,
        prev: Option<&Node>,
        prefix: &Path,
        prefix_then: Option<u64>,
    ) -> Result<()> {
        let Some(prev) = prev.filter(|p| p.kind == NodeKind::Dir && meta.is_dir()) else {
            return Ok(());
        };
        let fix = "a disk that is not mounted? Mount it; if the change is meant, set `allow_root_change = true` in the source's section";
        let was_mount = prev.device != 0 && prefix_then.is_some_and(|d| d != prev.device);
        let is_mount = fs::metadata(prefix).is_ok_and(|m| m.dev() != meta.dev());
        if was_mount && !is_mount {
            return Err(Error::InvalidInput(format!(
                "source {} was a mount point at the last snapshot and is not now (its file system is not mounted): {fix}",
                path.display(),
            )));
        }
        let empty_now = fs::read_dir(path)
            .map(|mut d| d.next().is_none())
            .unwrap_or(false);
        let had = match prev.subtree.and_then(|id| self.load_tree(&id)) {
            Some(t) => t.nodes.len(),
            None => 0,
        };
        if empty_now && had > 0 {
            return Err(Error::InvalidInput(format!(
                "source {} is empty, but held {had} entries at the last snapshot: {fix}",
                path.display()
            )));
        }
        Ok(())
    }

    /// Store a real directory's entries; returns its tree id.
    fn walk_dir(&mut self, dir: &Path, parent: Option<&Tree>) -> Result<BlobId> {
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
            if let Some(changed) = self.changed
                && !changed.touches(&path)
                && let Some(prev) = find(parent, name.as_bytes())
                && !prev.changing
                && self.still_stored(prev)
            {
                // Nothing was reported here since the parent snapshot: carry it over.
                slots.push(Slot::Ready(prev.clone()));
                continue;
            }
            if self.excludes.matches(&path, &name) {
                continue;
            }
            let meta = match fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(e) => {
                    self.warn(&path, format!("vanished or unreadable: {e}"));
                    continue;
                }
            };
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
        self.store_blob(BlobKind::Tree, tree.to_plain())
    }

    /// The node of an entry, once its file (if any) is read; `None` when it was skipped
    /// with a warning.
    fn resolve(&mut self, slot: Slot) -> Result<Option<Node>> {
        match slot {
            Slot::Ready(node) => Ok(Some(node)),
            Slot::Skipped => Ok(None),
            Slot::Pending {
                node,
                path,
                had_parent,
                reply,
            } => {
                let read = reply.recv().map_err(|_| pipeline_closed())??;
                Ok(self.file_node(node, &path, had_parent, read))
            }
        }
    }

    /// A file's node from what reading it gave: its metadata as it was when read (which
    /// may differ from the earlier lstat if it changed in between) and its content.
    fn file_node(
        &mut self,
        mut node: Node,
        path: &Path,
        had_parent: bool,
        read: FileRead,
    ) -> Option<Node> {
        match read {
            FileRead::Skipped(why) => {
                self.warn(path, why);
                None
            }
            FileRead::Stored(stored) => {
                let xattrs = std::mem::take(&mut node.xattrs);
                let mut node = fsmeta::node_from_metadata(node.name, NodeKind::File, &stored.meta);
                node.xattrs = xattrs;
                let StoredFile {
                    content,
                    size,
                    changing,
                    read_again,
                    meta,
                } = *stored;
                node.content = content;
                node.size = size;
                node.sparse = meta.blocks().saturating_mul(512) < size;
                if read_again {
                    // Never carried over unread (see `reader`).
                    node.ctime_nsec = crate::format::tree::UNSETTLED_CTIME_NSEC;
                }
                if let Some(why) = changing {
                    node.changing = true;
                    self.summary.files_changing += 1;
                    self.warn_stored(path, why);
                }
                if had_parent {
                    self.summary.files_changed += 1;
                } else {
                    self.summary.files_new += 1;
                }
                Some(node)
            }
        }
    }

    /// The entry's node, or its file handed to a reader; `None` when it was skipped with
    /// a warning.
    fn node_for(
        &mut self,
        path: &Path,
        name: ByteName,
        meta: &Metadata,
        prev: Option<&Node>,
    ) -> Result<Option<Slot>> {
        let Some(kind) = fsmeta::kind_of(meta) else {
            self.warn(path, "unsupported file type");
            return Ok(None);
        };
        let mut node = fsmeta::node_from_metadata(name, kind, meta);
        match fsmeta::read_xattrs(path) {
            Ok(x) => node.xattrs = x,
            Err(e) => self.warn(path, format!("extended attributes not stored: {e}")),
        }
        match kind {
            NodeKind::Dir if self.one_file_system && meta.dev() != self.dev => {
                // A mount point: keep the directory, not what is mounted on it.
                node.subtree = Some(self.store_blob(BlobKind::Tree, Tree::default().to_plain())?);
                self.summary.dirs_processed += 1;
            }
            NodeKind::Dir => {
                let prev_tree = match prev
                    .filter(|p| p.kind == NodeKind::Dir)
                    .and_then(|p| p.subtree)
                {
                    Some(id) => self.load_tree(&id),
                    None => None,
                };
                node.subtree = Some(self.walk_dir(path, prev_tree.as_ref())?);
                self.summary.dirs_processed += 1;
            }
            NodeKind::Symlink => match fs::read_link(path) {
                Ok(t) => node.link_target = Some(ByteName::from_os(t.as_os_str())),
                Err(e) => {
                    self.warn(path, format!("cannot read symlink: {e}"));
                    return Ok(None);
                }
            },
            NodeKind::File => {
                Progress::add(&self.control.progress.files, 1);
                if meta.nlink() > 1 {
                    self.multi_link.push(path.to_path_buf());
                }
                self.summary.total_files_processed += 1;
                self.summary.total_bytes_processed += meta.size();
                let unchanged = prev.filter(|p| {
                    p.kind == NodeKind::File
                        && p.size == meta.size()
                        && p.inode == meta.ino()
                        && p.mtime == meta.mtime()
                        && p.mtime_nsec == meta.mtime_nsec() as u32
                        && p.ctime == meta.ctime()
                        && p.ctime_nsec == meta.ctime_nsec() as u32
                        // Stored while it changed: read again, whatever its times say.
                        && !p.changing
                        && p.content.iter().all(|b| self.index.contains(b))
                });
                if let Some(p) = unchanged {
                    node.content = p.content.clone();
                    self.summary.files_unmodified += 1;
                    Progress::add(&self.control.progress.bytes_done, meta.size());
                } else if meta.nlink() > 1 {
                    // Read here, so the next link to the same file reuses the content.
                    let read = self.linked_file_content(path, meta)?;
                    return Ok(self
                        .file_node(node, path, prev.is_some(), read)
                        .map(Slot::Ready));
                } else {
                    let (reply_tx, reply) = bounded(1);
                    let job = ReadJob {
                        path: path.to_path_buf(),
                        meta: meta.clone(),
                        reply: reply_tx,
                    };
                    self.readers.send(job).map_err(|_| pipeline_closed())?;
                    return Ok(Some(Slot::Pending {
                        node,
                        path: path.to_path_buf(),
                        had_parent: prev.is_some(),
                        reply,
                    }));
                }
            }
            _ => {}
        }
        Ok(Some(Slot::Ready(node)))
    }

    /// Content of a file with several links, read once per backup: a later link to the
    /// same unchanged file reuses what the first read stored.
    fn linked_file_content(&mut self, path: &Path, meta: &Metadata) -> Result<FileRead> {
        let key = (meta.dev(), meta.ino());
        if let Some(stored) = self.hardlinks.get(&key)
            && same_file(&stored.meta, meta)
        {
            return Ok(FileRead::Stored(Box::new(stored.clone())));
        }
        let read = self.reader.read(path, meta)?;
        // Only a version read while the file stood still describes the next link too.
        if let FileRead::Stored(stored) = &read
            && !stored.read_again
        {
            self.hardlinks.insert(key, (**stored).clone());
        }
        Ok(read)
    }
}

/// Files a directory may have with readers still on them before the walker waits for
/// the first: bounds the walker's bookkeeping, not the readers' parallelism.
const MAX_PENDING_PER_DIR: usize = 256;

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(pruned.snapshot.tree, full.snapshot.tree);
        assert_ne!(pruned.snapshot.tree, first.snapshot.tree);

        // A change the set does not mention is carried over unseen (the periodic full
        // rescan is what finds such a change).
        fs::write(
            src.join("g/untouched"),
            b"changed behind the watcher's back",
        )
        .expect("w");
        let pruned = run_backup(&repo, &rt, &src, Some(full.id), Some(changed));
        let full2 = run_backup(&repo, &rt, &src, Some(full.id), None);
        assert_ne!(pruned.snapshot.tree, full2.snapshot.tree);
        // Only the files on changed paths were looked at.
        let looked_at = pruned.snapshot.summary.map(|s| s.total_files_processed);
        // a/b2/c/file1, a/b2/keep (below a renamed directory), d/e/x (below a changed
        // directory) and d/new.txt; not g/untouched.
        assert_eq!(looked_at, Some(4));
    }
}
