//! Creating a repository: a fresh master secret, its first key, then `config` last, so a
//! crash during `init` never leaves something that looks like a usable repository. A
//! creation cut short between its key and its config (a `kill -9`, a power cut) left
//! one key object and nothing else: creating again with the same passphrase finishes it
//! on that key, instead of refusing the location forever.

use super::Repository;
use crate::backend::{Backend, FileType, Handle};
use crate::chunker::ChunkerParams;
use crate::compression::Compression;
use crate::crypto::{KdfParams, Keys, MasterSecret, random_bytes, wrap_secret};
use crate::error::{Error, Result};
use crate::format::config::{
    ConfigBody, ConfigFile, DEFAULT_FORMAT_VERSION, DEFAULT_PACK_SIZE, MAGIC, version_for,
};
use crate::format::key::KeyFile;
use crate::hash::{Id, KeyId};
use bytes::Bytes;
use std::sync::Arc;

/// Choices made once, at `init`.
#[derive(Clone, Debug)]
pub struct InitOptions {
    /// Argon2id cost of the first key.
    pub kdf: KdfParams,
    /// Target pack size in bytes.
    pub pack_size: u32,
    /// Chunk size bounds.
    pub chunker: ChunkerParams,
    /// RFC 3339 creation time for the key.
    pub created: String,
    /// Host name recorded in the key.
    pub hostname: String,
    /// User name recorded in the key.
    pub username: String,
    /// The master secret to build on instead of a fresh one: set by
    /// [`InitOptions::sharing_keys_with`].
    pub secret: Option<MasterSecret>,
    /// Format version whose layout to write: [`DEFAULT_FORMAT_VERSION`] unless a copy
    /// must match an older sibling (a copy's packs move between the two verbatim) or a
    /// test builds an old repository. Version 3 shares version 2's layout: the version
    /// written is 3 exactly when `compression` is set ([`version_for`]).
    pub version: u32,
    /// The compression default to record (`init --compression`), if any.
    pub compression: Option<Compression>,
}

impl InitOptions {
    /// Defaults with the given descriptive fields.
    pub fn new(created: String, hostname: String, username: String) -> Self {
        InitOptions {
            kdf: KdfParams::DEFAULT,
            pack_size: DEFAULT_PACK_SIZE,
            chunker: ChunkerParams::DEFAULT,
            created,
            hostname,
            username,
            secret: None,
            version: DEFAULT_FORMAT_VERSION,
            compression: None,
        }
    }

    /// Build the new repository on an existing one's master secret and chunker
    /// parameters. The two then share blob ids, chunk boundaries and encryption keys
    /// (each keeps its own passphrase keys and repository id), so identical data is
    /// stored identically and a blob damaged in one can be read from the other. The
    /// sibling's compression default is not taken: it is no setting the two must agree
    /// on, and a copy records its own only when asked.
    pub fn sharing_keys_with(mut self, sibling: &Repository) -> Self {
        self.secret = Some(sibling.keys().secret().clone());
        self.chunker = sibling.config().chunker;
        self.pack_size = sibling.config().pack_size;
        self.version = sibling.config().version;
        self
    }
}

/// Wrap `secret` under `passphrase` and store it as a new key object, recording who
/// made it from `who`: the first key of an `init`, and every key `key add` adds.
pub(super) async fn write_key(
    backend: &dyn Backend,
    secret: &MasterSecret,
    passphrase: &[u8],
    kdf: KdfParams,
    who: &InitOptions,
) -> Result<KeyId> {
    let mut salt = [0u8; 16];
    let mut nonce = [0u8; 24];
    random_bytes(&mut salt)?;
    random_bytes(&mut nonce)?;
    let wrapped = wrap_secret(secret, passphrase, kdf, salt, nonce)?;
    let file = KeyFile::new(
        &wrapped,
        who.created.clone(),
        who.hostname.clone(),
        who.username.clone(),
    );
    let bytes = file.to_bytes();
    let id = KeyId(Id::of_stored(&bytes));
    backend
        .put(&Handle::new(FileType::Key, id.to_hex()), Bytes::from(bytes))
        .await?;
    Ok(id)
}

/// The master secret and key of a creation that was cut short after its key was written
/// (one key object, no config, snapshots or index), when `passphrase` opens it; `None`
/// when `keys/` is empty. Any other key objects there are not ours to build on: an
/// error saying so.
async fn interrupted_creation(
    backend: &dyn Backend,
    passphrase: &[u8],
) -> Result<Option<(MasterSecret, KeyId)>> {
    let location = backend.location();
    let listed = backend.list(FileType::Key).await?;
    let [only] = listed.as_slice() else {
        return if listed.is_empty() {
            Ok(None)
        } else {
            Err(Error::AlreadyExists { location })
        };
    };
    let refuse = |why: String| {
        Error::InvalidInput(format!(
            "{location} holds a key object but no config (keys/{}: {why}): a creation cut short with another passphrase? Create it again with that passphrase to finish it, or empty the location",
            only.name
        ))
    };
    let Some(id) = Id::from_object_name(&only.name).map(KeyId) else {
        return Err(Error::AlreadyExists { location });
    };
    let wrapped = super::load_key_file(backend, id)
        .await?
        .wrapped()
        .map_err(|e| refuse(e.to_string()))?;
    match crate::crypto::unwrap_secret(&wrapped, passphrase) {
        Ok(secret) => Ok(Some((secret, id))),
        Err(e) => Err(refuse(e.to_string())),
    }
}

/// Create a new repository and return it opened.
pub async fn init(
    backend: Arc<dyn Backend>,
    passphrase: &[u8],
    opts: &InitOptions,
) -> Result<Repository> {
    let location = backend.location();
    if passphrase.is_empty() {
        return Err(Error::InvalidInput(
            "the passphrase is empty: an empty passphrase would leave the repository unprotected"
                .into(),
        ));
    }
    opts.chunker.validate().map_err(Error::InvalidInput)?;
    let version = version_for(opts.version, opts.compression).map_err(Error::InvalidInput)?;
    if !(1024 * 1024..=1024 * 1024 * 1024).contains(&opts.pack_size) {
        return Err(Error::InvalidInput(format!(
            "pack size {} is outside 1 MiB..1 GiB",
            opts.pack_size
        )));
    }
    for kind in [FileType::Config, FileType::Snapshot, FileType::Index] {
        if !backend.list(kind).await?.is_empty() {
            return Err(Error::AlreadyExists { location });
        }
    }
    let resumed = match interrupted_creation(backend.as_ref(), passphrase).await? {
        Some((secret, key_id)) if opts.secret.as_ref().is_none_or(|s| s.same_as(&secret)) => {
            tracing::info!(
                "{location} holds only the key of a creation that was cut short: finishing it on keys/{}",
                key_id.to_hex()
            );
            Some((secret, key_id))
        }
        // Ours (the passphrase opens it), but on another secret than the one this
        // creation must share (a sibling destination created the group's keys since):
        // nothing was written on it (no config, so no data either), so it goes.
        Some((_, key_id)) => {
            tracing::info!(
                "{location} holds only the key of a creation that was cut short, on other keys than its siblings': replacing keys/{}",
                key_id.to_hex()
            );
            backend
                .delete(&Handle::new(FileType::Key, key_id.to_hex()))
                .await?;
            None
        }
        None => None,
    };
    let (secret, key_id) = match resumed {
        Some(found) => found,
        None => {
            let secret = match &opts.secret {
                Some(s) => s.clone(),
                None => MasterSecret::generate()?,
            };
            let key_id = write_key(backend.as_ref(), &secret, passphrase, opts.kdf, opts).await?;
            (secret, key_id)
        }
    };
    let keys = Keys::derive(secret);
    let mut repo_id = [0u8; 32];
    random_bytes(&mut repo_id)?;
    let body = ConfigBody {
        format: MAGIC.to_string(),
        version,
        id: Id(repo_id),
        chunker: opts.chunker,
        pack_size: opts.pack_size,
        compression: opts.compression,
    };
    let file = ConfigFile {
        mac: hex::encode(keys.config_mac(&body.canonical())),
        body: body.clone(),
    };
    backend
        .put(&Handle::config(), Bytes::from(file.to_bytes()))
        .await?;
    Ok(Repository {
        backend,
        keys: Arc::new(keys),
        config: body,
        key_id,
        skipped: Default::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::local::LocalBackend;

    fn cheap() -> InitOptions {
        let mut o = InitOptions::new("2026-01-01T00:00:00Z".into(), "h".into(), "u".into());
        o.kdf = KdfParams {
            memory_kib: 1024,
            iterations: 1,
            parallelism: 1,
        };
        o
    }

    /// Lose the config, as a creation killed before writing it would.
    fn cut_short(dir: &std::path::Path) {
        std::fs::remove_file(dir.join("config")).expect("remove config");
    }

    #[test]
    fn a_creation_cut_short_is_finished_on_its_key_or_replaced_for_a_siblings_keys() {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("repo");
        let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(&dir));
        let first = rt
            .block_on(init(backend.clone(), b"pw", &cheap()))
            .expect("init");
        cut_short(&dir);
        // The same passphrase finishes it on the key it left.
        let again = rt
            .block_on(init(backend.clone(), b"pw", &cheap()))
            .expect("finish");
        assert_eq!(again.key_id(), first.key_id());
        assert!(again.shares_keys_with(&first));
        cut_short(&dir);
        // A creation that must share a sibling's keys replaces the key.
        let sibling = crate::repo::test_repo(&rt, &tmp.path().join("sibling"));
        let shared = cheap().sharing_keys_with(&sibling);
        let third = rt
            .block_on(init(backend.clone(), b"pw", &shared))
            .expect("replace");
        assert_ne!(third.key_id(), first.key_id());
        assert!(third.shares_keys_with(&sibling));
        assert_eq!(
            rt.block_on(backend.list(FileType::Key))
                .expect("keys")
                .len(),
            1
        );
        cut_short(&dir);
        // Another passphrase neither finishes nor replaces it: the error says what is there.
        let err = match rt.block_on(init(backend.clone(), b"other", &cheap())) {
            Ok(_) => panic!("another passphrase must be refused"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("holds a key object but no config"), "{err}");
        assert_eq!(
            rt.block_on(backend.list(FileType::Key))
                .expect("keys")
                .len(),
            1
        );
    }
}
