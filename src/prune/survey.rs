//! What a prune plans from: the snapshots, index objects, deletion records and packs,
//! listed and read so that they agree with each other, and every blob the snapshots use.
//!
//! Other hosts go on working while a prune reads: a `forget` removes snapshots, another
//! prune replaces index objects, deletes packs and finishes deletion records. Something
//! listed that is gone when it is read is not damage. A snapshot or a deletion record
//! that vanished simply no longer counts (a forgotten snapshot uses nothing; a record is
//! removed only after its packs). An index object that vanished was replaced by objects
//! this listing may have missed, and a tree that vanished belonged to a snapshot that
//! was forgotten after it was read: either way the survey starts again from fresh
//! listings, a few times at most, before anything is written or deleted.

use super::{DeletionFile, PruneReport};
use crate::backend::FileType;
use crate::error::{Error, Result};
use crate::format::index::IndexFile;
use crate::format::tree::Tree;
use crate::hash::{BlobId, Id, IndexId, SnapshotId};
use crate::index::MasterIndex;
use crate::progress::Progress;
use crate::repo::Repository;
use crate::tree_loader::TreeLoader;
use std::collections::{HashMap, HashSet};
use std::time::SystemTime;
use tokio::runtime::Handle as Runtime;

/// How many times the survey starts again because what it listed changed under it.
/// Each restart needs another host to remove something in the seconds a survey takes;
/// five in a row means the repository is being rewritten faster than it can be read.
const ATTEMPTS: usize = 5;

/// Everything a prune decides from, consistent with itself.
pub(super) struct Survey {
    /// When the snapshots were listed: the grace period of deletion records counts to it.
    pub now: time::OffsetDateTime,
    /// Every index object, without entries of packs that are not stored.
    pub files: Vec<(IndexId, IndexFile)>,
    /// Every deletion record, without packs that are not stored.
    pub deletions: Vec<(Id, DeletionFile)>,
    /// Stored packs by object name, with their sizes.
    pub listed: HashMap<String, u64>,
    /// When each stored pack was written, where the storage says.
    pub stored_at: HashMap<String, SystemTime>,
    /// Index entries dropped because their pack is not stored.
    pub gone: usize,
    /// The index as `files` give it.
    pub index: MasterIndex,
    /// Every blob a snapshot uses.
    pub used: HashSet<BlobId>,
}

/// Survey the repository, starting again (at most [`ATTEMPTS`] times) while something
/// listed vanishes before it is read. The report counts what the survey read.
pub(super) fn survey(
    repo: &Repository,
    rt: &Runtime,
    progress: &Progress,
) -> Result<(PruneReport, Survey)> {
    let mut last = String::new();
    for _ in 0..ATTEMPTS {
        let mut report = PruneReport::default();
        match survey_once(repo, rt, progress, &mut report)? {
            Ok(survey) => return Ok((report, survey)),
            Err(changed) => {
                tracing::info!("{changed}: prune lists the repository again");
                last = changed;
            }
        }
    }
    Err(Error::InvalidInput(format!(
        "the repository kept changing while prune read it ({last}; {ATTEMPTS} times in a row); nothing was deleted: run prune again when the other prunes are done"
    )))
}

/// One survey; the inner error says what changed under it (start again).
fn survey_once(
    repo: &Repository,
    rt: &Runtime,
    progress: &Progress,
    report: &mut PruneReport,
) -> Result<std::result::Result<Survey, String>> {
    let backend = repo.backend();
    // Snapshots first: a snapshot committed meanwhile has its index objects written
    // before it, so they are among those listed next. One committed later is protected
    // by the grace period.
    let now = time::OffsetDateTime::now_utc();
    let snapshots = rt.block_on(repo.snapshot_ids())?;
    progress.set_current("reading the index");

    // Everything the index says, object by object.
    let mut files: Vec<(IndexId, IndexFile)> = Vec::new();
    let mut replaced: Option<IndexId> = None;
    let listing = rt.block_on(repo.index_listing())?;
    let mut listed_at_start = Listings::of_index(&listing);
    rt.block_on(repo.for_each_index_file(None, listing, |id, file| {
        match file {
            Ok(file) => files.push((id, file)),
            // Another prune wrote its replacement first, maybe after this listing.
            Err(Error::Backend(e)) if e.is_not_found() => replaced = replaced.or(Some(id)),
            Err(e) => return Err(e),
        }
        Ok(())
    }))
    .map_err(|e| Error::InvalidInput(format!("{e}; prune stops: run `cairn check`")))?;
    if let Some(id) = replaced {
        return Ok(Err(format!(
            "index/{id} was replaced after it was listed (another prune)"
        )));
    }
    // What earlier prunes took out. A record gone since the listing was finished by
    // another prune, which removes a record only after its packs.
    let mut deletions: Vec<(Id, DeletionFile)> = Vec::new();
    let loaded = rt.block_on(repo.load_deletions())?;
    listed_at_start.deletions = loaded.iter().map(|(id, _)| *id).collect();
    for (id, d) in loaded {
        match d {
            Ok(d) => deletions.push((id, d)),
            Err(Error::Backend(e)) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    // The packs stored, listed after the index objects (every pack they name that is
    // stored is in it). The index is a cache of `data/`: an entry whose pack is gone (an
    // old index object put back after a prune deleted its packs) must count for nothing,
    // or it would stand for a blob whose live copy elsewhere then looks unused and is
    // deleted. Such entries are dropped from the index this run writes, and packs no
    // longer stored from the deletion records this run reads.
    let pack_listing = rt.block_on(backend.list(FileType::Pack))?;
    let stored_at: HashMap<String, SystemTime> = pack_listing
        .iter()
        .filter_map(|i| Some((i.name.clone(), i.modified?)))
        .collect();
    let listed: HashMap<String, u64> = pack_listing.into_iter().map(|i| (i.name, i.size)).collect();
    let mut gone = 0usize;
    for (_, f) in &mut files {
        f.packs.retain(|p| {
            let kept = listed.contains_key(&p.id.to_hex());
            gone += usize::from(!kept);
            kept
        });
    }
    for (_, d) in &mut deletions {
        d.packs.retain(|p| listed.contains_key(&p.id.to_hex()));
        d.dropped.retain(|p| listed.contains_key(&p.id.to_hex()));
    }
    if gone > 0 {
        tracing::warn!(
            "the index names {gone} pack(s) that are not in data/: their entries are dropped from the index"
        );
    }
    report.missing_packs = gone as u64;
    let mut index = MasterIndex::default();
    for (_, f) in &files {
        for p in &f.packs {
            index.add_pack(p);
        }
    }
    // Trees taken out earlier may be needed to read a snapshot that still uses them.
    let mut full_index = MasterIndex::default();
    for (_, f) in &files {
        for p in &f.packs {
            full_index.add_pack(p);
        }
    }
    for (_, d) in &deletions {
        for p in d.packs.iter().chain(&d.dropped) {
            full_index.add_pack(p);
        }
    }
    let used = match used_blobs(repo, rt, &snapshots, &full_index, &listed_at_start, report)? {
        Ok(used) => used,
        Err(changed) => return Ok(Err(changed)),
    };
    // Every used blob must be somewhere: in the index, or in a deletion record whose
    // pack is stored (the next step takes it back). Another prune may have moved one
    // from a record this survey listed into an index object it did not list.
    let missing: Vec<&BlobId> = used.iter().filter(|b| !full_index.contains(b)).collect();
    if let Some(b) = missing.first() {
        if let Some(changed) = listed_at_start.changed(repo, rt)? {
            return Ok(Err(changed));
        }
        return Err(Error::InvalidInput(format!(
            "{} blob(s) that snapshots use are stored nowhere (first: {}); prune stops: run `cairn check`",
            missing.len(),
            b.short()
        )));
    }
    report.used_blobs = used.len() as u64;
    Ok(Ok(Survey {
        now,
        files,
        deletions,
        listed,
        stored_at,
        gone,
        index,
        used,
    }))
}

/// Every blob the snapshots use (trees and file contents). A snapshot deleted since the
/// listing uses nothing. Any other unreadable snapshot, and any unreadable tree, is an
/// error: without it, what is used is unknown; unless one of the snapshots read is gone
/// by then (forgotten, and its trees pruned by another host), which is a change (the
/// inner error) rather than damage. Trees are read through a [`TreeLoader`], each with
/// its neighbours in one request: one GET per tree took a round trip each, minutes for a
/// large repository.
fn used_blobs(
    repo: &Repository,
    rt: &Runtime,
    snapshots: &[SnapshotId],
    index: &MasterIndex,
    listed: &Listings,
    report: &mut PruneReport,
) -> Result<std::result::Result<HashSet<BlobId>, String>> {
    let trees = TreeLoader::for_repo(repo, index);
    let mut used = HashSet::new();
    let mut stack = Vec::new();
    let mut read = Vec::new();
    let mut absent = Vec::new();
    for (id, snap) in rt.block_on(repo.load_snapshots(snapshots.to_vec())) {
        let snap = match snap {
            Ok(snap) => snap,
            Err(Error::Backend(e)) if e.is_not_found() => {
                tracing::debug!("snapshots/{id} was forgotten after it was listed");
                absent.push(id);
                continue;
            }
            Err(e) => {
                return Err(Error::InvalidInput(format!(
                    "snapshot {} cannot be read ({e}); prune stops, because what it uses cannot be known: run `cairn check`",
                    id.short()
                )));
            }
        };
        report.snapshots += 1;
        read.push(id);
        stack.push(snap.tree);
    }
    // A snapshot taken for forgotten must really be gone: one a storage answered "not
    // found" for by mistake (a proxy, an inconsistent listing) is still listed, and
    // what it uses must not be taken for unused.
    if !absent.is_empty() {
        let now: HashSet<SnapshotId> = rt.block_on(repo.snapshot_ids())?.into_iter().collect();
        if let Some(id) = absent.iter().find(|id| now.contains(id)) {
            return Err(Error::InvalidInput(format!(
                "snapshots/{id} is listed but could not be found when read; prune stops, because what it uses cannot be known: check the storage, then run prune again"
            )));
        }
    }
    while let Some(tree_id) = stack.pop() {
        if !used.insert(tree_id) {
            continue;
        }
        let plain = match trees.load(rt, &tree_id) {
            Ok(plain) => plain,
            Err(e) => {
                if let Some(gone) = forgotten_since(repo, rt, &read)? {
                    return Ok(Err(format!(
                        "snapshot {} was forgotten while prune read its trees",
                        gone.short()
                    )));
                }
                if let Some(changed) = listed.changed(repo, rt)? {
                    return Ok(Err(changed));
                }
                return Err(Error::InvalidInput(format!(
                    "tree {} cannot be read ({e}); prune stops: run `cairn check`",
                    tree_id.short()
                )));
            }
        };
        let tree = Tree::from_plain(&plain)
            .map_err(|e| Error::corrupt_format(format!("tree {}", tree_id.short()), e))?;
        for node in tree.nodes {
            if let Some(sub) = node.subtree {
                stack.push(sub);
            }
            used.extend(node.content);
        }
    }
    Ok(Ok(used))
}

/// The first of the snapshots `read` that is no longer listed.
fn forgotten_since(
    repo: &Repository,
    rt: &Runtime,
    read: &[SnapshotId],
) -> Result<Option<SnapshotId>> {
    let now: HashSet<SnapshotId> = rt.block_on(repo.snapshot_ids())?.into_iter().collect();
    Ok(read.iter().find(|id| !now.contains(id)).copied())
}

/// The index objects and deletion records a survey listed: when something it needs is
/// not found, a change in either says another prune moved it (start again) rather
/// than that it is lost.
struct Listings {
    index: HashSet<IndexId>,
    deletions: HashSet<Id>,
}

impl Listings {
    /// The index objects listed; the deletion records are added once listed.
    fn of_index(index: &[(IndexId, u64)]) -> Self {
        Listings {
            index: index.iter().map(|(id, _)| *id).collect(),
            deletions: HashSet::new(),
        }
    }

    /// What changed since, as a reason to start again; `None` when nothing did.
    fn changed(&self, repo: &Repository, rt: &Runtime) -> Result<Option<String>> {
        let index: HashSet<IndexId> = rt
            .block_on(repo.index_listing())?
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        if index != self.index {
            return Ok(Some(
                "the index was rewritten while prune read it (another prune)".into(),
            ));
        }
        let deletions: HashSet<Id> = rt
            .block_on(repo.backend().list(FileType::Deletion))?
            .iter()
            .filter_map(|info| Id::from_object_name(&info.name))
            .collect();
        if deletions != self.deletions {
            return Ok(Some(
                "the deletion records changed while prune read them (another prune)".into(),
            ));
        }
        Ok(None)
    }
}
