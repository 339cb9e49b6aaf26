//! How blobs are compressed: the modes a user names (restic's `auto`, `off`, `fastest`,
//! `better` and `max`, or a zstd level), and the [`Compression`] a backup applies and a
//! repository may record as its default (format version 3, `docs/FORMAT.md` section 6).
//! Pure: parsing, naming, and which zstd level each mode means. A reader never needs any
//! of this: whether a blob is compressed is recorded with the blob, and zstd frames
//! decompress the same whatever level made them.

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// zstd level of `auto`, and of every backup that names no mode: zstd's own default
/// trade-off, what cairn always used.
pub const AUTO_LEVEL: u8 = 3;
/// zstd level of `fastest`: zstd's fastest standard level.
pub const FASTEST_LEVEL: u8 = 1;
/// zstd level of `better`: restic's `better` is klauspost/compress's
/// `SpeedBetterCompression`, which its author puts at "roughly zstd level 7-8"; on
/// cairn's own sources level 7 compressed 12% more than level 3 and within 1.5% of
/// level 9, at well over twice level 3's CPU time but less than level 9's.
pub const BETTER_LEVEL: u8 = 7;
/// zstd level of `max`: the highest level zstd's own command line offers without
/// `--ultra`. Levels 20 to 22 (still accepted by number) are much slower again for
/// about a percent more.
pub const MAX_LEVEL: u8 = 19;
/// The zstd levels accepted by number.
pub const LEVELS: std::ops::RangeInclusive<u8> = 1..=22;

/// What a backup does with blob contents. Metadata objects (index, snapshots, pack
/// headers) are always compressed at [`AUTO_LEVEL`]; this applies to blobs only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Compression {
    /// Store every blob as it is.
    Off,
    /// zstd at this level (in [`LEVELS`]), kept only when it saves at least 1/32.
    Level(u8),
}

impl Compression {
    /// What a backup uses when nothing says otherwise.
    pub const AUTO: Compression = Compression::Level(AUTO_LEVEL);

    /// The zstd level to compress at, `None` for [`Compression::Off`].
    pub fn zstd_level(self) -> Option<i32> {
        match self {
            Compression::Off => None,
            Compression::Level(l) => Some(i32::from(l)),
        }
    }

    /// The mode name a user would give for this setting, where one names it (`max` for
    /// level 19): for messages, beside the level.
    pub fn mode_name(self) -> Option<&'static str> {
        match self {
            Compression::Off => Some("off"),
            Compression::Level(AUTO_LEVEL) => Some("auto"),
            Compression::Level(FASTEST_LEVEL) => Some("fastest"),
            Compression::Level(BETTER_LEVEL) => Some("better"),
            Compression::Level(MAX_LEVEL) => Some("max"),
            Compression::Level(_) => None,
        }
    }
}

/// For people: `off`, `max (zstd level 19)`, `zstd level 12`.
impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self, self.mode_name()) {
            (Compression::Off, _) => f.write_str("off"),
            (Compression::Level(l), Some(name)) => write!(f, "{name} (zstd level {l})"),
            (Compression::Level(l), None) => write!(f, "zstd level {l}"),
        }
    }
}

/// A mode as a user gives it on the command line, in `CAIRN_COMPRESSION` or in the
/// daemon's configuration. `auto` is kept apart from level 3 because recording it in a
/// repository means recording nothing: the repository then follows whatever `auto` is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompressionMode {
    /// zstd level [`AUTO_LEVEL`].
    Auto,
    /// No blob compression.
    Off,
    /// zstd level [`FASTEST_LEVEL`].
    Fastest,
    /// zstd level [`BETTER_LEVEL`].
    Better,
    /// zstd level [`MAX_LEVEL`].
    Max,
    /// A zstd level given by number, in [`LEVELS`].
    Level(u8),
}

/// The forms [`CompressionMode`] accepts, for error messages.
pub const ACCEPTED: &str = "auto, off, fastest, better, max, or a zstd level from 1 to 22";

impl CompressionMode {
    /// The setting a backup applies for this mode.
    pub fn compression(self) -> Compression {
        match self {
            CompressionMode::Auto => Compression::AUTO,
            CompressionMode::Off => Compression::Off,
            CompressionMode::Fastest => Compression::Level(FASTEST_LEVEL),
            CompressionMode::Better => Compression::Level(BETTER_LEVEL),
            CompressionMode::Max => Compression::Level(MAX_LEVEL),
            CompressionMode::Level(l) => Compression::Level(l),
        }
    }

    /// What a repository records as its default for this mode: nothing for `auto`.
    pub fn recorded(self) -> Option<Compression> {
        match self {
            CompressionMode::Auto => None,
            other => Some(other.compression()),
        }
    }
}

impl FromStr for CompressionMode {
    type Err = String;

    /// `auto`, `off`, `fastest`, `better`, `max` (any case), or a level from 1 to 22.
    fn from_str(s: &str) -> Result<Self, String> {
        let text = s.trim();
        let mode = match text.to_ascii_lowercase().as_str() {
            "auto" => CompressionMode::Auto,
            "off" => CompressionMode::Off,
            "fastest" => CompressionMode::Fastest,
            "better" => CompressionMode::Better,
            "max" => CompressionMode::Max,
            number => match number.parse::<i64>() {
                Ok(n) if (1..=22).contains(&n) => CompressionMode::Level(n as u8),
                Ok(n) => {
                    return Err(format!(
                        "compression level {n} is outside zstd's 1 to 22: write {ACCEPTED}"
                    ));
                }
                Err(_) => {
                    return Err(format!("compression {s:?} is not a mode: write {ACCEPTED}"));
                }
            },
        };
        Ok(mode)
    }
}

/// The name it is given by: `auto`, `max`, `12`.
impl fmt::Display for CompressionMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CompressionMode::Auto => f.write_str("auto"),
            CompressionMode::Off => f.write_str("off"),
            CompressionMode::Fastest => f.write_str("fastest"),
            CompressionMode::Better => f.write_str("better"),
            CompressionMode::Max => f.write_str("max"),
            CompressionMode::Level(l) => write!(f, "{l}"),
        }
    }
}

/// As `config` stores it: the zstd level as a number, or the string `"off"`. A reader
/// (or a writer of another implementation) uses the level as it is, with no table of
/// mode names that could change between versions.
impl Serialize for Compression {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Compression::Off => s.serialize_str("off"),
            Compression::Level(l) => s.serialize_u8(*l),
        }
    }
}

impl<'de> Deserialize<'de> for Compression {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Stored)
    }
}

/// Reads the stored form strictly: an integer from 1 to 22, or exactly `"off"`.
struct Stored;

impl Visitor<'_> for Stored {
    type Value = Compression;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a zstd level from 1 to 22 or \"off\"")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Compression, E> {
        match u8::try_from(v) {
            Ok(l) if LEVELS.contains(&l) => Ok(Compression::Level(l)),
            _ => Err(E::custom(format!(
                "compression level {v} is outside 1 to 22"
            ))),
        }
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Compression, E> {
        match u64::try_from(v) {
            Ok(u) => self.visit_u64(u),
            Err(_) => Err(E::custom(format!(
                "compression level {v} is outside 1 to 22"
            ))),
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Compression, E> {
        if v == "off" {
            Ok(Compression::Off)
        } else {
            Err(E::custom(format!(
                "compression {v:?} is neither a zstd level from 1 to 22 nor \"off\""
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_to_their_levels_and_print_back() {
        for (text, mode, compression) in [
            ("auto", CompressionMode::Auto, Compression::Level(3)),
            ("off", CompressionMode::Off, Compression::Off),
            ("fastest", CompressionMode::Fastest, Compression::Level(1)),
            ("better", CompressionMode::Better, Compression::Level(7)),
            ("max", CompressionMode::Max, Compression::Level(19)),
            ("1", CompressionMode::Level(1), Compression::Level(1)),
            ("22", CompressionMode::Level(22), Compression::Level(22)),
        ] {
            let parsed: CompressionMode = text.parse().expect(text);
            assert_eq!(parsed, mode, "{text}");
            assert_eq!(parsed.compression(), compression, "{text}");
            assert_eq!(parsed.to_string(), text);
        }
        assert_eq!("MAX".parse(), Ok(CompressionMode::Max));
        assert_eq!(" off ".parse(), Ok(CompressionMode::Off));
        assert_eq!(CompressionMode::Auto.recorded(), None);
        assert_eq!(
            CompressionMode::Level(3).recorded(),
            Some(Compression::Level(3))
        );
        assert_eq!(CompressionMode::Off.recorded(), Some(Compression::Off));
    }

    #[test]
    fn a_bad_mode_is_refused_with_the_accepted_forms() {
        for bad in [
            "0",
            "23",
            "-1",
            "fast",
            "",
            "3.5",
            "level 3",
            "999999999999999999999",
        ] {
            let err = bad.parse::<CompressionMode>().expect_err(bad);
            assert!(err.contains(ACCEPTED), "{bad}: {err}");
        }
        let err = "23".parse::<CompressionMode>().expect_err("23");
        assert!(err.contains("level 23 is outside"), "{err}");
        let err = "fast".parse::<CompressionMode>().expect_err("fast");
        assert!(err.contains("\"fast\" is not a mode"), "{err}");
    }

    #[test]
    fn the_stored_form_is_a_level_or_off_and_nothing_else() {
        let json = |c: Compression| serde_json::to_string(&c).expect("json");
        assert_eq!(json(Compression::Level(19)), "19");
        assert_eq!(json(Compression::Off), "\"off\"");
        let read = |s: &str| serde_json::from_str::<Compression>(s).map_err(|e| e.to_string());
        assert_eq!(read("19"), Ok(Compression::Level(19)));
        assert_eq!(read("1"), Ok(Compression::Level(1)));
        assert_eq!(read("22"), Ok(Compression::Level(22)));
        assert_eq!(read("\"off\""), Ok(Compression::Off));
        for bad in [
            "0", "23", "-3", "3.0", "\"max\"", "\"OFF\"", "\"19\"", "null", "true",
        ] {
            assert!(read(bad).is_err(), "{bad} accepted");
        }
        assert!(read("23").unwrap_err().contains("outside 1 to 22"));
    }

    #[test]
    fn settings_are_named_for_people() {
        assert_eq!(Compression::Level(19).to_string(), "max (zstd level 19)");
        assert_eq!(Compression::Level(3).to_string(), "auto (zstd level 3)");
        assert_eq!(Compression::Level(12).to_string(), "zstd level 12");
        assert_eq!(Compression::Off.to_string(), "off");
        assert_eq!(Compression::Off.zstd_level(), None);
        assert_eq!(Compression::Level(7).zstd_level(), Some(7));
    }
}
