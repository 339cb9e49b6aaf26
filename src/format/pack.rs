//! The trailing header of a pack object.
//!
//! A pack is `blob_0 || blob_1 || ... || sealed_header || header_length (u32 LE)`. Each blob
//! is sealed on its own so that restore can fetch one blob with a ranged read; the header
//! repeats what the index says about the pack, so an index can be rebuilt from packs alone.

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
