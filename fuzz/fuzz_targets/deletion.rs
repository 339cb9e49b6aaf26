//! `deletions/<id>` records (written by prune) after decryption: the JSON decoder on the
//! raw input, and the bounded zstd decompression (256 MiB limit) followed by it. Decoded
//! entries go into an in-memory index, as readers load them.
#![no_main]

use cairn::format::decompress;
use cairn::format::deletion::{DeletionFile, MAX_DELETION_LEN};
use cairn::index::MasterIndex;
use libfuzzer_sys::fuzz_target;

fn decode(plain: &[u8]) {
    if let Ok(d) = DeletionFile::from_plain(plain) {
        let mut index = MasterIndex::default();
        for p in d.packs.iter().chain(&d.dropped) {
            index.add_pack(p);
        }
        let _ = d.to_plain();
    }
}

fuzz_target!(|data: &[u8]| {
    decode(data);
    if let Ok(plain) = decompress("deletion record", data, MAX_DELETION_LEN) {
        assert!(plain.len() <= MAX_DELETION_LEN);
        decode(&plain);
    }
});
