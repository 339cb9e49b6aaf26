//! Benchmark helper: how much memory the in-memory index ([`cairn::index::MasterIndex`])
//! takes per blob, so that the memory a large repository needs can be stated. Builds a
//! synthetic index of N blobs (default one million) in packs of 5,000 and counts the heap
//! bytes it holds with a counting allocator. Prints JSON; `scripts/bench.sh` runs it and
//! reports the figure, and docs/PERFORMANCE.md documents it.

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
    println!(
        "{{\"blobs\": {}, \"packs\": {}, \"total_bytes\": {}, \"total_mib\": {:.1}, \"bytes_per_blob\": {:.1}}}",
        index.len(),
        index.pack_count(),
        held,
        held as f64 / (1024.0 * 1024.0),
        held as f64 / index.len() as f64
    );
}
