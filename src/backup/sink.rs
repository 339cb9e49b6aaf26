//! Where new blobs go: each blob, from the walker (trees) or a reader (file data), is
//! checked against the index and against what this run already queued, and only a new
//! one is sealed (compressed and encrypted, by the thread that produced it) and sent
//! through a bounded channel to the packer. Also the bounds on the pipeline's buffers.

use crate::bufset::BufferSet;
use crate::compression::Compression;
use crate::error::{Error, Result};
use crate::format::index::BlobKind;
use crate::hash::BlobId;
use crate::index::MasterIndex;
use crate::pack::{SealedBlob, seal_blob};
use crate::repo::Repository;
use crossbeam_channel::Sender;
use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// What decides whether a blob is new, shared by the walker (trees) and the readers
/// (file data): each blob is queued once, however many files or threads produce it.
/// The senders belong to the threads, so the packer sees the channel close when the
/// last of them is done.
pub(super) struct BlobSink<'a> {
    /// Where blobs go; its keys seal them.
    pub(super) repo: &'a Repository,
    index: &'a MasterIndex,
    /// How this run compresses blobs.
    compression: Compression,
    queued: Mutex<HashSet<BlobId>>,
    /// New blobs queued this run, by kind, and their plaintext bytes (for the summary).
    pub(super) data_blobs: AtomicU64,
    pub(super) tree_blobs: AtomicU64,
    pub(super) data_added: AtomicU64,
    /// Bytes of source files read this run (the summary's, and the read-ahead's pace).
    pub(super) data_read: AtomicU64,
    /// The walker failed: readers drop the files still queued instead of storing them.
    pub(super) abandoned: AtomicBool,
    /// Read buffers for files larger than [`SMALL_FILE`].
    pub(super) windows: BufferSet,
}

/// Sealed blobs waiting for the packer. More producers than that block while the packer
/// waits for an upload slot, each holding one blob.
pub(super) const SEALED_QUEUE: usize = 4;

/// Files up to this size are read with the reader's own buffer, which grows only as far
/// as they need; larger ones borrow a full read window from [`BlobSink::windows`].
pub(super) const SMALL_FILE: u64 = 1024 * 1024;

/// Files of more than [`SMALL_FILE`] read at once (or
/// [`BackupOptions::workers`](super::BackupOptions::workers), if more): each holds a read
/// window of one and a half chunks (6 MiB with the default sizes). Two keep both cores busy
/// chunking and sealing large files; three were no faster (docs/PERFORMANCE.md, session 5).
const LARGE_READS: usize = 2;

impl<'a> BlobSink<'a> {
    /// A sink for one run that dedups against `index` and compresses as `compression`
    /// says, with read windows for `workers` large files at once (never fewer than
    /// [`LARGE_READS`]).
    pub(super) fn new(
        repo: &'a Repository,
        index: &'a MasterIndex,
        workers: usize,
        compression: Compression,
    ) -> Self {
        BlobSink {
            repo,
            index,
            compression,
            queued: Mutex::new(HashSet::new()),
            data_blobs: AtomicU64::new(0),
            tree_blobs: AtomicU64::new(0),
            data_added: AtomicU64::new(0),
            data_read: AtomicU64::new(0),
            abandoned: AtomicBool::new(false),
            // Never fewer than the cores that seal: large files are where the CPU work is.
            windows: BufferSet::new(LARGE_READS.max(workers)),
        }
    }

    /// Whether the repository already holds a blob: a stream's reader then skips copying
    /// the chunk for the sealers ([`Self::store`] checks again, and this run's queue too).
    pub(super) fn is_stored(&self, id: &BlobId) -> bool {
        self.index.contains(id)
    }

    /// Seal a blob and queue it on `tx` for the packer, unless it is stored or queued
    /// already.
    pub(super) fn store(
        &self,
        tx: &BlobSender,
        id: BlobId,
        kind: BlobKind,
        plain: &[u8],
    ) -> Result<()> {
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
            let sealed = seal_blob(self.repo.keys(), id, kind, plain, self.compression)?;
            tx.send(sealed).map_err(|_| pipeline_closed())?;
        }
        Ok(())
    }
}

/// The packer's queue.
pub(super) type BlobSender = Sender<SealedBlob>;

/// Stopped because the pipeline behind the walker failed; the packer has the reason.
pub(super) fn pipeline_closed() -> Error {
    Error::Internal("the upload pipeline stopped".into())
}
