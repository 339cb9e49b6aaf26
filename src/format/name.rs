//! Byte strings that are shown as text when they are text: file names, symlink targets and
//! extended-attribute names are arbitrary bytes on Linux, yet most are UTF-8 and should read
//! as such in the JSON. Valid UTF-8 is stored as a JSON string; anything else as
//! `{"hex": "..."}`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

/// An arbitrary byte string, as the kernel gives it.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteName(pub Vec<u8>);

impl ByteName {
    /// From an OS string, losslessly.
    pub fn from_os(s: &OsStr) -> Self {
        ByteName(s.as_bytes().to_vec())
    }

    /// Back to an OS string, losslessly.
    pub fn to_os(&self) -> OsString {
        OsString::from_vec(self.0.clone())
    }

    /// For display only: invalid UTF-8 is replaced.
    pub fn lossy(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }
}

impl std::fmt::Debug for ByteName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.lossy())
    }
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Repr {
    Text(String),
    Bytes { hex: String },
}

impl Serialize for ByteName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(&self.0) {
            Ok(t) => s.serialize_str(t),
            Err(_) => Repr::Bytes {
                hex: hex::encode(&self.0),
            }
            .serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for ByteName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Repr::deserialize(d)? {
            Repr::Text(t) => Ok(ByteName(t.into_bytes())),
            Repr::Bytes { hex } => hex::decode(hex)
                .map(ByteName)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// Arbitrary bytes (extended-attribute values), always stored as hex.
#[derive(Clone, PartialEq, Eq, Default, Debug)]
pub struct HexBytes(pub Vec<u8>);

impl Serialize for HexBytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for HexBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        hex::decode(s)
            .map(HexBytes)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_stays_text_and_bytes_round_trip() {
        let t = ByteName(b"caf\xc3\xa9".to_vec());
        assert_eq!(serde_json::to_string(&t).expect("ser"), "\"café\"");
        let b = ByteName(b"bad\xff".to_vec());
        let j = serde_json::to_string(&b).expect("ser");
        assert_eq!(j, r#"{"hex":"626164ff"}"#);
        let back: ByteName = serde_json::from_str(&j).expect("de");
        assert_eq!(back, b);
    }
}
