//! Throughput of the backup CPU pipeline, stage by stage and whole: content-defined
//! chunking, keyed BLAKE3 blob ids, zstd, XChaCha20-Poly1305 sealing, and all four in a
//! row as a backup runs them per chunk ([`cairn::pack::seal_blob`]). The end-to-end
//! figures of `scripts/bench.sh` are read against these: a single core cannot back up
//! faster than the whole-pipeline figure, on data like the input.
//!
//! Run: `cargo bench --bench pipeline`. Inputs are 16 MiB of random bytes (incompressible,
//! as media and archives are) and 16 MiB of repeated text (compressible, as sources and
//! documents are).

use cairn::chunker::{Chunker, ChunkerParams};
use cairn::compression::Compression;
use cairn::crypto::{Keys, MasterSecret, Purpose};
use cairn::format::index::BlobKind;
use cairn::pack::seal_blob;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

const LEN: usize = 16 * 1024 * 1024;

fn inputs() -> Vec<(&'static str, Vec<u8>)> {
    let mut random = vec![0u8; LEN];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for b in random.iter_mut() {
        // xorshift: fast, deterministic, incompressible enough for zstd.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = (x >> 24) as u8;
    }
    let line = b"fn main() { println!(\"a line of source text, repeated with a counter\"); }\n";
    let text: Vec<u8> = line.iter().copied().cycle().take(LEN).collect();
    vec![("random", random), ("text", text)]
}

fn pipeline(c: &mut Criterion) {
    let keys = Keys::derive(MasterSecret::from_bytes([7; 32]));
    let chunker = Chunker::new(ChunkerParams::DEFAULT, keys.gear_table());
    for (name, data) in inputs() {
        let chunks: Vec<&[u8]> = {
            let mut out = Vec::new();
            let mut at = 0;
            for n in chunker.cut_all(&data) {
                out.push(&data[at..at + n]);
                at += n;
            }
            out
        };
        let mut g = c.benchmark_group(format!("pipeline/{name}"));
        g.throughput(Throughput::Bytes(LEN as u64));
        g.sample_size(10);
        g.bench_function("chunk", |b| b.iter(|| black_box(chunker.cut_all(&data))));
        g.bench_function("hash", |b| {
            b.iter(|| {
                for ch in &chunks {
                    black_box(keys.blob_id(ch));
                }
            })
        });
        g.bench_function("compress", |b| {
            b.iter(|| {
                for ch in &chunks {
                    black_box(zstd::bulk::compress(ch, cairn::format::ZSTD_LEVEL).ok());
                }
            })
        });
        g.bench_function("encrypt", |b| {
            b.iter(|| {
                for ch in &chunks {
                    black_box(keys.seal(Purpose::Blob, ch).ok());
                }
            })
        });
        g.bench_function("all", |b| {
            b.iter(|| {
                let mut at = 0;
                for n in chunker.cut_all(&data) {
                    let ch = &data[at..at + n];
                    at += n;
                    let id = keys.blob_id(ch);
                    black_box(seal_blob(&keys, id, BlobKind::Data, ch, Compression::AUTO).ok());
                }
            })
        });
        g.finish();
    }
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
