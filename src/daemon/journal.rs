//! The local journal of a destination that cannot be reached: snapshots for it are
//! written into a local directory laid out as a repository on the destination's own
//! keys, holding only what the destination does not have yet. When the destination is
//! back, the journal is replayed into it ([`super::replay`]), so it receives the
//! history it missed, not just the latest state; then the journal is deleted.
//!
//! The journal lives in `<state_dir>/journal/<destination>/<repository id>/`: a journal is
//! only ever replayed into the repository it was written for. Its size is bounded; when
//! the bound is reached no further snapshots are journaled and nothing already journaled
//! is dropped: the destination catches up from the source data when it is back.

use crate::backend::local::LocalBackend;
use crate::hash::Id;
use crate::repo::Repository;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One destination's journal.
#[derive(Clone, Debug)]
pub struct Journal {
    pub(super) dir: PathBuf,
    /// Set when a replay left a snapshot out ([`Journal::left_some_out`]).
    pub(super) incomplete: Arc<std::sync::atomic::AtomicBool>,
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

    /// Whether the last replay left a snapshot out (its base must not be built on).
    pub fn left_some_out(&self) -> bool {
        self.incomplete.load(std::sync::atomic::Ordering::Relaxed)
    }
}
