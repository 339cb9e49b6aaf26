//! The in-memory index: for every blob, the pack and byte range that hold it. Loaded from
//! all `index/*` objects; the backup's dedup check and restore's read planning use it.

use crate::backend::{FileType, Handle};
use crate::cache::MetadataCache;
use crate::crypto::Purpose;
use crate::error::{Error, Result};
use crate::format::index::{BlobKind, INDEX_VERSION, IndexFile, IndexPack, PackedBlob};
use crate::hash::{BlobId, Id, IndexId, PackId};
use crate::repo::{INDEX_READ_AHEAD, MAX_INDEX_LEN, Repository, in_order};
use futures_util::StreamExt;
use std::collections::HashMap;

/// Where one blob is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobLocation {
    /// Pack object.
    pub pack: PackId,
    /// Data or tree.
    pub kind: BlobKind,
    /// Offset of the sealed blob in the pack.
    pub offset: u64,
    /// Sealed length.
    pub length: u32,
    /// Plaintext length.
    pub raw_length: u32,
    /// Whether the payload is zstd-compressed.
    pub compressed: bool,
}

impl BlobLocation {
    /// Where an index entry of `pack` says its blob is.
    pub fn in_pack(pack: PackId, b: &PackedBlob) -> Self {
        BlobLocation {
            pack,
            kind: b.kind,
            offset: b.offset,
            length: b.length,
            raw_length: b.raw_length,
            compressed: b.compressed,
        }
    }
}

/// One indexed blob, packed: 56 bytes, the pack named by its number in
/// [`MasterIndex::packs`].
#[derive(Clone, Copy, Debug)]
struct Entry {
    id: BlobId,
    offset: u64,
    pack: u32,
    length: u32,
    raw_length: u32,
    kind: BlobKind,
    compressed: bool,
}

/// New entries are kept in a hash map until they are this many, or a sixteenth of the
/// sorted ones, then merged into the sorted array (linear, in place).
const MIN_RECENT: usize = 4096;

/// Blob id to location, for the whole repository. Kept as a sorted array of compact
/// entries (a table of id prefixes narrows each lookup to a few entries) plus a small map
/// of recent additions: about 65 bytes a blob, against about 190 for one hash map of full
/// locations, which matters to a daemon holding the index of a large repository all the
/// time (measured by `cairn-bench-index`, reported by `scripts/bench.sh`).
#[derive(Default, Debug)]
pub struct MasterIndex {
    sorted: Vec<Entry>,
    /// Where each id prefix starts in `sorted`.
    buckets: Buckets,
    recent: HashMap<BlobId, Entry>,
    /// Pack ids by number, and numbers by id.
    packs: Vec<PackId>,
    pack_numbers: HashMap<PackId, u32>,
    /// Pack entries added (a pack listed twice counts twice).
    pack_entries: usize,
}

impl MasterIndex {
    /// Record every blob of a pack. A blob stored in two packs keeps its first location:
    /// both copies are valid.
    pub fn add_pack(&mut self, pack: &IndexPack) {
        self.pack_entries += 1;
        let next = u32::try_from(self.packs.len()).unwrap_or(u32::MAX);
        let number = *self.pack_numbers.entry(pack.id).or_insert(next);
        if number == next {
            self.packs.push(pack.id);
        }
        for b in &pack.blobs {
            if self.contains(&b.id) {
                continue;
            }
            self.recent.insert(
                b.id,
                Entry {
                    id: b.id,
                    offset: b.offset,
                    pack: number,
                    length: b.length,
                    raw_length: b.raw_length,
                    kind: b.kind,
                    compressed: b.compressed,
                },
            );
        }
        if self.recent.len() >= MIN_RECENT.max(self.sorted.len() / 16) {
            self.merge();
        }
    }

    /// Move the recent entries into the sorted array, merging from the back in place.
    fn merge(&mut self) {
        let mut new: Vec<Entry> = self.recent.drain().map(|(_, e)| e).collect();
        new.sort_unstable_by_key(|e| e.id);
        let old = self.sorted.len();
        self.sorted.reserve_exact(new.len());
        self.sorted.extend_from_slice(&new);
        let (mut i, mut j, mut w) = (old, new.len(), self.sorted.len());
        while j > 0 {
            if i > 0 && self.sorted[i - 1].id > new[j - 1].id {
                self.sorted[w - 1] = self.sorted[i - 1];
                i -= 1;
            } else {
                self.sorted[w - 1] = new[j - 1];
                j -= 1;
            }
            w -= 1;
        }
        self.buckets = Buckets::build(&self.sorted);
    }

    fn entry(&self, id: &BlobId) -> Option<&Entry> {
        match search(&self.sorted, &self.buckets, id) {
            Some(i) => Some(&self.sorted[i]),
            None => self.recent.get(id),
        }
    }

    fn location(&self, e: &Entry) -> BlobLocation {
        BlobLocation {
            // Every entry's number was handed out by `add_pack` along with its slot.
            pack: self.packs[e.pack as usize],
            kind: e.kind,
            offset: e.offset,
            length: e.length,
            raw_length: e.raw_length,
            compressed: e.compressed,
        }
    }

    /// Location of a blob, if indexed.
    pub fn get(&self, id: &BlobId) -> Option<BlobLocation> {
        self.entry(id).map(|e| self.location(e))
    }

    /// Whether a blob is stored.
    pub fn contains(&self, id: &BlobId) -> bool {
        self.entry(id).is_some()
    }

    /// Number of distinct blobs.
    pub fn len(&self) -> usize {
        self.sorted.len() + self.recent.len()
    }

    /// Whether no blob is indexed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of pack entries read.
    pub fn pack_count(&self) -> usize {
        self.pack_entries
    }

    /// Every indexed blob and its location, in no particular order (restore uses it to
    /// find which tree blobs share a pack, so it can fetch neighbours in one request).
    pub fn iter(&self) -> impl Iterator<Item = (BlobId, BlobLocation)> + '_ {
        self.sorted
            .iter()
            .chain(self.recent.values())
            .map(|e| (e.id, self.location(e)))
    }
}

/// An id's first eight bytes as a number. Blob ids are keyed hashes, spread evenly over
/// this range, so its top bits split the sorted array into buckets of similar size.
fn prefix(id: &BlobId) -> u64 {
    let b = &id.0.0;
    u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

/// About this many sorted entries share a bucket.
const PER_BUCKET: usize = 16;

/// Where each id prefix starts in the sorted array. A backup looks up every blob of every
/// unchanged file: bisecting the whole array of 56-byte entries cost a cache miss per
/// halving below the few levels that stay cached (4.5% of a no-change backup's samples,
/// 0.9 µs a lookup at a million blobs). With the table a lookup reads one slot and then
/// bisects about [`PER_BUCKET`] neighbouring entries, a kilobyte. It takes 4 bytes per
/// bucket, a quarter of a byte per blob, and is rebuilt whenever recent entries are
/// merged in.
#[derive(Default, Debug)]
struct Buckets {
    /// Bits of the prefix that pick a bucket (0 for a single bucket).
    bits: u32,
    /// `starts[b]` is the first position whose prefix's top `bits` bits are `b` or more;
    /// the last slot is the array's length.
    starts: Vec<u32>,
}

impl Buckets {
    fn build(sorted: &[Entry]) -> Self {
        let bits = (sorted.len() / PER_BUCKET).max(1).ilog2().min(24);
        let count = 1usize << bits;
        let mut starts = Vec::with_capacity(count + 1);
        let mut at = 0usize;
        for b in 0..count {
            while at < sorted.len() && Self::bucket_of(bits, &sorted[at].id) < b {
                at += 1;
            }
            starts.push(u32::try_from(at).unwrap_or(u32::MAX));
        }
        starts.push(u32::try_from(sorted.len()).unwrap_or(u32::MAX));
        Buckets { bits, starts }
    }

    fn bucket_of(bits: u32, id: &BlobId) -> usize {
        if bits == 0 {
            0
        } else {
            (prefix(id) >> (64 - bits)) as usize
        }
    }

    /// The part of the array `id` must be in, if anywhere.
    fn range(&self, id: &BlobId) -> std::ops::Range<usize> {
        let b = Self::bucket_of(self.bits, id);
        match (self.starts.get(b), self.starts.get(b + 1)) {
            (Some(&lo), Some(&hi)) => lo as usize..hi as usize,
            // Not built yet (an empty index): nothing to search.
            _ => 0..0,
        }
    }
}

/// Position of `id` in `sorted` (ascending by id), searching only its bucket.
fn search(sorted: &[Entry], buckets: &Buckets, id: &BlobId) -> Option<usize> {
    let range = buckets.range(id);
    let start = range.start;
    sorted
        .get(range)?
        .binary_search_by(|e| e.id.cmp(id))
        .ok()
        .map(|i| start + i)
}

/// Times the index is listed and read before a reader gives up on it changing under
/// it; a prune's rewrite takes one.
const RELIST_ATTEMPTS: usize = 5;

/// Run `pass`, one listing and reading of the index, again while it names an index
/// object that was listed but gone when read: a prune replaced it, and what it held is
/// in index objects that listing may have missed (they are written before the old ones
/// are deleted). A few tries; after the last one still cut short, an error saying to
/// run again. `pass` is told whether its try is the last, so a caller that can go on
/// without the object (check reports it as a finding) does so then instead of failing.
/// The one loop both the readers' index load and check use.
pub(crate) async fn relist_while_replaced<T, F>(mut pass: impl FnMut(bool) -> F) -> Result<T>
where
    F: Future<Output = Result<std::result::Result<T, IndexId>>>,
{
    let mut last = None;
    for attempt in 1..=RELIST_ATTEMPTS {
        match pass(attempt == RELIST_ATTEMPTS).await? {
            Ok(done) => return Ok(done),
            Err(replaced) => {
                tracing::info!(
                    "index/{replaced} was replaced after it was listed (a prune); listing the index again"
                );
                last = Some(replaced);
            }
        }
    }
    let replaced = last.map(|id| id.to_string()).unwrap_or_default();
    Err(Error::InvalidInput(format!(
        "the index kept being rewritten while it was read ({RELIST_ATTEMPTS} times; last index/{replaced}): run the command again when the prunes are done"
    )))
}

impl Repository {
    /// Load every index object, for reading. A damaged or foreign index object is
    /// skipped and noted in [`Repository::skipped`]: a reader then fails only what needs
    /// its blobs, naming them. (A prune loads the index its own way and stops on one:
    /// what such an object holds must not be taken for unused.)
    pub async fn load_index(&self) -> Result<MasterIndex> {
        self.load_index_with(true).await
    }

    /// [`Repository::load_index`] that fails on a damaged index object instead of
    /// skipping it: for a caller that decides from the index what the repository lacks
    /// (a journal replay leaves out snapshots whose data seems missing).
    pub async fn load_index_strict(&self) -> Result<MasterIndex> {
        self.load_index_with(false).await
    }

    /// Load the index, listing again while an index object listed is gone when it is
    /// read ([`relist_while_replaced`]).
    async fn load_index_with(&self, skip_damaged: bool) -> Result<MasterIndex> {
        let (mut index, reprieved) =
            relist_while_replaced(|_| self.load_index_once(skip_damaged, None)).await?;
        // Reprieved blobs come last, so indexed copies win.
        for p in &reprieved {
            index.add_pack(p);
        }
        Ok(index)
    }

    /// The index in two parts, failing on a damaged index object: what the index
    /// objects list, and the blobs a prune took out of them but has not deleted yet.
    /// The parts matter to a journal replay, which judges what the destination holds
    /// without reading its trees: a tree in the first part is whole (a prune leaves
    /// only blobs some snapshot uses in the index, and everything below them with
    /// them), a tree in the second is not known to be. Index objects are read from
    /// `cache` when it holds them, so this costs two listings and what is new.
    pub async fn load_index_parts(
        &self,
        cache: Option<&MetadataCache>,
    ) -> Result<(MasterIndex, MasterIndex)> {
        let (index, reprieved) =
            relist_while_replaced(|_| self.load_index_once(false, cache)).await?;
        let mut taken_out = MasterIndex::default();
        for p in &reprieved {
            taken_out.add_pack(p);
        }
        Ok((index, taken_out))
    }

    /// One load of the index: what the index objects list, and the packs of deletion
    /// records still stored (for reading only). The inner error names an index object
    /// that was listed but is gone.
    async fn load_index_once(
        &self,
        skip_damaged: bool,
        cache: Option<&MetadataCache>,
    ) -> Result<std::result::Result<(MasterIndex, Vec<IndexPack>), IndexId>> {
        let mut index = MasterIndex::default();
        let mut replaced = None;
        // Index objects are listed before deletion records: a prune writes its record
        // before it deletes the index objects it replaces, so a reader that misses one
        // of those finds the record (docs/FORMAT.md, section 15). The records are then
        // listed and read while the index objects are.
        let listed = self.index_listing().await?;
        // The index is a cache of what `data/` holds: an entry whose pack is not there
        // (an index object put back after a prune deleted its packs) must not hide
        // another copy of the blob in a pack that is, since only the first location of
        // a blob is kept. Listed after the index objects, so every pack they name that
        // is stored is in it.
        let stored = self.pack_ids().await?;
        let mut missing = 0usize;
        // A damaged or foreign index object is passed over (noted in `skipped`): what
        // needs its blobs fails naming them, and everything else is still readable.
        let objects = self.for_each_index_file(cache, listed, |id, file| {
            match file {
                Ok(file) => {
                    for p in &file.packs {
                        if stored.contains(&p.id) {
                            index.add_pack(p);
                        } else {
                            missing += 1;
                        }
                    }
                }
                // Not found is not skipped: a prune replaced it after the listing, and
                // what it held is in index objects this listing missed: list again.
                Err(Error::Backend(e)) if e.is_not_found() => {
                    replaced = replaced.or(Some(id));
                }
                Err(Error::Corrupt { object, reason }) if skip_damaged => {
                    self.skipped().note(object, reason);
                }
                Err(e) => return Err(e),
            }
            Ok(())
        });
        let ((), deletions) =
            futures_util::future::try_join(objects, self.load_deletions()).await?;
        if let Some(id) = replaced {
            return Ok(Err(id));
        }
        // For reading only: blobs a prune took out of the index but has not deleted yet
        // (a snapshot made by a backup that overlapped the prune may use them; the next
        // prune takes them back). Backups load their index elsewhere and never
        // deduplicate against these.
        let mut reprieved = Vec::new();
        for (_, d) in deletions {
            if let Ok(d) = d {
                reprieved.extend(
                    d.packs
                        .into_iter()
                        .chain(d.dropped)
                        .filter(|p| stored.contains(&p.id)),
                );
            }
        }
        if missing > 0 {
            tracing::warn!(
                "the index names {missing} pack(s) that are not in data/ (deleted by a prune, an index object put back, or lost): their entries are ignored; `cairn check` lists what is affected"
            );
        }
        Ok(Ok((index, reprieved)))
    }

    /// Every stored index object's id and stored size (which bounds how many are read
    /// ahead), in listing order.
    pub async fn index_listing(&self) -> Result<Vec<(IndexId, u64)>> {
        Ok(self
            .backend()
            .list(FileType::Index)
            .await?
            .into_iter()
            .filter_map(|info| Some((IndexId(Id::from_object_name(&info.name)?), info.size)))
            .collect())
    }

    /// Every pack in `data/`, as listed now. Listed after the index objects, it holds
    /// every pack they name that is still stored (a pack is stored before the index
    /// object naming it), so a pack an index names but this set lacks is gone.
    pub async fn pack_ids(&self) -> Result<std::collections::HashSet<PackId>> {
        Ok(self
            .backend()
            .list(FileType::Pack)
            .await?
            .into_iter()
            .filter_map(|info| Some(PackId(Id::from_object_name(&info.name)?)))
            .collect())
    }

    /// Load the index objects `listed` (ids and stored sizes, from
    /// [`Repository::index_listing`]; from `cache` when it holds an intact copy, storing
    /// what it fetches there) and hand each, or why it could not be read, to `apply`, in
    /// the order given, so that which copy of a blob is found first does not depend on
    /// which read finished first. An error `apply` returns stops the loading (a backup
    /// or prune cannot go on without every index object; check notes it and goes on).
    /// Reads run ahead within [`INDEX_READ_AHEAD`], but only their stored (compressed)
    /// bytes wait; each is decoded when its turn comes, so a slow read never holds up
    /// several decoded index objects (a prune writes ones of up to 1,000 packs).
    pub async fn for_each_index_file(
        &self,
        cache: Option<&MetadataCache>,
        listed: Vec<(IndexId, u64)>,
        mut apply: impl FnMut(IndexId, Result<IndexFile>) -> Result<()>,
    ) -> Result<()> {
        // The read-ahead bound trusts the listed sizes; each S3 read is still capped as
        // every object read is (2 GiB).
        let fetch = |id: IndexId| async move {
            let handle = Handle::new(FileType::Index, id.0.to_hex());
            Ok::<_, Error>(self.backend().get(&handle).await?)
        };
        let stored = in_order(listed, INDEX_READ_AHEAD, |id| async move {
            let stored = match cache.and_then(|c| c.index(id)) {
                Some(bytes) => Ok((bytes, true)),
                None => fetch(id).await.map(|bytes| (bytes, false)),
            };
            (id, stored)
        });
        let mut stored = std::pin::pin!(stored);
        while let Some((id, stored)) = stored.next().await {
            let file = match stored {
                Ok((bytes, cached)) => match self.open_index_file(id, &bytes) {
                    Ok(file) => {
                        if let Some(c) = cache.filter(|_| !cached) {
                            c.put_index(id, &bytes);
                        }
                        Ok(file)
                    }
                    // A cached copy that will not open is fetched again.
                    Err(_) if cached => fetch(id).await.and_then(|bytes| {
                        let file = self.open_index_file(id, &bytes)?;
                        if let Some(c) = cache {
                            c.put_index(id, &bytes);
                        }
                        Ok(file)
                    }),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            apply(id, file)?;
        }
        Ok(())
    }

    /// Load one index object.
    pub async fn load_index_file(&self, id: IndexId) -> Result<IndexFile> {
        let plain = self
            .load_object(FileType::Index, id.0, Purpose::Index, MAX_INDEX_LEN)
            .await?;
        IndexFile::from_plain(&plain).map_err(|e| Error::corrupt_format(format!("index/{id}"), e))
    }

    /// Verify and decode an index object fetched earlier (from a local cache).
    pub fn open_index_file(&self, id: IndexId, stored: &[u8]) -> Result<IndexFile> {
        let plain =
            self.open_object(FileType::Index, id.0, Purpose::Index, MAX_INDEX_LEN, stored)?;
        IndexFile::from_plain(&plain).map_err(|e| Error::corrupt_format(format!("index/{id}"), e))
    }

    /// Store an index object describing packs that are already durable.
    pub async fn save_index(&self, packs: Vec<IndexPack>) -> Result<IndexId> {
        let file = IndexFile {
            version: INDEX_VERSION,
            packs,
        };
        let id = self
            .save_object(FileType::Index, Purpose::Index, &file.to_plain())
            .await?;
        Ok(IndexId(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::index::PackedBlob;

    fn id(n: u64) -> BlobId {
        BlobId(Id(*blake3::hash(&n.to_le_bytes()).as_bytes()))
    }

    fn pack(p: u64, blobs: impl Iterator<Item = u64>) -> IndexPack {
        IndexPack {
            id: PackId(Id(
                *blake3::hash(&[b'p', p as u8, (p >> 8) as u8]).as_bytes()
            )),
            blobs: blobs
                .enumerate()
                .map(|(k, n)| PackedBlob {
                    id: id(n),
                    kind: if n % 5 == 0 {
                        BlobKind::Tree
                    } else {
                        BlobKind::Data
                    },
                    offset: k as u64 * 100,
                    length: 100,
                    raw_length: n as u32,
                    compressed: n % 2 == 0,
                })
                .collect(),
        }
    }

    fn entry_for(id: BlobId) -> Entry {
        Entry {
            id,
            offset: 0,
            pack: 0,
            length: 0,
            raw_length: 0,
            kind: BlobKind::Data,
            compressed: false,
        }
    }

    /// The bucketed search agrees with bisection on evenly spread ids and on ids crowded
    /// together (sharing long prefixes, with one far outlier), at the ends and between
    /// entries, and on arrays from empty to thousands of entries.
    #[test]
    fn search_finds_what_bisection_finds() {
        let spread: Vec<BlobId> = (0..5000u64).map(id).collect();
        let crowded: Vec<BlobId> = (0..3000u64)
            .map(|n| {
                let mut b = [0u8; 32];
                b[..8].copy_from_slice(&(n * n).to_be_bytes());
                b[8..16].copy_from_slice(&n.to_be_bytes());
                BlobId(Id(b))
            })
            .chain(std::iter::once(BlobId(Id([0xff; 32]))))
            .collect();
        for (name, ids) in [("spread", spread), ("crowded", crowded)] {
            for len in [0usize, 1, 2, 7, 9, 100, ids.len()] {
                let mut sorted: Vec<Entry> = ids[..len].iter().map(|i| entry_for(*i)).collect();
                sorted.sort_unstable_by_key(|e| e.id);
                let buckets = Buckets::build(&sorted);
                assert_eq!(buckets.starts.len(), (1 << buckets.bits) + 1);
                for (k, e) in sorted.iter().enumerate() {
                    assert_eq!(
                        search(&sorted, &buckets, &e.id),
                        Some(k),
                        "{name} len {len}"
                    );
                }
                let mut probes: Vec<BlobId> = (0..200u64).map(|n| id(1_000_000 + n)).collect();
                probes.extend([BlobId(Id([0; 32])), BlobId(Id([0xff; 32]))]);
                for e in &sorted {
                    let mut next = e.id;
                    next.0.0[31] ^= 1;
                    probes.push(next);
                }
                for p in &probes {
                    let want = sorted.binary_search_by(|e| e.id.cmp(p)).ok();
                    assert_eq!(search(&sorted, &buckets, p), want, "{name} len {len}");
                }
            }
        }
    }

    /// Against a plain map of first locations, across many merges: every blob is found
    /// where it was first recorded (a later copy in another pack does not move it),
    /// unknown ids are not found, and iteration yields each blob once.
    #[test]
    fn behaves_as_a_map_of_first_locations_across_merges() {
        let mut index = MasterIndex::default();
        let mut model: HashMap<BlobId, BlobLocation> = HashMap::new();
        for p in 0..300u64 {
            // Overlapping ranges: each pack repeats some blobs of earlier ones.
            let pk = pack(p, (p * 70)..(p * 70 + 100));
            for b in &pk.blobs {
                model.entry(b.id).or_insert(BlobLocation {
                    pack: pk.id,
                    kind: b.kind,
                    offset: b.offset,
                    length: b.length,
                    raw_length: b.raw_length,
                    compressed: b.compressed,
                });
            }
            index.add_pack(&pk);
            if p % 37 == 0 {
                for (k, v) in &model {
                    assert_eq!(index.get(k).as_ref(), Some(v));
                }
            }
        }
        assert!(!index.sorted.is_empty(), "merges happened");
        assert_eq!(index.len(), model.len());
        assert_eq!(index.pack_count(), 300);
        for (k, v) in &model {
            assert_eq!(index.get(k).as_ref(), Some(v));
        }
        assert!(!index.contains(&id(1_000_000)));
        let mut seen: Vec<BlobId> = index.iter().map(|(k, _)| k).collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), model.len());
    }
}
