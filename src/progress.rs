//! Live counters and a stop flag shared between a running backup and whoever watches it
//! (the daemon's status and metrics, a progress display). Plain atomics: the pipeline
//! never waits on an observer.

use crate::error::{Error, Result};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// What a backup is doing right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Not running.
    Idle = 0,
    /// Walking the sources and reading changed files.
    Scanning = 1,
    /// The walk is done; packs are still being uploaded.
    Uploading = 2,
    /// Writing the index and snapshot.
    Committing = 3,
    /// Replaying a destination's journal into it (the daemon's catch-up).
    Replaying = 4,
}

impl Phase {
    /// Lower-case name used in status output and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Scanning => "scanning",
            Phase::Uploading => "uploading",
            Phase::Committing => "committing",
            Phase::Replaying => "replaying",
        }
    }
}

/// Counters of one backup run, readable while it runs.
#[derive(Debug, Default)]
pub struct Progress {
    phase: AtomicU8,
    /// Files looked at.
    pub files: AtomicU64,
    /// Bytes of file content read.
    pub bytes_read: AtomicU64,
    /// Packs sealed but not yet durable.
    pub uploads_pending: AtomicU64,
    /// Bytes of those packs.
    pub upload_bytes_pending: AtomicU64,
    /// Packs made durable.
    pub packs_uploaded: AtomicU64,
    /// Bytes of packs made durable.
    pub bytes_uploaded: AtomicU64,
    /// Uploads that failed (each is retried by the backend first).
    pub uploads_failed: AtomicU64,
    /// Bytes of entries done (read, written or verified, or found unchanged): the bar's
    /// position, measured against `bytes_total`.
    pub bytes_done: AtomicU64,
    /// Files expected in all, when known (0 = unknown): a display's denominator.
    pub files_total: AtomicU64,
    /// Bytes expected in all, when known (0 = unknown).
    pub bytes_total: AtomicU64,
    /// Set once `files_total`/`bytes_total` are final (a concurrent scan has finished).
    pub totals_final: AtomicBool,
    /// The entry being worked on, for a display; updated once per file, not per chunk.
    current: Mutex<String>,
}

impl Progress {
    /// Current phase.
    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Relaxed) {
            1 => Phase::Scanning,
            2 => Phase::Uploading,
            3 => Phase::Committing,
            4 => Phase::Replaying,
            _ => Phase::Idle,
        }
    }

    /// Enter a phase.
    pub fn set_phase(&self, p: Phase) {
        self.phase.store(p as u8, Ordering::Relaxed);
    }

    /// Name the entry now being worked on.
    pub fn set_current(&self, what: &str) {
        if let Ok(mut c) = self.current.lock() {
            c.clear();
            c.push_str(what);
        }
    }

    /// The entry now being worked on (empty before the first).
    pub fn current(&self) -> String {
        self.current.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Read a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Add to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Subtract from a gauge, never below zero.
    pub fn sub(counter: &AtomicU64, n: u64) {
        let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
            Some(v.saturating_sub(n))
        });
    }
}

/// The handle a caller keeps to watch and stop a run.
#[derive(Clone, Debug, Default)]
pub struct RunControl {
    /// Set to ask the run to stop; it then fails with [`Error::Cancelled`] and commits
    /// no snapshot.
    pub cancel: Arc<AtomicBool>,
    /// Live counters.
    pub progress: Arc<Progress>,
}

impl RunControl {
    /// Whether a stop was asked for.
    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// `Err(Cancelled)` once a stop was asked for, so loops can use `?`.
    pub fn check(&self) -> Result<()> {
        if self.cancelled() {
            Err(Error::Cancelled)
        } else {
            Ok(())
        }
    }
}
