//! Passphrase wrapping of the master secret with Argon2id.
//!
//! The passphrase and a random salt go through Argon2id to a 32-byte key-encryption key,
//! which seals the master secret with XChaCha20-Poly1305. The parameters are stored next
//! to the salt so they can be raised for new keys without breaking old ones.

use super::{CryptoError, MasterSecret, NONCE_LEN, Purpose, SECRET_LEN, open_raw, seal_raw};
use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::XChaCha20Poly1305;
use chacha20poly1305::aead::KeyInit;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// Argon2id cost parameters, stored in every key object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Number of passes.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl KdfParams {
    /// The default for new keys: 64 MiB, 3 passes, 4 lanes, RFC 9106's second recommended
    /// option. The lanes are computed on up to four cores, so unlocking costs every
    /// command less wall time for the same memory and work (docs/PERFORMANCE.md);
    /// keys made with 1 lane (before this default) keep theirs.
    pub const DEFAULT: KdfParams = KdfParams {
        memory_kib: 64 * 1024,
        iterations: 3,
        parallelism: 4,
    };

    /// Limits on what a key object may ask of the machine that unlocks it, checked before
    /// anything is allocated (docs/FORMAT.md, sections 5 and 17): any key listed in a
    /// bucket is tried, so a planted key must not cost gigabytes or minutes. The default
    /// (64 MiB, 3 passes) is well inside them.
    pub const MAX_MEMORY_KIB: u32 = 1024 * 1024;
    /// See [`KdfParams::MAX_MEMORY_KIB`].
    pub const MAX_ITERATIONS: u32 = 16;
    /// See [`KdfParams::MAX_MEMORY_KIB`].
    pub const MAX_PARALLELISM: u32 = 64;
    /// Memory times passes, in KiB: 1 GiB for 4 passes, or 256 MiB for 16.
    pub const MAX_COST: u64 = 4 * 1024 * 1024;

    /// What unlocking with these parameters costs, in KiB times passes: keys are tried
    /// cheapest first.
    pub fn cost(&self) -> u64 {
        u64::from(self.memory_kib) * u64::from(self.iterations)
    }

    fn argon2(&self) -> Result<Argon2<'static>, CryptoError> {
        if self.memory_kib > Self::MAX_MEMORY_KIB
            || self.iterations > Self::MAX_ITERATIONS
            || self.parallelism > Self::MAX_PARALLELISM
            || self.cost() > Self::MAX_COST
        {
            return Err(CryptoError::BadKdfParams(format!(
                "{self:?} exceeds the accepted maximum (memory {} KiB, {} passes, {} lanes, memory times passes {} KiB)",
                Self::MAX_MEMORY_KIB,
                Self::MAX_ITERATIONS,
                Self::MAX_PARALLELISM,
                Self::MAX_COST
            )));
        }
        let params = Params::new(self.memory_kib, self.iterations, self.parallelism, Some(32))
            .map_err(|e| CryptoError::BadKdfParams(e.to_string()))?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }

    fn derive(&self, passphrase: &[u8], salt: &[u8]) -> Result<XChaCha20Poly1305, CryptoError> {
        let mut kek = Zeroizing::new([0u8; 32]);
        self.argon2()?
            .hash_password_into(passphrase, salt, kek.as_mut())
            .map_err(|e| CryptoError::BadKdfParams(e.to_string()))?;
        Ok(XChaCha20Poly1305::new(&(*kek).into()))
    }
}

/// The stored, passphrase-protected form of the master secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrappedSecret {
    /// Argon2id parameters used.
    pub params: KdfParams,
    /// Random salt (16 bytes when written by cairn).
    pub salt: Vec<u8>,
    /// `nonce || sealed master secret || tag`.
    pub sealed: Vec<u8>,
}

/// Wrap `secret` under `passphrase` with the given parameters, salt and nonce. The random
/// salt and nonce are passed in so that test vectors can pin them.
pub fn wrap_secret(
    secret: &MasterSecret,
    passphrase: &[u8],
    params: KdfParams,
    salt: [u8; 16],
    nonce: [u8; NONCE_LEN],
) -> Result<WrappedSecret, CryptoError> {
    let cipher = params.derive(passphrase, &salt)?;
    Ok(WrappedSecret {
        params,
        salt: salt.to_vec(),
        sealed: seal_raw(&cipher, Purpose::KeyWrap, &nonce, secret.bytes()),
    })
}

/// Recover the master secret; [`CryptoError::Inauthentic`] means a wrong passphrase (or a
/// tampered key object: the two cannot be told apart, by design).
pub fn unwrap_secret(
    wrapped: &WrappedSecret,
    passphrase: &[u8],
) -> Result<MasterSecret, CryptoError> {
    let cipher = wrapped.params.derive(passphrase, &wrapped.salt)?;
    let plain = Zeroizing::new(open_raw(&cipher, Purpose::KeyWrap, &wrapped.sealed)?);
    let bytes: [u8; SECRET_LEN] = plain
        .as_slice()
        .try_into()
        .map_err(|_| CryptoError::Truncated(plain.len()))?;
    Ok(MasterSecret::from_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: KdfParams = KdfParams {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };

    /// Lanes computed on several threads give what the reference implementation gives
    /// (libargon2 through Python's argon2-cffi 25.1, `hash_secret_raw(..., type=ID)`).
    #[test]
    fn lanes_match_the_reference_implementation() {
        let salt: Vec<u8> = (0xa0..0xb0).collect();
        for (lanes, want) in [
            (
                1,
                "3c6319cd7d2fe7d97327a14a1697e86f30494fede124782510abfc6f6a0343bb",
            ),
            (
                4,
                "939069b2222bb9d4616abd263cb06febe90ea59f7e68084b06d92ffc03eab43e",
            ),
        ] {
            let params = KdfParams {
                memory_kib: 256,
                iterations: 2,
                parallelism: lanes,
            };
            let mut out = [0u8; 32];
            params
                .argon2()
                .expect("params")
                .hash_password_into(b"correct horse battery staple", &salt, &mut out)
                .expect("argon2");
            assert_eq!(hex::encode(out), want, "{lanes} lanes");
        }
    }

    #[test]
    fn wrap_unwrap_and_wrong_passphrase() {
        let s = MasterSecret::from_bytes([3u8; 32]);
        let w = wrap_secret(&s, b"pw", FAST, [1u8; 16], [2u8; 24]).expect("wrap");
        let back = unwrap_secret(&w, b"pw").expect("unwrap");
        assert_eq!(back.bytes(), s.bytes());
        assert!(matches!(
            unwrap_secret(&w, b"wrong"),
            Err(CryptoError::Inauthentic)
        ));
    }

    #[test]
    fn hostile_parameters_are_refused_before_allocating() {
        let s = MasterSecret::from_bytes([3u8; 32]);
        let mut w = wrap_secret(&s, b"pw", FAST, [1u8; 16], [2u8; 24]).expect("wrap");
        w.params.memory_kib = u32::MAX;
        assert!(matches!(
            unwrap_secret(&w, b"pw"),
            Err(CryptoError::BadKdfParams(_))
        ));
    }
}
