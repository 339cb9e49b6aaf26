//! The upload end of the backup pipeline: sealed blobs in, durable packs and index objects
//! out.
//!
//! Data and tree blobs go to separate packs so that reading trees never fetches file data.
//! A full pack is uploaded on the tokio runtime with a bounded number in flight; an index
//! object is written only after the packs it lists are durable, every
//! [`INDEX_FLUSH_PACKS`] packs so that an interrupted backup leaves its finished packs
//! indexed and the next run does not upload them again.

use crate::backend::{FileType, Handle};
use crate::error::{Error, Result};
use crate::format::index::{BlobKind, IndexPack};
use crate::pack::{PackBuilder, SealedBlob};
use crate::progress::{Progress, RunControl};
use crate::repo::Repository;
use crossbeam_channel::Receiver;
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::Handle as Runtime;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

/// Packs listed per index object written during a backup.
pub const INDEX_FLUSH_PACKS: usize = 64;

pub use crate::pack::MAX_BLOBS_PER_PACK;

/// What the packer did, for the snapshot summary.
#[derive(Debug, Default)]
pub struct PackerStats {
    /// Packs uploaded.
    pub packs: u64,
    /// Bytes uploaded in packs.
    pub bytes: u64,
    /// Index objects written, with what they list (so a caller's index can be updated
    /// without reading them back).
    pub indexes: Vec<(crate::hash::IndexId, Vec<IndexPack>)>,
}

/// How long a stopping backup waits for uploads already under way before abandoning them.
/// An abandoned S3 upload never becomes visible; a local write already in progress
/// completes as an unindexed pack, which costs space until a prune, never correctness.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// Consume sealed blobs until the channel closes; return once every pack and index object
/// is durable. On error or cancellation, stops consuming (which stops the producers),
/// indexes the packs that did become durable so a later run reuses them, and returns the
/// error.
pub fn run_packer(
    repo: &Repository,
    rt: &Runtime,
    blobs: Receiver<SealedBlob>,
    max_uploads: usize,
    max_bytes: Option<u64>,
    control: &RunControl,
) -> Result<PackerStats> {
    let progress = &control.progress;
    let target = repo.config().pack_size as usize;
    let permits = Arc::new(Semaphore::new(max_uploads.max(1)));
    let mut data = PackBuilder::default();
    let mut trees = PackBuilder::default();
    let mut uploads: Vec<JoinHandle<Result<IndexPack>>> = Vec::new();
    let mut done: Vec<IndexPack> = Vec::new();
    let mut stats = PackerStats::default();

    let upload = |builder: PackBuilder,
                  uploads: &mut Vec<JoinHandle<Result<IndexPack>>>,
                  stats: &mut PackerStats|
     -> Result<()> {
        let pack = builder.finish(repo.keys(), repo.config().version)?;
        let len = pack.bytes.len() as u64;
        if let Some(max) = max_bytes
            && stats.bytes + len > max
        {
            return Err(Error::InvalidInput(format!(
                "this run would store more than the {max} bytes left for it"
            )));
        }
        stats.packs += 1;
        stats.bytes += len;
        Progress::add(&progress.uploads_pending, 1);
        Progress::add(&progress.upload_bytes_pending, len);
        let permit = rt
            .block_on(permits.clone().acquire_owned())
            .map_err(|e| Error::Internal(format!("upload limiter closed: {e}")))?;
        let backend = repo.backend().clone();
        let progress = progress.clone();
        uploads.push(rt.spawn(async move {
            let handle = Handle::new(FileType::Pack, pack.id.to_hex());
            let result = backend.put(&handle, pack.bytes).await;
            drop(permit);
            Progress::sub(&progress.uploads_pending, 1);
            Progress::sub(&progress.upload_bytes_pending, len);
            match result {
                Ok(()) => {
                    Progress::add(&progress.packs_uploaded, 1);
                    Progress::add(&progress.bytes_uploaded, len);
                    Ok(pack.index)
                }
                Err(e) => {
                    Progress::add(&progress.uploads_failed, 1);
                    Err(e.into())
                }
            }
        }));
        Ok(())
    };

    let result = (|| {
        for blob in blobs.iter() {
            control.check()?;
            let builder = match blob.kind {
                BlobKind::Data => &mut data,
                BlobKind::Tree => &mut trees,
            };
            builder.add(blob);
            if builder.is_full(target) {
                let full = std::mem::take(builder);
                upload(full, &mut uploads, &mut stats)?;
            }
            collect_finished(rt, &mut uploads, &mut done)?;
            if done.len() >= INDEX_FLUSH_PACKS {
                let packs = std::mem::take(&mut done);
                let id = rt.block_on(repo.save_index(packs.clone()))?;
                stats.indexes.push((id, packs));
            }
        }
        control.check()?;
        for builder in [std::mem::take(&mut data), std::mem::take(&mut trees)] {
            if !builder.is_empty() {
                upload(builder, &mut uploads, &mut stats)?;
            }
        }
        while let Some(h) = uploads.pop() {
            done.push(join(rt, h)?);
        }
        if !done.is_empty() {
            let packs = std::mem::take(&mut done);
            let id = rt.block_on(repo.save_index(packs.clone()))?;
            stats.indexes.push((id, packs));
        }
        Ok(())
    })();
    if result.is_err() {
        // Let the uploads already started finish (or clean up after themselves, as an
        // aborted multipart upload does), within a grace period when stopping, and index
        // those that became durable so that the next run does not upload them again.
        let deadline = tokio::time::Instant::now() + STOP_GRACE;
        for mut h in uploads.drain(..) {
            let finished = if control.cancelled() {
                rt.block_on(async { tokio::time::timeout_at(deadline, &mut h).await })
                    .ok()
            } else {
                Some(rt.block_on(&mut h))
            };
            match finished {
                Some(Ok(Ok(pack))) => done.push(pack),
                Some(_) => {}
                None => h.abort(),
            }
        }
        if !done.is_empty()
            && let Err(e) = rt.block_on(repo.save_index(std::mem::take(&mut done)))
        {
            tracing::warn!("could not index the packs uploaded before the failure: {e}");
        }
    }
    result.map(|()| stats)
}

fn join(rt: &Runtime, h: JoinHandle<Result<IndexPack>>) -> Result<IndexPack> {
    rt.block_on(h).map_err(|e| {
        if e.is_cancelled() {
            // The runtime is shutting down: the run was stopped, nothing is wrong.
            Error::Cancelled
        } else {
            Error::Internal(format!("pack upload task failed: {e}"))
        }
    })?
}

fn collect_finished(
    rt: &Runtime,
    uploads: &mut Vec<JoinHandle<Result<IndexPack>>>,
    done: &mut Vec<IndexPack>,
) -> Result<()> {
    let mut i = 0;
    while i < uploads.len() {
        if uploads[i].is_finished() {
            let h = uploads.swap_remove(i);
            done.push(join(rt, h)?);
        } else {
            i += 1;
        }
    }
    Ok(())
}
