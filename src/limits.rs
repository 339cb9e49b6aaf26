//! Bounds on what cairn accepts from storage that more than one stage enforces: kept
//! here, apart from any stage, so that a leaf such as the local cache can share them
//! without depending on the pack reader (and through it on the index and back).

/// Largest blob plaintext accepted from storage (trees of huge directories included).
/// Pack reading refuses a blob claiming more, the cache a tree decompressing to more,
/// and a backup never writes one larger.
pub const MAX_BLOB_LEN: u32 = 128 * 1024 * 1024;
