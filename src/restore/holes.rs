//! Which parts of a restored file's content are written and which are left as holes.
//!
//! A restored file is always new and empty, so a part that is not written reads back as
//! zeros once the file's length is set. Zero runs of a whole block ([`BLOCK`] bytes,
//! aligned to the file's offsets, as file systems allocate) are therefore skipped: a
//! 64 MiB file with two small writes in it, stored as chunks of a few MiB, would
//! otherwise be restored with several MiB allocated (restic does the same with
//! `restore --sparse`). A block that is only partly inside one blob is skipped when the
//! part inside is all zeros.

/// The unit of holes: a page, the allocation block of common file systems.
pub const BLOCK: u64 = 4096;

/// The byte ranges of `plain`, which lies at `offset` in its file, that must be written:
/// everything but the blocks that are all zeros. Consecutive blocks with data come as
/// one range, in order.
pub fn data_ranges(plain: &[u8], offset: u64) -> Vec<std::ops::Range<usize>> {
    let mut out: Vec<std::ops::Range<usize>> = Vec::new();
    let mut start = 0usize;
    while start < plain.len() {
        // The end of the block `start` lies in, as the file's blocks fall.
        let at = offset + start as u64;
        let to_boundary = (BLOCK - at % BLOCK) as usize;
        let end = (start + to_boundary).min(plain.len());
        if plain[start..end].iter().any(|b| *b != 0) {
            match out.last_mut() {
                Some(last) if last.end == start => last.end = end,
                _ => out.push(start..end),
            }
        }
        start = end;
    }
    out
}

/// How one blob's plaintext goes into its file: the ranges to write, and whether any
/// zeros are left as holes (then the file's length must be set at the end).
pub struct Layout {
    ranges: Vec<std::ops::Range<usize>>,
    /// Some zeros of the blob are not written.
    pub holes: bool,
}

/// The [`Layout`] of `plain`, which lies at `offset` in its file.
pub fn layout(plain: &[u8], offset: u64) -> Layout {
    let ranges = data_ranges(plain, offset);
    let holes = ranges.iter().map(|r| r.len()).sum::<usize>() < plain.len();
    Layout { ranges, holes }
}

impl Layout {
    /// Whether nothing is to be written (the blob is all zeros).
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Write the ranges of `plain` at their places in `file` (`plain` at `offset`, as
    /// given to [`layout`]).
    pub fn write(&self, file: &std::fs::File, plain: &[u8], offset: u64) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        for r in &self.ranges {
            file.write_all_at(&plain[r.clone()], offset + r.start as u64)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_blocks_are_skipped_and_data_is_kept_whole() {
        let mut plain = vec![0u8; 4 * 4096];
        plain[5000] = 1; // block 1
        plain[3 * 4096 + 10] = 2; // block 3
        assert_eq!(data_ranges(&plain, 0), vec![4096..8192, 12288..16384]);
        // Adjacent blocks with data are one write.
        plain[8191 + 1] = 3; // block 2
        assert_eq!(data_ranges(&plain, 0), vec![4096..16384]);
        // All zeros: nothing to write; no zeros: one write.
        assert!(data_ranges(&[0u8; 10_000], 123).is_empty());
        assert_eq!(data_ranges(&[7u8; 10_000], 123), vec![0..10_000]);
        assert!(data_ranges(&[], 0).is_empty());
    }

    #[test]
    fn blocks_follow_the_file_offsets_not_the_blob() {
        // A blob starting 100 bytes before a block boundary: its first 100 bytes are the
        // end of one block, the rest the next blocks.
        let mut plain = vec![0u8; 100 + 4096 + 50];
        plain[99] = 1;
        assert_eq!(data_ranges(&plain, 4096 - 100), vec![0..100]);
        let mut plain = vec![0u8; 100 + 4096 + 50];
        plain[100 + 4096 + 1] = 1;
        assert_eq!(data_ranges(&plain, 4096 - 100), vec![4196..4246]);
    }

    #[test]
    fn ranges_cover_every_nonzero_byte() {
        // Pseudo-random sparse content at odd offsets: writing only the ranges into a
        // zeroed buffer reproduces it.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for round in 0..200u64 {
            let len = (round * 997 % 20_000) as usize;
            let mut plain = vec![0u8; len];
            for _ in 0..(round % 5) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                if len > 0 {
                    plain[(state % len as u64) as usize] = (state >> 56) as u8 | 1;
                }
            }
            let offset = round * 1231;
            let mut rebuilt = vec![0u8; len];
            for r in data_ranges(&plain, offset) {
                rebuilt[r.clone()].copy_from_slice(&plain[r]);
            }
            assert_eq!(rebuilt, plain, "round {round}");
        }
    }
}
