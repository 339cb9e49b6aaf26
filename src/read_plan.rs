//! Which ranged reads fetch a set of blobs: per pack, the blobs by offset, merged into one
//! read while the gap between them is small and the read stays bounded. Over a network a
//! request costs a round trip, so skipping a few unneeded bytes is cheaper than asking
//! again; the bound keeps each read's buffer small. Shared by the restore, which reads
//! by pack, and the tar dump, which reads a window ahead of its writer.

use crate::hash::PackId;
use crate::index::BlobLocation;

/// Largest merged read; a single larger blob is read on its own.
pub const MAX_RANGE: u64 = 4 * 1024 * 1024;
/// Bytes of unneeded blobs a merged read may skip over: cheaper than another request.
pub const MAX_GAP: u64 = 256 * 1024;

/// One ranged read and the blobs it covers, in offset order.
pub struct Span<T> {
    /// The pack read.
    pub pack: PackId,
    /// First byte read.
    pub start: u64,
    /// One past the last byte read.
    pub end: u64,
    /// The blobs inside, which never overlap.
    pub blobs: Vec<T>,
}

/// Where the blob at `loc` lies in the bytes of a read that started at `start`; `None`
/// when it does not start inside (locations come from storage: nothing overflows).
pub fn position(start: u64, loc: &BlobLocation) -> Option<std::ops::Range<usize>> {
    let at = usize::try_from(loc.offset.checked_sub(start)?).ok()?;
    Some(at..at.checked_add(loc.length as usize)?)
}

/// The reads that fetch `blobs`, ordered by pack, then offset. `loc` gives each blob's
/// location; a blob that overlaps the one before it (a damaged index) starts a read of
/// its own rather than being merged.
pub fn spans<T>(
    blobs: impl IntoIterator<Item = T>,
    loc: impl Fn(&T) -> &BlobLocation,
) -> Vec<Span<T>> {
    let mut blobs: Vec<T> = blobs.into_iter().collect();
    blobs.sort_by(|a, b| {
        let (a, b) = (loc(a), loc(b));
        (a.pack, a.offset).cmp(&(b.pack, b.offset))
    });
    let mut out: Vec<Span<T>> = Vec::new();
    for b in blobs {
        let l = loc(&b);
        // Saturating: locations come from storage and must not overflow.
        let (pack, start, end) = (
            l.pack,
            l.offset,
            l.offset.saturating_add(u64::from(l.length)),
        );
        if let Some(s) = out.last_mut()
            && s.pack == pack
            && start >= s.end
            && start - s.end <= MAX_GAP
            && end - s.start <= MAX_RANGE
        {
            s.end = end;
            s.blobs.push(b);
            continue;
        }
        out.push(Span {
            pack,
            start,
            end,
            blobs: vec![b],
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::index::BlobKind;
    use crate::hash::Id;

    fn at(pack: u8, offset: u64, length: u32) -> BlobLocation {
        BlobLocation {
            pack: PackId(Id([pack; 32])),
            kind: BlobKind::Data,
            offset,
            length,
            raw_length: length,
            compressed: false,
        }
    }

    fn shape(spans: &[Span<BlobLocation>]) -> Vec<(u8, u64, u64, usize)> {
        spans
            .iter()
            .map(|s| (s.pack.0.0[0], s.start, s.end, s.blobs.len()))
            .collect()
    }

    #[test]
    fn a_blob_is_found_in_a_read_only_where_it_starts_inside() {
        assert_eq!(position(100, &at(1, 150, 10)), Some(50..60));
        assert_eq!(position(100, &at(1, 100, 0)), Some(0..0));
        assert_eq!(
            position(100, &at(1, 99, 10)),
            None,
            "starts before the read"
        );
        assert_eq!(
            position(0, &at(1, u64::MAX, 10)),
            None,
            "ends past the address space"
        );
    }

    #[test]
    fn close_blobs_of_one_pack_share_a_read_and_packs_never_do() {
        let blobs = vec![
            at(2, 0, 100),
            at(1, 500, 100),
            at(1, 0, 100),
            // 256 KiB after the last one ends: still merged.
            at(1, 600 + MAX_GAP, 10),
            // One byte further: a read of its own.
            at(1, 610 + 2 * MAX_GAP + 1, 10),
        ];
        let s = spans(blobs, |l| l);
        assert_eq!(
            shape(&s),
            vec![
                (1, 0, 610 + MAX_GAP, 3),
                (1, 610 + 2 * MAX_GAP + 1, 620 + 2 * MAX_GAP + 1, 1),
                (2, 0, 100, 1),
            ]
        );
    }

    #[test]
    fn reads_stay_within_the_bound_and_overlaps_are_read_alone() {
        let step = 1024 * 1024;
        let blobs: Vec<_> = (0..9).map(|i| at(1, i * step, step as u32)).collect();
        let s = spans(blobs, |l| l);
        assert_eq!(
            shape(&s),
            vec![
                (1, 0, 4 * step, 4),
                (1, 4 * step, 8 * step, 4),
                (1, 8 * step, 9 * step, 1)
            ]
        );
        // A location overlapping the one before it, and one past the end of u64.
        let odd = vec![at(1, 0, 100), at(1, 50, 100), at(1, u64::MAX - 5, 100)];
        let s = spans(odd, |l| l);
        assert_eq!(
            shape(&s),
            vec![
                (1, 0, 100, 1),
                (1, 50, 150, 1),
                (1, u64::MAX - 5, u64::MAX, 1)
            ]
        );
    }
}
