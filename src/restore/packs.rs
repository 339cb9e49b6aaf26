//! File contents by pack: the walk registers each regular file it creates here, with the
//! blobs that fill it; [`Batch::run`] then reads every needed blob pack by pack, merging
//! blobs that lie close together into one ranged read, with [`FETCHERS`] reads in flight,
//! decrypts and verifies each blob once however many files use it, and writes it at its
//! offset in every file that needs it. A file's metadata is applied once its last blob
//! is written.
//!
//! Memory is bounded: a batch holds at most [`MAX_BATCH_FILES`] files and
//! [`MAX_BATCH_BLOBS`] blob uses (about 100 bytes each) before it is handed over to be
//! written (at most one is written while the next is filled),
//! and each fetcher holds one range of at most [`MAX_RANGE`] bytes plus one blob's
//! plaintext. A blob the primary repository cannot serve (missing from the index, a
//! failed read, a damaged blob) is read again through the [`BlobReader`], which heals
//! from copies and records it, exactly as a blob-by-blob restore would.

use super::Shared;
use crate::backend::{FileType, Handle};
use crate::error::{Error, Result};
use crate::format::tree::Node;
use crate::fsmeta;
use crate::hash::{BlobId, PackId};
use crate::index::BlobLocation;
use crate::pack::open_blob_in_place;
use crate::read_plan::{self, MAX_RANGE, Span};
use crossbeam_channel::bounded;
use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// Ranged reads in flight: restores are bound by request latency more than bandwidth,
/// and decryption runs on the same threads, so this also spreads it over the cores.
pub const FETCHERS: usize = 6;
/// Files registered before a batch is handed to the writer.
pub const MAX_BATCH_FILES: usize = 8 * 1024;
/// Blob uses registered before a batch is handed to the writer.
pub const MAX_BATCH_BLOBS: usize = 64 * 1024;
/// Files in the first batch. Nothing is read until a batch is handed over, and creating
/// 8,192 cold files took most of a second with the network idle; so the first batch is
/// small and each later one twice the size of the one before, up to the maximum.
pub const FIRST_BATCH_FILES: usize = 256;

/// One regular file being filled.
struct FileJob {
    dest: PathBuf,
    /// The node, without its content list (kept for metadata).
    node: Node,
    /// Blob uses not yet written.
    remaining: AtomicUsize,
    /// Bytes written or skipped as holes.
    written: AtomicU64,
    /// A blob failed: the error is reported once, and no metadata is applied.
    failed: AtomicBool,
    /// Some zeros were left as holes: the length is set at the end.
    holes: AtomicBool,
}

/// One use of a blob: file and offset.
#[derive(Clone, Copy)]
struct Use {
    file: usize,
    offset: u64,
}

/// A blob in a pack and where it goes.
struct Wanted {
    id: BlobId,
    loc: BlobLocation,
    uses: Vec<Use>,
}

/// Files waiting for their contents.
pub struct Batch {
    /// Files (and, eight times as many, blob uses) this batch takes before it is full.
    max_files: usize,
    files: Vec<FileJob>,
    /// Per pack, blob id to its uses.
    packs: HashMap<PackId, HashMap<BlobId, Wanted>>,
    /// Files with a blob the primary index does not know: written blob by blob through
    /// the healing reader, since the place of every later blob depends on its length.
    unindexed: Vec<(Node, PathBuf)>,
    uses: usize,
}

impl Default for Batch {
    fn default() -> Self {
        Batch::with_max_files(MAX_BATCH_FILES)
    }
}

impl Batch {
    fn with_max_files(max_files: usize) -> Self {
        Batch {
            max_files,
            files: Vec::new(),
            packs: HashMap::new(),
            unindexed: Vec::new(),
            uses: 0,
        }
    }

    /// The first batch of a restore: small, so that reading starts early.
    pub fn first() -> Self {
        Batch::with_max_files(FIRST_BATCH_FILES)
    }

    /// The batch to fill after this one: twice the size, up to the maximum.
    pub fn successor(&self) -> Self {
        Batch::with_max_files((self.max_files * 2).min(MAX_BATCH_FILES))
    }

    /// Whether the batch should run before more files are added.
    pub fn is_full(&self) -> bool {
        let max_uses = self.max_files * (MAX_BATCH_BLOBS / MAX_BATCH_FILES);
        self.files.len() + self.unindexed.len() >= self.max_files || self.uses >= max_uses
    }

    /// Register a created, empty file to be filled with `node.content`.
    pub fn add(&mut self, sh: &Shared<'_>, mut node: Node, dest: PathBuf) {
        let index = sh.reader.primary().index;
        let Some(locs) = node
            .content
            .iter()
            .map(|id| index.get(id))
            .collect::<Option<Vec<BlobLocation>>>()
        else {
            self.unindexed.push((node, dest));
            return;
        };
        let content = std::mem::take(&mut node.content);
        let file = self.files.len();
        let mut offset = 0u64;
        for (id, loc) in content.iter().zip(locs) {
            self.packs
                .entry(loc.pack)
                .or_default()
                .entry(*id)
                .or_insert_with(|| Wanted {
                    id: *id,
                    loc,
                    uses: Vec::new(),
                })
                .uses
                .push(Use { file, offset });
            offset += u64::from(loc.raw_length);
        }
        self.uses += content.len();
        self.files.push(FileJob {
            dest,
            node,
            remaining: AtomicUsize::new(content.len()),
            written: AtomicU64::new(0),
            failed: AtomicBool::new(false),
            holes: AtomicBool::new(false),
        });
        if content.is_empty() {
            sh.finish_file(&self.files[file]);
        }
    }

    /// Read every registered blob and write it; leaves the batch empty.
    pub fn run(&mut self, sh: &Shared<'_>) {
        let batch = std::mem::take(self);
        let ranges = batch.ranges();
        let files = &batch.files;
        let (tx, rx) = bounded::<Range>(FETCHERS);
        std::thread::scope(|s| {
            for _ in 0..FETCHERS {
                let rx = rx.clone();
                s.spawn(move || {
                    // One read buffer per fetcher, handed back to every read.
                    let mut buf = Vec::new();
                    for range in rx.iter() {
                        buf = fetch_range(sh, files, range, buf);
                    }
                });
            }
            drop(rx);
            let unindexed = &batch.unindexed;
            s.spawn(move || {
                for (node, dest) in unindexed {
                    if let Err(e) = sh.write_file(node, dest) {
                        sh.fail(dest, e);
                    }
                }
            });
            for r in ranges {
                if tx.send(r).is_err() {
                    break;
                }
            }
            // Closing the queue lets the fetchers finish; the scope waits for them.
            drop(tx);
        });
    }

    /// The reads to make: per pack, wanted blobs by offset, merged while close together.
    fn ranges(&self) -> Vec<Range<'_>> {
        read_plan::spans(self.packs.values().flat_map(|m| m.values()), |w| &w.loc)
    }
}

/// One ranged read and the blobs it covers.
type Range<'b> = Span<&'b Wanted>;

/// Read one range, open its blobs and write them; returns the read buffer for the next
/// range (an empty one if the read failed, or if a large single blob left it large).
fn fetch_range(sh: &Shared<'_>, files: &[FileJob], r: Range<'_>, buf: Vec<u8>) -> Vec<u8> {
    let repo = sh.reader.primary().repo;
    let handle = Handle::new(FileType::Pack, r.pack.to_hex());
    // The read runs as a task of the runtime, where the socket's readiness is handled on
    // the thread that polls it; awaited from here, every frame of the body woke this
    // thread across cores instead (futex wake-ups were 6% of a restore's CPU).
    let backend = repo.backend().clone();
    let (start, len, object) = (r.start, r.end - r.start, handle.path());
    // A pack that gave no answer moments ago is not read: the healing reader reads its
    // blobs from a copy, or fails them at once.
    let read = async {
        let read = sh
            .rt
            .spawn(async move { backend.get_range_into(&handle, start, len, buf).await });
        read.await
            .unwrap_or_else(|e| {
                Err(crate::backend::BackendError::Io {
                    op: "read",
                    object,
                    location: repo.backend().location(),
                    source: std::io::Error::other(e),
                    retryable: false,
                })
            })
            .map_err(Error::from)
    };
    let mut bytes = sh
        .rt
        .block_on(sh.reader.from_primary(r.pack, read))
        .ok()
        .and_then(Result::ok);
    for w in r.blobs {
        // Opened where it lies in the range: the blobs of a range do not overlap, and
        // each is read once.
        let from_range = bytes.as_mut().and_then(|b| {
            let sealed = b.get_mut(read_plan::position(r.start, &w.loc)?)?;
            open_blob_in_place(repo.keys(), &w.id, &w.loc, sealed).ok()
        });
        // Anything wrong with the range or the blob: the healing reader tries again,
        // from copies too, and records what it had to heal.
        let plain = match from_range {
            Some(p) => Ok(p),
            None => sh.rt.block_on(sh.reader.read(&w.id)).map(Cow::Owned),
        };
        for u in &w.uses {
            let job = &files[u.file];
            match &plain {
                Ok(p) => {
                    crate::progress::Progress::add(&sh.progress.bytes_done, p.len() as u64);
                    if let Err(e) = write_at(job, p, u.offset) {
                        sh.fail_file(job, e);
                    }
                }
                Err(e) => sh.fail_file(job, e),
            }
            if job.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                sh.finish_file(job);
            }
        }
    }
    bytes
        .filter(|b| b.capacity() <= 2 * MAX_RANGE as usize)
        .unwrap_or_default()
}

/// Write one blob's plaintext at its place; its zero blocks stay holes
/// ([`super::holes`]).
fn write_at(job: &FileJob, plain: &[u8], offset: u64) -> Result<()> {
    if job.failed.load(Ordering::Acquire) {
        return Ok(());
    }
    job.written.fetch_add(plain.len() as u64, Ordering::AcqRel);
    let layout = super::holes::layout(plain, offset);
    if layout.holes {
        job.holes.store(true, Ordering::Release);
    }
    if layout.is_empty() {
        return Ok(());
    }
    let f = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&job.dest)
        .map_err(|e| Error::io("open", &job.dest, e))?;
    layout
        .write(&f, plain, offset)
        .map_err(|e| Error::io("write", &job.dest, e))
}

impl Shared<'_> {
    /// Report a file's first error; later ones add nothing.
    fn fail_file(&self, job: &FileJob, e: impl std::fmt::Display) {
        if !job.failed.swap(true, Ordering::AcqRel) {
            self.fail(&job.dest, e);
        }
    }

    /// Every blob of the file is written: check its size, then set its metadata.
    fn finish_file(&self, job: &FileJob) {
        if job.failed.load(Ordering::Acquire) {
            return;
        }
        let written = job.written.load(Ordering::Acquire);
        let done = (|| -> Result<()> {
            if job.holes.load(Ordering::Acquire) {
                let f = OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                    .open(&job.dest)
                    .map_err(|e| Error::io("open", &job.dest, e))?;
                f.set_len(written)
                    .map_err(|e| Error::io("extend", &job.dest, e))?;
            }
            crate::progress::Progress::add(&self.progress.files, 1);
            self.progress.set_current(&job.dest.to_string_lossy());
            self.count(|r| {
                r.files += 1;
                r.bytes += written;
            });
            if written != job.node.size {
                return Err(Error::Corrupt {
                    object: format!("content list of {}", job.dest.display()),
                    reason: format!(
                        "restored {written} bytes but the snapshot records {}",
                        job.node.size
                    ),
                });
            }
            fsmeta::apply_metadata(&job.dest, &job.node, self.chown)
                .map_err(|e| Error::io("set metadata of", &job.dest, e))
        })();
        if let Err(e) = done {
            self.fail(&job.dest, e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_start_small_and_double_up_to_the_maximum() {
        let mut b = Batch::first();
        let mut sizes = vec![b.max_files];
        for _ in 0..7 {
            b = b.successor();
            sizes.push(b.max_files);
        }
        assert_eq!(sizes, [256, 512, 1024, 2048, 4096, 8192, 8192, 8192]);
        assert_eq!(Batch::default().max_files, MAX_BATCH_FILES);
        // Blob uses fill a batch too, eight per file, as MAX_BATCH_BLOBS does for the last.
        let mut first = Batch::first();
        first.uses = FIRST_BATCH_FILES * 8 - 1;
        assert!(!first.is_full());
        first.uses += 1;
        assert!(first.is_full());
    }
}
