//! Every type the repository stores, and nothing else.
//!
//! Each submodule declares one stored type as a plain `serde` struct with an explicit
//! version, and the functions that turn it into stored bytes and back. `docs/FORMAT.md`
//! describes the same layout in prose and carries test vectors that `tests/integration/format_vectors.rs`
//! decodes.

pub mod config;
pub mod deletion;
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

/// zstd level of metadata objects (index, snapshots, pack headers), and of blobs when
/// nothing chooses another: level 3 is zstd's default trade-off.
pub const ZSTD_LEVEL: i32 = crate::compression::AUTO_LEVEL as i32;

thread_local! {
    /// One zstd context per thread, reused for every blob and object it compresses, with
    /// the level it is set to. A new context per call allocates and zeroes its match
    /// tables each time, which cost more than the compression itself on a backup of many
    /// small files; changing the level of a kept one costs nothing of the kind.
    static COMPRESSOR: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(None) };
}

/// zstd-compress `data` at [`ZSTD_LEVEL`] with this thread's reused context. The frame
/// records its content size (readers bound their output by it).
pub(crate) fn try_compress(data: &[u8]) -> std::io::Result<Vec<u8>> {
    with_compressor(ZSTD_LEVEL, |c| c.compress(data))
}

/// Run `f` with this thread's compressor, made on first use, set to `level`.
fn with_compressor<T>(
    level: i32,
    f: impl FnOnce(&mut zstd::bulk::Compressor<'static>) -> std::io::Result<T>,
) -> std::io::Result<T> {
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let (at, c) = match &mut *slot {
            Some(kept) => kept,
            None => slot.insert((level, zstd::bulk::Compressor::new(level)?)),
        };
        if *at != level {
            c.set_compression_level(level)?;
            *at = level;
        }
        f(c)
    })
}

/// zstd-compress `data` at `level` onto the end of `out`, keeping the frame only if it
/// is at most `limit` bytes; returns whether it was kept (otherwise `out` is as it was).
/// Writing into the caller's buffer spares a blob an allocation and a copy. zstd may use
/// all of `out`'s spare capacity (at least `limit`), and gives up only when that runs
/// out; incompressible data is fast for zstd anyway (several GB/s here).
pub(crate) fn compress_append(data: &[u8], out: &mut Vec<u8>, limit: usize, level: i32) -> bool {
    let at = out.len();
    out.reserve(limit);
    let written = with_compressor(level, |c| {
        let mut cursor = std::io::Cursor::new(&mut *out);
        cursor.set_position(at as u64);
        c.compress_to_buffer(data, &mut cursor)
    });
    match written {
        Ok(n) if n <= limit && out.len() == at + n => true,
        _ => {
            out.truncate(at);
            false
        }
    }
}

/// Compress metadata (index, snapshot) before sealing.
pub(crate) fn compress(data: &[u8]) -> Vec<u8> {
    try_compress(data)
        .unwrap_or_else(|e| panic!("zstd compression of {} bytes failed: {e}", data.len()))
}

/// Memory reserved up front for a frame's declared content size; more is allocated only
/// as output is actually produced, so a tiny hostile object that declares (or, without a
/// declared size, is allowed) a large size cannot make a reader reserve that much.
const INITIAL_RESERVE: usize = 1024 * 1024;

/// Frames that declare at most this many bytes (every blob cairn writes with the default
/// chunk sizes, and most metadata) are decompressed in one call into a buffer of exactly
/// that size, with this thread's reused context: a new streaming decoder per blob cost a
/// tenth of a restore's CPU time.
const BULK_LIMIT: usize = 16 * 1024 * 1024;

thread_local! {
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// One frame that declares `size` bytes; zstd refuses output beyond the buffer, so the
/// declared size bounds the memory, and a frame holding fewer bytes than it declares is
/// refused.
fn decompress_bulk(data: &[u8], size: usize) -> std::io::Result<Vec<u8>> {
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let d = match &mut *slot {
            Some(d) => d,
            None => slot.insert(zstd::bulk::Decompressor::new()?),
        };
        let mut out = Vec::with_capacity(size);
        let n = d.decompress_to_buffer(data, &mut out)?;
        if n != size {
            return Err(std::io::Error::other(format!(
                "declares {size} bytes but holds {n}"
            )));
        }
        Ok(out)
    })
}

/// Decompress a zstd payload into at most `limit` bytes. A frame that declares a larger
/// content size is refused before any output is produced; otherwise output grows with
/// what the data really decompresses to and stops one byte past `limit`, so neither a
/// lying header nor a decompression bomb can make a reader allocate more than `limit`.
pub fn decompress(what: &'static str, data: &[u8], limit: usize) -> Result<Vec<u8>, FormatError> {
    use std::io::Read;
    let fail = |reason: String| FormatError::Decompress { what, reason };
    let declared = zstd::zstd_safe::get_frame_content_size(data)
        .map_err(|_| fail("not a zstd frame".into()))?;
    if let Some(s) = declared
        && s > limit as u64
    {
        return Err(fail(format!(
            "declares {s} bytes, more than the {limit}-byte limit"
        )));
    }
    if let Some(size) = declared
        && size <= BULK_LIMIT as u64
    {
        return decompress_bulk(data, size as usize).map_err(|e| fail(e.to_string()));
    }
    let reserve = declared.map_or(0, |s| s as usize).min(INITIAL_RESERVE);
    let mut out = Vec::with_capacity(reserve);
    let mut decoder =
        zstd::stream::read::Decoder::with_buffer(data).map_err(|e| fail(e.to_string()))?;
    // The decoder's window is memory too. A frame that records its size (as cairn writes
    // them) needs a window no larger than that size; one that does not may use zstd's
    // usual windows, up to 8 MiB at the standard levels. So: the limit, but at least 8 MiB
    // and at most zstd's own default cap of 128 MiB.
    let window_log = (usize::BITS - limit.saturating_sub(1).leading_zeros()).clamp(23, 27);
    decoder
        .window_log_max(window_log)
        .map_err(|e| fail(e.to_string()))?;
    decoder
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| fail(e.to_string()))?;
    if out.len() > limit {
        return Err(fail(format!(
            "decompresses to more than the {limit}-byte limit"
        )));
    }
    if let Some(s) = declared
        && s != out.len() as u64
    {
        return Err(fail(format!("declares {s} bytes but holds {}", out.len())));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame that records no content size (as a streaming writer makes it).
    fn unsized_frame(plain: &[u8]) -> Vec<u8> {
        let mut e = zstd::stream::write::Encoder::new(Vec::new(), ZSTD_LEVEL).expect("encoder");
        e.include_contentsize(false).expect("param");
        std::io::Write::write_all(&mut e, plain).expect("write");
        e.finish().expect("finish")
    }

    #[test]
    fn round_trip_within_the_limit() {
        let plain = vec![7u8; 5000];
        assert_eq!(decompress("t", &compress(&plain), 5000).expect("ok"), plain);
        assert_eq!(
            decompress("t", &unsized_frame(&plain), 5000).expect("ok"),
            plain
        );
    }

    #[test]
    fn bomb_without_declared_size_stops_at_the_limit() {
        // 64 MiB of zeros in a few KiB: refused after limit + 1 bytes of output.
        let bomb = unsized_frame(&vec![0u8; 64 << 20]);
        assert!(bomb.len() < 64 * 1024, "{}", bomb.len());
        let err = decompress("snapshot", &bomb, 1 << 20).expect_err("bomb accepted");
        assert!(
            err.to_string()
                .contains("decompresses to more than the 1048576-byte limit"),
            "{err}"
        );
    }

    #[test]
    fn declared_size_over_the_limit_is_refused_before_decompressing() {
        let err = decompress("index", &compress(&[1u8; 4096]), 4095).expect_err("accepted");
        assert!(err.to_string().contains("declares 4096 bytes"), "{err}");
    }

    #[test]
    fn a_tiny_object_cannot_reserve_its_whole_limit() {
        // An unsized frame of 10 bytes with a 1 GiB limit: the output buffer grows with
        // the output, it is not reserved at the limit.
        let plain = decompress("index", &unsized_frame(b"0123456789"), 1 << 30).expect("ok");
        assert_eq!(plain, b"0123456789");
        assert!(plain.capacity() < 1 << 20, "{}", plain.capacity());
    }

    #[test]
    fn garbage_and_truncation_are_errors() {
        assert!(decompress("t", b"not zstd at all", 100).is_err());
        let frame = compress(&[3u8; 1000]);
        assert!(decompress("t", &frame[..frame.len() - 3], 1000).is_err());
        let mut trailing = frame.clone();
        trailing.extend_from_slice(b"junk");
        assert!(decompress("t", &trailing, 1000).is_err());
    }
}
