//! Benchmark helper: how much memory the in-memory index ([`cairn::index::MasterIndex`])
//! takes per blob, so that the memory a large repository needs can be stated. Builds a
//! synthetic index of N blobs (default one million) in packs of 5,000 and counts the heap
//! bytes it holds with a counting allocator, then times lookups of present and absent ids
//! (what a backup asks for every blob of every unchanged file). Prints JSON;
//! `scripts/bench.sh` runs it and reports the figures, and docs/PERFORMANCE.md documents
//! them.

use cairn::format::index::{BlobKind, IndexPack, PackedBlob};
use cairn::hash::{BlobId, Id, PackId};
use cairn::index::MasterIndex;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator and only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        // SAFETY: `p` was allocated by `System` with `l`.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn id(n: u64, salt: u8) -> Id {
    // Spread bits like a hash would: the index is keyed by random-looking ids.
    let h = blake3::hash(&[&n.to_le_bytes()[..], &[salt]].concat());
    Id(*h.as_bytes())
}

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let per_pack = 5_000u64;
    let before = LIVE.load(Ordering::Relaxed);
    let mut index = MasterIndex::default();
    let mut made = 0u64;
    let mut pack_no = 0u64;
    while made < n {
        let count = per_pack.min(n - made);
        let blobs = (0..count)
            .map(|k| PackedBlob {
                id: BlobId(id(made + k, 0)),
                kind: BlobKind::Data,
                offset: k * 4096,
                length: 4096,
                raw_length: 4000,
                compressed: true,
            })
            .collect();
        index.add_pack(&IndexPack {
            id: PackId(id(pack_no, 1)),
            blobs,
        });
        made += count;
        pack_no += 1;
    }
    let held = LIVE.load(Ordering::Relaxed) - before;
    // Present ids in a scattered order (a stride coprime with n), so each lookup starts
    // cold as a backup's do; absent ids use another salt. Made before the clock starts.
    let lookups = n.min(1_000_000);
    let present: Vec<BlobId> = (0..lookups)
        .map(|k| BlobId(id(k * 7_919 % n.max(1), 0)))
        .collect();
    let absent: Vec<BlobId> = (0..lookups).map(|k| BlobId(id(k, 2))).collect();
    let time = |ids: &[BlobId]| {
        let started = std::time::Instant::now();
        let hits = ids.iter().filter(|i| index.contains(i)).count() as u64;
        (
            hits,
            started.elapsed().as_nanos() as f64 / ids.len().max(1) as f64,
        )
    };
    let (found, present_ns) = time(&present);
    let (stray, absent_ns) = time(&absent);
    assert!(
        found == lookups && stray == 0,
        "the index lost or invented blobs"
    );
    println!(
        "{{\"blobs\": {}, \"packs\": {}, \"total_bytes\": {}, \"total_mib\": {:.1}, \"bytes_per_blob\": {:.1}, \"lookup_present_ns\": {present_ns:.0}, \"lookup_absent_ns\": {absent_ns:.0}}}",
        index.len(),
        index.pack_count(),
        held,
        held as f64 / (1024.0 * 1024.0),
        held as f64 / index.len() as f64
    );
}
