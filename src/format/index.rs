//! `index/<id>` objects: where each blob lives (pack, offset, length). Written only after
//! the packs they describe are durable, so every index entry points at a stored pack.

use super::{FormatError, from_json, to_json};
use crate::hash::{BlobId, PackId};
use serde::{Deserialize, Serialize};

/// Version of the index layout.
pub const INDEX_VERSION: u32 = 1;

/// Whether a blob holds file data or a tree; trees go into their own packs so that
/// listing and restore planning fetch little.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobKind {
    /// File content chunk.
    Data,
    /// Directory tree.
    Tree,
}

/// One blob inside a pack.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackedBlob {
    /// Keyed hash of the plaintext.
    pub id: BlobId,
    /// Data or tree.
    #[serde(rename = "type")]
    pub kind: BlobKind,
    /// Byte offset of the sealed blob in the pack.
    pub offset: u64,
    /// Length of the sealed blob.
    pub length: u32,
    /// Plaintext length after decompression.
    pub raw_length: u32,
    /// Whether the sealed payload is zstd-compressed.
    pub compressed: bool,
}

/// All blobs of one pack.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexPack {
    /// The pack object.
    pub id: PackId,
    /// Its blobs, in pack order.
    pub blobs: Vec<PackedBlob>,
}

/// A stored index object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexFile {
    /// [`INDEX_VERSION`].
    pub version: u32,
    /// Packs described.
    pub packs: Vec<IndexPack>,
}

impl IndexFile {
    /// JSON bytes before compression and sealing.
    pub fn to_plain(&self) -> Vec<u8> {
        to_json(self)
    }

    /// Parse decrypted, decompressed bytes.
    pub fn from_plain(bytes: &[u8]) -> Result<Self, FormatError> {
        let i: IndexFile = from_json("index", bytes)?;
        if i.version != INDEX_VERSION {
            return Err(FormatError::Invalid {
                what: "index",
                reason: format!("unsupported index version {}", i.version),
            });
        }
        Ok(i)
    }
}
