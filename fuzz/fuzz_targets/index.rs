//! `index/<id>` objects after decryption: the JSON decoder on the raw input, and the
//! bounded zstd decompression (1 GiB limit, as in the repository) followed by the decoder.
//! Every decoded entry is fed to an in-memory index, as loading does.
#![no_main]

use cairn::format::decompress;
use cairn::format::index::IndexFile;
use cairn::index::MasterIndex;
use cairn::repo::MAX_INDEX_LEN;
use libfuzzer_sys::fuzz_target;

fn decode(plain: &[u8]) {
    if let Ok(file) = IndexFile::from_plain(plain) {
        let mut index = MasterIndex::default();
        for p in &file.packs {
            index.add_pack(p);
        }
        let _ = file.to_plain();
    }
}

fuzz_target!(|data: &[u8]| {
    decode(data);
    if let Ok(plain) = decompress("index", data, MAX_INDEX_LEN) {
        assert!(plain.len() <= MAX_INDEX_LEN);
        decode(&plain);
    }
});
