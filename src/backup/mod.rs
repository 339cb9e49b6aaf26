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
//!
//! The stages, one module each: [`roots`] cleans and checks the source paths, [`parent`]
//! chooses the snapshot to compare against, [`pipeline`] starts the threads and joins
//! them, [`walk`] and [`entry`] make the trees, [`reader`] reads changed files, [`sink`]
//! deduplicates and seals blobs for the packer, and [`run`] commits the snapshot.
//! [`context`] is what the daemon keeps between runs (the index). [`stream`] stores one
//! stream (standard input, a command's output) as a snapshot of a single file.

mod context;
mod entry;
mod parent;
mod pipeline;
mod plan;
mod reader;
mod roots;
mod run;
mod sink;
mod stream;
mod walk;

pub use context::BackupContext;
pub use parent::parent_in;
pub use roots::{clean_absolute, prepare_roots, snapshot_paths};
pub use stream::{
    DEFAULT_STREAM_NAME, StreamOptions, backup_command, backup_stream, command_origin, stream_path,
};

use crate::changes::ChangedPaths;
use crate::compression::Compression;
use crate::error::Result;
use crate::format::snapshot::Snapshot;
use crate::hash::SnapshotId;
use crate::progress::{Phase, RunControl};
use crate::repo::Repository;
use std::path::PathBuf;
use tokio::runtime::Handle as Runtime;

/// What to back up and how to label it.
#[derive(Clone, Debug)]
pub struct BackupOptions {
    /// Source paths (made absolute, not following symlinks).
    pub paths: Vec<PathBuf>,
    /// What is left out: patterns, a size limit, marker files (see [`crate::exclude`]).
    /// Applies to the source paths themselves too, as in restic.
    pub excludes: crate::exclude::ExcludeRules,
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
    /// How to compress new blobs: the user's choice (`--compression`, the destination's
    /// `compression`), or `None` for the repository's default, else `auto`
    /// ([`Repository::compression_for`]).
    pub compression: Option<Compression>,
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
    /// caller already runs a [`crate::warm::MetadataWarmer`] over the same paths (started
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
/// the latency of each read, so more reads in flight help (see docs/PERFORMANCE.md,
/// "Cold small files wait on the disk, not the CPU"). A reader of small files holds
/// little memory; only two of them (or one per core, if more) read a file that was over
/// 1 MiB when it was opened at once (a file that grows while being read may grow its
/// reader's own buffer to a full window, which is then dropped).
pub const DEFAULT_READERS: usize = 8;

impl BackupOptions {
    /// Options with the defaults a one-off command line backup uses.
    pub fn new(paths: Vec<PathBuf>, hostname: String, username: String, time: String) -> Self {
        BackupOptions {
            paths,
            excludes: crate::exclude::ExcludeRules::default(),
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
            // Two keep a loopback or LAN server busy (docs/PERFORMANCE.md, session 7: more
            // were barely faster) and hold 32 MiB with the default pack size instead of 64.
            max_uploads: 2,
            compression: None,
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
    let result = run::run(repo, rt, opts, ctx);
    progress.set_phase(Phase::Idle);
    result
}
