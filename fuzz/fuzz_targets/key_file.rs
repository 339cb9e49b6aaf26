//! `keys/<id>` objects: parse, decode the hex fields, and try to unwrap the master secret.
//! Unwrapping runs only with cheap Argon2id costs so that each run stays fast; the cost
//! limits themselves are checked before any memory is allocated, so hostile costs are
//! exercised through `unwrap_secret` too whenever they exceed the accepted maximum.
#![no_main]

use cairn::crypto::unwrap_secret;
use cairn::format::key::KeyFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(key) = KeyFile::from_bytes(data) else {
        return;
    };
    let _ = key.to_bytes();
    let Ok(wrapped) = key.wrapped() else {
        return;
    };
    let p = wrapped.params;
    let cheap = p.memory_kib <= 256 && p.iterations <= 2 && p.parallelism <= 2;
    let refused_early = p.memory_kib > 4 * 1024 * 1024 || p.iterations > 64 || p.parallelism > 64;
    if cheap || refused_early {
        let _ = unwrap_secret(&wrapped, b"correct horse battery staple");
    }
});
