//! An opened repository: a backend plus the unlocked keys and the agreed settings.
//!
//! This is the one place that turns typed values into stored objects and back: it seals,
//! names (BLAKE3 of the stored bytes) and puts metadata objects, and on the way back checks
//! the name against the bytes before decrypting, so a swapped or altered object is named in
//! the error rather than silently used.

mod compression;
mod init;
mod keys;
mod read_ahead;
mod snapshots;

pub use init::{InitOptions, init};

pub use keys::KeyInfo;
pub use read_ahead::ReadAhead;
pub(crate) use read_ahead::in_order;
pub use snapshots::SnapshotEntry;

use crate::backend::{Backend, FileType, Handle};
use crate::chunker::Chunker;
use crate::crypto::{Keys, Purpose, unwrap_secret};
use crate::error::{Error, Result};
use crate::format::config::{
    ConfigBody, ConfigFile, ConfigProbe, FORMAT_VERSION, OLDEST_FORMAT_VERSION,
};
use crate::format::key::KeyFile;
use crate::format::{FormatError, compress, decompress};
use crate::hash::{Id, KeyId};
use bytes::Bytes;
use std::sync::Arc;

/// Largest decompressed snapshot accepted from storage.
pub const MAX_SNAPSHOT_LEN: usize = 16 * 1024 * 1024;
/// Largest decompressed index object accepted from storage.
pub const MAX_INDEX_LEN: usize = 1024 * 1024 * 1024;
/// Snapshots read at once: each is a small object whose read is nearly all round trip,
/// and a repository holds hundreds of them.
pub const SNAPSHOT_READS: usize = 8;
/// How far index objects (and deletion records) are read ahead of the one being applied.
/// Reads finished ahead of their turn wait in memory as stored (compressed) bytes
/// ([`Repository::for_each_index_file`] decodes each only when applied). Most are a few
/// MB or less, and each read is mostly a round trip, so eight go at once; but one that a
/// prune writes (up to 1,000 packs of small files, about 65 KB each) can be tens of MB,
/// so the bytes held are bounded too, and such an object is read on its own. A reader
/// loads index objects and deletion records at the same time, each within this bound.
/// Eight reads instead of four made a single-file restore from 11-12 index objects about
/// 0.05 s faster (docs/PERFORMANCE.md, sessions 9 and 10).
pub const INDEX_READ_AHEAD: ReadAhead = ReadAhead {
    reads: 8,
    bytes: 32 * 1024 * 1024,
};
/// Largest key object accepted from storage.
const MAX_KEY_LEN: u64 = 64 * 1024;
/// Key objects read when unlocking (besides the remembered one).
pub const MAX_KEYS_READ: usize = 256;
/// Keys tried when unlocking, at most.
pub const MAX_KEYS_TRIED: usize = 32;
/// Argon2 cost (KiB times passes) spent when unlocking, at most: two keys at the
/// largest cost a key may ask for, or about 42 at the default (64 MiB, 3 passes).
pub const UNLOCK_BUDGET: u64 = 2 * crate::crypto::KdfParams::MAX_COST;

/// An unlocked repository. Cheap to clone; share it between tasks.
#[derive(Clone, Debug)]
pub struct Repository {
    backend: Arc<dyn Backend>,
    keys: Arc<Keys>,
    config: ConfigBody,
    key_id: KeyId,
    skipped: Skipped,
}

/// Stored objects a session passed over because they are damaged or foreign (shared by
/// the clones of one opened repository).
#[derive(Clone, Debug, Default)]
pub struct Skipped(Arc<std::sync::Mutex<std::collections::BTreeMap<String, String>>>);

impl Skipped {
    /// Note that `object` was passed over, and why (once per object; logged then).
    pub fn note(&self, object: String, reason: String) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let std::collections::btree_map::Entry::Vacant(slot) = m.entry(object) {
            tracing::warn!(
                "{} is damaged or foreign and is skipped: {reason}",
                slot.key()
            );
            slot.insert(reason);
        }
    }

    /// What was passed over so far: each object and why.
    pub fn list(&self) -> Vec<(String, String)> {
        let m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

impl Repository {
    /// Open the repository behind `backend` with a passphrase. Fails with a specific
    /// error for: no repository, not a cairn repository, unsupported version, wrong
    /// passphrase, and a `config` that fails its MAC.
    pub async fn open(backend: Arc<dyn Backend>, passphrase: &[u8]) -> Result<Self> {
        let config = read_config(backend.as_ref()).await?;
        Self::open_with_config(backend, config, passphrase).await
    }

    /// Second half of [`Repository::open`], for callers that check the repository exists
    /// (with [`read_config`]) before asking for a passphrase.
    pub async fn open_with_config(
        backend: Arc<dyn Backend>,
        config: ConfigFile,
        passphrase: &[u8],
    ) -> Result<Self> {
        Self::open_preferring(backend, config, passphrase, None).await
    }

    /// [`Repository::open_with_config`], trying the key `preferred` first: the one that
    /// opened this repository last time on this machine (the caller remembers
    /// [`Repository::key_id`]). Any key listed in `keys/` is tried, and anyone with
    /// write access to the bucket can add one, so unlocking must not be theirs to stall:
    /// each key's Argon2 cost is capped ([`crate::crypto::KdfParams::MAX_COST`]), the
    /// other keys are tried cheapest first, and at most [`MAX_KEYS_TRIED`] keys or
    /// [`UNLOCK_BUDGET`] of cost are spent before giving up with the untried keys named.
    pub async fn open_preferring(
        backend: Arc<dyn Backend>,
        config: ConfigFile,
        passphrase: &[u8],
        preferred: Option<KeyId>,
    ) -> Result<Self> {
        let location = backend.location();
        let listed = backend.list(FileType::Key).await?;
        let mut damaged = Vec::new();
        let mut candidates = Vec::new();
        let mut untried = Vec::new();
        let mut read = 0usize;
        for info in &listed {
            let Some(id) = Id::from_object_name(&info.name) else {
                continue;
            };
            if read >= MAX_KEYS_READ && Some(KeyId(id)) != preferred {
                untried.push(format!("keys/{}", info.name));
                continue;
            }
            read += 1;
            if info.size > MAX_KEY_LEN {
                damaged.push(format!(
                    "keys/{} is {} bytes, too large for a key",
                    info.name, info.size
                ));
                continue;
            }
            match load_key_file(backend.as_ref(), KeyId(id))
                .await
                .and_then(|k| {
                    k.wrapped()
                        .map_err(|e| Error::corrupt_format(format!("keys/{}", info.name), e))
                }) {
                Ok(w) => candidates.push((KeyId(id), w)),
                Err(e) => damaged.push(e.to_string()),
            }
        }
        // The remembered key first, then the cheapest.
        candidates.sort_by_key(|(id, w)| (Some(*id) != preferred, w.params.cost(), *id));
        let mut tried = 0;
        let mut spent = 0u64;
        for (id, wrapped) in candidates {
            if tried >= MAX_KEYS_TRIED
                || spent.saturating_add(wrapped.params.cost()) > UNLOCK_BUDGET
            {
                untried.push(format!("keys/{}", id.to_hex()));
                continue;
            }
            tried += 1;
            spent = spent.saturating_add(wrapped.params.cost());
            match unwrap_secret(&wrapped, passphrase) {
                Ok(secret) => {
                    let keys = Keys::derive(secret);
                    // blake3::Hash compares in constant time.
                    let mac = blake3::Hash::from(keys.config_mac(&config.body.canonical()));
                    if blake3::Hash::from_hex(&config.mac).ok() != Some(mac) {
                        return Err(Error::Corrupt {
                            object: "config".into(),
                            reason: "its MAC does not match: the settings were altered".into(),
                        });
                    }
                    return Ok(Repository {
                        backend,
                        keys: Arc::new(keys),
                        config: config.body,
                        key_id: id,
                        skipped: Skipped::default(),
                    });
                }
                Err(crate::crypto::CryptoError::Inauthentic) => {}
                // A key with hostile or broken parameters must not lock out the others.
                Err(e) => damaged.push(format!("keys/{} is damaged: {e}", id.to_hex())),
            }
        }
        if !untried.is_empty() {
            return Err(Error::Key(format!(
                "no key of the repository at {location} opened with this passphrase within the unlocking limit ({tried} key(s) tried, cheapest first); {} key object(s) were not tried: {}. A repository normally holds a few keys: remove key objects you did not create from keys/, then try again",
                untried.len(),
                untried.join(", ")
            )));
        }
        if !damaged.is_empty() {
            return Err(Error::DamagedKeys {
                location,
                damaged: damaged.join("; "),
            });
        }
        Err(Error::WrongPassphrase {
            location,
            keys: tried,
        })
    }

    /// The storage behind the repository.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// The unlocked keys.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Settings from `config`.
    pub fn config(&self) -> &ConfigBody {
        &self.config
    }

    /// Snapshots and index objects this session skipped as damaged or foreign. One such
    /// object never stops backups or hides the other snapshots; the command line exits
    /// with code 3 and the daemon's status names them.
    pub fn skipped(&self) -> &Skipped {
        &self.skipped
    }

    /// The key object that unlocked this session.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// The same repository (keys, settings, key id) over another backend: a local
    /// journal that stands in for an unreachable destination.
    pub fn with_backend(&self, backend: Arc<dyn Backend>) -> Repository {
        Repository {
            backend,
            keys: self.keys.clone(),
            config: self.config.clone(),
            key_id: self.key_id,
            // What the stand-in skips is reported with the repository's own.
            skipped: self.skipped.clone(),
        }
    }

    /// Whether `other` is built on the same master secret (see
    /// [`InitOptions::sharing_keys_with`]): only then can one hold blobs for the other.
    pub fn shares_keys_with(&self, other: &Repository) -> bool {
        const PROBE: &[u8] = b"cairn: do these repositories share keys?";
        self.keys.blob_id(PROBE) == other.keys.blob_id(PROBE)
    }

    /// A chunker keyed for this repository.
    pub fn chunker(&self) -> Chunker {
        Chunker::new(self.config.chunker, self.keys.gear_table())
    }

    /// Compress, seal and store a metadata object; returns its content-derived id.
    pub async fn save_object(&self, kind: FileType, purpose: Purpose, plain: &[u8]) -> Result<Id> {
        let sealed = self.keys.seal(purpose, &compress(plain))?;
        let id = Id::of_stored(&sealed);
        self.backend
            .put(&Handle::new(kind, id.to_hex()), Bytes::from(sealed))
            .await?;
        Ok(id)
    }

    /// Fetch, verify, open and decompress a metadata object.
    pub async fn load_object(
        &self,
        kind: FileType,
        id: Id,
        purpose: Purpose,
        limit: usize,
    ) -> Result<Vec<u8>> {
        // Something planted under the name (a link, a FIFO, an oversized object) comes
        // back as a damaged object (see `From<BackendError> for Error`).
        let sealed = self.backend.get(&Handle::new(kind, id.to_hex())).await?;
        self.open_object(kind, id, purpose, limit, &sealed)
    }

    /// Verify, open and decompress a stored metadata object's bytes.
    pub fn open_object(
        &self,
        kind: FileType,
        id: Id,
        purpose: Purpose,
        limit: usize,
        sealed: &[u8],
    ) -> Result<Vec<u8>> {
        let object = Handle::new(kind, id.to_hex()).path();
        if Id::of_stored(sealed) != id {
            return Err(Error::Corrupt {
                object,
                reason: "its content does not match its name (altered or swapped)".into(),
            });
        }
        let plain = self
            .keys
            .open(purpose, sealed)
            .map_err(|e| Error::corrupt_crypto(object.clone(), e))?;
        decompress(object_kind_name(kind), &plain, limit)
            .map_err(|e| Error::corrupt_format(object, e))
    }
}

fn object_kind_name(kind: FileType) -> &'static str {
    match kind {
        FileType::Config => "config",
        FileType::Key => "key",
        FileType::Pack => "pack",
        FileType::Index => "index",
        FileType::Snapshot => "snapshot",
        FileType::Deletion => "deletion",
    }
}

/// Read and classify `config` without any key: tells a missing repository, a foreign
/// one and an unsupported version apart before a passphrase is needed.
pub async fn read_config(backend: &dyn Backend) -> Result<ConfigFile> {
    let location = backend.location();
    let bytes = match backend.get(&Handle::config()).await {
        Ok(b) => b,
        Err(e) if e.is_not_found() => return Err(Error::RepositoryNotFound { location }),
        Err(e) => return Err(e.into()),
    };
    match ConfigFile::probe(&bytes).map_err(|e| Error::corrupt_format("config", e))? {
        ConfigProbe::NotCairn => Err(Error::NotARepository { location }),
        ConfigProbe::Unsupported(found) => Err(Error::UnsupportedVersion {
            location,
            found,
            oldest: OLDEST_FORMAT_VERSION,
            supported: FORMAT_VERSION,
        }),
        ConfigProbe::Supported(c) => Ok(c),
    }
}

/// Fetch and parse one key object, checking its name against its content.
async fn load_key_file(backend: &dyn Backend, id: KeyId) -> Result<KeyFile> {
    let handle = Handle::new(FileType::Key, id.to_hex());
    let bytes = backend.get(&handle).await?;
    if Id::of_stored(&bytes) != id.0 {
        return Err(Error::Corrupt {
            object: handle.path(),
            reason: "its content does not match its name (altered or swapped)".into(),
        });
    }
    KeyFile::from_bytes(&bytes).map_err(|e: FormatError| Error::corrupt_format(handle.path(), e))
}

/// A repository in the local folder `dir`, with a key derivation cheap enough for unit
/// tests (which need no bucket; integration tests use S3 servers).
#[cfg(test)]
pub(crate) fn test_repo(rt: &tokio::runtime::Runtime, dir: &std::path::Path) -> Repository {
    let mut o = InitOptions::new("2026-01-01T00:00:00Z".into(), "h".into(), "u".into());
    o.kdf = crate::crypto::KdfParams {
        memory_kib: 1024,
        iterations: 1,
        parallelism: 1,
    };
    let backend = Arc::new(crate::backend::local::LocalBackend::new(dir));
    rt.block_on(init(backend, b"pw", &o)).expect("init")
}
