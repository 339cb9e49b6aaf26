//! What one backup's threads share: the plan they all borrow (repository, options,
//! index, roots, parent) and the job a walker hands a reader. Plain data, so the walker
//! and the thread wiring both depend on it and not on each other.

use super::BackupOptions;
use super::reader::FileRead;
use crate::cache::MetadataCache;
use crate::changes::ChangedPaths;
use crate::error::Result;
use crate::exclude::Excludes;
use crate::format::snapshot::Snapshot;
use crate::index::MasterIndex;
use crate::repo::Repository;
use crossbeam_channel::Sender;
use std::fs::Metadata;
use std::path::PathBuf;
use tokio::runtime::Handle as Runtime;

/// Everything the threads of one run borrow from it: the repository and runtime, the
/// options, the index blobs are deduplicated against, and what is walked and compared.
#[derive(Clone, Copy)]
pub(super) struct Plan<'a> {
    pub(super) repo: &'a Repository,
    pub(super) rt: &'a Runtime,
    pub(super) opts: &'a BackupOptions,
    pub(super) index: &'a MasterIndex,
    pub(super) cache: Option<&'a MetadataCache>,
    /// The source paths, as [`super::prepare_roots`] made them.
    pub(super) roots: &'a [PathBuf],
    pub(super) excludes: &'a Excludes,
    /// The snapshot compared against, if any.
    pub(super) parent: Option<&'a Snapshot>,
    /// Set only with a parent: the walk then looks only where these paths lead, and a
    /// walk without it is a full walk.
    pub(super) changed: Option<&'a ChangedPaths>,
}

/// A file for a reader thread, and where its result goes.
pub(super) struct ReadJob {
    pub(super) path: PathBuf,
    pub(super) meta: Metadata,
    pub(super) reply: Sender<Result<FileRead>>,
}
