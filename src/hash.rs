//! Typed 256-bit identifiers for everything the repository stores.
//!
//! Two kinds of id exist: blob ids are a keyed BLAKE3 of the *plaintext* (computed in
//! [`crate::crypto`], because only the key holder may compute them), and storage ids are
//! plain BLAKE3 of the *stored bytes*, so that anyone holding an object can check that what
//! a bucket returned is what was written under that name. Typed wrappers keep a pack id out
//! of a blob lookup at compile time.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// Length in bytes of every id.
pub const ID_LEN: usize = 32;

/// Raw 32-byte id; use the typed wrappers below in APIs.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Id(pub [u8; ID_LEN]);

impl Id {
    /// Plain (unkeyed) BLAKE3 of stored bytes: the name of content-addressed objects.
    pub fn of_stored(bytes: &[u8]) -> Id {
        Id(*blake3::hash(bytes).as_bytes())
    }

    /// Lower-case hex, the form used in object names and on the command line.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The id an object name stands for: exactly 64 lower-case hex digits, the only form
    /// cairn writes. Anything else in a listing is not a cairn object and is skipped, so a
    /// stray file cannot make a reader fetch a name that does not exist.
    pub fn from_object_name(name: &str) -> Option<Id> {
        if name.len() != 2 * ID_LEN || !name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return None;
        }
        name.parse().ok()
    }

    /// The first 8 hex digits, as restic prints short ids.
    pub fn short(&self) -> String {
        self.to_hex()[..8].to_string()
    }
}

/// Why a string is not an id: kept small because it is shown to users.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a 64-digit hex id")]
pub struct ParseIdError(pub String);

impl FromStr for Id {
    type Err = ParseIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; ID_LEN];
        hex::decode_to_slice(s, &mut out).map_err(|_| ParseIdError(s.to_string()))?;
        Ok(Id(out))
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.short())
    }
}

impl Serialize for Id {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Id);

        impl $name {
            /// Lower-case hex of the id.
            pub fn to_hex(&self) -> String {
                self.0.to_hex()
            }
            /// The 8-digit prefix shown in listings.
            pub fn short(&self) -> String {
                self.0.short()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0.short())
            }
        }

        impl FromStr for $name {
            type Err = ParseIdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Ok($name(s.parse()?))
            }
        }
    };
}

typed_id!(
    /// Keyed BLAKE3 of a blob's plaintext: data chunks and trees are addressed by it.
    BlobId
);
typed_id!(
    /// BLAKE3 of a pack object's stored bytes (`data/xx/<id>`).
    PackId
);
typed_id!(
    /// BLAKE3 of a snapshot object's stored bytes (`snapshots/<id>`).
    SnapshotId
);
typed_id!(
    /// BLAKE3 of an index object's stored bytes (`index/<id>`).
    IndexId
);
typed_id!(
    /// BLAKE3 of a key object's stored bytes (`keys/<id>`).
    KeyId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_short_form() {
        let id = Id::of_stored(b"abc");
        let parsed: Id = id.to_hex().parse().expect("own hex parses");
        assert_eq!(parsed, id);
        assert_eq!(id.short().len(), 8);
        assert!(id.to_hex().starts_with(&id.short()));
    }

    #[test]
    fn blake3_vector_for_stored_ids() {
        // BLAKE3("abc") from the BLAKE3 reference test vectors.
        assert_eq!(
            Id::of_stored(b"abc").to_hex(),
            "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"
        );
    }

    #[test]
    fn object_names_must_be_lower_case_hex() {
        let id = Id::of_stored(b"x");
        assert_eq!(Id::from_object_name(&id.to_hex()), Some(id));
        assert_eq!(Id::from_object_name(&id.to_hex().to_uppercase()), None);
        assert_eq!(Id::from_object_name(".tmp-1234"), None);
    }

    #[test]
    fn rejects_bad_hex() {
        assert!("zz".parse::<Id>().is_err());
        assert!("ab".parse::<Id>().is_err());
    }
}
