//! The local journal of a destination that cannot be reached: snapshots for it are
//! written into a local directory laid out as a repository on the destination's own
//! keys, holding only what the destination does not have yet. When the destination is
//! back, the journal is replayed into it verbatim (packs, then index objects, then
//! snapshots oldest first), so it receives the history it missed, not just the latest
//! state; then the journal is deleted. Object names are content hashes, so a replay that
//! is interrupted is simply run again.
//!
//! The journal lives in `<state_dir>/journal/<destination>/<repository id>/`: a journal is
//! only ever replayed into the repository it was written for. Its size is bounded; when
//! the bound is reached no further snapshots are journaled and nothing already journaled
//! is dropped: the destination catches up from the source data when it is back.

use crate::backend::local::LocalBackend;
use crate::backend::{Backend, FileType, Handle};
use crate::error::Result;
use crate::hash::Id;
use crate::progress::RunControl;
use crate::repo::Repository;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One destination's journal.
#[derive(Clone, Debug)]
pub struct Journal {
    dir: PathBuf,
    incomplete: Arc<std::sync::atomic::AtomicBool>,
}

/// What a journal holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JournalSize {
    /// Snapshots waiting to be replayed.
    pub snapshots: u64,
    /// Bytes on disk.
    pub bytes: u64,
}

fn dir_size(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

impl Journal {
    /// The journal of destination `name` for the repository with id `repo_id`.
    pub fn new(state_dir: &Path, name: &str, repo_id: &Id) -> Self {
        Journal {
            dir: state_dir.join("journal").join(name).join(repo_id.to_hex()),
            incomplete: Arc::default(),
        }
    }

    /// Every journal of destination `name` (for any repository), for status at start-up
    /// before the destination has been reached.
    pub fn size_of_all(state_dir: &Path, name: &str) -> JournalSize {
        let root = state_dir.join("journal").join(name);
        let mut total = JournalSize::default();
        if let Ok(rd) = std::fs::read_dir(&root) {
            for e in rd.flatten() {
                let j = Journal {
                    dir: e.path(),
                    incomplete: Arc::default(),
                };
                let s = j.size();
                total.snapshots += s.snapshots;
                total.bytes += s.bytes;
            }
        }
        total
    }

    /// Take over, for destination `name`, a journal for repository `repo_id` kept under
    /// a name no longer configured (`configured` lists the names that are): a
    /// destination renamed in the configuration keeps the history journaled under its
    /// old name. Returns the former name when one was taken over. A journal already
    /// there under `name` is left as it is (and the other one with it).
    pub fn adopt(
        state_dir: &Path,
        name: &str,
        repo_id: &Id,
        configured: &[String],
    ) -> std::io::Result<Option<String>> {
        let root = state_dir.join("journal");
        let target = root.join(name).join(repo_id.to_hex());
        if target.exists() {
            return Ok(None);
        }
        let Ok(rd) = std::fs::read_dir(&root) else {
            return Ok(None);
        };
        for e in rd.flatten() {
            let former = e.file_name().to_string_lossy().into_owned();
            if configured.contains(&former) {
                continue;
            }
            let orphan = e.path().join(repo_id.to_hex());
            if orphan.is_dir() {
                std::fs::create_dir_all(root.join(name))?;
                std::fs::File::open(&root)?.sync_all()?;
                std::fs::rename(&orphan, &target)?;
                // The move is durable before anything relies on it.
                std::fs::File::open(root.join(name))?.sync_all()?;
                std::fs::File::open(e.path())?.sync_all()?;
                let _ = std::fs::remove_dir(e.path());
                return Ok(Some(former));
            }
        }
        Ok(None)
    }

    /// Where it lives.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Current size.
    pub fn size(&self) -> JournalSize {
        let snapshots = std::fs::read_dir(self.dir.join("snapshots"))
            .map(|rd| {
                rd.flatten()
                    .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                    .count() as u64
            })
            .unwrap_or(0);
        JournalSize {
            snapshots,
            bytes: dir_size(&self.dir),
        }
    }

    /// The destination's repository as seen through the journal: same keys and
    /// settings, objects written to the local directory.
    pub fn repository(&self, dest: &Repository) -> Repository {
        dest.with_backend(Arc::new(LocalBackend::without_config(&self.dir)))
    }

    /// Copy everything journaled into `dest` (packs, then index objects, then snapshots
    /// oldest first) and delete the journal. Returns the number of snapshots replayed,
    /// or `None` when there is no journal at all. A journaled snapshot that cannot be
    /// read is left out with a warning (its data is replayed all the same).
    pub async fn replay(&self, dest: &Repository, control: &RunControl) -> Result<Option<u64>> {
        if !self.dir.exists() {
            return Ok(None);
        }
        let local = LocalBackend::without_config(&self.dir);
        let target = dest.backend();
        for kind in [FileType::Pack, FileType::Index] {
            for info in local.list(kind).await? {
                control.check()?;
                copy_one(&local, target.as_ref(), kind, &info.name).await?;
                // Progress for the status and the stall detection: a long replay moves.
                crate::progress::Progress::add(&control.progress.bytes_uploaded, info.size);
            }
        }
        let journaled = self.repository(dest);
        // What the destination holds now, replayed objects included: a prune elsewhere
        // may have removed data the journal relied on while the destination was away.
        let index = dest.load_index_strict().await?;
        let mut whole: std::collections::HashSet<crate::hash::BlobId> = Default::default();
        let mut snaps = Vec::new();
        for id in journaled.snapshot_ids().await? {
            match journaled.load_snapshot(id).await {
                Ok(s) => snaps.push((s.time.clone(), id)),
                Err(e) => tracing::warn!(
                    "journaled snapshot {} cannot be read and is left out: {e}",
                    id.short()
                ),
            }
        }
        snaps.sort();
        let mut replayed = 0;
        for (_, id) in &snaps {
            control.check()?;
            let snap = journaled.load_snapshot(*id).await?;
            // A read that failed for any other reason than absence or damage (the
            // destination blinked) fails the replay: the journal stays and is replayed
            // again, never judged on a connection that was refused.
            if !complete(dest, &index, &snap.tree, &mut whole).await? {
                tracing::warn!(
                    "journaled snapshot {} is left out: data it relies on is no longer in the destination (pruned meanwhile)",
                    id.short()
                );
                self.incomplete
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                continue;
            }
            copy_one(&local, target.as_ref(), FileType::Snapshot, &id.to_hex()).await?;
            replayed += 1;
        }
        std::fs::remove_dir_all(&self.dir)
            .map_err(|e| crate::error::Error::io("remove the replayed journal", &self.dir, e))?;
        Ok(Some(replayed))
    }

    /// Whether the last replay left a snapshot out (its base must not be built on).
    pub fn left_some_out(&self) -> bool {
        self.incomplete.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Whether every tree and data blob below `tree` is in `index` (trees read through it).
/// `false` only on a confirmed absence (not indexed, its pack not found) or damage; any
/// other failure to read is the error, and decides nothing.
async fn complete(
    repo: &Repository,
    index: &crate::index::MasterIndex,
    tree: &crate::hash::BlobId,
    whole: &mut std::collections::HashSet<crate::hash::BlobId>,
) -> Result<bool> {
    let mut stack = vec![*tree];
    let mut seen = Vec::new();
    while let Some(t) = stack.pop() {
        if whole.contains(&t) {
            continue;
        }
        let plain = match repo.read_blob(index, &t).await {
            Ok(plain) => plain,
            Err(e) if absent_or_damaged(&e) => return Ok(false),
            Err(e) => return Err(e),
        };
        let Ok(tree) = crate::format::tree::Tree::from_plain(&plain) else {
            return Ok(false);
        };
        for n in tree.nodes {
            if n.content.iter().any(|b| !index.contains(b)) {
                return Ok(false);
            }
            if let Some(sub) = n.subtree {
                stack.push(sub);
            }
        }
        seen.push(t);
    }
    whole.extend(seen);
    Ok(true)
}

/// Whether a failed read says the blob is not there to be read: not in the index, its
/// pack not found, or what was read is damaged. Anything else (refused, reset, timed
/// out, a server error) says nothing about the destination's content.
fn absent_or_damaged(e: &crate::error::Error) -> bool {
    use crate::error::Error;
    match e {
        Error::MissingBlob { .. } | Error::Corrupt { .. } | Error::Crypto(_) => true,
        Error::Backend(b) => {
            b.is_not_found() || matches!(b, crate::backend::BackendError::Invalid { .. })
        }
        _ => false,
    }
}

async fn copy_one(from: &dyn Backend, to: &dyn Backend, kind: FileType, name: &str) -> Result<()> {
    let h = Handle::new(kind, name.to_string());
    if to.stat(&h).await.is_ok() {
        return Ok(());
    }
    let bytes = from.get(&h).await?;
    to.put(&h, bytes::Bytes::from(bytes)).await?;
    Ok(())
}
