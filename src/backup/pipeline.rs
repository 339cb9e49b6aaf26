//! The threads of one backup and how they are wired: reader threads take files from the
//! walker through a bounded queue, every producer sends sealed blobs through another to
//! the packer, and read-ahead threads warm the disk cache ahead of the walker. Each
//! thread is joined here, so that a panic in one becomes this backup's error instead of
//! taking the daemon down.

use super::plan::{Plan, ReadJob};
use super::reader::FileReader;
use super::sink::{BlobSink, SEALED_QUEUE};
use super::walk::{Walked, Walker};
use crate::error::{Error, Result};
use crate::pack::SealedBlob;
use crate::packer::{PackerStats, run_packer};
use crossbeam_channel::bounded;
use std::sync::atomic::{AtomicBool, Ordering};

/// How each stage ended, for the caller to examine in order: a packer failure explains a
/// walker failure (the walker sees only a closed channel).
pub(super) struct Finished {
    /// The walker's result, or its thread's failure to start or finish.
    pub(super) walk: Result<Walked>,
    /// The packer's result, inside its thread's.
    pub(super) packed: Result<Result<PackerStats>>,
    /// Whether every reader thread finished without a panic.
    pub(super) read: Result<()>,
}

/// Run the walker, the readers, the read-ahead and the packer of one backup until the
/// walk is done and every pack and index object is stored (or something failed).
pub(super) fn run_threads(plan: &Plan<'_>) -> Finished {
    let Plan {
        repo,
        rt,
        opts,
        cache,
        roots,
        excludes,
        parent,
        changed,
        index,
    } = *plan;
    let full_walk = changed.is_none();
    let readers = opts.readers.max(opts.workers).max(1);
    let (sealed_tx, sealed_rx) = bounded::<SealedBlob>(SEALED_QUEUE);
    let (read_tx, read_rx) = bounded::<ReadJob>(readers * 4);
    let warm_done = AtomicBool::new(false);
    let sink = BlobSink::new(
        repo,
        index,
        opts.workers,
        repo.compression_for(opts.compression),
    );

    let data_ahead = parent
        .is_none()
        .then(|| crate::warm::DataAhead::new(&sink.data_read));
    std::thread::scope(|s| {
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
            let warm_done = &warm_done;
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
                Walker::new(plan, sink, read_tx, sealed_tx).walk_roots(roots, parent)
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
        Finished { walk, packed, read }
    })
}
