//! The plaintext `config` object, read before any key is unlocked: probe it and, when it
//! is accepted, build the canonical MAC input and a chunker from its settings.
#![no_main]

use cairn::chunker::Chunker;
use cairn::format::config::{ConfigFile, ConfigProbe};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(ConfigProbe::Supported(c)) = ConfigFile::probe(data) {
        let _ = c.body.canonical();
        let _ = c.to_bytes();
        // Accepted chunker bounds must be usable: chunk a little input with them.
        let chunker = Chunker::new(c.body.chunker, [0x9e37_79b9_7f4a_7c15; 256]);
        let lens = chunker.cut_all(data);
        assert_eq!(lens.iter().sum::<usize>(), data.len());
    }
});
