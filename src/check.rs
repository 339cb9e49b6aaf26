//! Proving a repository restorable: every index object decodes, every indexed pack
//! exists and its header agrees with the index, every snapshot decodes and every tree
//! and file it references is indexed (and every tree decrypts and verifies); with
//! `read_data`, every blob of every (or a sample of the) pack is fetched, decrypted and
//! checked against its id. Each problem names the object, and damaged or missing blobs
//! are traced to the snapshots and file paths they belong to.
//!
//! [`repair`] writes good copies of damaged blobs back from a copy on the same keys:
//! new packs first, then an index naming them, then each index object that pointed at a
//! damaged location is rewritten without that location and the old one deleted. At
//! every step the repository is at least as readable as before.

use crate::backend::{FileType, Handle};
use crate::error::{Error, Result};
use crate::format::index::{BlobKind, IndexFile, IndexPack, PackedBlob};
use crate::format::tree::{NodeKind, Tree};
use crate::hash::{BlobId, IndexId, PackId, SnapshotId};
use crate::heal::Copy;
use crate::index::MasterIndex;
use crate::pack::{PackBuilder, SealedBlob, open_blob};
use crate::progress::Progress;
use crate::repo::Repository;
use crate::tree_loader::TreeLoader;
use futures_util::stream::{self, StreamExt};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use tokio::runtime::Handle as Runtime;

/// Pack headers read at a time: each is one small request, so latency, not bandwidth,
/// is what they cost; as many as the snapshot reads ([`crate::repo::SNAPSHOT_READS`]).
const HEADER_READS: usize = 8;
/// Packs whose headers are read before they are checked: bounds the headers held.
const HEADER_GROUP: usize = 64;

/// Packs larger than this are verified blob by blob with ranged reads instead of being
/// fetched whole, so memory stays bounded whatever the pack size.
const WHOLE_PACK_LIMIT: u64 = 64 * 1024 * 1024;

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

/// One thing wrong.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
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
    pub problems: Vec<Problem>,
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

/// Every index object, those that decode, and problems for those that do not; several
/// are read at a time, in listing order. An index object gone since the listing was
/// replaced by a prune running meanwhile: the index is listed again (a few times).
async fn load_indexes(
    repo: &Repository,
    report: &mut CheckReport,
) -> Result<Vec<(IndexId, IndexFile)>> {
    const ATTEMPTS: usize = 5;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let listed = repo.index_listing().await?;
        let mut files = Vec::new();
        let mut problems = Vec::new();
        let mut replaced = false;
        repo.for_each_index_file(None, listed, |id, file| {
            match file {
                Ok(f) => files.push((id, f)),
                Err(Error::Backend(e)) if e.is_not_found() && attempt < ATTEMPTS => {
                    replaced = true;
                }
                Err(e) => problems.push(Problem {
                    object: format!("index/{id}"),
                    message: e.to_string(),
                }),
            }
            Ok(())
        })
        .await?;
        if !replaced {
            report.problems.extend(problems);
            return Ok(files);
        }
        tracing::info!("an index object was replaced while check read it; listing again");
    }
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
    let mut by_pack: BTreeMap<PackId, Vec<crate::format::index::PackedBlob>> = BTreeMap::new();
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
            Err(e) => report.problems.push(Problem {
                object: format!("deletions/{}", id.to_hex()),
                message: e.to_string(),
            }),
        }
    }

    // Packs: present, and their headers agree with the index.
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
                        report.problems.push(Problem {
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
                        report.problems.push(Problem {
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
                            report.problems.push(Problem {
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
                Err(e) => report.problems.push(Problem {
                    object: object.clone(),
                    message: format!("its header cannot be read: {e}"),
                }),
            }
            if sample.take() || chosen.contains(pack) {
                verify_pack(repo, rt, *pack, size, blobs, &mut report)?;
            }
        }
    }

    // Snapshots and trees, each tree with its neighbours in one request (one GET per
    // tree took a round trip each); a tree that fails there is read again on its own, and
    // that error is the one reported.
    let trees = TreeLoader::for_repo(repo, &index);
    let mut walker = TreeWalk {
        trees: &trees,
        rt,
        index: &index,
        clean: HashSet::new(),
        report: &mut report,
    };
    // Snapshots are small; they are read several at a time, in order, ahead of the walk.
    let snapshots = rt.block_on(repo.load_snapshots(snapshot_ids));
    for (id, snapshot) in snapshots {
        match snapshot {
            // Forgotten after the listing (a `forget` running meanwhile): not damage.
            Err(Error::Backend(e)) if e.is_not_found() => {
                tracing::debug!("snapshots/{id} was forgotten after it was listed");
                continue;
            }
            Ok(s) => {
                walker.report.snapshots += 1;
                walker.walk(&s.tree, Path::new("/"), id);
            }
            Err(e) => {
                walker.report.snapshots += 1;
                walker.report.problems.push(Problem {
                    object: format!("snapshot {}", id.short()),
                    message: e.to_string(),
                });
            }
        }
    }
    Ok(report)
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

fn verify_pack(
    repo: &Repository,
    rt: &Runtime,
    pack: PackId,
    size: u64,
    blobs: &[crate::format::index::PackedBlob],
    report: &mut CheckReport,
) -> Result<()> {
    let handle = Handle::new(FileType::Pack, pack.to_hex());
    let whole = if size <= WHOLE_PACK_LIMIT {
        match rt.block_on(repo.backend().get(&handle)) {
            Ok(b) => Some(b),
            Err(e) => {
                report.problems.push(Problem {
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
                report.problems.push(Problem {
                    object: handle.path(),
                    message: format!("blob {} could not be read: {why}", b.id.short()),
                });
                continue;
            }
        };
        if let Err(why) = open_blob(repo.keys(), &b.id, &loc, &sealed) {
            report.problems.push(Problem {
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

struct TreeWalk<'a> {
    trees: &'a TreeLoader<'a>,
    rt: &'a Runtime,
    index: &'a MasterIndex,
    /// Trees known to have no damage below them.
    clean: HashSet<BlobId>,
    report: &'a mut CheckReport,
}

impl TreeWalk<'_> {
    /// Whether the blob is usable: indexed, and at least one location undamaged.
    fn usable(&self, id: &BlobId) -> bool {
        match self.index.get(id) {
            None => false,
            Some(loc) => !self
                .report
                .damaged
                .get(id)
                .is_some_and(|locs| locs.contains(&(loc.pack, loc.offset))),
        }
    }

    /// Record a referenced blob that no index lists, once per blob.
    fn note_missing(&mut self, blob: &BlobId) {
        if self.index.get(blob).is_none() && self.report.missing.insert(*blob) {
            self.report.problems.push(Problem {
                object: format!("blob {}", blob.short()),
                message: "is referenced but in no index".into(),
            });
        }
    }

    fn affected(&mut self, snap: SnapshotId, path: &Path, blob: &BlobId) {
        self.note_missing(blob);
        self.report.affected.push(Affected {
            snapshot: snap.short(),
            path: path.to_string_lossy().into_owned(),
            blob: blob.to_hex(),
        });
    }

    /// Walk a tree; returns whether anything below is damaged. Entries are looked at in
    /// name order, each directory's below it before the next entry, as a recursive walk
    /// would; but iteratively, one frame per directory level holding that level's
    /// entries still to look at, so a hostile or very deep tree (100,000 levels) costs
    /// memory in proportion to its depth, never the thread's stack. The current path is
    /// one buffer, a name pushed per level.
    fn walk(&mut self, root: &BlobId, at: &Path, snap: SnapshotId) -> bool {
        let mut path = at.to_path_buf();
        let mut stack: Vec<WalkFrame> = match self.enter(root, &path, snap) {
            Entered::Done(damaged) => return damaged,
            Entered::Frame(f) => vec![f],
        };
        loop {
            let Some(top) = stack.last_mut() else {
                return false;
            };
            let Some(node) = top.nodes.next() else {
                let done = stack
                    .pop()
                    .unwrap_or_else(|| unreachable!("a frame was on top"));
                if !done.damaged {
                    self.clean.insert(done.id);
                }
                match stack.last_mut() {
                    Some(parent) => {
                        parent.damaged |= done.damaged;
                        path.pop();
                    }
                    None => return done.damaged,
                }
                continue;
            };
            let tree_id = top.id;
            match node.kind {
                NodeKind::Dir => match node.subtree {
                    Some(sub) => {
                        path.push(node.name.to_os());
                        match self.enter(&sub, &path, snap) {
                            Entered::Done(damaged) => {
                                path.pop();
                                if let Some(top) = stack.last_mut() {
                                    top.damaged |= damaged;
                                }
                            }
                            Entered::Frame(f) => stack.push(f),
                        }
                    }
                    None => {
                        self.report.problems.push(Problem {
                            object: format!("tree {} ({})", tree_id.short(), path.display()),
                            message: format!(
                                "directory {} has no subtree",
                                path.join(node.name.to_os()).display()
                            ),
                        });
                        if let Some(top) = stack.last_mut() {
                            top.damaged = true;
                        }
                    }
                },
                NodeKind::File => {
                    // Listed once, with its first bad blob: a hostile content list of a
                    // million missing ids is one affected file, not a million entries.
                    // Every missing blob is still recorded once for repair.
                    let mut listed = false;
                    let mut damaged = false;
                    for b in &node.content {
                        if self.usable(b) {
                            continue;
                        }
                        damaged = true;
                        if listed {
                            self.note_missing(b);
                        } else {
                            self.affected(snap, &path.join(node.name.to_os()), b);
                            listed = true;
                        }
                    }
                    if damaged && let Some(top) = stack.last_mut() {
                        top.damaged = true;
                    }
                }
                _ => {}
            }
        }
    }

    /// Look at one tree before walking its entries: whether it is known clean,
    /// unusable or unreadable (then nothing below it is walked), or its entries.
    fn enter(&mut self, id: &BlobId, path: &Path, snap: SnapshotId) -> Entered {
        if self.clean.contains(id) {
            return Entered::Done(false);
        }
        if !self.usable(id) {
            self.affected(snap, path, id);
            return Entered::Done(true);
        }
        match self.trees.load(self.rt, id).and_then(|p| {
            Tree::from_plain(&p)
                .map_err(|e| Error::corrupt_format(format!("tree {}", id.short()), e))
        }) {
            Ok(tree) => Entered::Frame(WalkFrame {
                id: *id,
                damaged: false,
                nodes: tree.nodes.into_iter(),
            }),
            Err(e) => {
                let proven = matches!(e, Error::Corrupt { .. })
                    || matches!(&e, Error::Backend(b) if b.is_not_found());
                if proven && let Some(loc) = self.index.get(id) {
                    let at = (loc.pack, loc.offset);
                    self.report.damaged.entry(*id).or_default().push(at);
                }
                self.report.problems.push(Problem {
                    object: format!("tree {} ({})", id.short(), path.display()),
                    message: e.to_string(),
                });
                self.affected(snap, path, id);
                Entered::Done(true)
            }
        }
    }
}

/// One directory level of [`TreeWalk::walk`].
struct WalkFrame {
    id: BlobId,
    /// Whether anything seen so far below it is damaged.
    damaged: bool,
    /// Its entries still to look at, in name order.
    nodes: std::vec::IntoIter<crate::format::tree::Node>,
}

/// What looking at a tree came to.
enum Entered {
    /// Nothing to walk below it; whether it is damaged.
    Done(bool),
    /// Its entries are to be walked.
    Frame(WalkFrame),
}

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
                if builder.len() >= target
                    || builder.blob_count() >= crate::packer::MAX_BLOBS_PER_PACK
                {
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
