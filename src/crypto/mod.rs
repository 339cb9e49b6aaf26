//! Every key, nonce and AEAD call in cairn lives here; nothing else touches key bytes.
//!
//! A repository has one random 32-byte master secret. Sub-keys are derived from it with the
//! BLAKE3 key-derivation function under fixed context strings, so one wrapped secret in a
//! `keys/*` object unlocks everything: the XChaCha20-Poly1305 key for stored objects, the
//! BLAKE3 key for blob ids, the seed of the chunker's gear table and the key that
//! authenticates the plaintext `config` object. Key types zeroize on drop and print nothing.

mod kdf;

pub use kdf::{KdfParams, WrappedSecret, unwrap_secret, wrap_secret};

use crate::hash::BlobId;
use chacha20poly1305::aead::{Aead, AeadInOut, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Length of the random master secret.
pub const SECRET_LEN: usize = 32;
/// Length of the random XChaCha20 nonce that prefixes every sealed message.
pub const NONCE_LEN: usize = 24;
/// Length of the Poly1305 tag that ends every sealed message.
pub const TAG_LEN: usize = 16;
/// Bytes a sealed message adds to its plaintext.
pub const OVERHEAD: usize = NONCE_LEN + TAG_LEN;

/// Why a cryptographic operation failed; every variant means "do not trust these bytes".
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// The message is shorter than a nonce plus a tag, so it cannot be a sealed message.
    #[error("sealed message is truncated ({0} bytes)")]
    Truncated(usize),
    /// Authentication failed: wrong key, or the bytes were altered.
    #[error("authentication failed: the data was altered or belongs to another key")]
    Inauthentic,
    /// The key-derivation parameters are outside what this build accepts.
    #[error("key derivation parameters rejected: {0}")]
    BadKdfParams(String),
    /// The operating system's random source failed.
    #[error("random number generator failed: {0}")]
    Random(String),
}

/// What a sealed message is; bound into the AEAD as associated data so that an object of
/// one kind can never be accepted as another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// A data or tree blob inside a pack.
    Blob,
    /// The trailing header of a pack.
    PackHeader,
    /// An `index/*` object.
    Index,
    /// A `snapshots/*` object.
    Snapshot,
    /// The master secret inside a `keys/*` object.
    KeyWrap,
    /// A `deletions/*` object.
    Deletion,
}

impl Purpose {
    fn aad(self) -> &'static [u8] {
        match self {
            Purpose::Blob => b"cairn:v1:blob",
            Purpose::PackHeader => b"cairn:v1:pack-header",
            Purpose::Index => b"cairn:v1:index",
            Purpose::Snapshot => b"cairn:v1:snapshot",
            Purpose::KeyWrap => b"cairn:v1:key",
            Purpose::Deletion => b"cairn:v1:deletion",
        }
    }
}

/// Fill `buf` from the operating system's random source.
pub fn random_bytes(buf: &mut [u8]) -> Result<(), CryptoError> {
    getrandom::fill(buf).map_err(|e| CryptoError::Random(e.to_string()))
}

/// The random secret a repository is built on. Never leaves memory unwrapped.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MasterSecret([u8; SECRET_LEN]);

impl MasterSecret {
    /// A fresh secret for a new repository.
    pub fn generate() -> Result<Self, CryptoError> {
        let mut s = [0u8; SECRET_LEN];
        random_bytes(&mut s)?;
        Ok(MasterSecret(s))
    }

    /// Rebuild from known bytes: used when unwrapping a key object and by test vectors.
    pub fn from_bytes(bytes: [u8; SECRET_LEN]) -> Self {
        MasterSecret(bytes)
    }

    /// Whether two secrets are the same one (a creation finished on a key found in
    /// place must be on the secret it was asked to build on). Constant time.
    pub fn same_as(&self, other: &MasterSecret) -> bool {
        let diff = self
            .0
            .iter()
            .zip(other.0.iter())
            .fold(0u8, |d, (a, b)| d | (a ^ b));
        std::hint::black_box(diff) == 0
    }

    fn bytes(&self) -> &[u8; SECRET_LEN] {
        &self.0
    }
}

impl std::fmt::Debug for MasterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterSecret(<redacted>)")
    }
}

/// The unlocked key set of a repository: everything derived from the master secret.
pub struct Keys {
    secret: MasterSecret,
    cipher: XChaCha20Poly1305,
    id_key: Zeroizing32,
    gear_seed: Zeroizing32,
    config_mac_key: Zeroizing32,
}

#[derive(Zeroize, ZeroizeOnDrop)]
struct Zeroizing32([u8; 32]);

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(<redacted>)")
    }
}

const CTX_DATA: &str = "cairn 2026-11 v1 object encryption key";
const CTX_ID: &str = "cairn 2026-11 v1 blob id key";
const CTX_GEAR: &str = "cairn 2026-11 v1 chunker gear seed";
const CTX_CONFIG: &str = "cairn 2026-11 v1 config mac key";

impl Keys {
    /// Derive every sub-key from the master secret.
    pub fn derive(secret: MasterSecret) -> Self {
        let data_key = Zeroizing32(blake3::derive_key(CTX_DATA, secret.bytes()));
        let cipher = XChaCha20Poly1305::new(&data_key.0.into());
        Keys {
            cipher,
            id_key: Zeroizing32(blake3::derive_key(CTX_ID, secret.bytes())),
            gear_seed: Zeroizing32(blake3::derive_key(CTX_GEAR, secret.bytes())),
            config_mac_key: Zeroizing32(blake3::derive_key(CTX_CONFIG, secret.bytes())),
            secret,
        }
    }

    /// The master secret, for wrapping under another passphrase (`key add`).
    pub fn secret(&self) -> &MasterSecret {
        &self.secret
    }

    /// Keyed BLAKE3 of a blob's plaintext. Keyed so that a provider cannot confirm that a
    /// known file is stored by hashing it.
    pub fn blob_id(&self, plaintext: &[u8]) -> BlobId {
        BlobId(crate::hash::Id(
            *blake3::keyed_hash(&self.id_key.0, plaintext).as_bytes(),
        ))
    }

    /// MAC over the canonical bytes of the plaintext `config` object.
    pub fn config_mac(&self, canonical: &[u8]) -> [u8; 32] {
        *blake3::keyed_hash(&self.config_mac_key.0, canonical).as_bytes()
    }

    /// The 256-entry gear table of the chunker, keyed so that chunk boundaries (and so
    /// chunk sizes, which a provider can see) do not reveal which known files are stored.
    pub fn gear_table(&self) -> [u64; 256] {
        let mut xof = blake3::Hasher::new_keyed(&self.gear_seed.0).finalize_xof();
        let mut table = [0u64; 256];
        let mut word = [0u8; 8];
        for entry in table.iter_mut() {
            xof.fill(&mut word);
            *entry = u64::from_le_bytes(word);
        }
        table
    }

    /// Encrypt with a fresh random nonce: `nonce || ciphertext || tag`.
    pub fn seal(&self, purpose: Purpose, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut nonce = [0u8; NONCE_LEN];
        random_bytes(&mut nonce)?;
        Ok(self.seal_with_nonce(purpose, &nonce, plaintext))
    }

    /// Seal the message a caller writes in place, without a copy. Crate-private: it
    /// encrypts under whatever nonce lies at `start`, which only [`Keys::begin_sealed`]
    /// may have put there (a repeated nonce breaks confidentiality). `out` holds
    /// `nonce || message` from `start` on (`start + NONCE_LEN` is where the message
    /// begins; the caller reserved the nonce's room, see [`Keys::begin_sealed`]). The
    /// message is encrypted where it lies and the tag appended, so a blob compressed
    /// straight into its final buffer is sealed without another allocation.
    pub(crate) fn finish_sealed(
        &self,
        purpose: Purpose,
        out: &mut Vec<u8>,
        start: usize,
    ) -> Result<(), CryptoError> {
        if out.len() < start + NONCE_LEN {
            return Err(CryptoError::Truncated(out.len().saturating_sub(start)));
        }
        seal_in_place(&self.cipher, purpose, out, start);
        Ok(())
    }

    /// Append a fresh random nonce to `out`, where [`Keys::finish_sealed`] expects it;
    /// the message follows it. Returns where the sealed message starts.
    pub(crate) fn begin_sealed(&self, out: &mut Vec<u8>) -> Result<usize, CryptoError> {
        let start = out.len();
        let mut nonce = [0u8; NONCE_LEN];
        random_bytes(&mut nonce)?;
        out.extend_from_slice(&nonce);
        Ok(start)
    }

    /// Encrypt with a caller-chosen nonce. Private: a repeated nonce under one key breaks
    /// confidentiality, so only [`Keys::seal`] (random nonces) and this module's test
    /// vectors choose one.
    fn seal_with_nonce(
        &self,
        purpose: Purpose,
        nonce: &[u8; NONCE_LEN],
        plaintext: &[u8],
    ) -> Vec<u8> {
        seal_raw(&self.cipher, purpose, nonce, plaintext)
    }

    /// Decrypt and authenticate a sealed message of the given purpose.
    pub fn open(&self, purpose: Purpose, sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        open_raw(&self.cipher, purpose, sealed)
    }

    /// [`Keys::open`] where the message lies, for a reader that owns the fetched bytes
    /// (a restore's ranged reads): returns the plaintext, a part of `sealed`, with no
    /// allocation or copy. On failure the bytes are left unusable, never half-trusted.
    pub fn open_in_place<'a>(
        &self,
        purpose: Purpose,
        sealed: &'a mut [u8],
    ) -> Result<&'a mut [u8], CryptoError> {
        if sealed.len() < OVERHEAD {
            return Err(CryptoError::Truncated(sealed.len()));
        }
        let (nonce, rest) = sealed.split_at_mut(NONCE_LEN);
        let (msg, tag) = rest.split_at_mut(rest.len() - TAG_LEN);
        let mut n = [0u8; NONCE_LEN];
        n.copy_from_slice(nonce);
        let tag = chacha20poly1305::Tag::try_from(&*tag).map_err(|_| CryptoError::Inauthentic)?;
        self.cipher
            .decrypt_inout_detached(&XNonce::from(n), purpose.aad(), (&mut *msg).into(), &tag)
            .map_err(|_| CryptoError::Inauthentic)?;
        Ok(msg)
    }
}

fn seal_raw(
    cipher: &XChaCha20Poly1305,
    purpose: Purpose,
    nonce: &[u8; NONCE_LEN],
    plaintext: &[u8],
) -> Vec<u8> {
    // One buffer, encrypted in place: `encrypt` would allocate the ciphertext and this
    // function then copy it behind the nonce.
    let mut out = Vec::with_capacity(OVERHEAD + plaintext.len());
    out.extend_from_slice(nonce);
    out.extend_from_slice(plaintext);
    seal_in_place(cipher, purpose, &mut out, 0);
    out
}

/// Encrypt `out[start + NONCE_LEN..]` under the nonce at `out[start..]` where it lies,
/// and append the tag: the one sealing step behind [`seal_raw`] and
/// [`Keys::finish_sealed`]. The caller checked that the nonce is there.
fn seal_in_place(cipher: &XChaCha20Poly1305, purpose: Purpose, out: &mut Vec<u8>, start: usize) {
    let msg_at = start + NONCE_LEN;
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&out[start..msg_at]);
    // Encryption only fails for messages longer than 2^38 bytes; blobs and objects are
    // bounded far below that by the chunker and pack builder.
    let tag = cipher
        .encrypt_inout_detached(
            &XNonce::from(nonce),
            purpose.aad(),
            (&mut out[msg_at..]).into(),
        )
        .unwrap_or_else(|_| {
            panic!(
                "XChaCha20-Poly1305 refused a {}-byte message",
                out.len() - msg_at
            )
        });
    out.extend_from_slice(tag.as_slice());
}

fn open_raw(
    cipher: &XChaCha20Poly1305,
    purpose: Purpose,
    sealed: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    if sealed.len() < OVERHEAD {
        return Err(CryptoError::Truncated(sealed.len()));
    }
    let (nonce, ct) = sealed.split_at(NONCE_LEN);
    let mut n = [0u8; NONCE_LEN];
    n.copy_from_slice(nonce);
    cipher
        .decrypt(
            &XNonce::from(n),
            Payload {
                msg: ct,
                aad: purpose.aad(),
            },
        )
        .map_err(|_| CryptoError::Inauthentic)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys::derive(MasterSecret::from_bytes([7u8; 32]))
    }

    #[test]
    fn seal_open_round_trip() {
        let k = keys();
        let sealed = k.seal(Purpose::Blob, b"hello").expect("seal");
        assert_eq!(sealed.len(), 5 + OVERHEAD);
        assert_eq!(k.open(Purpose::Blob, &sealed).expect("open"), b"hello");
    }

    /// Sealing is deterministic given the nonce: the vector of docs/FORMAT.md (V2) is
    /// reproduced byte for byte. Here, because only this module may choose a nonce.
    #[test]
    fn sealing_reproduces_the_documented_vector() {
        let doc = include_str!("../../docs/FORMAT.md");
        let value = |name: &str| -> Vec<u8> {
            doc.lines()
                .find_map(|l| {
                    let mut words = l.split_whitespace();
                    (words.next() == Some(name))
                        .then(|| hex::decode(words.next()?).ok())
                        .flatten()
                })
                .unwrap_or_else(|| panic!("{name} not in FORMAT.md"))
        };
        let secret: [u8; SECRET_LEN] = value("master-secret").try_into().expect("32 bytes");
        let nonce: [u8; NONCE_LEN] = value("nonce").try_into().expect("24 bytes");
        let k = Keys::derive(MasterSecret::from_bytes(secret));
        let sealed = k.seal_with_nonce(Purpose::Blob, &nonce, b"hello, cairn");
        assert_eq!(sealed, value("sealed"));
    }

    /// The in-place paths produce and accept exactly what the copying ones do, and
    /// refuse what they refuse.
    #[test]
    fn in_place_sealing_and_opening_match_the_copying_paths() {
        let k = keys();
        let msg = b"sealed where it lies".to_vec();
        let nonce = [9u8; NONCE_LEN];
        let expected = k.seal_with_nonce(Purpose::Blob, &nonce, &msg);

        let mut out = b"prefix".to_vec();
        let start = out.len();
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&msg);
        k.finish_sealed(Purpose::Blob, &mut out, start)
            .expect("seal");
        assert_eq!(&out[..start], b"prefix", "what came before is untouched");
        assert_eq!(&out[start..], &expected[..]);

        let mut fresh = Vec::new();
        let at = k.begin_sealed(&mut fresh).expect("nonce");
        fresh.extend_from_slice(&msg);
        k.finish_sealed(Purpose::Blob, &mut fresh, at)
            .expect("seal");
        assert_eq!(k.open(Purpose::Blob, &fresh).expect("open"), msg);

        let mut copy = expected.clone();
        assert_eq!(
            k.open_in_place(Purpose::Blob, &mut copy).expect("open"),
            &msg[..]
        );
        for i in 0..expected.len() {
            let mut bad = expected.clone();
            bad[i] ^= 1;
            assert!(
                k.open_in_place(Purpose::Blob, &mut bad).is_err(),
                "flip at {i}"
            );
        }
        let mut wrong = expected.clone();
        assert!(k.open_in_place(Purpose::Index, &mut wrong).is_err());
        let mut short = expected[..OVERHEAD - 1].to_vec();
        assert!(matches!(
            k.open_in_place(Purpose::Blob, &mut short),
            Err(CryptoError::Truncated(_))
        ));
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let k = keys();
        let sealed = k.seal(Purpose::Snapshot, b"some snapshot").expect("seal");
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert!(
                k.open(Purpose::Snapshot, &bad).is_err(),
                "flip at byte {i} accepted"
            );
        }
    }

    #[test]
    fn purpose_is_bound() {
        let k = keys();
        let sealed = k.seal(Purpose::Index, b"x").expect("seal");
        assert!(matches!(
            k.open(Purpose::Snapshot, &sealed),
            Err(CryptoError::Inauthentic)
        ));
    }

    #[test]
    fn other_key_and_truncation_are_refused() {
        let sealed = keys().seal(Purpose::Blob, b"x").expect("seal");
        let other = Keys::derive(MasterSecret::from_bytes([8u8; 32]));
        assert!(other.open(Purpose::Blob, &sealed).is_err());
        assert!(matches!(
            keys().open(Purpose::Blob, &sealed[..10]),
            Err(CryptoError::Truncated(10))
        ));
    }

    #[test]
    fn blob_ids_depend_on_the_key() {
        let other = Keys::derive(MasterSecret::from_bytes([8u8; 32]));
        assert_ne!(keys().blob_id(b"same"), other.blob_id(b"same"));
        assert_eq!(keys().blob_id(b"same"), keys().blob_id(b"same"));
        assert_ne!(keys().gear_table(), other.gear_table());
    }
}
