//! The storage trait every destination implements, and the object naming they share.
//!
//! Contract (every implementation must keep it). The contract tests in `tests/s3_*.rs`
//! (`tests/integration/s3_contract.rs`, beside `tests/integration/s3_errors.rs` and `tests/integration/s3_requests.rs`) run
//! one check of it against a local directory, S3 on s3s-fs and S3 behind the
//! fault-injecting proxy; `tests/integration/object_lock.rs` covers the lock methods on a server that
//! enforces Object Lock. The contract:
//! - `put` returns only once the object is durable under its final name, and a reader
//!   never sees a partial object under that name: either the old state or the whole object.
//! - `get` and `get_range` return exactly the bytes asked for or an error; a short read is
//!   [`BackendError::Truncated`], never silently fewer bytes.
//! - `list` returns every object that existed before the call started; objects written or
//!   deleted during the call may or may not appear. Temporary files are never listed.
//! - Errors say whether retrying can help ([`BackendError::is_retryable`]).
//! - A whole-object `get` refuses an object larger than its type may be
//!   ([`FileType::max_stored_len`]) before holding its bytes.
//! - A local directory takes content objects (packs, index objects, snapshots, deletion
//!   records) only where `config` exists: an empty mount point is not a repository.

pub mod limit;
pub mod local;
pub mod options;
pub mod retry;
pub mod s3;
pub mod throttle;

pub use options::{BackendOptions, Location, ObjectLock, parse_location};

use async_trait::async_trait;
use bytes::Bytes;
use std::fmt;
use std::sync::Arc;

/// The kinds of object in a repository, each with its own folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileType {
    /// The single `config` object.
    Config,
    /// `keys/<id>`.
    Key,
    /// `data/<xx>/<id>` packs.
    Pack,
    /// `index/<id>`.
    Index,
    /// `snapshots/<id>`.
    Snapshot,
    /// `deletions/<id>`: packs a prune condemned, deleted by a later prune.
    Deletion,
}

impl FileType {
    /// The largest stored object of this type a reader accepts (docs/FORMAT.md, section
    /// 17), enforced by every backend's whole-object read before the bytes are held, so
    /// that a hostile bucket or a `config` that is a link to `/dev/zero` cannot make a
    /// reader allocate without bound. Each is the decompressed limit of the type plus
    /// room for zstd's worst case and sealing.
    pub fn max_stored_len(self) -> u64 {
        const MIB: u64 = 1024 * 1024;
        match self {
            FileType::Config | FileType::Key => 64 * 1024,
            FileType::Snapshot => 17 * MIB,
            FileType::Index => 1040 * MIB,
            FileType::Deletion => 260 * MIB,
            // A pack is at most 1 GiB (`pack_size`) plus its last blob and header; packs
            // are read by range, but `check --read-data` and copies read them whole.
            FileType::Pack => 2048 * MIB,
        }
    }

    /// Folder of this type inside a repository.
    pub fn dir(self) -> &'static str {
        match self {
            FileType::Config => "",
            FileType::Key => "keys",
            FileType::Pack => "data",
            FileType::Index => "index",
            FileType::Snapshot => "snapshots",
            FileType::Deletion => "deletions",
        }
    }
}

/// The name of one stored object.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Handle {
    /// Object type.
    pub kind: FileType,
    /// Name inside the type's folder (hex id); empty for `config`.
    pub name: String,
}

impl Handle {
    /// A handle of the given type.
    pub fn new(kind: FileType, name: impl Into<String>) -> Self {
        Handle {
            kind,
            name: name.into(),
        }
    }

    /// The `config` object.
    pub fn config() -> Self {
        Handle::new(FileType::Config, "")
    }

    /// Path relative to the repository root, `/`-separated: the same in every backend.
    /// Packs are fanned out by the first two hex digits to keep folders small.
    pub fn path(&self) -> String {
        match self.kind {
            FileType::Config => "config".to_string(),
            FileType::Pack if self.name.len() >= 2 => {
                format!("data/{}/{}", &self.name[..2], self.name)
            }
            k => format!("{}/{}", k.dir(), self.name),
        }
    }
}

impl fmt::Display for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path())
    }
}

/// One listed object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Name inside the type's folder.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// When it was stored, where the storage says (S3 `LastModified`, a file's mtime):
    /// prune sweeps a pack that no index names only once it is older than the grace
    /// period. `None` when unknown.
    pub modified: Option<std::time::SystemTime>,
}

/// Why a storage operation failed, with the object and location it concerned.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The object does not exist.
    #[error("{object} does not exist in {location}")]
    NotFound {
        /// Object path.
        object: String,
        /// Repository location.
        location: String,
    },
    /// Fewer bytes came back than were asked for.
    #[error(
        "{object} in {location} is truncated: wanted {wanted} bytes at offset {offset}, got {got}"
    )]
    Truncated {
        /// Object path.
        object: String,
        /// Repository location.
        location: String,
        /// Offset asked for.
        offset: u64,
        /// Bytes asked for.
        wanted: u64,
        /// Bytes received.
        got: u64,
    },
    /// What is stored under the name cannot be an object of its type: a symbolic link,
    /// a FIFO or a device in a local repository, or more bytes than its type may have
    /// ([`FileType::max_stored_len`]). Foreign or planted, not a transient failure:
    /// readers treat it as a damaged object.
    #[error("{object} in {location} is not a stored object of its kind: {reason}")]
    Invalid {
        /// Object path.
        object: String,
        /// Repository location.
        location: String,
        /// What it is instead.
        reason: String,
    },
    /// The operating system or the transport failed.
    #[error("{op} {object} in {location}: {source}")]
    Io {
        /// What was being done (`read`, `write`, `list`...).
        op: &'static str,
        /// Object path.
        object: String,
        /// Repository location.
        location: String,
        /// Underlying error.
        #[source]
        source: std::io::Error,
        /// Whether a retry may succeed.
        retryable: bool,
    },
}

impl BackendError {
    /// Whether retrying the same call may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            BackendError::Io { retryable, .. } => *retryable,
            BackendError::Truncated { .. } => true,
            BackendError::NotFound { .. } | BackendError::Invalid { .. } => false,
        }
    }

    /// Whether no answer came at all (refused, reset, timed out, no connection), retries
    /// spent, as opposed to an answer the server gave (a missing, damaged or refused
    /// object, an error status). Readers with copies go to them for that pack
    /// ([`crate::heal::BlobReader`]). Narrower than [`crate::Error::is_unreachable`],
    /// which the daemon uses to journal a snapshot and counts any retryable error.
    pub fn is_transport_failure(&self) -> bool {
        matches!(
            self,
            BackendError::Io { source, retryable: true, .. } if matches!(
                source.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::NotConnected
                    | std::io::ErrorKind::TimedOut
                    | std::io::ErrorKind::HostUnreachable
                    | std::io::ErrorKind::NetworkUnreachable
            )
        )
    }

    /// Whether the error means the object is absent.
    pub fn is_not_found(&self) -> bool {
        matches!(self, BackendError::NotFound { .. })
    }
}

/// A place that stores repository objects. See the module documentation for the contract.
#[async_trait]
pub trait Backend: Send + Sync + fmt::Debug {
    /// Human-readable location for messages (`/srv/repo`, `s3:http://host/bucket/prefix`).
    fn location(&self) -> String;

    /// Store `data` under `handle`, durably and atomically.
    async fn put(&self, handle: &Handle, data: Bytes) -> Result<(), BackendError>;

    /// The whole object.
    async fn get(&self, handle: &Handle) -> Result<Vec<u8>, BackendError>;

    /// `length` bytes starting at `offset`.
    async fn get_range(
        &self,
        handle: &Handle,
        offset: u64,
        length: u64,
    ) -> Result<Vec<u8>, BackendError> {
        self.get_range_into(handle, offset, length, Vec::new())
            .await
    }

    /// [`Backend::get_range`] into `buf` (its contents are replaced), for a caller that
    /// reads range after range and hands the same buffer back each time: a new buffer of
    /// a few MiB is fresh memory the kernel maps and zeroes page by page on every read
    /// (a tenth of a restore's CPU).
    async fn get_range_into(
        &self,
        handle: &Handle,
        offset: u64,
        length: u64,
        buf: Vec<u8>,
    ) -> Result<Vec<u8>, BackendError>;

    /// Size of the object.
    async fn stat(&self, handle: &Handle) -> Result<u64, BackendError>;

    /// Every object of a type.
    async fn list(&self, kind: FileType) -> Result<Vec<ObjectInfo>, BackendError>;

    /// Remove an object; removing an absent object is not an error.
    async fn delete(&self, handle: &Handle) -> Result<(), BackendError>;

    /// Clean up invisible leftovers of writes that a crash interrupted more than
    /// `older_than` ago (S3 multipart uploads); returns how many were removed. Younger ones
    /// may belong to a backup running now on another host and are left alone.
    async fn cleanup_stale_uploads(
        &self,
        older_than: std::time::Duration,
    ) -> Result<usize, BackendError> {
        let _ = older_than;
        Ok(0)
    }

    /// Until when the object is protected by an S3 Object Lock (`None`: not locked, or a
    /// backend without locks). Deleting code asks first and never tries before then.
    async fn locked_until(
        &self,
        handle: &Handle,
    ) -> Result<Option<std::time::SystemTime>, BackendError> {
        let _ = handle;
        Ok(None)
    }

    /// Push the object's lock out to `period` from now, if this backend locks objects;
    /// returns whether it did.
    async fn extend_lock(&self, handle: &Handle) -> Result<bool, BackendError> {
        let _ = handle;
        Ok(false)
    }
}

/// Why a repository location string could not be used.
#[derive(Debug, thiserror::Error)]
#[error("repository location {spec:?}: {reason}")]
pub struct LocationError {
    /// What the user gave.
    pub spec: String,
    /// What is wrong and how to write it.
    pub reason: String,
}

/// Why a backend could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The location string is malformed.
    #[error(transparent)]
    Location(#[from] LocationError),
    /// The S3 client could not be set up.
    #[error(transparent)]
    S3(#[from] s3::S3SetupError),
}

/// The storage stack for a location, assembled in one place so a reader sees it whole:
/// the backend itself, then the concurrency limit, then the bandwidth limits, then retries
/// outermost (so a retry waits for a permit like any request, and a waiting retry holds
/// none).
pub async fn open(spec: &str, opts: &BackendOptions) -> Result<Arc<dyn Backend>, OpenError> {
    open_location(&parse_location(spec)?, opts).await
}

/// [`open`] for a location parsed already (the daemon parses each destination's once,
/// when it reads the configuration).
pub async fn open_location(
    location: &Location,
    opts: &BackendOptions,
) -> Result<Arc<dyn Backend>, OpenError> {
    let seed = {
        let mut b = [0u8; 8];
        crate::crypto::random_bytes(&mut b).ok();
        u64::from_le_bytes(b)
    };
    let (up, down) = (opts.upload_limit, opts.download_limit);
    let throttled = up.is_some() || down.is_some();
    Ok(match location {
        Location::Local(path) if throttled => Arc::new(throttle::ThrottleBackend::with_limits(
            local::LocalBackend::new(path.clone()),
            up,
            down,
        )),
        Location::Local(path) => Arc::new(local::LocalBackend::new(path.clone())),
        Location::S3(loc) => {
            let s3 = s3::S3Backend::connect(loc.clone(), opts).await?;
            let limited = limit::LimitBackend::new(s3, opts.connections);
            let (attempts, delay) = (opts.attempts, opts.retry_delay);
            if throttled {
                Arc::new(retry::RetryBackend::new(
                    throttle::ThrottleBackend::with_limits(limited, up, down),
                    attempts,
                    delay,
                    seed,
                ))
            } else {
                Arc::new(retry::RetryBackend::new(limited, attempts, delay, seed))
            }
        }
    })
}
