//! Content-defined chunking (FastCDC with normalized chunking and a keyed gear table).
//!
//! Boundaries depend only on the bytes around them, so an insertion early in a file moves
//! only nearby boundaries and the rest of the chunks dedup against the previous version.
//! The gear table comes from the repository key ([`crate::crypto::Keys::gear_table`]) so
//! that chunk sizes, which a storage provider can observe, do not fingerprint known files.
//! [`Chunker::cut`] is pure; [`ChunkStream`] feeds it from a reader with a buffer bounded
//! by the maximum chunk size.

use serde::{Deserialize, Serialize};
use std::io::{self, Read};

/// Size bounds of chunks; stored in the repository `config` so every writer agrees.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkerParams {
    /// No boundary before this many bytes.
    pub min_size: u32,
    /// Target average; must be a power of two.
    pub avg_size: u32,
    /// A boundary is forced at this many bytes.
    pub max_size: u32,
}

impl ChunkerParams {
    /// 256 KiB / 1 MiB / 4 MiB: large enough that per-blob overhead (index entries,
    /// requests) stays small, small enough that an edit re-uploads about a megabyte.
    pub const DEFAULT: ChunkerParams = ChunkerParams {
        min_size: 256 * 1024,
        avg_size: 1024 * 1024,
        max_size: 4 * 1024 * 1024,
    };

    /// Check the invariants the chunker relies on; a config that violates them is refused.
    pub fn validate(&self) -> Result<(), String> {
        let ok = self.avg_size.is_power_of_two()
            && self.min_size >= 64
            && self.min_size < self.avg_size
            && self.avg_size < self.max_size
            && self.max_size <= 64 * 1024 * 1024;
        if ok {
            Ok(())
        } else {
            Err(format!(
                "chunker sizes {self:?} are invalid: need 64 <= min < avg < max <= 64 MiB and a power-of-two avg"
            ))
        }
    }
}

/// A chunker for one repository: parameters plus the keyed gear table.
#[derive(Clone)]
pub struct Chunker {
    params: ChunkerParams,
    gear: [u64; 256],
    /// Harder mask used before the average size (normalization level 2: two more bits).
    mask_small: u64,
    /// Easier mask used after the average size.
    mask_large: u64,
}

fn top_bits(n: u32) -> u64 {
    if n == 0 { 0 } else { !0u64 << (64 - n) }
}

impl Chunker {
    /// Build a chunker; `params` must have passed [`ChunkerParams::validate`].
    pub fn new(params: ChunkerParams, gear: [u64; 256]) -> Self {
        let bits = params.avg_size.trailing_zeros();
        // The gear hash shifts left, so the top bits depend on the most bytes: test those.
        Chunker {
            params,
            gear,
            mask_small: top_bits(bits + 2),
            mask_large: top_bits(bits.saturating_sub(2)),
        }
    }

    /// The chunker's size bounds.
    pub fn params(&self) -> ChunkerParams {
        self.params
    }

    /// Length of the first chunk of `data`. The caller must pass at least `max_size` bytes
    /// unless `data` is the end of the stream; with fewer, the whole slice may be returned.
    pub fn cut(&self, data: &[u8]) -> usize {
        let min = self.params.min_size as usize;
        let avg = self.params.avg_size as usize;
        let max = self.params.max_size as usize;
        if data.len() <= min {
            return data.len();
        }
        let end = data.len().min(max);
        let normal = avg.min(end);
        let mut fp: u64 = 0;
        // Slice iterators rather than indexing: no bounds check per byte, which was a
        // third of the chunker's time.
        for (k, &b) in data[min..normal].iter().enumerate() {
            fp = (fp << 1).wrapping_add(self.gear[usize::from(b)]);
            if fp & self.mask_small == 0 {
                return min + k + 1;
            }
        }
        for (k, &b) in data[normal..end].iter().enumerate() {
            fp = (fp << 1).wrapping_add(self.gear[usize::from(b)]);
            if fp & self.mask_large == 0 {
                return normal + k + 1;
            }
        }
        end
    }

    /// All chunk lengths of an in-memory buffer; for tests and test vectors.
    pub fn cut_all(&self, mut data: &[u8]) -> Vec<usize> {
        let mut out = Vec::new();
        while !data.is_empty() {
            let n = self.cut(data);
            out.push(n);
            data = &data[n..];
        }
        out
    }
}

/// Reads a stream and yields its chunks. Its buffer holds at most one and a half
/// `max_size` windows, and only as much of that as the stream needed;
/// it can be handed from one file to the next ([`ChunkStream::with_buffer`],
/// [`ChunkStream::into_buffer`]), so a backup of many small files neither allocates nor
/// zeroes a buffer per file.
pub struct ChunkStream<R> {
    reader: R,
    chunker: Chunker,
    /// Initialised bytes; `start..end` is data read but not yet cut.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
    bytes_read: u64,
}

/// Smallest buffer a stream reads into; it doubles from here up to one and a half chunk
/// windows.
const MIN_BUFFER: usize = 64 * 1024;
/// Bytes a full buffer reads to learn whether the stream goes on before it grows; smaller
/// than [`MIN_BUFFER`], so they always fit once it has grown.
const PROBE: usize = 4096;

impl<R: Read> ChunkStream<R> {
    /// Wrap a reader, with a new buffer.
    pub fn new(reader: R, chunker: Chunker) -> Self {
        Self::with_buffer(reader, chunker, Vec::new())
    }

    /// Wrap a reader, reusing a buffer from [`ChunkStream::into_buffer`] (its contents
    /// are ignored).
    pub fn with_buffer(reader: R, chunker: Chunker, buf: Vec<u8>) -> Self {
        ChunkStream {
            reader,
            chunker,
            buf,
            start: 0,
            end: 0,
            eof: false,
            bytes_read: 0,
        }
    }

    /// The buffer, for the next stream.
    pub fn into_buffer(self) -> Vec<u8> {
        self.buf
    }

    /// Bytes read from the underlying reader so far.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// Make `start..end` hold at least `max_size` bytes, or everything left.
    fn fill(&mut self) -> io::Result<()> {
        let max = self.chunker.params.max_size as usize;
        if self.eof || self.end - self.start >= max {
            return Ok(());
        }
        // A window and a half: the unread tail (less than a window) moves to the front
        // once a window no longer fits behind it, so each byte is moved about twice on
        // average; two windows moved it once but held a third more memory, and moving
        // bytes costs far less than reading them from disk.
        let cap = max + max / 2;
        if self.start + max > cap {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let want = self.start + max;
        while !self.eof && self.end < want {
            if self.end == self.buf.len() && self.end > 0 {
                // Full: look for more before growing, so that a file of exactly the
                // buffer's size (64 KiB, 1 MiB) does not double it only to read its end.
                let mut probe = [0u8; PROBE];
                match self.reader.read(&mut probe) {
                    Ok(0) => self.eof = true,
                    Ok(n) => {
                        self.grow(cap);
                        self.buf[self.end..self.end + n].copy_from_slice(&probe[..n]);
                        self.end += n;
                        self.bytes_read += n as u64;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
                continue;
            }
            if self.end == self.buf.len() {
                self.grow(cap);
            }
            match self.reader.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(n) => {
                    self.end += n;
                    self.bytes_read += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Double the buffer (from [`MIN_BUFFER`], up to `cap`). It grows only as far as the
    /// data needs (a small file keeps it small), and is zeroed once per growth however
    /// many files it serves.
    fn grow(&mut self, cap: usize) {
        let len = (self.buf.len() * 2).max(MIN_BUFFER).min(cap);
        self.buf.resize(len, 0);
    }

    /// The next chunk, or `None` at the end of the stream.
    pub fn next_chunk(&mut self) -> io::Result<Option<Vec<u8>>> {
        Ok(self.next_chunk_ref()?.map(<[u8]>::to_vec))
    }

    /// The next chunk, borrowed from the stream's buffer (valid until the next call), or
    /// `None` at the end of the stream. A backup hashes and seals chunks from here, so
    /// file data is copied once, into its sealed blob.
    pub fn next_chunk_ref(&mut self) -> io::Result<Option<&[u8]>> {
        self.fill()?;
        if self.start == self.end {
            return Ok(None);
        }
        let at = self.start;
        let n = self.chunker.cut(&self.buf[at..self.end]);
        self.start += n;
        Ok(Some(&self.buf[at..at + n]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_gear(seed: u8) -> [u64; 256] {
        let mut xof = blake3::Hasher::new_keyed(&[seed; 32]).finalize_xof();
        let mut t = [0u64; 256];
        let mut w = [0u8; 8];
        for e in t.iter_mut() {
            xof.fill(&mut w);
            *e = u64::from_le_bytes(w);
        }
        t
    }

    fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    fn small() -> ChunkerParams {
        ChunkerParams {
            min_size: 2048,
            avg_size: 8192,
            max_size: 32768,
        }
    }

    #[test]
    fn chunks_respect_bounds_and_cover_input() {
        let c = Chunker::new(small(), test_gear(1));
        let data = pseudo_random(1 << 20, 42);
        let lens = c.cut_all(&data);
        assert_eq!(lens.iter().sum::<usize>(), data.len());
        for (i, l) in lens.iter().enumerate() {
            assert!(*l <= 32768);
            if i + 1 < lens.len() {
                assert!(*l > 2048, "chunk {i} is {l} bytes");
            }
        }
        let avg = data.len() / lens.len();
        assert!((4096..=16384).contains(&avg), "average {avg}");
    }

    #[test]
    fn insertion_only_disturbs_nearby_chunks() {
        let c = Chunker::new(small(), test_gear(1));
        let data = pseudo_random(1 << 20, 7);
        let mut edited = data.clone();
        edited.splice(1000..1000, b"inserted bytes".iter().copied());
        let a: std::collections::HashSet<Vec<u8>> = split(&c, &data).into_iter().collect();
        let b = split(&c, &edited);
        let shared = b.iter().filter(|ch| a.contains(*ch)).count();
        assert!(
            shared + 3 >= b.len(),
            "only {shared} of {} chunks shared",
            b.len()
        );
    }

    fn split(c: &Chunker, data: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut rest = data;
        while !rest.is_empty() {
            let n = c.cut(rest);
            out.push(rest[..n].to_vec());
            rest = &rest[n..];
        }
        out
    }

    #[test]
    fn the_key_changes_boundaries() {
        let data = pseudo_random(1 << 20, 9);
        let a = Chunker::new(small(), test_gear(1)).cut_all(&data);
        let b = Chunker::new(small(), test_gear(2)).cut_all(&data);
        assert_ne!(a, b);
    }

    #[test]
    fn stream_matches_in_memory_cutting_with_tiny_reads() {
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
                let n = out.len().min(777).min(self.0.len());
                out[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let c = Chunker::new(small(), test_gear(3));
        let data = pseudo_random(300_000, 5);
        let mut s = ChunkStream::new(Trickle(&data), c.clone());
        let mut lens = Vec::new();
        while let Some(ch) = s.next_chunk().expect("read") {
            lens.push(ch.len());
        }
        assert_eq!(lens, c.cut_all(&data));
        assert_eq!(s.bytes_read(), data.len() as u64);
    }

    /// A buffer handed from stream to stream (as the backup's readers do) gives each
    /// stream exactly its own chunks: nothing of an earlier, longer stream leaks in.
    #[test]
    fn a_reused_buffer_carries_nothing_between_streams() {
        let c = Chunker::new(small(), test_gear(4));
        let mut buf = Vec::new();
        for (len, seed) in [(200_000, 1), (5_000, 2), (0, 3), (70_001, 4), (100, 5)] {
            let data = pseudo_random(len, seed);
            let mut s = ChunkStream::with_buffer(&data[..], c.clone(), buf);
            let mut chunks = Vec::new();
            while let Some(ch) = s.next_chunk().expect("read") {
                chunks.push(ch);
            }
            assert_eq!(chunks, split(&c, &data), "stream of {len} bytes");
            buf = s.into_buffer();
        }
    }

    /// With the real sizes: a small file grows the buffer only as far as it needs (a
    /// backup runs many readers, mostly on small files), and a long stream through the
    /// window-and-a-half buffer cuts exactly where cutting it whole does.
    #[test]
    fn the_buffer_grows_only_as_far_as_the_data_needs() {
        let c = Chunker::new(ChunkerParams::DEFAULT, test_gear(6));
        let small_file = pseudo_random(10_000, 7);
        let mut s = ChunkStream::new(&small_file[..], c.clone());
        while s.next_chunk().expect("read").is_some() {}
        let buf = s.into_buffer();
        assert_eq!(
            buf.len(),
            MIN_BUFFER,
            "a 10 kB file needs no more than the minimum"
        );

        let long = pseudo_random(13 * 1024 * 1024 + 17, 8);
        let mut s = ChunkStream::with_buffer(&long[..], c.clone(), buf);
        let mut lens = Vec::new();
        while let Some(ch) = s.next_chunk_ref().expect("read") {
            lens.push(ch.len());
        }
        assert_eq!(lens, c.cut_all(&long));
        let max = ChunkerParams::DEFAULT.max_size as usize;
        assert_eq!(
            s.into_buffer().len(),
            max + max / 2,
            "and a long one no more than the window"
        );

        // A stream of exactly the buffer's size keeps it: the read that finds the end
        // does not grow it. Fed a few hundred bytes per read, or all at once, the cuts
        // are the same.
        for size in [MIN_BUFFER, 2 * MIN_BUFFER, 16 * MIN_BUFFER] {
            let data = pseudo_random(size, 9);
            for piece in [333, usize::MAX] {
                let mut s = ChunkStream::new(Trickle(&data[..], piece), c.clone());
                let mut lens = Vec::new();
                while let Some(ch) = s.next_chunk_ref().expect("read") {
                    lens.push(ch.len());
                }
                assert_eq!(lens, c.cut_all(&data), "{size} bytes, {piece} per read");
                assert_eq!(s.bytes_read(), size as u64);
                assert_eq!(
                    s.into_buffer().len(),
                    size,
                    "{size} bytes, {piece} per read"
                );
            }
        }
    }

    /// A reader that returns at most `.1` bytes per call.
    struct Trickle<'a>(&'a [u8], usize);

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = out.len().min(self.1).min(self.0.len());
            out[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn defaults_validate_and_bad_params_do_not() {
        assert!(ChunkerParams::DEFAULT.validate().is_ok());
        let mut p = ChunkerParams::DEFAULT;
        p.avg_size = 1000;
        assert!(p.validate().is_err());
    }
}
