//! `snapshots/<id>` objects: one backup run's root tree and its description. The JSON
//! field names follow restic's so that scripts written for `restic snapshots --json` work.

use super::{FormatError, from_json, to_json};
use crate::hash::{BlobId, SnapshotId};
use serde::{Deserialize, Serialize};

/// Counts from the backup run that made the snapshot, for `snapshots --json` and humans.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Files stored for the first time.
    pub files_new: u64,
    /// Files whose metadata changed, so they were read again.
    pub files_changed: u64,
    /// Files taken from the parent snapshot without reading them.
    pub files_unmodified: u64,
    /// Directories stored.
    pub dirs_processed: u64,
    /// Data blobs this run uploaded.
    pub data_blobs: u64,
    /// Tree blobs this run uploaded.
    pub tree_blobs: u64,
    /// Plaintext bytes of new blobs.
    pub data_added: u64,
    /// Bytes uploaded in packs (compressed and sealed).
    pub data_added_packed: u64,
    /// Bytes of file content read from disk.
    pub data_read: u64,
    /// Files in the snapshot.
    pub total_files_processed: u64,
    /// Bytes of file content in the snapshot.
    pub total_bytes_processed: u64,
    /// Paths that could not be stored (vanished, unreadable), or were stored only as
    /// read while they changed.
    pub warnings: u64,
    /// Files stored as read while they kept changing: marked `changing` in their nodes
    /// (written only when not 0; informational, so older readers may ignore it).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub files_changing: u64,
    /// Files of the parent snapshot that this one lacks, counted by full walks (a walk
    /// pruned to the changed paths records 0; written only when not 0; informational).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub files_removed: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// A snapshot as stored (sealed, compressed JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// RFC 3339 time the snapshot represents.
    pub time: String,
    /// The snapshot this one was compared against, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<SnapshotId>,
    /// Root tree blob.
    pub tree: BlobId,
    /// Backed-up paths as given (absolute, lossy UTF-8 for display).
    pub paths: Vec<String>,
    /// Host name.
    pub hostname: String,
    /// User name.
    pub username: String,
    /// Numeric user id.
    pub uid: u32,
    /// Numeric group id.
    pub gid: u32,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// `cairn <version>`.
    pub program_version: String,
    /// Counts of the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<Summary>,
    /// Where the one file of a snapshot made from a stream came from: `stdin`, or the
    /// command whose output it is (`command: pg_dump -Fc app`). A restore or a listing
    /// then says what produced the bytes, which a path alone cannot. Informational, so
    /// older readers may ignore it; absent for snapshots of files and folders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// The snapshot this one was made from by `tag`, `rewrite` or a `copy` between
    /// repositories on different keys (restic's field): the id it had first, kept through
    /// every later change, so a copy is recognised as already made and a person can tell
    /// where a snapshot came from. Informational, so older readers may ignore it; absent
    /// for snapshots made by a backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original: Option<SnapshotId>,
}

impl Snapshot {
    /// JSON bytes before compression and sealing.
    pub fn to_plain(&self) -> Vec<u8> {
        to_json(self)
    }

    /// Parse decrypted, decompressed bytes.
    pub fn from_plain(bytes: &[u8]) -> Result<Self, FormatError> {
        let s: Snapshot = from_json("snapshot", bytes)?;
        time::OffsetDateTime::parse(&s.time, &time::format_description::well_known::Rfc3339)
            .map_err(|e| FormatError::Invalid {
                what: "snapshot",
                reason: format!("time {:?}: {e}", s.time),
            })?;
        Ok(s)
    }

    /// The snapshot time as a value, for sorting and retention.
    pub fn timestamp(&self) -> time::OffsetDateTime {
        time::OffsetDateTime::parse(&self.time, &time::format_description::well_known::Rfc3339)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
    }
}
