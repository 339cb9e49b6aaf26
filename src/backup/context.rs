//! What a long-running caller keeps from one backup to the next: the repository's index,
//! brought up to date incrementally before each run ([`BackupContext::refresh`]) and
//! extended with what each run stored, so the daemon does not read the whole index for
//! every snapshot.

use crate::cache::MetadataCache;
use crate::error::{Error, Result};
use crate::format::index::IndexFile;
use crate::hash::IndexId;
use crate::index::MasterIndex;
use crate::repo::Repository;
use std::collections::HashSet;

/// What a long-running caller (the daemon) keeps between backups of one repository: the
/// index, updated incrementally, and an optional local metadata cache.
#[derive(Debug, Default)]
pub struct BackupContext {
    /// Every blob known to be stored, so that a backup uploads only new ones.
    pub(super) index: MasterIndex,
    /// The index objects `index` was built from (a prune that rewrites the index shows
    /// as one of them gone).
    pub(super) loaded: HashSet<IndexId>,
    /// Trees and index objects kept on local disk, to spare reads from the repository.
    pub(super) cache: Option<MetadataCache>,
    rewritten: bool,
}

impl BackupContext {
    /// An empty context; [`BackupContext::refresh`] fills it.
    pub fn new(cache: Option<MetadataCache>) -> Self {
        BackupContext {
            index: MasterIndex::default(),
            loaded: HashSet::new(),
            cache,
            rewritten: false,
        }
    }

    /// The index as last refreshed.
    pub fn index(&self) -> &MasterIndex {
        &self.index
    }

    /// Bring the index up to date with the repository: load index objects not seen yet
    /// (from the local cache when it has them). If one seen before has gone (a prune
    /// rewrote the index), start again from scratch, so no blob is believed stored that
    /// may have been deleted.
    ///
    /// The index is a cache of what `data/` holds, never the truth: whenever index
    /// objects are loaded, `data/` is listed (after the index, so every pack a listed
    /// index object names was stored before the listing began) and entries whose pack is
    /// not there are left out, so their blobs are uploaded again. An old index object put
    /// back (a versioned bucket's undelete, or anyone with write access) would otherwise
    /// make later snapshots reference packs a prune deleted. What was left out is
    /// reported in the log, and the next backup compares everything once.
    pub async fn refresh(&mut self, repo: &Repository) -> Result<()> {
        let listing = repo.index_listing().await?;
        let listed: HashSet<IndexId> = listing.iter().map(|&(id, _)| id).collect();
        if !self.loaded.is_subset(&listed) {
            tracing::info!("the repository's index was rewritten; reloading it");
            self.index = MasterIndex::default();
            self.loaded.clear();
            self.rewritten = true;
        }
        let mut new: Vec<(IndexId, u64)> = listing
            .into_iter()
            .filter(|(id, _)| !self.loaded.contains(id))
            .collect();
        new.sort();
        if !new.is_empty() {
            let stored = repo.pack_ids().await?;
            // Several reads at once (a new machine has nothing cached), applied in order.
            let cache = self.cache.clone();
            let (index, loaded) = (&mut self.index, &mut self.loaded);
            let mut missing: Vec<(IndexId, crate::hash::PackId)> = Vec::new();
            repo.for_each_index_file(cache.as_ref(), new, |id, file| {
                let file = match file {
                    Ok(f) => f,
                    // Its blobs are simply not counted as stored: they are uploaded
                    // again if needed, which loses nothing.
                    Err(e) if skippable_index_error(&e) => {
                        if let Error::Corrupt { object, reason } = e {
                            repo.skipped().note(object, reason);
                        }
                        loaded.insert(id);
                        return Ok(());
                    }
                    Err(e) => return Err(e),
                };
                for p in &file.packs {
                    if stored.contains(&p.id) {
                        index.add_pack(p);
                    } else {
                        missing.push((id, p.id));
                    }
                }
                loaded.insert(id);
                Ok(())
            })
            .await?;
            if !missing.is_empty() {
                let objects: HashSet<IndexId> = missing.iter().map(|(i, _)| *i).collect();
                let mut names: Vec<String> = objects.iter().map(|i| format!("index/{i}")).collect();
                names.sort();
                tracing::warn!(
                    "{} pack(s) named by {} are not in data/ (deleted by a prune, an index object put back, or lost): their blobs are not counted as stored and will be uploaded again; run `cairn check` and then `cairn prune` to tidy the index",
                    missing.len(),
                    names.join(", ")
                );
                // An indexed tree is no longer known to be whole: compare everything once
                // rather than carry entries over from a parent.
                self.rewritten = true;
            }
        }
        if let Some(c) = &self.cache {
            c.retain_index(&listed);
        }
        Ok(())
    }

    /// Whether the index was rewritten (by a prune or repair) since the last call: a
    /// caller that carries entries over from a parent without reading them should
    /// compare everything once, since data the parent used may be gone.
    pub fn take_rewritten(&mut self) -> bool {
        std::mem::take(&mut self.rewritten)
    }

    /// Take in what a run of this context stored (the packer's index objects, with what
    /// they list): a failed refresh later (a destination going down) must not make the
    /// next run store it again, and it needs no reading back.
    pub(super) fn add_stored(&mut self, packed: &crate::packer::PackerStats) {
        for (id, packs) in &packed.indexes {
            for p in packs {
                self.index.add_pack(p);
            }
            self.loaded.insert(*id);
        }
    }

    /// Add packs stored elsewhere that will reach this repository before any snapshot
    /// that relies on them (a journal's), without counting their index objects as this
    /// repository's.
    pub fn add_packs(&mut self, file: &IndexFile) {
        for p in &file.packs {
            self.index.add_pack(p);
        }
    }
}

/// Whether an index object that could not be loaded may be passed over: it is damaged
/// or foreign (its blobs then count as not stored), or it was deleted after the listing
/// (a prune replaced it). Any other failure stops the load.
fn skippable_index_error(e: &Error) -> bool {
    matches!(e, Error::Corrupt { .. }) || matches!(e, Error::Backend(b) if b.is_not_found())
}
