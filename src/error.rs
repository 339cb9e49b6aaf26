//! The library's error type. Each variant names the object, path or location it concerns,
//! so the CLI can print one sentence with the fix; [`Error::exit_code`] maps them to the
//! process exit codes, all of which [`EXIT_CODES`] lists.

use crate::backend::BackendError;
use crate::crypto::CryptoError;
use crate::format::FormatError;
use std::path::PathBuf;

/// Exit code: the command did all it was asked.
pub const EXIT_SUCCESS: i32 = 0;
/// Exit code: an error, or a check or restore that found problems.
pub const EXIT_FAILURE: i32 = 1;
/// Exit code: the command line itself was wrong (clap's code for usage errors).
pub const EXIT_USAGE: i32 = 2;
/// Exit code: done, but not everything (a snapshot without some paths, or objects
/// skipped as damaged or foreign).
pub const EXIT_WARNINGS: i32 = 3;
/// Exit code: there is no repository at the location (as restic).
pub const EXIT_NO_REPOSITORY: i32 = 10;
/// Exit code: the passphrase opens no key of the repository (as restic).
pub const EXIT_WRONG_PASSPHRASE: i32 = 12;

/// Every process exit code of `cairn` with its meaning. The one table: the exit handling
/// uses the constants above, and cairn(1)'s EXIT STATUS section is printed from this, so
/// the page cannot miss a code.
pub const EXIT_CODES: &[(i32, &str)] = &[
    (EXIT_SUCCESS, "success"),
    (
        EXIT_FAILURE,
        "error: nothing was committed; or `check` found the repository unhealthy, `restore` could not restore some entries, `find` matched nothing, `status` found a destination failing",
    ),
    (EXIT_USAGE, "bad command-line usage"),
    (
        EXIT_WARNINGS,
        "done, but not everything: `backup` made a snapshot without some paths (vanished, unreadable) or with files stored while they changed; or a command skipped damaged or foreign objects (named on stderr; `cairn check` tells more)",
    ),
    (EXIT_NO_REPOSITORY, "the repository does not exist"),
    (EXIT_WRONG_PASSPHRASE, "wrong passphrase"),
];

/// Anything that can go wrong in a repository operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Storage failed.
    #[error(transparent)]
    Backend(BackendError),
    /// No `config` object at the location.
    #[error(
        "there is no cairn repository at {location}: check the path, or create one with `cairn init --repo {location}`"
    )]
    RepositoryNotFound {
        /// Repository location.
        location: String,
    },
    /// A destination the daemon reached before has no `config` now: it is unreachable
    /// (a disk that did not mount), and is never created again.
    #[error(
        "there is no repository at {location} now, but repository {id} was there before (recorded in {record}): the destination is unreachable (is its disk mounted, its bucket and prefix right?). cairn will not create a new repository in its place; snapshots wait until it is back. To start over there on purpose, delete {record}"
    )]
    DestinationMissing {
        /// Repository location.
        location: String,
        /// The repository id first seen there (hex).
        id: String,
        /// The state file that remembers it.
        record: PathBuf,
    },
    /// `config` exists but is not a cairn config.
    #[error(
        "{location} is not a cairn repository: its `config` object is not cairn's; point --repo at a cairn repository, or at an empty location for `cairn init`"
    )]
    NotARepository {
        /// Repository location.
        location: String,
    },
    /// `init` found an existing repository.
    #[error("{location} already holds a repository (or other files): choose an empty location")]
    AlreadyExists {
        /// Repository location.
        location: String,
    },
    /// The format version is newer (or older) than this build reads.
    #[error(
        "the repository at {location} uses format version {found}, but this cairn reads only versions {oldest} to {supported}: install a cairn release that supports version {found}"
    )]
    UnsupportedVersion {
        /// Repository location.
        location: String,
        /// Version found.
        found: u32,
        /// Oldest version supported.
        oldest: u32,
        /// Newest version supported.
        supported: u32,
    },
    /// No key accepted the passphrase.
    #[error(
        "wrong passphrase for the repository at {location}: none of its {keys} key(s) opens with it; check the first line of the passphrase file (--password-file, CAIRN_PASSWORD_FILE), of what the password command prints (--password-command, CAIRN_PASSWORD_COMMAND), or CAIRN_PASSWORD"
    )]
    WrongPassphrase {
        /// Repository location.
        location: String,
        /// Number of keys tried.
        keys: usize,
    },
    /// No intact key accepted the passphrase, and some key objects are damaged.
    #[error(
        "no key of the repository at {location} opens with this passphrase, and these key objects are damaged and could not be tried: {damaged}. If the passphrase is right, restore those objects from another copy of the repository"
    )]
    DamagedKeys {
        /// Repository location.
        location: String,
        /// The damaged key objects and why.
        damaged: String,
    },
    /// A stored object failed verification or decoding.
    #[error("{object} is damaged: {reason}")]
    Corrupt {
        /// Object (and blob) concerned.
        object: String,
        /// What was wrong.
        reason: String,
    },
    /// A blob referenced by a tree or snapshot is not in any index.
    #[error(
        "blob {blob} is missing from the repository index (referenced by {referrer}): run `cairn check` to see what is affected, and `cairn check --repair --fallback-repo REPO` to copy it back from another copy"
    )]
    MissingBlob {
        /// The blob.
        blob: String,
        /// What referenced it.
        referrer: String,
    },
    /// No snapshot matches.
    #[error("no snapshot matches {0:?}: list them with `cairn snapshots`")]
    SnapshotNotFound(String),
    /// Several snapshots match a prefix.
    #[error("snapshot prefix {prefix:?} is ambiguous: it matches {candidates}; give more digits")]
    AmbiguousSnapshot {
        /// The prefix given.
        prefix: String,
        /// Matching ids.
        candidates: String,
    },
    /// Restore target already has content.
    #[error(
        "restore target {0} is not empty: choose an empty or new directory, or pass --overwrite"
    )]
    TargetNotEmpty(PathBuf),
    /// A local file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// Path concerned.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A user-supplied value is unusable.
    #[error("{0}")]
    InvalidInput(String),
    /// The daemon's configuration file has problems; each has its line and the fix.
    #[error(transparent)]
    Config(#[from] crate::daemon::config::problem::ConfigError),
    /// A fault inside cairn itself (a worker thread that panicked or hung up), not anything
    /// the user gave or storage returned. Kept apart from [`Error::InvalidInput`] so nobody is
    /// told to fix their input for a bug; the message asks for a report instead.
    #[error("internal fault in cairn: {0}; please report it with the log")]
    Internal(String),
    /// The run was asked to stop (shutdown); nothing was committed.
    #[error("stopped before completion; no snapshot was written")]
    Cancelled,
    /// A source's command or hook failed (not found, exited non-zero, timed out): the
    /// message says which, how, and the end of its error output. The repository is not
    /// in doubt, so the daemon keeps its session.
    #[error("{0}")]
    SourceFailed(String),
    /// A key operation would leave the repository unopenable, or the key is unknown.
    #[error("{0}")]
    Key(String),
    /// Cryptography outside object verification failed (random source, KDF parameters).
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

/// Storage errors become library errors as they are, except that something stored under
/// an object's name that cannot be one of its kind ([`BackendError::Invalid`]: a link, a
/// FIFO, an oversized object) is a damaged object: whoever skips damaged snapshots or
/// index objects skips it too, and it is never mistaken for an outage.
impl From<BackendError> for Error {
    fn from(e: BackendError) -> Self {
        match e {
            BackendError::Invalid { object, reason, .. } => Error::Corrupt { object, reason },
            e => Error::Backend(e),
        }
    }
}

impl Error {
    /// Whether storage could not be reached or answered with a transient failure (after
    /// the backend's own retries): the destination is down, not broken.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Error::Backend(e) if e.is_retryable())
            || matches!(self, Error::Backend(BackendError::Truncated { .. }))
            || matches!(self, Error::DestinationMissing { .. })
    }

    /// Process exit code for this error (see [`EXIT_CODES`]): a missing repository and a
    /// wrong passphrase have their own (as restic), everything else is a failure.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::RepositoryNotFound { .. } => EXIT_NO_REPOSITORY,
            Error::WrongPassphrase { .. } => EXIT_WRONG_PASSPHRASE,
            _ => EXIT_FAILURE,
        }
    }

    /// A damaged-object error from a decoding failure.
    pub fn corrupt_format(object: impl Into<String>, e: FormatError) -> Self {
        Error::Corrupt {
            object: object.into(),
            reason: e.to_string(),
        }
    }

    /// A damaged-object error from an authentication failure.
    pub fn corrupt_crypto(object: impl Into<String>, e: CryptoError) -> Self {
        Error::Corrupt {
            object: object.into(),
            reason: e.to_string(),
        }
    }

    /// A local I/O error on a path.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// Result with the library error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The causes of `err`, itself first. After an io::Error comes its payload: its
/// `source()` skips it, and the payload is where rustls and hyper put what happened.
pub fn causes<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(err), |&e| match e.downcast_ref::<std::io::Error>() {
        Some(io) => io
            .get_ref()
            .map(|inner| inner as &(dyn std::error::Error + 'static)),
        None => e.source(),
    })
}
