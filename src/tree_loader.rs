//! Tree blobs for a depth-first walk over a snapshot (a restore, `ls`, `find`, `diff`,
//! `check`, `prune`, or a backup reading its parent's trees when the local cache lacks
//! them), read ahead: a backup stores a
//! directory's tree right after the trees below it, so the trees a depth-first walk asks
//! for next lie just before the one it asks for now, in the same tree pack. On a miss,
//! one ranged read fetches the tree and its neighbours (up to [`READ_BEHIND`] bytes
//! before it and [`READ_AHEAD`] after), and keeps them, still sealed, for later
//! requests, up to [`MAX_CACHED`] bytes. A tree stays cached after use: identical
//! directories (empty ones above all) share one tree, which the walk asks for again and
//! again. Every tree is opened and verified each time it is taken; anything wrong is read
//! again through the [`BlobReader`], which heals from copies.

use crate::backend::{FileType, Handle};
use crate::error::{Error, Result};
use crate::format::index::BlobKind;
use crate::format::tree::Tree;
use crate::hash::{BlobId, PackId};
use crate::heal::{BlobReader, Copy};
use crate::index::{BlobLocation, MasterIndex};
use crate::pack::open_blob;
use crate::read_plan;
use crate::repo::Repository;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use tokio::runtime::Handle as Runtime;

/// Bytes read before the requested tree on a miss.
const READ_BEHIND: u64 = 4 * 1024 * 1024;
/// Bytes read after it.
const READ_AHEAD: u64 = 1024 * 1024;
/// Bytes read before a tree on a path lookup's miss ([`TreeLoader::tree_on_path`]):
/// the next tree on the path lies before this one, but a lookup needs only a few trees,
/// and a walk's window would cost five times the bytes over a slow link.
const LOOKUP_BEHIND: u64 = 1024 * 1024;
/// Sealed trees kept for later; past this the cache starts over.
const MAX_CACHED: usize = 32 * 1024 * 1024;

/// Decode the plaintext of tree `id`, found at snapshot path `at` (named in errors).
pub fn decode(plain: &[u8], id: &BlobId, at: &Path) -> Result<Tree> {
    Tree::from_plain(plain)
        .map_err(|e| Error::corrupt_format(format!("tree {} of {}", id.short(), at.display()), e))
}

/// The reader a loader falls back to: a caller's (a restore's, which may heal from
/// copies) or its own, for the repository alone.
enum Reader<'a> {
    Borrowed(&'a BlobReader<'a>),
    Owned(BlobReader<'a>),
}

impl<'a> Reader<'a> {
    fn get(&self) -> &BlobReader<'a> {
        match self {
            Reader::Borrowed(r) => r,
            Reader::Owned(r) => r,
        }
    }
}

/// Loads trees, reading ahead.
pub struct TreeLoader<'a> {
    reader: Reader<'a>,
    /// Per pack, its tree blobs by offset.
    packs: HashMap<PackId, Vec<(BlobId, BlobLocation)>>,
    cache: Mutex<Cache>,
}

#[derive(Default)]
struct Cache {
    sealed: HashMap<BlobId, Vec<u8>>,
    bytes: usize,
}

impl<'a> TreeLoader<'a> {
    /// A loader for the trees of the reader's primary repository.
    pub fn new(reader: &'a BlobReader<'a>) -> Self {
        Self::with(Reader::Borrowed(reader))
    }

    /// A loader for one repository's trees, with nothing to heal from.
    pub fn for_repo(repo: &'a Repository, index: &'a MasterIndex) -> Self {
        Self::with(Reader::Owned(BlobReader::alone(Copy { repo, index })))
    }

    fn reader(&self) -> &BlobReader<'a> {
        self.reader.get()
    }

    /// Tree `id`, decoded; `at` is its snapshot path, named in errors.
    pub fn tree(&self, rt: &Runtime, id: &BlobId, at: &Path) -> Result<Tree> {
        decode(&self.load(rt, id)?, id, at)
    }

    /// Tree `id` on the way down one path ([`crate::ls::lookup`]): on a miss, read only
    /// the trees just before it, where the rest of the path lies (a directory's tree is
    /// stored after the trees below it), not a walk's window.
    pub fn tree_on_path(&self, rt: &Runtime, id: &BlobId, at: &Path) -> Result<Tree> {
        decode(&self.load_within(rt, id, LOOKUP_BEHIND, 0)?, id, at)
    }

    fn with(reader: Reader<'a>) -> Self {
        let mut packs: HashMap<PackId, Vec<(BlobId, BlobLocation)>> = HashMap::new();
        for (id, loc) in reader.get().primary().index.iter() {
            if loc.kind == BlobKind::Tree {
                packs.entry(loc.pack).or_default().push((id, loc));
            }
        }
        for v in packs.values_mut() {
            v.sort_by_key(|(_, l)| l.offset);
        }
        TreeLoader {
            reader,
            packs,
            cache: Mutex::new(Cache::default()),
        }
    }

    /// The plaintext of tree `id`, verified.
    pub fn load(&self, rt: &Runtime, id: &BlobId) -> Result<Vec<u8>> {
        self.load_within(rt, id, READ_BEHIND, READ_AHEAD)
    }

    /// As [`TreeLoader::load`], reading `behind` and `ahead` bytes around it on a miss.
    fn load_within(&self, rt: &Runtime, id: &BlobId, behind: u64, ahead: u64) -> Result<Vec<u8>> {
        let primary = self.reader().primary();
        if let Some(loc) = primary.index.get(id) {
            let sealed = match self.take(id) {
                Some(s) => Some(s),
                None => self.fetch(rt, &loc, behind, ahead),
            };
            if let Some(plain) =
                sealed.and_then(|s| open_blob(primary.repo.keys(), id, &loc, &s).ok())
            {
                return Ok(plain);
            }
        }
        rt.block_on(self.reader().read(id))
    }

    fn take(&self, id: &BlobId) -> Option<Vec<u8>> {
        let c = self.cache.lock().ok()?;
        c.sealed.get(id).cloned()
    }

    /// Read the tree and its neighbours in one request; cache the neighbours.
    fn fetch(&self, rt: &Runtime, loc: &BlobLocation, behind: u64, ahead: u64) -> Option<Vec<u8>> {
        let trees = self.packs.get(&loc.pack)?;
        let pos = trees
            .binary_search_by_key(&loc.offset, |(_, l)| l.offset)
            .ok()?;
        let mut first = pos;
        while first > 0 && loc.offset.saturating_sub(trees[first - 1].1.offset) <= behind {
            first -= 1;
        }
        // Saturating: locations come from storage and must not overflow.
        let end_of = |l: &BlobLocation| l.offset.saturating_add(u64::from(l.length));
        let mut last = pos;
        while last + 1 < trees.len()
            && end_of(&trees[last + 1].1).saturating_sub(end_of(loc)) <= ahead
        {
            last += 1;
        }
        let start = trees[first].1.offset;
        let end = end_of(&trees[last].1).max(end_of(loc));
        let handle = Handle::new(FileType::Pack, loc.pack.to_hex());
        let reader = self.reader();
        // A pack that gave no answer moments ago is not read: the healing reader reads
        // from a copy or fails at once rather than spending its retries again.
        let backend = reader.primary().repo.backend();
        let read = async { Ok(backend.get_range(&handle, start, end - start).await?) };
        let bytes = rt
            .block_on(reader.from_primary(loc.pack, read))
            .ok()?
            .ok()?;
        let slice = |l: &BlobLocation| -> Option<Vec<u8>> {
            bytes
                .get(read_plan::position(start, l)?)
                .map(<[u8]>::to_vec)
        };
        if let Ok(mut c) = self.cache.lock() {
            if c.bytes + (end - start) as usize > MAX_CACHED {
                *c = Cache::default();
            }
            for (other, l) in &trees[first..=last] {
                if !c.sealed.contains_key(other)
                    && let Some(s) = slice(l)
                {
                    c.bytes += s.len();
                    c.sealed.insert(*other, s);
                }
            }
        }
        slice(loc)
    }
}
