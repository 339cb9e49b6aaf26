//! The `config` object: the one plaintext object, read before any key is unlocked so that
//! "not a cairn repository" and "format too new" are told apart from "wrong passphrase".
//! Its body is authenticated with a MAC under a key derived from the master secret, so it
//! cannot be altered without detection once a key is unlocked.

use super::{FormatError, from_json, to_json};
use crate::chunker::ChunkerParams;
use crate::compression::Compression;
use crate::hash::Id;
use serde::{Deserialize, Serialize};

/// The newest repository format version this build reads and writes. Version 2 differs
/// from 1 only in that pack headers are zstd-compressed (docs/FORMAT.md section 9),
/// which saves about 90 bytes per blob; version 3 is version 2 whose `config` records a
/// compression default ([`COMPRESSION_FORMAT_VERSION`]).
pub const FORMAT_VERSION: u32 = 3;

/// The version `init` writes for a repository without a compression default: version 3
/// only where it is needed, so that a cairn that reads versions 1 and 2 keeps reading
/// every repository that does not record one.
pub const DEFAULT_FORMAT_VERSION: u32 = 2;

/// The version of a `config` that carries `compression`, and only of such a one: a
/// reader of versions 1 and 2 decodes `config` strictly, so it would call the field
/// damage; with the version raised it says "too new" instead, before any passphrase.
pub const COMPRESSION_FORMAT_VERSION: u32 = 3;

/// The oldest format version this build reads (and keeps writing, in that version's
/// layout, for repositories of that version).
pub const OLDEST_FORMAT_VERSION: u32 = 1;

/// Marker that identifies a cairn repository's `config`.
pub const MAGIC: &str = "cairn-repository";

/// Default target size of a pack: large enough that a bucket holds few objects per GiB,
/// small enough that one failed upload costs little to repeat.
pub const DEFAULT_PACK_SIZE: u32 = 16 * 1024 * 1024;

/// Settings every writer of the repository must agree on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigBody {
    /// Always [`MAGIC`].
    pub format: String,
    /// Format version, see [`FORMAT_VERSION`].
    pub version: u32,
    /// Random id of the repository, shared by every copy of it.
    pub id: Id,
    /// Chunk size bounds.
    pub chunker: ChunkerParams,
    /// Target pack size in bytes.
    pub pack_size: u32,
    /// How backups compress blobs when they are not told (version 3 only; absent
    /// otherwise, and then absent from the MAC's input too, so a version 1 or 2 body is
    /// byte for byte what it always was).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub compression: Option<Compression>,
}

/// A field that is there holds a value: `null` is not a way to write "absent".
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Compression>, D::Error> {
    Compression::deserialize(d).map(Some)
}

/// The version a `config` is written with: the layout of `base` (1 or 2; 3 counts as 2,
/// whose layout it shares), raised to [`COMPRESSION_FORMAT_VERSION`] when it records a
/// compression default. A version-1 repository records none: it is kept in the layout
/// the oldest cairn reads (a copy of such a repository takes its version so that packs
/// move between the two), and a default would make it unreadable there.
pub fn version_for(base: u32, compression: Option<Compression>) -> Result<u32, String> {
    match (base, compression) {
        (1, Some(_)) => Err(
            "a version-1 repository cannot record a compression default (that needs version 3, which cairn versions reading only 1 and 2 refuse): give --compression or CAIRN_COMPRESSION to each backup instead".into(),
        ),
        (1, None) => Ok(1),
        (2 | 3, Some(_)) => Ok(COMPRESSION_FORMAT_VERSION),
        (2 | 3, None) => Ok(DEFAULT_FORMAT_VERSION),
        (v, _) => Err(format!(
            "format version {v} cannot be written: this cairn writes versions {OLDEST_FORMAT_VERSION} to {FORMAT_VERSION}"
        )),
    }
}

/// The stored `config` object: body plus MAC.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// The settings.
    #[serde(flatten)]
    pub body: ConfigBody,
    /// Hex of keyed BLAKE3 over the canonical JSON of `body`.
    pub mac: String,
}

#[derive(Deserialize)]
struct Probe {
    format: Option<String>,
    version: Option<u32>,
}

/// What a first look at `config` found, before any key is available.
#[derive(Debug)]
pub enum ConfigProbe {
    /// Not JSON, or no cairn marker.
    NotCairn,
    /// A cairn repository of a version this build does not read.
    Unsupported(u32),
    /// Decodable by this build.
    Supported(ConfigFile),
}

impl ConfigBody {
    /// The exact bytes the MAC covers.
    pub fn canonical(&self) -> Vec<u8> {
        to_json(self)
    }

    /// This body with its compression default set to `compression` (`None`: none
    /// recorded) and its version what that needs ([`version_for`]).
    pub fn with_compression(&self, compression: Option<Compression>) -> Result<Self, String> {
        Ok(ConfigBody {
            version: version_for(self.version, compression)?,
            compression,
            ..self.clone()
        })
    }

    /// The rules a decoded body must follow beyond its types: chunker bounds, pack size,
    /// and `compression` present exactly in version 3. The reason names the rule.
    fn check(&self) -> Result<(), String> {
        self.chunker.validate()?;
        if !(1024 * 1024..=1024 * 1024 * 1024).contains(&self.pack_size) {
            return Err(format!(
                "pack_size {} is outside 1 MiB..1 GiB",
                self.pack_size
            ));
        }
        match (self.version, self.compression) {
            (COMPRESSION_FORMAT_VERSION, None) => Err(format!(
                "version {COMPRESSION_FORMAT_VERSION} without `compression`, which is what it adds"
            )),
            (v, Some(_)) if v != COMPRESSION_FORMAT_VERSION => Err(format!(
                "`compression` in a version {v} config: only version {COMPRESSION_FORMAT_VERSION} carries it"
            )),
            _ => Ok(()),
        }
    }
}

impl ConfigFile {
    /// Serialize for storage.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self)
            .unwrap_or_else(|e| panic!("serializing config failed: {e}"));
        v.push(b'\n');
        v
    }

    /// Classify stored bytes without trusting them.
    pub fn probe(bytes: &[u8]) -> Result<ConfigProbe, FormatError> {
        let Ok(p) = serde_json::from_slice::<Probe>(bytes) else {
            return Ok(ConfigProbe::NotCairn);
        };
        if p.format.as_deref() != Some(MAGIC) {
            return Ok(ConfigProbe::NotCairn);
        }
        match p.version {
            Some(v) if (OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&v) => {}
            Some(v) => return Ok(ConfigProbe::Unsupported(v)),
            None => return Ok(ConfigProbe::NotCairn),
        }
        let file: ConfigFile = from_json("config", bytes)?;
        file.body.check().map_err(|reason| FormatError::Invalid {
            what: "config",
            reason,
        })?;
        Ok(ConfigProbe::Supported(file))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(version: u32, compression: Option<Compression>) -> ConfigBody {
        ConfigBody {
            format: MAGIC.into(),
            version,
            id: Id([0x60; 32]),
            chunker: ChunkerParams::DEFAULT,
            pack_size: DEFAULT_PACK_SIZE,
            compression,
        }
    }

    fn stored(b: &ConfigBody) -> Vec<u8> {
        ConfigFile {
            body: b.clone(),
            mac: "00".repeat(32),
        }
        .to_bytes()
    }

    fn probe(bytes: &[u8]) -> Result<ConfigProbe, String> {
        ConfigFile::probe(bytes).map_err(|e| e.to_string())
    }

    const ID: &str = "6060606060606060606060606060606060606060606060606060606060606060";

    /// A repository without a default is what it always was: the MAC's input and the
    /// stored object of a version 2 body are the bytes an older cairn wrote and reads.
    #[test]
    fn a_version_2_config_is_unchanged_byte_for_byte() {
        let b = body(2, None);
        assert_eq!(
            String::from_utf8(b.canonical()).expect("utf-8"),
            format!(
                "{{\"format\":\"cairn-repository\",\"version\":2,\"id\":\"{ID}\",\"chunker\":{{\"min_size\":262144,\"avg_size\":1048576,\"max_size\":4194304}},\"pack_size\":16777216}}"
            )
        );
        let expected = format!(
            "{{\n  \"format\": \"cairn-repository\",\n  \"version\": 2,\n  \"id\": \"{ID}\",\n  \"chunker\": {{\n    \"min_size\": 262144,\n    \"avg_size\": 1048576,\n    \"max_size\": 4194304\n  }},\n  \"pack_size\": 16777216,\n  \"mac\": \"{}\"\n}}\n",
            "00".repeat(32)
        );
        assert_eq!(String::from_utf8(stored(&b)).expect("utf-8"), expected);
    }

    /// Version 3 carries the field in the stored object and in the MAC's input, after
    /// `pack_size`, as a level or `"off"`; it reads back as written.
    #[test]
    fn a_version_3_config_round_trips_with_its_compression_in_the_mac_input() {
        for (c, text) in [
            (Compression::Level(19), "19"),
            (Compression::Level(1), "1"),
            (Compression::Off, "\"off\""),
        ] {
            let b = body(3, Some(c));
            let canonical = String::from_utf8(b.canonical()).expect("utf-8");
            assert!(
                canonical.ends_with(&format!("\"pack_size\":16777216,\"compression\":{text}}}")),
                "{canonical}"
            );
            let bytes = stored(&b);
            assert!(
                String::from_utf8_lossy(&bytes).contains(&format!("\"compression\": {text},")),
                "{}",
                String::from_utf8_lossy(&bytes)
            );
            match probe(&bytes) {
                Ok(ConfigProbe::Supported(f)) => assert_eq!(f.body, b),
                other => panic!("{c}: {other:?}"),
            }
        }
    }

    /// The MAC covers the field: another level, `off`, or no field at all is another
    /// input, so a `config` changed in storage fails its MAC once a key is unlocked.
    #[test]
    fn the_mac_covers_the_compression_default() {
        let keys = crate::crypto::Keys::derive(crate::crypto::MasterSecret::from_bytes([7; 32]));
        let macs: std::collections::HashSet<[u8; 32]> = [
            body(3, Some(Compression::Level(19))),
            body(3, Some(Compression::Level(18))),
            body(3, Some(Compression::Off)),
            body(3, None),
            body(2, None),
        ]
        .iter()
        .map(|b| keys.config_mac(&b.canonical()))
        .collect();
        assert_eq!(macs.len(), 5);
    }

    /// `compression` comes with version 3 and only with it; `null`, a level out of range
    /// or a mode name are damage, named as such.
    #[test]
    fn the_field_and_the_version_go_together() {
        let swap = |from: &str, to: &str| {
            let bytes = stored(&body(3, Some(Compression::Level(19))));
            let text = String::from_utf8(bytes).expect("utf-8");
            assert!(text.contains(from), "{text}");
            text.replacen(from, to, 1)
        };
        for (altered, says) in [
            (
                swap("\"version\": 3", "\"version\": 2"),
                "`compression` in a version 2 config",
            ),
            (
                swap("  \"compression\": 19,\n", ""),
                "version 3 without `compression`",
            ),
            (
                swap("\"compression\": 19", "\"compression\": null"),
                "invalid type: null",
            ),
            (
                swap("\"compression\": 19", "\"compression\": 23"),
                "outside 1 to 22",
            ),
            (
                swap("\"compression\": 19", "\"compression\": \"max\""),
                "neither a zstd level",
            ),
            (
                swap("\"compression\": 19", "\"compresion\": 19"),
                "unknown field `compresion`",
            ),
        ] {
            let err = probe(altered.as_bytes()).expect_err(&altered);
            assert!(err.contains(says), "{says}: {err}");
        }
    }

    #[test]
    fn versions_newer_than_3_are_told_apart_before_decoding() {
        let text = String::from_utf8(stored(&body(3, Some(Compression::Off)))).expect("utf-8");
        let v4 = text.replacen("\"version\": 3", "\"version\": 4", 1);
        assert!(matches!(
            probe(v4.as_bytes()),
            Ok(ConfigProbe::Unsupported(4))
        ));
        for v in [1, 2] {
            let old = String::from_utf8(stored(&body(v, None))).expect("utf-8");
            assert!(matches!(
                probe(old.as_bytes()),
                Ok(ConfigProbe::Supported(_))
            ));
        }
    }

    #[test]
    fn the_version_follows_the_default() {
        let max = Some(Compression::Level(19));
        assert_eq!(version_for(2, max), Ok(3));
        assert_eq!(version_for(3, max), Ok(3));
        assert_eq!(version_for(3, None), Ok(2));
        assert_eq!(version_for(2, None), Ok(2));
        assert_eq!(version_for(1, None), Ok(1));
        let err = version_for(1, max).expect_err("v1 with a default");
        assert!(err.contains("version-1 repository cannot record"), "{err}");
        assert!(
            version_for(4, None)
                .expect_err("v4")
                .contains("versions 1 to 3")
        );
        assert!(version_for(0, None).is_err());
        let b = body(2, None).with_compression(max).expect("set");
        assert_eq!((b.version, b.compression), (3, max));
        let back = b.with_compression(None).expect("unset");
        assert_eq!(back, body(2, None));
    }
}
