//! The trailing header of a pack object.
//!
//! A pack is `blob_0 || blob_1 || ... || sealed_header || header_length (u32 LE)`. Each blob
//! is sealed on its own so that restore can fetch one blob with a ranged read; the header
//! repeats what the index says about the pack, so an index can be rebuilt from packs alone.
//! Format version 1 stores the header as JSON, version 2 as zstd-compressed JSON; a reader
//! tells them apart by their first bytes ([`decode_header`]).

use super::index::{BlobKind, PackedBlob};
use super::{FormatError, from_json, to_json};
use crate::hash::BlobId;
use serde::{Deserialize, Serialize};

/// One header entry; offsets are implicit (blobs are stored back to back from offset 0).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderEntry {
    /// Keyed hash of the plaintext.
    pub id: BlobId,
    /// Data or tree.
    #[serde(rename = "type")]
    pub kind: BlobKind,
    /// Sealed length.
    pub length: u32,
    /// Plaintext length.
    pub raw_length: u32,
    /// zstd-compressed before sealing.
    pub compressed: bool,
}

/// Largest header accepted from storage, so a hostile pack cannot make us allocate much.
pub const MAX_HEADER_LEN: u32 = 16 * 1024 * 1024;

/// Largest decompressed header accepted (version 2): four times the largest sealed one,
/// far above the 20,000 entries of about 150 bytes a writer puts in one pack.
pub const MAX_HEADER_PLAIN_LEN: usize = 64 * 1024 * 1024;

/// The four bytes every zstd frame starts with; a JSON header starts with `[`.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// The header as a pack of format `version` stores it (before sealing), from its JSON
/// ([`header_plain`]): the JSON itself for version 1, zstd-compressed from version 2 on (a
/// header is mostly hex ids and repeated field names, about 130 bytes an entry as JSON
/// and 45 compressed).
pub fn header_stored(plain: Vec<u8>, version: u32) -> Vec<u8> {
    if version >= 2 {
        super::compress(&plain)
    } else {
        plain
    }
}

/// Parse an opened (decrypted) header of either form and place its entries, as
/// [`parse_header`] does.
pub fn decode_header(opened: &[u8], blobs_len: u64) -> Result<Vec<PackedBlob>, FormatError> {
    if opened.starts_with(&ZSTD_MAGIC) {
        let plain = super::decompress("pack header", opened, MAX_HEADER_PLAIN_LEN)?;
        parse_header(&plain, blobs_len)
    } else {
        parse_header(opened, blobs_len)
    }
}

/// Header plaintext for the given entries.
pub fn header_plain(entries: &[HeaderEntry]) -> Vec<u8> {
    to_json(&entries)
}

/// Parse a decrypted header and place its entries, checking that they exactly fill the
/// `blobs_len` bytes before the header.
pub fn parse_header(plain: &[u8], blobs_len: u64) -> Result<Vec<PackedBlob>, FormatError> {
    let entries: Vec<HeaderEntry> = from_json("pack header", plain)?;
    let mut offset = 0u64;
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        out.push(PackedBlob {
            id: e.id,
            kind: e.kind,
            offset,
            length: e.length,
            raw_length: e.raw_length,
            compressed: e.compressed,
        });
        offset += u64::from(e.length);
    }
    if offset != blobs_len {
        return Err(FormatError::Invalid {
            what: "pack header",
            reason: format!("entries cover {offset} bytes but the pack holds {blobs_len}"),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::Id;

    fn entries(n: u32) -> Vec<HeaderEntry> {
        (0..n)
            .map(|i| HeaderEntry {
                id: BlobId(Id(*blake3::hash(&i.to_le_bytes()).as_bytes())),
                kind: if i % 7 == 0 {
                    BlobKind::Tree
                } else {
                    BlobKind::Data
                },
                length: 1000 + i,
                raw_length: 3000 + i,
                compressed: i % 2 == 0,
            })
            .collect()
    }

    /// Both layouts decode to the same entries; version 2 is JSON compressed (and much
    /// smaller), version 1 is the JSON itself, byte for byte.
    #[test]
    fn both_header_layouts_decode_to_the_same_entries() {
        let e = entries(500);
        let blobs_len: u64 = e.iter().map(|x| u64::from(x.length)).sum();
        let v1 = header_stored(header_plain(&e), 1);
        let v2 = header_stored(header_plain(&e), 2);
        assert_eq!(v1, header_plain(&e));
        assert!(v2.starts_with(&ZSTD_MAGIC));
        assert!(
            v2.len() * 2 < v1.len(),
            "compressed {} of {}",
            v2.len(),
            v1.len()
        );
        let a = decode_header(&v1, blobs_len).expect("v1");
        let b = decode_header(&v2, blobs_len).expect("v2");
        assert_eq!(a, b);
        assert_eq!(a.len(), 500);
        assert!(decode_header(&v2, blobs_len + 1).is_err());
    }

    /// A compressed header that would decompress past the limit is refused, not expanded.
    #[test]
    fn a_compressed_header_bomb_is_refused() {
        let bomb = crate::format::compress(&vec![b' '; MAX_HEADER_PLAIN_LEN + 1]);
        assert!(bomb.len() < 100_000);
        let err = decode_header(&bomb, 0).expect_err("bomb");
        assert!(err.to_string().contains("limit"), "{err}");
    }
}
