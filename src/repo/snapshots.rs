//! Reading, writing and choosing snapshots.

use super::{MAX_SNAPSHOT_LEN, Repository, SNAPSHOT_READS};
use crate::backend::FileType;
use crate::crypto::Purpose;
use crate::error::{Error, Result};
use crate::format::snapshot::Snapshot;
use crate::hash::{Id, SnapshotId};
use crate::index::MasterIndex;
use futures_util::{StreamExt, TryStreamExt, stream};

/// A snapshot with its id.
#[derive(Clone, Debug)]
pub struct SnapshotEntry {
    /// Object id.
    pub id: SnapshotId,
    /// Contents.
    pub snapshot: Snapshot,
}

impl Repository {
    /// Store a snapshot. Call only after every object it references is durable.
    pub async fn save_snapshot(&self, snap: &Snapshot) -> Result<SnapshotId> {
        let id = self
            .save_object(FileType::Snapshot, Purpose::Snapshot, &snap.to_plain())
            .await?;
        Ok(SnapshotId(id))
    }

    /// Load and verify one snapshot.
    pub async fn load_snapshot(&self, id: SnapshotId) -> Result<Snapshot> {
        let plain = self
            .load_object(
                FileType::Snapshot,
                id.0,
                Purpose::Snapshot,
                MAX_SNAPSHOT_LEN,
            )
            .await?;
        Snapshot::from_plain(&plain)
            .map_err(|e| Error::corrupt_format(format!("snapshots/{id}"), e))
    }

    /// Load and verify the snapshots `ids`, [`SNAPSHOT_READS`] at a time, each with its
    /// own outcome, in the order given: a walk over many snapshots (check, prune) read
    /// them one round trip at a time.
    pub async fn load_snapshots(
        &self,
        ids: Vec<SnapshotId>,
    ) -> Vec<(SnapshotId, Result<Snapshot>)> {
        stream::iter(ids)
            .map(|id| async move { (id, self.load_snapshot(id).await) })
            .buffered(SNAPSHOT_READS)
            .collect()
            .await
    }

    /// Ids of every stored snapshot.
    pub async fn snapshot_ids(&self) -> Result<Vec<SnapshotId>> {
        Ok(self
            .backend
            .list(FileType::Snapshot)
            .await?
            .into_iter()
            .filter_map(|o| Id::from_object_name(&o.name).map(SnapshotId))
            .collect())
    }

    /// Every snapshot, oldest first. A damaged or foreign object in `snapshots/` is
    /// skipped and noted in [`Repository::skipped`] (one junk object must not stop every
    /// backup or hide the other snapshots), and one deleted between the listing and its
    /// read (a `forget` running meanwhile) is simply absent. Any other failure (the
    /// storage cannot be read) fails the listing.
    pub async fn list_snapshots(&self) -> Result<Vec<SnapshotEntry>> {
        self.snapshots_listed(self.snapshot_ids().await?).await
    }

    /// What `read` takes from the listing of snapshots, and the whole index: what every
    /// reader (restore, ls, diff, find, stats) needs first. Snapshots are listed before
    /// the index: a backup stores its index objects before its snapshot, so only that
    /// order guarantees the index covers every snapshot listed (docs/FORMAT.md, section
    /// 15). Then both are read at the same time, since each read is mostly a round trip.
    pub async fn snapshots_with_index<T, F>(
        &self,
        read: impl FnOnce(Vec<SnapshotId>) -> F,
    ) -> Result<(T, MasterIndex)>
    where
        F: std::future::Future<Output = Result<T>>,
    {
        let ids = self.snapshot_ids().await?;
        futures_util::future::try_join(read(ids), self.load_index()).await
    }

    /// The snapshots `ids` (a listing from [`Repository::snapshot_ids`]), oldest first,
    /// as [`Repository::list_snapshots`] reads them; taking the listing separately is
    /// what [`Repository::snapshots_with_index`] needs.
    pub async fn snapshots_listed(&self, ids: Vec<SnapshotId>) -> Result<Vec<SnapshotEntry>> {
        let loaded: Vec<Option<SnapshotEntry>> = stream::iter(ids)
            .map(|id| async move {
                match self.load_snapshot(id).await {
                    Ok(snapshot) => Ok(Some(SnapshotEntry { id, snapshot })),
                    Err(Error::Backend(e)) if e.is_not_found() => {
                        tracing::debug!("snapshots/{id} was removed after it was listed");
                        Ok(None)
                    }
                    Err(Error::Corrupt { object, reason }) => {
                        self.skipped.note(object, reason);
                        Ok(None)
                    }
                    Err(e) => Err(e),
                }
            })
            .buffered(SNAPSHOT_READS)
            .try_collect()
            .await?;
        let mut out: Vec<SnapshotEntry> = loaded.into_iter().flatten().collect();
        out.sort_by(|a, b| {
            a.snapshot
                .timestamp()
                .cmp(&b.snapshot.timestamp())
                .then(a.id.cmp(&b.id))
        });
        Ok(out)
    }

    /// Resolve `latest`, `latest~N` (the Nth before the latest), a full id or a unique
    /// prefix.
    pub async fn find_snapshot(&self, spec: &str) -> Result<SnapshotEntry> {
        self.find_snapshot_listed(spec, self.snapshot_ids().await?)
            .await
    }

    /// Resolve `spec` as [`Repository::find_snapshot`] does, among the snapshots `ids`
    /// (a listing from [`Repository::snapshot_ids`], as
    /// [`Repository::snapshots_with_index`] hands it over).
    pub async fn find_snapshot_listed(
        &self,
        spec: &str,
        ids: Vec<SnapshotId>,
    ) -> Result<SnapshotEntry> {
        if let Some(back) = latest_offset(spec)? {
            let mut all = self.snapshots_listed(ids).await?;
            let n = all.len();
            return if back < n {
                Ok(all.swap_remove(n - 1 - back))
            } else {
                Err(Error::SnapshotNotFound(format!(
                    "{spec} (the repository holds {n} snapshot(s))"
                )))
            };
        }
        let wanted = spec.to_lowercase();
        if wanted.is_empty() || !wanted.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::InvalidInput(format!(
                "{spec:?} is not a snapshot id: give `latest`, an id, or a unique id prefix"
            )));
        }
        let ids: Vec<SnapshotId> = ids
            .into_iter()
            .filter(|id| id.to_hex().starts_with(&wanted))
            .collect();
        match ids.as_slice() {
            [id] => Ok(SnapshotEntry {
                id: *id,
                snapshot: self.load_snapshot(*id).await?,
            }),
            [] => Err(Error::SnapshotNotFound(spec.to_string())),
            many => Err(Error::AmbiguousSnapshot {
                prefix: spec.to_string(),
                candidates: many
                    .iter()
                    .map(|i| i.short())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }
}

/// `latest` → 0, `latest~N` → N; anything else is not a relative spec.
fn latest_offset(spec: &str) -> Result<Option<usize>> {
    let Some(rest) = spec.strip_prefix("latest") else {
        return Ok(None);
    };
    if rest.is_empty() {
        return Ok(Some(0));
    }
    rest.strip_prefix('~')
        .and_then(|n| n.parse::<usize>().ok())
        .map(Some)
        .ok_or_else(|| {
            Error::InvalidInput(format!(
                "{spec:?} is not a snapshot: write `latest`, `latest~1` (the one before), an id or an id prefix"
            ))
        })
}

#[cfg(test)]
mod spec_tests {
    use super::latest_offset;

    #[test]
    fn relative_specs() {
        assert_eq!(latest_offset("latest").ok().flatten(), Some(0));
        assert_eq!(latest_offset("latest~2").ok().flatten(), Some(2));
        assert_eq!(latest_offset("abc123").ok().flatten(), None);
        assert!(latest_offset("latest~x").is_err());
        assert!(latest_offset("latest2").is_err());
    }
}
