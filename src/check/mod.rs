//! Proving a repository restorable: every index object decodes, every indexed pack
//! exists and its header agrees with the index, every snapshot decodes and every tree
//! and file it references is indexed (and every tree decrypts and verifies); with
//! `read_data`, every blob of every (or a sample of the) pack is fetched, decrypted and
//! checked against its id. Each finding names the object, and damaged or missing blobs
//! are traced to the snapshots and file paths they belong to.
//!
//! This module holds the report and the order of the work: the index is loaded here,
//! then `packs` checks the packs against it and `walk` walks the snapshots' trees.
//! [`repair()`] (in its own module) writes good copies of what a check found damaged back
//! from a copy on the same keys.

mod packs;
mod repair;
mod walk;

pub use repair::{RepairReport, repair};

use crate::backend::FileType;
use crate::error::{Error, Result};
use crate::format::index::{IndexFile, PackedBlob};
use crate::hash::{BlobId, IndexId, PackId};
use crate::index::{MasterIndex, relist_while_replaced};
use crate::progress::Progress;
use crate::repo::Repository;
use std::collections::{BTreeMap, HashMap, HashSet};
use tokio::runtime::Handle as Runtime;

/// How much data to read back.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ReadData {
    /// Structure only (trees are still read and verified).
    None,
    /// Every pack.
    All,
    /// This share of the packs (0 < f <= 1), chosen at random.
    Subset(f64),
    /// The next `count` packs in id order after `after` (wrapping around): a scrub
    /// reads the whole repository slice by slice, continuing where the last one ended.
    Rotating {
        /// The last pack the previous slice read.
        after: Option<PackId>,
        /// Packs to read in this slice.
        count: usize,
    },
}

/// One thing a check found wrong, named by the object it concerns: damage (a missing
/// pack, a blob that does not verify, a tree that does not decode) or something that
/// could not be looked at (a read that timed out), which is reported but never repaired.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    /// The object concerned (`data/ab/ab12...`, `index/...`, `snapshot 1a2b3c4d`).
    pub object: String,
    /// What is wrong.
    pub message: String,
}

/// A file (or directory) that cannot be restored intact, and why.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Affected {
    /// Snapshot (short id).
    pub snapshot: String,
    /// Path in the snapshot.
    pub path: String,
    /// The blob it needs.
    pub blob: String,
}

/// The outcome of a check.
#[derive(Debug, Default, serde::Serialize)]
pub struct CheckReport {
    /// Every problem found.
    pub problems: Vec<Finding>,
    /// Entries whose blobs are damaged or missing, each once (with the first such blob).
    pub affected: Vec<Affected>,
    /// Snapshots checked.
    pub snapshots: u64,
    /// Packs the index names.
    pub packs: u64,
    /// Blobs indexed.
    pub blobs: u64,
    /// Packs whose data was read back.
    pub packs_read: u64,
    /// Bytes read back.
    pub bytes_read: u64,
    /// Stored locations (pack, offset) proven damaged, per blob, for repair. Locations
    /// that merely could not be read (a timeout) are reported as problems, never here.
    #[serde(skip)]
    pub damaged: BTreeMap<BlobId, Vec<(PackId, u64)>>,
    /// Blobs referenced but in no index, for repair.
    #[serde(skip)]
    pub missing: HashSet<BlobId>,
    /// With [`ReadData::Rotating`]: the last pack of this slice, where the next begins.
    #[serde(skip)]
    pub last_pack_read: Option<PackId>,
}

impl CheckReport {
    /// Whether the repository is healthy.
    pub fn is_healthy(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Every index object, those that decode, and findings for those that do not; several
/// are read at a time, in listing order. An index object gone since the listing was
/// replaced by a prune running meanwhile: the index is listed again (a few times, by
/// [`relist_while_replaced`]); on the last try one gone is a finding like any other.
async fn load_indexes(
    repo: &Repository,
    report: &mut CheckReport,
) -> Result<Vec<(IndexId, IndexFile)>> {
    let (files, problems) = relist_while_replaced(|last| async move {
        let listed = repo.index_listing().await?;
        let mut files = Vec::new();
        let mut problems = Vec::new();
        let mut replaced = None;
        repo.for_each_index_file(None, listed, |id, file| {
            match file {
                Ok(f) => files.push((id, f)),
                Err(Error::Backend(e)) if e.is_not_found() && !last => {
                    replaced = replaced.or(Some(id));
                }
                Err(e) => problems.push(Finding {
                    object: format!("index/{id}"),
                    message: e.to_string(),
                }),
            }
            Ok(())
        })
        .await?;
        Ok(match replaced {
            Some(id) => Err(id),
            None => Ok((files, problems)),
        })
    })
    .await?;
    report.problems.extend(problems);
    Ok(files)
}

/// Check `repo`.
pub fn check(repo: &Repository, rt: &Runtime, read_data: ReadData) -> Result<CheckReport> {
    check_with(repo, rt, read_data, &Progress::default())
}

/// Check `repo`, counting packs (as `files`) and, when every pack is read, pack bytes
/// into `progress` for a display.
pub fn check_with(
    repo: &Repository,
    rt: &Runtime,
    read_data: ReadData,
    progress: &Progress,
) -> Result<CheckReport> {
    let mut report = CheckReport::default();
    // Snapshots first: one committed meanwhile has its index objects written before it,
    // so they are among those loaded next.
    let snapshot_ids = rt.block_on(repo.snapshot_ids())?;
    let files = rt.block_on(load_indexes(repo, &mut report))?;
    let mut index = MasterIndex::default();
    // Every location of every blob, per pack (a blob may be stored twice).
    let mut by_pack: BTreeMap<PackId, Vec<PackedBlob>> = BTreeMap::new();
    for (_, f) in &files {
        for p in &f.packs {
            index.add_pack(p);
            by_pack
                .entry(p.id)
                .or_default()
                .extend(p.blobs.iter().cloned());
        }
    }
    report.packs = by_pack.len() as u64;
    report.blobs = index.len() as u64;
    let listed: HashMap<String, u64> = rt
        .block_on(repo.backend().list(FileType::Pack))?
        .into_iter()
        .map(|i| (i.name, i.size))
        .collect();
    // Blobs a prune took out of the index but has not deleted yet stay readable (a
    // snapshot made during that prune may use them; the next prune takes them back):
    // they count as stored, after every indexed copy.
    for (id, d) in rt.block_on(repo.load_deletions())? {
        match d {
            Ok(d) => {
                for p in d.packs.iter().chain(&d.dropped) {
                    if listed.contains_key(&p.id.to_hex()) {
                        index.add_pack(p);
                    }
                }
            }
            // Finished by a prune meanwhile (it removes a record after its packs).
            Err(Error::Backend(e)) if e.is_not_found() => {}
            Err(e) => report.problems.push(Finding {
                object: format!("deletions/{}", id.to_hex()),
                message: e.to_string(),
            }),
        }
    }

    packs::check_packs(
        repo,
        rt,
        &by_pack,
        &listed,
        read_data,
        progress,
        &mut report,
    )?;
    walk::walk_snapshots(repo, rt, &index, snapshot_ids, &mut report);
    Ok(report)
}
