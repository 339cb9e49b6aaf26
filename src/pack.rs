//! Packs: many sealed blobs in one object, with a sealed header at the end.
//!
//! [`seal_blob`] turns plaintext into a stored blob (zstd at the backup's level, only
//! when it saves space, then XChaCha20-Poly1305); [`PackBuilder`] collects them up to the target size; reading goes
//! through [`Repository::read_blob`], which fetches only the blob's byte range and checks
//! its id after decryption, so a flipped byte or a swapped blob is caught and named.

use crate::backend::{FileType, Handle};
use crate::compression::Compression;
use crate::crypto::{Keys, OVERHEAD, Purpose};
use crate::error::{Error, Result};
use crate::format::index::{BlobKind, IndexPack, PackedBlob};
use crate::format::pack::{
    HeaderEntry, MAX_HEADER_LEN, decode_header, header_plain, header_stored, parse_header,
};
use crate::format::{compress_append, decompress};
use crate::hash::{BlobId, Id, PackId};
use crate::index::{BlobLocation, MasterIndex};
use crate::repo::Repository;
use bytes::Bytes;
use std::borrow::Cow;

/// Largest blob plaintext accepted from storage: the limit lives in [`crate::limits`],
/// shared with the cache; named here too for the code and tests that know it as a
/// pack limit.
pub use crate::limits::MAX_BLOB_LEN;

/// A blob ready to go into a pack.
#[derive(Debug)]
pub struct SealedBlob {
    /// Keyed hash of the plaintext.
    pub id: BlobId,
    /// Data or tree.
    pub kind: BlobKind,
    /// Plaintext length.
    pub raw_length: u32,
    /// Whether `bytes` holds compressed plaintext.
    pub compressed: bool,
    /// `nonce || ciphertext || tag`.
    pub bytes: Vec<u8>,
}

/// Compress as `compression` says, keeping the result only when it saves at least 1/32
/// of the size, then seal. The blob is compressed straight behind its nonce and
/// encrypted where it lies: one buffer per blob, where a compressed copy, a ciphertext
/// and the sealed message each took one (and each buffer of a megabyte or more is a
/// fresh mapping the kernel zeroes and faults in).
pub fn seal_blob(
    keys: &Keys,
    id: BlobId,
    kind: BlobKind,
    plain: &[u8],
    compression: Compression,
) -> Result<SealedBlob> {
    let raw_length = u32::try_from(plain.len())
        .map_err(|_| Error::InvalidInput(format!("blob of {} bytes is too large", plain.len())))?;
    let mut buf = Vec::with_capacity(OVERHEAD + plain.len());
    let start = keys.begin_sealed(&mut buf)?;
    // Kept only when it saves at least 1/32 of the size.
    let limit = (plain.len() - plain.len() / 32).saturating_sub(1);
    let compressed = match compression.zstd_level() {
        Some(level) => compress_append(plain, &mut buf, limit, level),
        None => false,
    };
    if !compressed {
        buf.extend_from_slice(plain);
    }
    keys.finish_sealed(Purpose::Blob, &mut buf, start)?;
    Ok(SealedBlob {
        id,
        kind,
        raw_length,
        compressed,
        bytes: buf,
    })
}

/// Blobs per pack at most, so that a pack of many tiny blobs keeps its header well under
/// the size a reader accepts ([`crate::format::pack::MAX_HEADER_LEN`], ~150 bytes an entry).
pub const MAX_BLOBS_PER_PACK: usize = 20_000;

/// Accumulates sealed blobs into one pack.
#[derive(Default)]
pub struct PackBuilder {
    buf: Vec<u8>,
    entries: Vec<HeaderEntry>,
}

/// A finished pack: its name, bytes, and the index entries that describe it.
pub struct FinishedPack {
    /// Content-derived id.
    pub id: PackId,
    /// Stored bytes.
    pub bytes: Bytes,
    /// Index entries for its blobs.
    pub index: IndexPack,
}

impl PackBuilder {
    /// Append a blob.
    pub fn add(&mut self, blob: SealedBlob) {
        self.entries.push(HeaderEntry {
            id: blob.id,
            kind: blob.kind,
            length: blob.bytes.len() as u32,
            raw_length: blob.raw_length,
            compressed: blob.compressed,
        });
        self.buf.extend_from_slice(&blob.bytes);
    }

    /// Bytes of blobs so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Blobs so far.
    pub fn blob_count(&self) -> usize {
        self.entries.len()
    }

    /// Whether the pack is to be closed: its blobs reach `target` bytes (the
    /// repository's pack size, so a pack exceeds it by at most one blob) or it holds
    /// [`MAX_BLOBS_PER_PACK`] blobs. Every writer of packs closes them by this one rule.
    pub fn is_full(&self, target: usize) -> bool {
        self.len() >= target || self.blob_count() >= MAX_BLOBS_PER_PACK
    }

    /// Whether no blob was added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Seal the header, in the layout of format `version`, and produce the pack.
    pub fn finish(self, keys: &Keys, version: u32) -> Result<FinishedPack> {
        let blobs_len = self.buf.len() as u64;
        let plain = header_plain(&self.entries);
        let blobs = parse_header(&plain, blobs_len)
            .map_err(|e| Error::corrupt_format("new pack header", e))?;
        let header = keys.seal(Purpose::PackHeader, &header_stored(plain, version))?;
        let mut buf = self.buf;
        buf.extend_from_slice(&header);
        buf.extend_from_slice(&(header.len() as u32).to_le_bytes());
        let id = PackId(Id::of_stored(&buf));
        Ok(FinishedPack {
            id,
            bytes: Bytes::from(buf),
            index: IndexPack { id, blobs },
        })
    }
}

/// Bytes read from the end of a pack to find its header when the index does not say
/// where it starts: a header entry takes about 50 bytes, so this holds the header of a
/// pack of about 1,300 blobs (a 16 MiB pack of 1 MiB chunks has about 16; one of 20,000
/// small blobs needs a second read).
pub const HEADER_TAIL: u64 = 64 * 1024;

/// Where a pack's sealed header lies, given the pack's last bytes (`tail`).
#[derive(Debug, PartialEq, Eq)]
pub enum HeaderAt<'a> {
    /// Wholly inside the tail: at `offset` in the pack.
    Inside {
        /// Offset of the header in the pack.
        offset: u64,
        /// The sealed header.
        sealed: &'a [u8],
    },
    /// Starting before the tail, at `offset`: the tail holds its end (`in_tail`), and
    /// the bytes from `offset` to the tail's start are still to be read.
    Before {
        /// Offset of the header in the pack.
        offset: u64,
        /// The part of the header inside the tail.
        in_tail: &'a [u8],
    },
}

/// Find the sealed header of a pack of `size` bytes in its last `tail.len()` bytes,
/// checking the framing with [`header_range`]. Pure, so that every boundary between the
/// tail and the header is tested apart from storage.
pub fn header_in_tail(size: u64, tail: &[u8]) -> Result<HeaderAt<'_>, String> {
    let trailer_at = tail.len().checked_sub(4).ok_or_else(|| {
        format!(
            "only {} bytes of its end to read the length from",
            tail.len()
        )
    })?;
    let tail_start = size
        .checked_sub(tail.len() as u64)
        .ok_or_else(|| format!("{} bytes read from the end of {size}", tail.len()))?;
    let (offset, len) = header_range(size, &tail[trailer_at..])?;
    let header = &tail[..trailer_at];
    Ok(match offset.checked_sub(tail_start) {
        Some(at) => HeaderAt::Inside {
            offset,
            // header_range keeps the header inside the pack, ending at the trailer.
            sealed: usize::try_from(at)
                .ok()
                .and_then(|at| header.get(at..at.checked_add(len as usize)?))
                .ok_or_else(|| format!("header of {len} bytes at {offset} is out of range"))?,
        },
        None => HeaderAt::Before {
            offset,
            in_tail: header,
        },
    })
}

/// Where the sealed header of a pack of `size` bytes lies, given the pack's last 4 bytes
/// (`trailer`): `(offset, length)`. Pure, so that the framing rules of `docs/FORMAT.md`
/// section 9 are checked (and fuzzed) apart from any storage; the error says which rule a
/// hostile or truncated pack broke.
pub fn header_range(size: u64, trailer: &[u8]) -> Result<(u64, u32), String> {
    let le: [u8; 4] = trailer
        .try_into()
        .map_err(|_| format!("trailer is {} bytes, not 4", trailer.len()))?;
    if size < 4 {
        return Err(format!("only {size} bytes long"));
    }
    let header_len = u32::from_le_bytes(le);
    if header_len > MAX_HEADER_LEN
        || u64::from(header_len) + 4 > size
        || (header_len as usize) < OVERHEAD
    {
        return Err(format!(
            "header length {header_len} is impossible in a pack of {size} bytes"
        ));
    }
    Ok((size - 4 - u64::from(header_len), header_len))
}

/// Refuse an index entry no writer can have produced, before fetching anything: a sealed
/// blob is at most [`MAX_BLOB_LEN`] plus the sealing overhead (compression is kept only
/// when it shrinks), and its byte range must end before 2^64. Index entries come from
/// storage, so without this a hostile one could make a reader request gigabytes.
pub fn check_location(loc: &BlobLocation) -> Result<(), String> {
    let max_sealed = MAX_BLOB_LEN + OVERHEAD as u32;
    if loc.length > max_sealed {
        return Err(format!(
            "sealed length {} exceeds the largest possible blob ({max_sealed} bytes)",
            loc.length
        ));
    }
    if loc.offset.checked_add(u64::from(loc.length)).is_none() {
        return Err(format!(
            "offset {} and length {} end past 2^64",
            loc.offset, loc.length
        ));
    }
    Ok(())
}

/// Decrypt, decompress and verify one sealed blob.
pub fn open_blob(
    keys: &Keys,
    id: &BlobId,
    loc: &BlobLocation,
    sealed: &[u8],
) -> Result<Vec<u8>, String> {
    check_raw_length(loc)?;
    let payload = keys
        .open(Purpose::Blob, sealed)
        .map_err(|e| e.to_string())?;
    let plain = if loc.compressed {
        decompress("blob", &payload, loc.raw_length as usize).map_err(|e| e.to_string())?
    } else {
        payload
    };
    check_plain(keys, id, loc, &plain)?;
    Ok(plain)
}

/// [`open_blob`] where the sealed bytes lie, for a reader that owns them (a restore's
/// ranged reads): an uncompressed blob's plaintext is a part of `sealed`, so it costs no
/// allocation or copy; a compressed one is decompressed into a new buffer. The same
/// checks as [`open_blob`], in the same order.
pub fn open_blob_in_place<'a>(
    keys: &Keys,
    id: &BlobId,
    loc: &BlobLocation,
    sealed: &'a mut [u8],
) -> Result<Cow<'a, [u8]>, String> {
    check_raw_length(loc)?;
    let payload = keys
        .open_in_place(Purpose::Blob, sealed)
        .map_err(|e| e.to_string())?;
    let plain = if loc.compressed {
        Cow::Owned(decompress("blob", payload, loc.raw_length as usize).map_err(|e| e.to_string())?)
    } else {
        Cow::Borrowed(&*payload)
    };
    check_plain(keys, id, loc, &plain)?;
    Ok(plain)
}

fn check_raw_length(loc: &BlobLocation) -> Result<(), String> {
    if loc.raw_length > MAX_BLOB_LEN {
        return Err(format!(
            "declared size {} exceeds the limit",
            loc.raw_length
        ));
    }
    Ok(())
}

/// The opened plaintext is as long as the index says, and is the blob it is named for.
fn check_plain(keys: &Keys, id: &BlobId, loc: &BlobLocation, plain: &[u8]) -> Result<(), String> {
    if plain.len() != loc.raw_length as usize {
        return Err(format!(
            "plaintext is {} bytes, index says {}",
            plain.len(),
            loc.raw_length
        ));
    }
    if keys.blob_id(plain) != *id {
        return Err("content does not match its id".into());
    }
    Ok(())
}

impl Repository {
    /// Fetch one blob with a ranged read and verify it.
    pub async fn read_blob(&self, index: &MasterIndex, id: &BlobId) -> Result<Vec<u8>> {
        let loc = index.get(id).ok_or_else(|| Error::MissingBlob {
            blob: id.to_hex(),
            referrer: "a tree".into(),
        })?;
        let handle = Handle::new(FileType::Pack, loc.pack.to_hex());
        check_location(&loc).map_err(|reason| Error::Corrupt {
            object: format!("index entry of blob {} in {}", id.short(), handle.path()),
            reason,
        })?;
        let sealed = self
            .backend()
            .get_range(&handle, loc.offset, u64::from(loc.length))
            .await?;
        open_blob(self.keys(), id, &loc, &sealed).map_err(|reason| Error::Corrupt {
            object: format!("blob {} in {}", id.short(), handle.path()),
            reason,
        })
    }

    /// Read and decode a pack's header. `size` must be the pack's stored size (as
    /// listed; a pack changed since is refused as truncated or damaged). `blobs_end` is
    /// where the index says the pack's blobs end, which in an intact pack is where its
    /// header starts: the read of the pack's end then takes exactly the header and its
    /// length, in one request (a stat, the length and then the header took three round
    /// trips per pack, one pack after another, in `check`). Without it, or when it is
    /// wrong, the last [`HEADER_TAIL`] bytes are read, and a header that starts before
    /// them is completed with a second read of the part missing. The hint reads at most
    /// the largest header a pack may have, whatever a damaged index claims.
    pub async fn read_pack_header(
        &self,
        pack: PackId,
        size: u64,
        blobs_end: Option<u64>,
    ) -> Result<Vec<PackedBlob>> {
        let handle = Handle::new(FileType::Pack, pack.to_hex());
        let object = handle.path();
        let corrupt = |reason: String| Error::Corrupt {
            object: object.clone(),
            reason,
        };
        if size < 4 {
            return Err(corrupt(format!("only {size} bytes long")));
        }
        let tail_len = match blobs_end {
            // At most the largest header a pack may have, whatever the index claims.
            Some(end) if end < size => (size - end).clamp(4, u64::from(MAX_HEADER_LEN) + 4),
            _ => HEADER_TAIL,
        }
        .min(size);
        let tail_start = size - tail_len;
        let tail = self
            .backend()
            .get_range(&handle, tail_start, tail_len)
            .await?;
        if tail.len() as u64 != tail_len {
            return Err(corrupt(format!(
                "its last {tail_len} bytes came back as {}",
                tail.len()
            )));
        }
        let joined;
        let (header_off, sealed) = match header_in_tail(size, &tail).map_err(corrupt)? {
            HeaderAt::Inside { offset, sealed } => (offset, sealed),
            HeaderAt::Before { offset, in_tail } => {
                let mut head = self
                    .backend()
                    .get_range(&handle, offset, tail_start - offset)
                    .await?;
                head.extend_from_slice(in_tail);
                joined = head;
                (offset, &joined[..])
            }
        };
        let plain = self
            .keys()
            .open(Purpose::PackHeader, sealed)
            .map_err(|e| corrupt(format!("header: {e}")))?;
        decode_header(&plain, header_off).map_err(|e| corrupt(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::MasterSecret;

    /// Every boundary between the bytes read from a pack's end and its header: exactly
    /// the header and its length, one byte less (the rest read on its own), the whole
    /// pack, only the length; and framing that cannot be right.
    #[test]
    fn a_header_is_found_in_the_tail_or_located_before_it() {
        let header_len = OVERHEAD as u32 + 10;
        let size = 200u64;
        let mut pack: Vec<u8> = (0..size as u32 - 4).map(|i| i as u8).collect();
        pack.extend_from_slice(&header_len.to_le_bytes());
        let offset = size - 4 - u64::from(header_len);
        let header = &pack[offset as usize..size as usize - 4];
        let tail = |n: u64| &pack[(size - n) as usize..];
        let exact = u64::from(header_len) + 4;
        for n in [exact, exact + 1, size] {
            assert_eq!(
                header_in_tail(size, tail(n)),
                Ok(HeaderAt::Inside {
                    offset,
                    sealed: header
                }),
                "tail of {n}"
            );
        }
        for n in [exact - 1, 5, 4] {
            assert_eq!(
                header_in_tail(size, tail(n)),
                Ok(HeaderAt::Before {
                    offset,
                    in_tail: &header[(exact - n) as usize..]
                }),
                "tail of {n}"
            );
        }
        assert!(
            header_in_tail(size, tail(3)).is_err(),
            "no room for the length"
        );
        assert!(header_in_tail(3, tail(3)).is_err());
        assert!(
            header_in_tail(2, tail(4)).is_err(),
            "more read than the pack holds"
        );
        let mut long = pack.clone();
        let at = long.len() - 4;
        long[at..].copy_from_slice(&(size as u32).to_le_bytes());
        assert!(
            header_in_tail(size, &long[100..]).is_err(),
            "header past the start"
        );
    }

    /// The header comes in one read when the index says where it starts, or when it fits
    /// in the default tail; otherwise (a pack of thousands of small blobs, or a wrong
    /// hint) the missing part is read on its own. A pack shorter than listed is refused.
    #[test]
    fn pack_headers_are_read_with_or_without_a_hint_from_the_index() {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let tmp = tempfile::tempdir().expect("tempdir");
        let repo = crate::repo::test_repo(&rt, tmp.path());
        let mut noise = vec![0u8; 200_000];
        crate::crypto::random_bytes(&mut noise).expect("rng");
        // Small; larger than the tail with a small header; a header larger than the tail.
        for blobs in [
            vec![b"one".to_vec()],
            vec![noise],
            (0..4000)
                .map(|i| format!("blob {i}").into_bytes())
                .collect(),
        ] {
            let mut b = PackBuilder::default();
            for plain in &blobs {
                let id = repo.keys().blob_id(plain);
                b.add(
                    seal_blob(repo.keys(), id, BlobKind::Data, plain, Compression::AUTO)
                        .expect("seal"),
                );
            }
            let pack = b
                .finish(repo.keys(), repo.config().version)
                .expect("finish");
            let size = pack.bytes.len() as u64;
            let handle = Handle::new(FileType::Pack, pack.id.to_hex());
            rt.block_on(repo.backend().put(&handle, pack.bytes.clone()))
                .expect("put");
            let end = pack
                .index
                .blobs
                .iter()
                .map(|b| b.offset + u64::from(b.length))
                .max();
            for hint in [end, None, Some(0), Some(size - 4), Some(size + 1)] {
                let header = rt
                    .block_on(repo.read_pack_header(pack.id, size, hint))
                    .expect("header");
                assert_eq!(
                    header,
                    pack.index.blobs,
                    "{} blobs, hint {hint:?}",
                    blobs.len()
                );
            }
            assert!(
                rt.block_on(repo.read_pack_header(pack.id, size + 10, end))
                    .is_err(),
                "a pack shorter than listed"
            );
        }
    }

    #[test]
    fn compressible_blobs_are_compressed_and_random_ones_are_not() {
        let keys = Keys::derive(MasterSecret::from_bytes([1; 32]));
        let text = vec![b'a'; 10_000];
        let b = seal_blob(
            &keys,
            keys.blob_id(&text),
            BlobKind::Data,
            &text,
            Compression::AUTO,
        )
        .expect("seal");
        assert!(b.compressed && b.bytes.len() < 1000);
        let mut noise = vec![0u8; 10_000];
        crate::crypto::random_bytes(&mut noise).expect("rng");
        let b = seal_blob(
            &keys,
            keys.blob_id(&noise),
            BlobKind::Data,
            &noise,
            Compression::AUTO,
        )
        .expect("seal");
        assert!(!b.compressed);
        assert_eq!(b.bytes.len(), noise.len() + OVERHEAD);
    }

    /// Text that compresses, but not trivially: words drawn from a small vocabulary by a
    /// fixed pseudo-random sequence, so that higher levels find more than lower ones.
    fn prose(len: usize) -> Vec<u8> {
        const WORDS: [&str; 16] = [
            "cairn ", "stores ", "blobs ", "in ", "packs ", "sealed ", "with ", "keys ", "and ",
            "the ", "index ", "says ", "where ", "each ", "one ", "lies ",
        ];
        let mut x: u32 = 0x9e37_79b9;
        let mut out = Vec::with_capacity(len + 16);
        while out.len() < len {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            out.extend_from_slice(WORDS[(x % 16) as usize].as_bytes());
            if x.is_multiple_of(7) {
                out.extend_from_slice(format!("{} ", x % 1000).as_bytes());
            }
        }
        out.truncate(len);
        out
    }

    /// The level asked for is the level used: `max` stores less than `fastest`, `auto`
    /// is today's level 3, `off` stores the plaintext as it is however well it would
    /// compress, and every form opens to the same plaintext.
    #[test]
    fn each_compression_setting_is_applied_and_every_result_opens() {
        let keys = Keys::derive(MasterSecret::from_bytes([1; 32]));
        let text = prose(200_000);
        let id = keys.blob_id(&text);
        let seal = |c: Compression| seal_blob(&keys, id, BlobKind::Data, &text, c).expect("seal");
        let (fastest, auto, max) = (
            seal(Compression::Level(1)),
            seal(Compression::AUTO),
            seal(Compression::Level(19)),
        );
        assert!(fastest.compressed && auto.compressed && max.compressed);
        assert!(
            max.bytes.len() < auto.bytes.len() && auto.bytes.len() < fastest.bytes.len(),
            "max {} auto {} fastest {}",
            max.bytes.len(),
            auto.bytes.len(),
            fastest.bytes.len()
        );
        let mut frame = Vec::new();
        assert!(compress_append(&text, &mut frame, text.len(), 3));
        assert_eq!(auto.bytes.len(), frame.len() + OVERHEAD, "auto is level 3");
        let off = seal(Compression::Off);
        assert!(!off.compressed);
        assert_eq!(off.bytes.len(), text.len() + OVERHEAD);
        for b in [&fastest, &auto, &max, &off] {
            let loc = BlobLocation {
                pack: PackId::default(),
                kind: BlobKind::Data,
                offset: 0,
                length: b.bytes.len() as u32,
                raw_length: b.raw_length,
                compressed: b.compressed,
            };
            assert_eq!(open_blob(&keys, &id, &loc, &b.bytes).expect("open"), text);
        }
        // The 1/32 rule holds at every level: noise is stored as it is.
        let mut noise = vec![0u8; 50_000];
        crate::crypto::random_bytes(&mut noise).expect("rng");
        for c in [
            Compression::Level(1),
            Compression::Level(19),
            Compression::Off,
        ] {
            let b =
                seal_blob(&keys, keys.blob_id(&noise), BlobKind::Data, &noise, c).expect("seal");
            assert!(!b.compressed, "{c}");
        }
    }

    #[test]
    fn open_blob_detects_swaps_and_flips() {
        let keys = Keys::derive(MasterSecret::from_bytes([1; 32]));
        let a = b"first blob".to_vec();
        let b = b"second blob".to_vec();
        let (ia, ib) = (keys.blob_id(&a), keys.blob_id(&b));
        let sa = seal_blob(&keys, ia, BlobKind::Data, &a, Compression::AUTO).expect("seal");
        let sb = seal_blob(&keys, ib, BlobKind::Data, &b, Compression::AUTO).expect("seal");
        let loc = |s: &SealedBlob| BlobLocation {
            pack: PackId::default(),
            kind: BlobKind::Data,
            offset: 0,
            length: s.bytes.len() as u32,
            raw_length: s.raw_length,
            compressed: s.compressed,
        };
        assert_eq!(
            open_blob(&keys, &ia, &loc(&sa), &sa.bytes).expect("open"),
            a
        );
        assert!(
            open_blob(&keys, &ia, &loc(&sb), &sb.bytes).is_err(),
            "swap accepted"
        );
        let mut flipped = sa.bytes.clone();
        flipped[30] ^= 0x40;
        assert!(open_blob(&keys, &ia, &loc(&sa), &flipped).is_err());
    }

    /// Restore opens blobs where they lie in a fetched range: it must accept exactly
    /// what the copying opener accepts, compressed or not, and refuse the same damage.
    #[test]
    fn opening_in_place_agrees_with_opening_a_copy() {
        let keys = Keys::derive(MasterSecret::from_bytes([1; 32]));
        let text = b"restore writes this from the range itself ".repeat(500);
        let mut noise = vec![0u8; 5_000];
        crate::crypto::random_bytes(&mut noise).expect("rng");
        for plain in [text, noise, Vec::new()] {
            let id = keys.blob_id(&plain);
            let sealed =
                seal_blob(&keys, id, BlobKind::Data, &plain, Compression::AUTO).expect("seal");
            let loc = BlobLocation {
                pack: PackId::default(),
                kind: BlobKind::Data,
                offset: 0,
                length: sealed.bytes.len() as u32,
                raw_length: sealed.raw_length,
                compressed: sealed.compressed,
            };
            let mut buf = sealed.bytes.clone();
            let opened = open_blob_in_place(&keys, &id, &loc, &mut buf).expect("open");
            assert_eq!(&*opened, &plain[..]);
            assert_eq!(
                opened.into_owned(),
                open_blob(&keys, &id, &loc, &sealed.bytes).expect("open")
            );
            for at in [0, sealed.bytes.len() / 2, sealed.bytes.len() - 1] {
                let mut bad = sealed.bytes.clone();
                bad[at] ^= 0x40;
                assert!(
                    open_blob_in_place(&keys, &id, &loc, &mut bad).is_err(),
                    "flip at {at}"
                );
            }
            let mut buf = sealed.bytes.clone();
            let other = keys.blob_id(b"another blob");
            assert!(
                open_blob_in_place(&keys, &other, &loc, &mut buf).is_err(),
                "swap accepted"
            );
            let wrong_length = BlobLocation {
                raw_length: loc.raw_length + 1,
                ..loc
            };
            let mut buf = sealed.bytes.clone();
            assert!(open_blob_in_place(&keys, &id, &wrong_length, &mut buf).is_err());
        }
    }

    #[test]
    fn impossible_index_entries_are_refused_before_fetching() {
        let loc = |offset: u64, length: u32| BlobLocation {
            pack: PackId::default(),
            kind: BlobKind::Data,
            offset,
            length,
            raw_length: 10,
            compressed: false,
        };
        assert!(check_location(&loc(0, 1000)).is_ok());
        let far = check_location(&loc(u64::MAX - 10, 100)).expect_err("accepted");
        assert!(far.contains("end past 2^64"), "{far}");
        let huge = check_location(&loc(0, u32::MAX)).expect_err("accepted");
        assert!(huge.contains("exceeds the largest possible blob"), "{huge}");
    }

    #[test]
    fn header_lengths_a_pack_cannot_hold_are_refused() {
        let e = header_range(100, &u32::MAX.to_le_bytes()).expect_err("2^32 accepted");
        assert!(e.contains("header length 4294967295 is impossible"), "{e}");
        assert!(header_range(100, &96u32.to_le_bytes()).is_ok());
        assert!(header_range(100, &97u32.to_le_bytes()).is_err());
        assert!(header_range(100, &39u32.to_le_bytes()).is_err());
        assert!(header_range(3, &[0, 0, 0]).is_err());
        assert_eq!(header_range(100, &50u32.to_le_bytes()), Ok((46, 50)));
    }
}
