//! Removing data no snapshot needs, without locks and without breaking a backup that
//! another host runs at the same time: deletion happens in two phases separated by a
//! grace period (see `docs/FORMAT.md`, section 15).
//!
//! A prune run:
//! 1. reads every snapshot, tree and index object (any damage aborts: what is used must
//!    be known exactly);
//! 2. takes back into the index any blob a snapshot uses that an earlier prune had taken
//!    out (a backup that started before that prune may have deduplicated against it);
//! 3. deletes the packs earlier prunes condemned at least `grace` ago, unless something
//!    came to use them meanwhile;
//! 4. condemns packs nothing uses, repacks packs that are mostly unused (copying the used
//!    blobs verbatim into new packs) and rewrites the index without unused entries,
//!    recording all it took out in a `deletions/` object first.
//!
//! After step 4 the index lists only blobs some snapshot uses, so a tree that is indexed
//! is whole: everything below it is indexed too. Every step writes before it deletes, so
//! a prune interrupted anywhere leaves a readable repository and can simply run again.

use crate::backend::{FileType, Handle};
use crate::error::{Error, Result};
pub use crate::format::deletion::DeletionFile;
use crate::format::index::{IndexFile, IndexPack, PackedBlob};
use crate::hash::{BlobId, Id, IndexId, PackId};
use crate::repo::Repository;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;
use tokio::runtime::Handle as Runtime;

/// Packs listed per rewritten index object.
const PACKS_PER_INDEX: usize = 1000;

mod records;
mod repack;
mod survey;
use survey::Survey;

/// How to prune.
#[derive(Clone, Debug)]
pub struct PruneOptions {
    /// Repack a pack when at least this share of its bytes is unused (0..=1).
    pub repack_threshold: f64,
    /// Bytes of packs repacked in one run at most.
    pub max_repack_bytes: Option<u64>,
    /// Time between condemning a pack and deleting it; must exceed the longest backup.
    pub grace: Duration,
    /// Compute and report only.
    pub dry_run: bool,
    /// Live counters for a display: the step in `current`, repacked packs as `files`
    /// and their bytes as `bytes_done` of `bytes_total`.
    pub progress: std::sync::Arc<crate::progress::Progress>,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            repack_threshold: 0.2,
            max_repack_bytes: None,
            grace: Duration::from_secs(24 * 3600),
            dry_run: false,
            progress: Default::default(),
        }
    }
}

/// What a prune did (or, dry, would do).
#[derive(Debug, Default, Serialize)]
pub struct PruneReport {
    /// Snapshots read.
    pub snapshots: u64,
    /// Distinct blobs in use.
    pub used_blobs: u64,
    /// Packs indexed before the run.
    pub packs: u64,
    /// Packs condemned now (deleted by a run after the grace period).
    pub condemned_packs: u64,
    /// Of those, packs in no index object and no deletion record: left by a backup that
    /// was interrupted (or by one running now, whose index object then saves them).
    pub orphan_packs: u64,
    /// Bytes in them.
    pub condemned_bytes: u64,
    /// Packs repacked.
    pub repacked_packs: u64,
    /// Bytes of used blobs copied while repacking.
    pub repacked_bytes: u64,
    /// Packs deleted now (condemned by an earlier run).
    pub deleted_packs: u64,
    /// Bytes freed now.
    pub deleted_bytes: u64,
    /// Blobs taken back into the index because a snapshot uses them.
    pub revived_blobs: u64,
    /// Condemned packs still waiting for their grace period to end.
    pub waiting_packs: u64,
    /// Packs the index named that are not in `data/`; their entries were dropped.
    pub missing_packs: u64,
    /// Condemned packs whose S3 Object Lock has not expired yet: never deleted before.
    pub locked_packs: u64,
    /// When the first of those locks expires (RFC 3339).
    pub next_unlock: Option<String>,
}

/// Run a prune.
pub fn prune(repo: &Repository, rt: &Runtime, opts: &PruneOptions) -> Result<PruneReport> {
    let backend = repo.backend().clone();
    let progress = &opts.progress;
    let (
        mut report,
        Survey {
            now,
            mut files,
            deletions,
            listed,
            stored_at,
            gone,
            mut index,
            used,
        },
    ) = survey::survey(repo, rt, progress)?;

    // 2. Take back what a snapshot uses but the index lacks.
    let mut revive: BTreeMap<PackId, Vec<PackedBlob>> = BTreeMap::new();
    let mut revived: HashSet<BlobId> = HashSet::new();
    for (_, d) in &deletions {
        // Only packs still stored are left in the records (see the survey).
        for p in d.packs.iter().chain(&d.dropped) {
            for b in &p.blobs {
                if used.contains(&b.id) && !index.contains(&b.id) && revived.insert(b.id) {
                    revive.entry(p.id).or_default().push(b.clone());
                }
            }
        }
    }
    // The survey made sure every used blob is in the index or a deletion record.
    report.revived_blobs = revived.len() as u64;
    if !revive.is_empty() && !opts.dry_run {
        let packs: Vec<IndexPack> = revive
            .iter()
            .map(|(id, blobs)| IndexPack {
                id: *id,
                blobs: blobs.clone(),
            })
            .collect();
        let file = rt.block_on(repo.save_index(packs.clone()))?;
        for p in &packs {
            index.add_pack(p);
        }
        files.push((
            file,
            IndexFile {
                version: crate::format::index::INDEX_VERSION,
                packs,
            },
        ));
    }
    let indexed_packs: HashSet<PackId> = files
        .iter()
        .flat_map(|(_, f)| f.packs.iter().map(|p| p.id))
        .collect();

    // 3. Delete what earlier prunes condemned, once the grace period is over, measured
    // from before this run listed the snapshots, plus a twenty-fourth of the grace for
    // the time that prune took to rewrite the index and for clocks that disagree.
    for (id, d) in &deletions {
        let created =
            time::OffsetDateTime::parse(&d.created, &time::format_description::well_known::Rfc3339)
                .map_err(|e| Error::Corrupt {
                    object: format!("deletions/{}", id.to_hex()),
                    reason: format!("bad time: {e}"),
                })?;
        let due = created + opts.grace + opts.grace / 24;
        let waiting: Vec<&IndexPack> = d
            .packs
            .iter()
            .filter(|p| !indexed_packs.contains(&p.id))
            .collect();
        if now < due {
            report.waiting_packs += waiting.len() as u64;
            continue;
        }
        let mut still_locked = false;
        for p in waiting {
            let handle = Handle::new(FileType::Pack, p.id.to_hex());
            // Never try to delete what S3 Object Lock protects: say when it can go.
            let lock = match rt.block_on(backend.locked_until(&handle)) {
                Ok(l) => l,
                // Gone already (another prune got there first): nothing to delete.
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e.into()),
            };
            if let Some(until) = lock {
                still_locked = true;
                report.locked_packs += 1;
                let at = time::OffsetDateTime::from(until)
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default();
                if report.next_unlock.as_ref().is_none_or(|n| at < *n) {
                    report.next_unlock = Some(at);
                }
                continue;
            }
            let bytes = listed.get(&p.id.to_hex()).copied().unwrap_or(0);
            report.deleted_packs += 1;
            report.deleted_bytes += bytes;
            if !opts.dry_run {
                rt.block_on(backend.delete(&handle))?;
            }
        }
        if !opts.dry_run && !still_locked {
            rt.block_on(backend.delete(&Handle::new(FileType::Deletion, id.to_hex())))?;
        }
    }

    // 4. Condemn, repack, and rewrite the index without unused entries.
    // The canonical location of each used blob is the first the index gives; every
    // other copy counts as unused.
    let mut keep_packs: Vec<IndexPack> = Vec::new();
    let mut condemned: Vec<IndexPack> = Vec::new();
    let mut dropped: Vec<IndexPack> = Vec::new();
    let mut to_repack: Vec<(IndexPack, Vec<PackedBlob>)> = Vec::new();
    let mut repack_budget = opts.max_repack_bytes.unwrap_or(u64::MAX);
    let mut seen_packs = HashSet::new();
    let mut by_pack: HashMap<PackId, Vec<PackedBlob>> = HashMap::new();
    for (_, f) in &files {
        for p in &f.packs {
            by_pack
                .entry(p.id)
                .or_default()
                .extend(p.blobs.iter().cloned());
        }
    }
    let canonical = repack::verified_copies(repo, rt, &used, &index, &by_pack);
    for (_, f) in &files {
        for p in &f.packs {
            if !seen_packs.insert(p.id) {
                continue;
            }
            report.packs += 1;
            // All entries for this pack across index objects.
            let mut seen_entries = HashSet::new();
            let entries: Vec<PackedBlob> = by_pack
                .get(&p.id)
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .filter(|b| seen_entries.insert((b.id, b.offset)))
                .cloned()
                .collect();
            let (used_here, unused_here): (Vec<PackedBlob>, Vec<PackedBlob>) =
                entries.into_iter().partition(|b| {
                    used.contains(&b.id)
                        && canonical
                            .get(&b.id)
                            .copied()
                            .or_else(|| index.get(&b.id).map(|l| (l.pack, l.offset)))
                            == Some((p.id, b.offset))
                });
            let used_bytes: u64 = used_here.iter().map(|b| u64::from(b.length)).sum();
            let unused_bytes: u64 = unused_here.iter().map(|b| u64::from(b.length)).sum();
            let pack_bytes = listed
                .get(&p.id.to_hex())
                .copied()
                .unwrap_or(used_bytes + unused_bytes);
            if used_here.is_empty() {
                report.condemned_packs += 1;
                report.condemned_bytes += pack_bytes;
                condemned.push(IndexPack {
                    id: p.id,
                    blobs: unused_here,
                });
            } else if unused_here.is_empty() {
                keep_packs.push(IndexPack {
                    id: p.id,
                    blobs: used_here,
                });
            } else {
                // Bytes earlier prunes dropped from the index count as unused too.
                let share = pack_bytes.saturating_sub(used_bytes) as f64 / pack_bytes.max(1) as f64;
                if share >= opts.repack_threshold && pack_bytes <= repack_budget {
                    repack_budget -= pack_bytes;
                    to_repack.push((
                        IndexPack {
                            id: p.id,
                            blobs: unused_here,
                        },
                        used_here,
                    ));
                } else {
                    dropped.push(IndexPack {
                        id: p.id,
                        blobs: unused_here,
                    });
                    keep_packs.push(IndexPack {
                        id: p.id,
                        blobs: used_here,
                    });
                }
            }
        }
    }
    // Packs in no index object and no deletion record: uploads of a backup that was
    // interrupted before its index object, which nothing can use. Only those stored
    // longer ago than the grace period (a writer that indexes late, such as a long
    // repack, a journal replay or a long backup, is not cut short), and then in the same
    // two phases as any pack: condemned now, deleted after the grace period again unless
    // an index object lists them by then. A pack of unknown age is left alone.
    let old_enough = |name: &str| {
        stored_at.get(name).is_some_and(|t| {
            std::time::SystemTime::now()
                .duration_since(*t)
                .is_ok_and(|age| age >= opts.grace)
        })
    };
    let recorded: HashSet<PackId> = deletions
        .iter()
        .flat_map(|(_, d)| d.packs.iter().map(|p| p.id))
        .collect();
    let mut orphans: Vec<(PackId, u64)> = listed
        .iter()
        .filter(|(name, _)| old_enough(name))
        .filter_map(|(name, size)| Some((PackId(Id::from_object_name(name)?), *size)))
        .filter(|(id, _)| !indexed_packs.contains(id) && !recorded.contains(id))
        .collect();
    orphans.sort();
    for (id, size) in orphans {
        report.orphan_packs += 1;
        report.condemned_packs += 1;
        report.condemned_bytes += size;
        condemned.push(IndexPack {
            id,
            blobs: Vec::new(),
        });
    }
    if opts.dry_run {
        for (old, used_here) in &to_repack {
            report.repacked_packs += 1;
            report.repacked_bytes += used_here.iter().map(|b| u64::from(b.length)).sum::<u64>();
            report.condemned_packs += 1;
            report.condemned_bytes += listed.get(&old.id.to_hex()).copied().unwrap_or(0);
        }
        return Ok(report);
    }
    // Repack: copy the used blobs verbatim (verified) into new packs.
    repack::repack(repo, rt, &to_repack, &listed, progress, &mut report)?;
    for (old, used_here) in to_repack {
        let mut blobs = old.blobs;
        blobs.extend(used_here);
        condemned.push(IndexPack { id: old.id, blobs });
    }
    // Nothing to take out, and no entry of a missing pack to drop: the index stays.
    if condemned.is_empty() && dropped.is_empty() && gone == 0 {
        return Ok(report);
    }
    // Record what is taken out before taking it out (in several records when it is
    // much). Entries of missing packs need no record: there is nothing left to read
    // through them.
    let record = DeletionFile {
        version: 1,
        created: crate::host::now_rfc3339(),
        packs: condemned,
        dropped,
    };
    records::write_record(repo, rt, record)?;
    // The new index: what is kept, plus the repacked packs; then the old objects go.
    // (The repacked packs have an index object of their own already.)
    let all = keep_packs;
    for chunk in all.chunks(PACKS_PER_INDEX) {
        rt.block_on(repo.save_index(chunk.to_vec()))?;
    }
    for (old, _) in &files {
        rt.block_on(backend.delete(&Handle::new(FileType::Index, old.0.to_hex())))?;
    }
    Ok(report)
}

/// Push the S3 Object Lock of every object the repository still needs (config, keys,
/// snapshots, index, deletion records, and every pack not condemned) out to the full
/// period from now, so that history stays protected as long as it is kept. Returns how
/// many objects were extended (0 on a backend without locks).
pub fn extend_locks(repo: &Repository, rt: &Runtime) -> Result<u64> {
    let backend = repo.backend().clone();
    if !rt.block_on(backend.extend_lock(&Handle::config()))? {
        return Ok(0);
    }
    let mut n = 1;
    let mut condemned: HashSet<String> = HashSet::new();
    for (_, d) in rt.block_on(repo.load_deletions())? {
        if let Ok(d) = d {
            condemned.extend(d.packs.iter().map(|p| p.id.to_hex()));
        }
    }
    // A condemned pack that an index object lists again (revived, or a prune that was
    // interrupted) is still needed.
    for info in rt.block_on(backend.list(FileType::Index))? {
        if let Some(id) = Id::from_object_name(&info.name)
            && let Ok(f) = rt.block_on(repo.load_index_file(IndexId(id)))
        {
            for p in &f.packs {
                condemned.remove(&p.id.to_hex());
            }
        }
    }
    for kind in [
        FileType::Key,
        FileType::Snapshot,
        FileType::Index,
        FileType::Deletion,
        FileType::Pack,
    ] {
        for info in rt.block_on(backend.list(kind))? {
            if kind == FileType::Pack && condemned.contains(&info.name) {
                continue;
            }
            match rt.block_on(backend.extend_lock(&Handle::new(kind, info.name))) {
                Ok(_) => n += 1,
                // Deleted since the listing (a prune elsewhere): nothing to protect.
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(n)
}
