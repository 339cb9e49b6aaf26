//! Repair, apart from checking: given what a [`check`](super::check) found damaged or
//! missing, write good copies of those blobs back from a copy on the same keys. New packs
//! first, then an index naming them, then each index object that pointed at a damaged
//! location is rewritten without that location and the old one deleted. At every step
//! the repository is at least as readable as before.

use super::{CheckReport, load_indexes};
use crate::backend::{FileType, Handle};
use crate::error::{Error, Result};
use crate::format::index::{BlobKind, IndexPack};
use crate::hash::{BlobId, PackId};
use crate::heal::Copy;
use crate::pack::{PackBuilder, SealedBlob, open_blob};
use crate::repo::Repository;
use std::collections::HashSet;
use tokio::runtime::Handle as Runtime;

/// What a repair did.
#[derive(Debug, Default, serde::Serialize)]
pub struct RepairReport {
    /// Blobs written back from a copy.
    pub restored_blobs: u64,
    /// Damaged locations dropped from the index.
    pub dropped_locations: u64,
    /// Blobs no copy holds intact (still damaged).
    pub unrepairable: Vec<String>,
}

/// Write good copies of the damaged and missing blobs found by `report` back into
/// `repo` from `copies` (on the same keys), and drop the damaged locations from the
/// index.
pub fn repair(
    repo: &Repository,
    rt: &Runtime,
    report: &CheckReport,
    copies: &[Copy<'_>],
) -> Result<RepairReport> {
    for c in copies {
        if !c.repo.shares_keys_with(repo) {
            return Err(Error::InvalidInput(format!(
                "{} is not on the keys of {}: it cannot supply blobs for it",
                c.repo.backend().location(),
                repo.backend().location()
            )));
        }
    }
    if copies.is_empty() {
        return Err(Error::InvalidInput(
            "nothing to repair from: give a copy on the same keys (--fallback-repo, or --destination with other destinations configured)".into(),
        ));
    }
    let mut out = RepairReport::default();
    let wanted: Vec<BlobId> = report
        .damaged
        .keys()
        .chain(report.missing.iter())
        .copied()
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    // 1. Good copies into new packs (data and trees apart, as backups store them).
    let mut data = PackBuilder::default();
    let mut trees = PackBuilder::default();
    let mut new_packs: Vec<IndexPack> = Vec::new();
    let mut replaced: HashSet<BlobId> = HashSet::new();
    let target = repo.config().pack_size as usize;
    let flush = |builder: PackBuilder, new_packs: &mut Vec<IndexPack>| -> Result<()> {
        if builder.is_empty() {
            return Ok(());
        }
        let pack = builder.finish(repo.keys(), repo.config().version)?;
        rt.block_on(
            repo.backend()
                .put(&Handle::new(FileType::Pack, pack.id.to_hex()), pack.bytes),
        )?;
        new_packs.push(pack.index);
        Ok(())
    };
    for id in &wanted {
        let mut found = None;
        for c in copies {
            let Some(loc) = c.index.get(id) else { continue };
            let handle = Handle::new(FileType::Pack, loc.pack.to_hex());
            let Ok(sealed) = rt.block_on(c.repo.backend().get_range(
                &handle,
                loc.offset,
                u64::from(loc.length),
            )) else {
                continue;
            };
            if open_blob(c.repo.keys(), id, &loc, &sealed).is_ok() {
                found = Some(SealedBlob {
                    id: *id,
                    kind: loc.kind,
                    raw_length: loc.raw_length,
                    compressed: loc.compressed,
                    bytes: sealed,
                });
                break;
            }
        }
        match found {
            Some(b) => {
                out.restored_blobs += 1;
                replaced.insert(b.id);
                let builder = match b.kind {
                    BlobKind::Data => &mut data,
                    BlobKind::Tree => &mut trees,
                };
                builder.add(b);
                if builder.is_full(target) {
                    flush(std::mem::take(builder), &mut new_packs)?;
                }
            }
            None => out.unrepairable.push(id.to_hex()),
        }
    }
    flush(data, &mut new_packs)?;
    flush(trees, &mut new_packs)?;
    if !new_packs.is_empty() {
        rt.block_on(repo.save_index(new_packs))?;
    }
    // 2. Rewrite each index object that names a damaged location, then delete it. A
    // location is dropped only when the blob now has a good one: just written, or
    // another stored copy not known to be damaged. Otherwise it stays (a damaged entry
    // is no worse than none, and the check keeps reporting it).
    let files = {
        let mut scratch = CheckReport::default();
        rt.block_on(load_indexes(repo, &mut scratch))?
    };
    let mut good_elsewhere: HashSet<BlobId> = HashSet::new();
    for (_, f) in &files {
        for p in &f.packs {
            for b in &p.blobs {
                let bad = report
                    .damaged
                    .get(&b.id)
                    .is_some_and(|locs| locs.contains(&(p.id, b.offset)));
                if !bad && report.damaged.contains_key(&b.id) {
                    good_elsewhere.insert(b.id);
                }
            }
        }
    }
    let damaged: HashSet<(PackId, BlobId, u64)> = report
        .damaged
        .iter()
        .filter(|(b, _)| replaced.contains(*b) || good_elsewhere.contains(*b))
        .flat_map(|(b, locs)| locs.iter().map(move |(p, off)| (*p, *b, *off)))
        .collect();
    if damaged.is_empty() {
        return Ok(out);
    }
    for (id, file) in files {
        let touches = file.packs.iter().any(|p| {
            p.blobs
                .iter()
                .any(|b| damaged.contains(&(p.id, b.id, b.offset)))
        });
        if !touches {
            continue;
        }
        let mut packs = Vec::new();
        for p in file.packs {
            let before = p.blobs.len();
            let blobs: Vec<_> = p
                .blobs
                .into_iter()
                .filter(|b| !damaged.contains(&(p.id, b.id, b.offset)))
                .collect();
            out.dropped_locations += (before - blobs.len()) as u64;
            if !blobs.is_empty() {
                packs.push(IndexPack { id: p.id, blobs });
            }
        }
        if !packs.is_empty() {
            rt.block_on(repo.save_index(packs))?;
        }
        rt.block_on(
            repo.backend()
                .delete(&Handle::new(FileType::Index, id.0.to_hex())),
        )?;
    }
    Ok(out)
}
