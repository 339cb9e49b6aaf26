//! `keys/<id>` objects: the master secret wrapped under one passphrase. Several may exist;
//! any one unlocks the repository, and removing one does not touch data.

use super::{FormatError, from_json, to_json};
use crate::crypto::{KdfParams, WrappedSecret};
use serde::{Deserialize, Serialize};

/// Version of the key object layout.
pub const KEY_VERSION: u32 = 1;

/// Argon2id parameters and salt, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KdfRecord {
    /// Always `argon2id`.
    pub algorithm: String,
    /// Argon2 version; always 19 (0x13).
    pub argon2_version: u32,
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
    /// Hex salt.
    pub salt: String,
}

/// The stored key object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyFile {
    /// [`KEY_VERSION`].
    pub version: u32,
    /// RFC 3339 creation time.
    pub created: String,
    /// Host that created the key, for `key list`.
    pub hostname: String,
    /// User that created the key, for `key list`.
    pub username: String,
    /// How the wrapping key is derived.
    pub kdf: KdfRecord,
    /// Hex of `nonce || sealed master secret || tag`.
    pub secret: String,
}

impl KeyFile {
    /// Build from a wrapped secret and descriptive fields.
    pub fn new(
        wrapped: &WrappedSecret,
        created: String,
        hostname: String,
        username: String,
    ) -> Self {
        KeyFile {
            version: KEY_VERSION,
            created,
            hostname,
            username,
            kdf: KdfRecord {
                algorithm: "argon2id".into(),
                argon2_version: 0x13,
                memory_kib: wrapped.params.memory_kib,
                iterations: wrapped.params.iterations,
                parallelism: wrapped.params.parallelism,
                salt: hex::encode(&wrapped.salt),
            },
            secret: hex::encode(&wrapped.sealed),
        }
    }

    /// Serialize for storage.
    pub fn to_bytes(&self) -> Vec<u8> {
        to_json(self)
    }

    /// Parse stored bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, FormatError> {
        let k: KeyFile = from_json("key", bytes)?;
        if k.version != KEY_VERSION || k.kdf.algorithm != "argon2id" || k.kdf.argon2_version != 0x13
        {
            return Err(FormatError::Invalid {
                what: "key",
                reason: format!(
                    "unsupported key version {} / kdf {} v{}",
                    k.version, k.kdf.algorithm, k.kdf.argon2_version
                ),
            });
        }
        Ok(k)
    }

    /// The wrapped secret, ready for [`crate::crypto::unwrap_secret`].
    pub fn wrapped(&self) -> Result<WrappedSecret, FormatError> {
        let bad = |reason: &str| FormatError::Invalid {
            what: "key",
            reason: reason.to_string(),
        };
        Ok(WrappedSecret {
            params: KdfParams {
                memory_kib: self.kdf.memory_kib,
                iterations: self.kdf.iterations,
                parallelism: self.kdf.parallelism,
            },
            salt: hex::decode(&self.kdf.salt).map_err(|_| bad("salt is not hex"))?,
            sealed: hex::decode(&self.secret).map_err(|_| bad("secret is not hex"))?,
        })
    }
}
