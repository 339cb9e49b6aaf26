//! `deletions/<id>` objects: packs and index entries a prune took out of the index,
//! pending deletion after the grace period (see `docs/FORMAT.md`, section 15). Readers add
//! their entries to the index after the index objects' own, so a blob a concurrent backup
//! still uses stays readable until the next prune revives it.

use super::index::IndexPack;
use super::{FormatError, from_json, to_json};
use serde::{Deserialize, Serialize};

/// Version of the deletion record layout.
pub const DELETION_VERSION: u32 = 1;

/// Largest decompressed `deletions/` object accepted from storage: a record lists every
/// entry of the packs it condemns, so it may be larger than a snapshot, but a hostile one
/// must not make a reader allocate without bound.
pub const MAX_DELETION_LEN: usize = 256 * 1024 * 1024;

/// A `deletions/<id>` object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletionFile {
    /// Layout version, [`DELETION_VERSION`].
    pub version: u32,
    /// RFC 3339 time it was written; deletion waits for `created + grace`.
    pub created: String,
    /// Packs to delete, with the index entries they had.
    pub packs: Vec<IndexPack>,
    /// Index entries taken out of packs that stay (their bytes are garbage now).
    pub dropped: Vec<IndexPack>,
}

impl DeletionFile {
    /// JSON bytes before compression and sealing.
    pub fn to_plain(&self) -> Vec<u8> {
        to_json(self)
    }

    /// Parse decrypted, decompressed bytes.
    pub fn from_plain(bytes: &[u8]) -> Result<Self, FormatError> {
        let d: DeletionFile = from_json("deletion record", bytes)?;
        if d.version != DELETION_VERSION {
            return Err(FormatError::Invalid {
                what: "deletion record",
                reason: format!("unknown version {}", d.version),
            });
        }
        Ok(d)
    }
}
