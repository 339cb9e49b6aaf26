//! A pack's trailing header: the framing rules (`LE32` length at the end, bounds) on the
//! whole input taken as a pack, opening the sealed header with the keys of the test
//! vectors in `docs/FORMAT.md` (so the seed pack of V5 opens), and the header itself,
//! JSON or zstd-compressed JSON (which the fuzzer cannot reach through the AEAD tag): the
//! first 8 bytes give the length of the blob area, the rest is the decrypted header.
#![no_main]

use cairn::crypto::{Keys, MasterSecret, Purpose};
use cairn::format::pack::decode_header;
use cairn::pack::{HeaderAt, header_in_tail, header_range};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() >= 4 {
        let size = data.len() as u64;
        if let Ok((off, len)) = header_range(size, &data[data.len() - 4..]) {
            assert!(off + u64::from(len) + 4 == size);
            let keys = Keys::derive(MasterSecret::from_bytes(std::array::from_fn(|i| i as u8)));
            let sealed = &data[off as usize..off as usize + len as usize];
            if let Ok(plain) = keys.open(Purpose::PackHeader, sealed) {
                let _ = decode_header(&plain, off);
            }
        }
    }
    // Any tail of the input, as read from the end of a pack of its length: where the
    // header is found agrees with the framing of the whole.
    if let Some((&cut, rest)) = data.split_first() {
        let size = rest.len() as u64;
        let tail = &rest[(cut as usize).min(rest.len())..];
        match (header_in_tail(size, tail), rest.len().checked_sub(4)) {
            (Ok(HeaderAt::Inside { offset, sealed }), Some(at)) => {
                let whole = header_range(size, &rest[at..]).expect("framing agrees");
                assert_eq!((offset, sealed.len() as u32), whole);
            }
            (Ok(HeaderAt::Before { offset, in_tail }), Some(at)) => {
                let whole = header_range(size, &rest[at..]).expect("framing agrees");
                assert_eq!(offset, whole.0);
                assert!((in_tail.len() as u32) < whole.1);
            }
            _ => {}
        }
    }
    if data.len() >= 8 {
        let mut le = [0u8; 8];
        le.copy_from_slice(&data[..8]);
        let blobs_len = u64::from_le_bytes(le);
        if let Ok(entries) = decode_header(&data[8..], blobs_len) {
            let mut at = 0u64;
            for e in &entries {
                assert_eq!(e.offset, at, "offsets are the running sums");
                at += u64::from(e.length);
            }
            assert_eq!(at, blobs_len);
        }
    }
});
