//! Opening a blob read from a pack: AEAD framing, the declared-size limit, bounded zstd
//! decompression and the id check. The first byte chooses whether the payload is
//! compressed, the next four give `raw_length`; the rest is opened twice with the keys of
//! the test vectors:
//! once as stored bytes (truncation and tag checks), and once after the target seals it,
//! because the fuzzer cannot forge a tag and would otherwise never reach decompression.
#![no_main]

use cairn::crypto::{Keys, MasterSecret, Purpose};
use cairn::format::index::BlobKind;
use cairn::hash::PackId;
use cairn::index::BlobLocation;
use cairn::pack::{MAX_BLOB_LEN, open_blob, open_blob_in_place};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 5 {
        return;
    }
    let compressed = data[0] & 1 == 1;
    let raw_length = u32::from_le_bytes([data[1], data[2], data[3], data[4]]);
    let payload = &data[5..];
    let keys = Keys::derive(MasterSecret::from_bytes(std::array::from_fn(|i| i as u8)));
    let id = keys.blob_id(payload);
    let loc = |length: usize| BlobLocation {
        pack: PackId::default(),
        kind: BlobKind::Data,
        offset: 0,
        length: length as u32,
        raw_length,
        compressed,
    };
    // The copying and the in-place openers (restore uses the latter) agree on every input.
    let copied = open_blob(&keys, &id, &loc(payload.len()), payload);
    let mut buf = payload.to_vec();
    let in_place = open_blob_in_place(&keys, &id, &loc(payload.len()), &mut buf);
    assert_eq!(copied.ok(), in_place.ok().map(|p| p.into_owned()));
    let Ok(sealed) = keys.seal(Purpose::Blob, payload) else {
        return;
    };
    let copied = open_blob(&keys, &id, &loc(sealed.len()), &sealed);
    let mut buf = sealed.clone();
    let in_place = open_blob_in_place(&keys, &id, &loc(sealed.len()), &mut buf);
    if let Ok(plain) = &copied {
        assert_eq!(plain.len(), raw_length as usize);
        assert!(raw_length <= MAX_BLOB_LEN);
    }
    assert_eq!(copied.ok(), in_place.ok().map(|p| p.into_owned()));
});
