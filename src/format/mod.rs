//! Every type the repository stores, and nothing else.
//!
//! Each submodule declares one stored type as a plain `serde` struct with an explicit
//! version, and the functions that turn it into stored bytes and back. `docs/FORMAT.md`
//! describes the same layout in prose and carries test vectors that `tests/format_vectors.rs`
//! decodes.

pub mod config;
pub mod index;
pub mod key;
pub mod name;
pub mod pack;
pub mod snapshot;
pub mod tree;

/// Why stored bytes could not be decoded; always names what was expected.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// The JSON did not match the schema.
    #[error("malformed {what}: {source}")]
    Json {
        /// Which stored type was being decoded.
        what: &'static str,
        /// The parser's complaint.
        #[source]
        source: serde_json::Error,
    },
    /// zstd refused the data or it exceeded its declared size.
    #[error("malformed {what}: decompression failed: {reason}")]
    Decompress {
        /// Which stored type was being decoded.
        what: &'static str,
        /// zstd's complaint or the size violation.
        reason: String,
    },
    /// A structural rule was broken (bad name, out-of-range offset, wrong version...).
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// Which stored type was being decoded.
        what: &'static str,
        /// The rule that was broken.
        reason: String,
    },
}

pub(crate) fn from_json<T: serde::de::DeserializeOwned>(
    what: &'static str,
    bytes: &[u8],
) -> Result<T, FormatError> {
    serde_json::from_slice(bytes).map_err(|source| FormatError::Json { what, source })
}

pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // Serializing these plain structs (string keys, no maps with non-string keys) cannot fail.
    serde_json::to_vec(value).unwrap_or_else(|e| panic!("serializing a stored type failed: {e}"))
}

/// zstd level used for blobs and metadata objects: level 3 is zstd's default trade-off.
pub const ZSTD_LEVEL: i32 = 3;

/// Compress metadata (index, snapshot) before sealing.
pub(crate) fn compress(data: &[u8]) -> Vec<u8> {
    zstd::bulk::compress(data, ZSTD_LEVEL)
        .unwrap_or_else(|e| panic!("zstd compression of {} bytes failed: {e}", data.len()))
}

/// Decompress at most `limit` bytes: a hostile object cannot make us allocate more.
pub(crate) fn decompress(
    what: &'static str,
    data: &[u8],
    limit: usize,
) -> Result<Vec<u8>, FormatError> {
    let size =
        zstd::zstd_safe::get_frame_content_size(data).map_err(|_| FormatError::Decompress {
            what,
            reason: "not a zstd frame".into(),
        })?;
    let size = match size {
        Some(s) if s <= limit as u64 => s as usize,
        Some(s) => {
            return Err(FormatError::Decompress {
                what,
                reason: format!("declares {s} bytes, more than the {limit}-byte limit"),
            });
        }
        None => limit,
    };
    zstd::bulk::decompress(data, size).map_err(|e| FormatError::Decompress {
        what,
        reason: e.to_string(),
    })
}
