//! `snapshots/<id>` objects after decryption: the JSON decoder on the raw input, and the
//! bounded zstd decompression (16 MiB limit, as in the repository) followed by it.
#![no_main]

use cairn::format::decompress;
use cairn::format::snapshot::Snapshot;
use cairn::repo::MAX_SNAPSHOT_LEN;
use libfuzzer_sys::fuzz_target;

fn decode(plain: &[u8]) {
    if let Ok(s) = Snapshot::from_plain(plain) {
        let _ = s.timestamp();
        let _ = s.to_plain();
    }
}

fuzz_target!(|data: &[u8]| {
    decode(data);
    if let Ok(plain) = decompress("snapshot", data, MAX_SNAPSHOT_LEN) {
        assert!(plain.len() <= MAX_SNAPSHOT_LEN);
        decode(&plain);
    }
});
