//! Repacking for a prune: the used blobs of packs that are mostly unused are copied
//! verbatim (each read back and verified first) into new packs, so the old packs can be
//! condemned; and, where a used blob is stored twice, the choice of which copy to keep,
//! verified, so a prune never keeps a damaged copy over a good one.

use super::PruneReport;
use crate::backend::{FileType, Handle};
use crate::error::{Error, Result};
use crate::format::index::{BlobKind, IndexPack, PackedBlob};
use crate::hash::{BlobId, PackId};
use crate::index::{BlobLocation, MasterIndex};
use crate::pack::{PackBuilder, SealedBlob, open_blob};
use crate::progress::Progress;
use crate::repo::Repository;
use std::collections::{HashMap, HashSet};
use tokio::runtime::Handle as Runtime;

/// Copy the used blobs of each pack in `to_repack` (the pack, with its unused entries,
/// and its used ones) into new packs, data and trees apart, and store an index object
/// naming them. A used blob that does not verify stops the prune before anything is
/// deleted. Counts into `report` (with each old pack's size from `listed`) and
/// `progress`.
pub(super) fn repack(
    repo: &Repository,
    rt: &Runtime,
    to_repack: &[(IndexPack, Vec<PackedBlob>)],
    listed: &HashMap<String, u64>,
    progress: &Progress,
    report: &mut PruneReport,
) -> Result<()> {
    let backend = repo.backend().clone();
    progress.set_current("repacking");
    progress
        .files_total
        .store(to_repack.len() as u64, std::sync::atomic::Ordering::Relaxed);
    progress.bytes_total.store(
        to_repack
            .iter()
            .flat_map(|(_, used)| used.iter().map(|b| u64::from(b.length)))
            .sum(),
        std::sync::atomic::Ordering::Relaxed,
    );
    let target = repo.config().pack_size as usize;
    let mut data = PackBuilder::default();
    let mut trees = PackBuilder::default();
    let mut new_packs: Vec<IndexPack> = Vec::new();
    let flush = |b: PackBuilder, out: &mut Vec<IndexPack>| -> Result<()> {
        if b.is_empty() {
            return Ok(());
        }
        let pack = b.finish(repo.keys(), repo.config().version)?;
        rt.block_on(backend.put(&Handle::new(FileType::Pack, pack.id.to_hex()), pack.bytes))?;
        out.push(pack.index);
        Ok(())
    };
    for (old, used_here) in to_repack {
        let handle = Handle::new(FileType::Pack, old.id.to_hex());
        Progress::add(&progress.files, 1);
        for b in used_here {
            Progress::add(&progress.bytes_done, u64::from(b.length));
            let sealed = rt.block_on(backend.get_range(&handle, b.offset, u64::from(b.length)))?;
            open_blob(
                repo.keys(),
                &b.id,
                &BlobLocation::in_pack(old.id, b),
                &sealed,
            )
            .map_err(|why| Error::Corrupt {
                object: format!("blob {} in {}", b.id.short(), handle.path()),
                reason: format!("{why}; prune stops before repacking it: run `cairn check`"),
            })?;
            report.repacked_bytes += u64::from(b.length);
            let builder = match b.kind {
                BlobKind::Data => &mut data,
                BlobKind::Tree => &mut trees,
            };
            builder.add(SealedBlob {
                id: b.id,
                kind: b.kind,
                raw_length: b.raw_length,
                compressed: b.compressed,
                bytes: sealed,
            });
            if builder.is_full(target) {
                flush(std::mem::take(builder), &mut new_packs)?;
            }
        }
        report.repacked_packs += 1;
        report.condemned_packs += 1;
        report.condemned_bytes += listed.get(&old.id.to_hex()).copied().unwrap_or(0);
    }
    flush(data, &mut new_packs)?;
    flush(trees, &mut new_packs)?;
    if !new_packs.is_empty() {
        rt.block_on(repo.save_index(new_packs.clone()))?;
    }
    Ok(())
}

/// For each used blob stored more than once, the copy to keep when it is not the first
/// the index gives: a prune takes the other copies out, so the one kept is read back and
/// verified first. A `check --repair` running beside a prune writes a good copy because
/// the first is damaged, and a prune that listed the index before the repair rewrote it
/// puts the damaged location back first; keeping it would condemn the good copy. When
/// the first copy does not verify and another does, that one is kept instead; when none
/// does, nothing changes. Only duplicates are read, which are few (repairs, and the same
/// data uploaded by backups at the same time).
pub(super) fn verified_copies(
    repo: &Repository,
    rt: &Runtime,
    used: &HashSet<BlobId>,
    index: &MasterIndex,
    by_pack: &HashMap<PackId, Vec<PackedBlob>>,
) -> HashMap<BlobId, (PackId, u64)> {
    let mut others: HashMap<BlobId, Vec<(PackId, PackedBlob)>> = HashMap::new();
    for (pack, entries) in by_pack {
        for b in entries {
            if !used.contains(&b.id) {
                continue;
            }
            if let Some(l) = index.get(&b.id)
                && (l.pack, l.offset) != (*pack, b.offset)
            {
                others.entry(b.id).or_default().push((*pack, b.clone()));
            }
        }
    }
    let intact = |id: &BlobId, loc: &BlobLocation| {
        let handle = Handle::new(FileType::Pack, loc.pack.to_hex());
        rt.block_on(
            repo.backend()
                .get_range(&handle, loc.offset, u64::from(loc.length)),
        )
        .is_ok_and(|sealed| open_blob(repo.keys(), id, loc, &sealed).is_ok())
    };
    let mut chosen = HashMap::new();
    for (id, copies) in others {
        let Some(first) = index.get(&id) else {
            continue;
        };
        if intact(&id, &first) {
            continue;
        }
        if let Some((pack, b)) = copies
            .iter()
            .find(|(pack, b)| intact(&id, &BlobLocation::in_pack(*pack, b)))
        {
            tracing::warn!(
                "blob {} is damaged in data/{} and intact in data/{}: the intact copy is kept",
                id.short(),
                first.pack.to_hex(),
                pack.to_hex()
            );
            chosen.insert(id, (*pack, b.offset));
        }
    }
    chosen
}
