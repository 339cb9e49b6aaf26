//! The pack checks of a check: every pack the index names is stored and its header
//! agrees with the index, and (with [`ReadData`] asking for it) its blobs are read back,
//! decrypted and checked against their ids. A blob proven damaged is recorded with its
//! location in [`CheckReport::damaged`], for the snapshot walk and for repair.

use super::{CheckReport, Finding, ReadData};
use crate::backend::{FileType, Handle};
use crate::error::Result;
use crate::format::index::PackedBlob;
use crate::hash::{BlobId, PackId};
use crate::pack::open_blob;
use crate::progress::Progress;
use crate::repo::Repository;
use futures_util::stream::{self, StreamExt};
use std::collections::{BTreeMap, HashMap, HashSet};
use tokio::runtime::Handle as Runtime;

/// Pack headers read at a time: each is one small request, so latency, not bandwidth,
/// is what they cost; as many as the snapshot reads ([`crate::repo::SNAPSHOT_READS`]).
const HEADER_READS: usize = 8;
/// Packs whose headers are read before they are checked: bounds the headers held.
const HEADER_GROUP: usize = 64;

/// Packs larger than this are verified blob by blob with ranged reads instead of being
/// fetched whole, so memory stays bounded whatever the pack size.
const WHOLE_PACK_LIMIT: u64 = 64 * 1024 * 1024;

/// Check every pack of `by_pack` (each pack's index entries, from every index object)
/// against `listed` (stored packs by object name, with their sizes), reading back the
/// data of those `read_data` chooses, counting packs and bytes into `progress`.
pub(super) fn check_packs(
    repo: &Repository,
    rt: &Runtime,
    by_pack: &BTreeMap<PackId, Vec<PackedBlob>>,
    listed: &HashMap<String, u64>,
    read_data: ReadData,
    progress: &Progress,
    report: &mut CheckReport,
) -> Result<()> {
    let mut sample = Sampler::new(read_data);
    let mut chosen = HashSet::new();
    if let ReadData::Rotating { after, count } = read_data {
        let keys: Vec<PackId> = by_pack.keys().copied().collect();
        let start = after.map_or(0, |a| keys.partition_point(|k| *k <= a));
        let n = count.min(keys.len());
        for i in 0..n {
            chosen.insert(keys[(start + i) % keys.len()]);
        }
        if n > 0 {
            report.last_pack_read = Some(keys[(start + n - 1) % keys.len()]);
        }
    }
    progress
        .files_total
        .store(by_pack.len() as u64, std::sync::atomic::Ordering::Relaxed);
    if matches!(read_data, ReadData::All) {
        let total = by_pack
            .keys()
            .filter_map(|p| listed.get(&p.to_hex()))
            .sum::<u64>();
        progress
            .bytes_total
            .store(total, std::sync::atomic::Ordering::Relaxed);
    }
    // Where each pack's blobs end by the index: where its header starts, if intact.
    let blobs_end = |blobs: &[PackedBlob]| {
        blobs
            .iter()
            .map(|b| b.offset.saturating_add(u64::from(b.length)))
            .max()
    };
    let packs: Vec<_> = by_pack.iter().collect();
    for group in packs.chunks(HEADER_GROUP) {
        // The headers of a group's listed packs are read together, several at a time.
        progress.set_current("reading pack headers");
        let mut headers: HashMap<PackId, Result<Vec<PackedBlob>>> = rt.block_on(
            stream::iter(group.iter().filter_map(|(pack, blobs)| {
                let size = *listed.get(&pack.to_hex())?;
                let end = blobs_end(blobs);
                Some(async move { (**pack, repo.read_pack_header(**pack, size, end).await) })
            }))
            .buffer_unordered(HEADER_READS)
            .collect(),
        );
        for &(pack, blobs) in group {
            let handle = Handle::new(FileType::Pack, pack.to_hex());
            let object = handle.path();
            Progress::add(&progress.files, 1);
            progress.set_current(&object);
            let listed_size = listed.get(&pack.to_hex()).copied();
            if matches!(read_data, ReadData::All) {
                Progress::add(&progress.bytes_done, listed_size.unwrap_or(0));
            }
            let size = match listed_size {
                Some(size) => size,
                None => match rt.block_on(repo.backend().stat(&handle)) {
                    Ok(size) => size,
                    Err(e) if e.is_not_found() => {
                        report.problems.push(Finding {
                            object: object.clone(),
                            message: format!("is missing ({} blobs indexed in it)", blobs.len()),
                        });
                        for b in blobs {
                            report
                                .damaged
                                .entry(b.id)
                                .or_default()
                                .push((*pack, b.offset));
                        }
                        continue;
                    }
                    Err(e) => {
                        report.problems.push(Finding {
                            object: object.clone(),
                            message: format!("could not be looked at: {e}"),
                        });
                        continue;
                    }
                },
            };
            let header = match headers.remove(pack) {
                Some(h) => h,
                None => rt.block_on(repo.read_pack_header(*pack, size, blobs_end(blobs))),
            };
            match header {
                Ok(header) => {
                    let stored: HashSet<(BlobId, u64, u32)> =
                        header.iter().map(|b| (b.id, b.offset, b.length)).collect();
                    for b in blobs {
                        if !stored.contains(&(b.id, b.offset, b.length)) {
                            report.problems.push(Finding {
                                object: object.clone(),
                                message: format!(
                                    "its header does not list blob {} where the index puts it",
                                    b.id.short()
                                ),
                            });
                            report
                                .damaged
                                .entry(b.id)
                                .or_default()
                                .push((*pack, b.offset));
                        }
                    }
                }
                Err(e) => report.problems.push(Finding {
                    object: object.clone(),
                    message: format!("its header cannot be read: {e}"),
                }),
            }
            if sample.take() || chosen.contains(pack) {
                verify_pack(repo, rt, *pack, size, blobs, report)?;
            }
        }
    }
    Ok(())
}

/// Deterministic-enough random choice of packs for `--read-data-subset`.
struct Sampler {
    mode: ReadData,
    state: u64,
}

impl Sampler {
    fn new(mode: ReadData) -> Self {
        let mut seed = [0u8; 8];
        let _ = crate::crypto::random_bytes(&mut seed);
        Sampler {
            mode,
            state: u64::from_le_bytes(seed) | 1,
        }
    }

    fn take(&mut self) -> bool {
        match self.mode {
            ReadData::None | ReadData::Rotating { .. } => false,
            ReadData::All => true,
            ReadData::Subset(f) => {
                // xorshift64*
                self.state ^= self.state >> 12;
                self.state ^= self.state << 25;
                self.state ^= self.state >> 27;
                let r = self.state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11;
                (r as f64 / (1u64 << 53) as f64) < f
            }
        }
    }
}

/// Read back every blob of `pack` (`size` bytes stored), whole when it is small enough
/// ([`WHOLE_PACK_LIMIT`]), and check each against its id.
fn verify_pack(
    repo: &Repository,
    rt: &Runtime,
    pack: PackId,
    size: u64,
    blobs: &[PackedBlob],
    report: &mut CheckReport,
) -> Result<()> {
    let handle = Handle::new(FileType::Pack, pack.to_hex());
    let whole = if size <= WHOLE_PACK_LIMIT {
        match rt.block_on(repo.backend().get(&handle)) {
            Ok(b) => Some(b),
            Err(e) => {
                report.problems.push(Finding {
                    object: handle.path(),
                    message: format!("cannot be read: {e}"),
                });
                return Ok(());
            }
        }
    } else {
        None
    };
    report.packs_read += 1;
    for b in blobs {
        let loc = crate::index::BlobLocation::in_pack(pack, b);
        let sealed: std::result::Result<Vec<u8>, String> = match &whole {
            Some(bytes) => {
                let end = b.offset.saturating_add(u64::from(b.length));
                match bytes.get(b.offset as usize..end as usize) {
                    Some(s) => Ok(s.to_vec()),
                    None => Err(format!(
                        "lies beyond the pack's end ({} bytes)",
                        bytes.len()
                    )),
                }
            }
            None => rt
                .block_on(
                    repo.backend()
                        .get_range(&handle, b.offset, u64::from(b.length)),
                )
                .map_err(|e| e.to_string()),
        };
        report.bytes_read += u64::from(b.length);
        let sealed = match sealed {
            Ok(s) => s,
            Err(why) => {
                report.problems.push(Finding {
                    object: handle.path(),
                    message: format!("blob {} could not be read: {why}", b.id.short()),
                });
                continue;
            }
        };
        if let Err(why) = open_blob(repo.keys(), &b.id, &loc, &sealed) {
            report.problems.push(Finding {
                object: handle.path(),
                message: format!("blob {} is damaged: {why}", b.id.short()),
            });
            report
                .damaged
                .entry(b.id)
                .or_default()
                .push((pack, b.offset));
        }
    }
    Ok(())
}
