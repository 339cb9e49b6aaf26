//! The `config` object: the one plaintext object, read before any key is unlocked so that
//! "not a cairn repository" and "format too new" are told apart from "wrong passphrase".
//! Its body is authenticated with a MAC under a key derived from the master secret, so it
//! cannot be altered without detection once a key is unlocked.

use super::{FormatError, from_json, to_json};
use crate::chunker::ChunkerParams;
use crate::hash::Id;
use serde::{Deserialize, Serialize};

/// The repository format version this build writes for a new repository, and the
/// newest it reads. Version 2 differs from 1 only in that pack headers are
/// zstd-compressed (docs/FORMAT.md section 9), which saves about 90 bytes per blob.
pub const FORMAT_VERSION: u32 = 2;

/// The oldest format version this build reads (and keeps writing, in that version's
/// layout, for repositories of that version).
pub const OLDEST_FORMAT_VERSION: u32 = 1;

/// Marker that identifies a cairn repository's `config`.
pub const MAGIC: &str = "cairn-repository";

/// Default target size of a pack: large enough that a bucket holds few objects per GiB,
/// small enough that one failed upload costs little to repeat.
pub const DEFAULT_PACK_SIZE: u32 = 16 * 1024 * 1024;

/// Settings every writer of the repository must agree on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigBody {
    /// Always [`MAGIC`].
    pub format: String,
    /// Format version, see [`FORMAT_VERSION`].
    pub version: u32,
    /// Random id of the repository, shared by every copy of it.
    pub id: Id,
    /// Chunk size bounds.
    pub chunker: ChunkerParams,
    /// Target pack size in bytes.
    pub pack_size: u32,
}

/// The stored `config` object: body plus MAC.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// The settings.
    #[serde(flatten)]
    pub body: ConfigBody,
    /// Hex of keyed BLAKE3 over the canonical JSON of `body`.
    pub mac: String,
}

#[derive(Deserialize)]
struct Probe {
    format: Option<String>,
    version: Option<u32>,
}

/// What a first look at `config` found, before any key is available.
#[derive(Debug)]
pub enum ConfigProbe {
    /// Not JSON, or no cairn marker.
    NotCairn,
    /// A cairn repository of a version this build does not read.
    Unsupported(u32),
    /// Decodable by this build.
    Supported(ConfigFile),
}

impl ConfigBody {
    /// The exact bytes the MAC covers.
    pub fn canonical(&self) -> Vec<u8> {
        to_json(self)
    }
}

impl ConfigFile {
    /// Serialize for storage.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self)
            .unwrap_or_else(|e| panic!("serializing config failed: {e}"));
        v.push(b'\n');
        v
    }

    /// Classify stored bytes without trusting them.
    pub fn probe(bytes: &[u8]) -> Result<ConfigProbe, FormatError> {
        let Ok(p) = serde_json::from_slice::<Probe>(bytes) else {
            return Ok(ConfigProbe::NotCairn);
        };
        if p.format.as_deref() != Some(MAGIC) {
            return Ok(ConfigProbe::NotCairn);
        }
        match p.version {
            Some(v) if (OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&v) => {}
            Some(v) => return Ok(ConfigProbe::Unsupported(v)),
            None => return Ok(ConfigProbe::NotCairn),
        }
        let file: ConfigFile = from_json("config", bytes)?;
        file.body
            .chunker
            .validate()
            .map_err(|reason| FormatError::Invalid {
                what: "config",
                reason,
            })?;
        if !(1024 * 1024..=1024 * 1024 * 1024).contains(&file.body.pack_size) {
            return Err(FormatError::Invalid {
                what: "config",
                reason: format!("pack_size {} is outside 1 MiB..1 GiB", file.body.pack_size),
            });
        }
        Ok(ConfigProbe::Supported(file))
    }
}
