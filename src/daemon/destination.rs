//! One destination as the daemon holds it: its configuration, the queue of work its
//! worker takes from, the record of what happened (for `status` and metrics), and the
//! live signals that tell a stalled destination from a busy one. The worker loop that
//! drains the queue is [`super::worker`].

use super::config::{DestinationConfig, Schedule};
use super::control::BackupResult;
use super::schedule::{Decision, Waiting, decide};
use super::status::{DestinationStatus, LastSnapshot};
use crate::changes::ChangedPaths;
use crate::progress::{Phase, RunControl};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Instant;
use tokio::sync::oneshot;

/// Changed paths remembered per source before falling back to a full comparison.
pub const MAX_PENDING_PATHS: usize = 100_000;

/// What one source needs in one destination.
#[derive(Clone, Debug, Default)]
pub struct SourceWork {
    /// Paths reported changed.
    pub changes: ChangedPaths,
    /// Compare everything (start-up, rescans, lost events).
    pub full: bool,
    /// A command source is due to run (start-up, its interval, `backup --now`, a retry);
    /// rescans and file events never run a command.
    pub due: bool,
}

impl SourceWork {
    pub(super) fn is_empty(&self) -> bool {
        !self.full && !self.due && self.changes.is_empty()
    }

    pub(super) fn merge(&mut self, other: &SourceWork) {
        self.full |= other.full;
        self.due |= other.due;
        self.changes.merge(&other.changes);
    }
}

/// The queue a destination's worker takes work from.
#[derive(Debug, Default)]
pub(super) struct Queue {
    pub(super) sources: Vec<SourceWork>,
    pub(super) waiting: Waiting,
    pub(super) requests: Vec<oneshot::Sender<BackupResult>>,
    pub(super) shutdown: bool,
    /// While the destination could not be reached: when to ask it next, with one small
    /// request, whether it is back ([`PROBE_INTERVAL`]).
    pub(super) next_probe: Option<Instant>,
}

/// How often a destination that could not be reached is asked whether it is back,
/// whatever the backoff of full attempts: catch-up starts within seconds of its return.
pub const PROBE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// What the worker reports between runs.
#[derive(Debug, Default)]
pub(super) struct Record {
    pub(super) last_snapshot: Option<LastSnapshot>,
    pub(super) last_error: Option<String>,
    pub(super) failures: u32,
    pub(super) snapshots: u64,
    pub(super) failed: u64,
    /// When the oldest change not yet durable here arrived.
    pub(super) behind_since: Option<Instant>,
    /// When this destination last completed a run with nothing left over.
    pub(super) last_success: Option<Instant>,
    /// When recent snapshots were committed (bounded), to count another destination's lag.
    pub(super) commits: std::collections::VecDeque<Instant>,
    /// Id of the destination's repository, once opened.
    pub(super) repo_id: Option<crate::hash::Id>,
    /// Something the operator should know that is not an error (a repository created).
    pub(super) notice: Option<String>,
    /// Damaged or foreign objects the session skipped, each with why.
    pub(super) skipped: Vec<String>,
    /// Per source, the warnings of its latest snapshot: how many paths were not stored
    /// or stored while changing, how many of them changing, and the first of them,
    /// each with why.
    pub(super) warnings: Vec<(u64, u64, Vec<String>)>,
}

/// Commit times remembered per destination for lag counts.
pub(super) const MAX_COMMIT_TIMES: usize = 10_000;

/// A destination: configuration, queue, record and live counters.
pub struct Destination {
    /// Its configuration.
    pub config: DestinationConfig,
    pub(super) queue: Mutex<Queue>,
    pub(super) wake: Condvar,
    pub(super) record: Mutex<Record>,
    pub(super) scrub: Mutex<Option<super::status::ScrubStatus>>,
    /// Set while the worker runs a round (connecting, replaying, backing up): a round
    /// in which nothing moves for a request timeout hangs on the destination.
    pub(super) in_round: std::sync::atomic::AtomicBool,
    /// The progress last seen, and since when it has not changed.
    pub(super) motion: Mutex<Option<(super::liveness::Signature, Instant, bool)>>,
    /// Stop flag (shared by all destinations) and this destination's counters.
    pub control: RunControl,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A worker that panicked leaves consistent data behind (every update is one
    // assignment), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Destination {
    /// A destination with every source marked for a full comparison (start-up: whatever
    /// happened while the daemon was not running is found).
    pub fn new(config: DestinationConfig, sources: usize, control: RunControl) -> Self {
        let queue = Queue {
            sources: vec![
                SourceWork {
                    changes: ChangedPaths::new(),
                    full: true,
                    due: true,
                };
                sources
            ],
            waiting: Waiting {
                pending: true,
                ..Waiting::default()
            },
            ..Queue::default()
        };
        Destination {
            config,
            queue: Mutex::new(queue),
            wake: Condvar::new(),
            record: Mutex::new(Record {
                warnings: vec![(0, 0, Vec::new()); sources],
                ..Record::default()
            }),
            scrub: Mutex::new(None),
            in_round: std::sync::atomic::AtomicBool::new(false),
            motion: Mutex::new(None),
            control,
        }
    }

    /// Record a changed path of source `source`. Past [`MAX_PENDING_PATHS`] distinct
    /// paths (a destination down for long under heavy churn), the paths are dropped for
    /// a full comparison, which finds the same changes with bounded memory.
    pub fn changed(&self, source: usize, path: &Path) {
        let now = Instant::now();
        let mut q = lock(&self.queue);
        if let Some(w) = q.sources.get_mut(source) {
            if w.full {
                // Everything is compared anyway.
            } else if w.changes.len() >= MAX_PENDING_PATHS {
                w.changes = ChangedPaths::new();
                w.full = true;
            } else {
                w.changes.insert(path);
            }
        }
        q.waiting.pending = true;
        q.waiting.first_change.get_or_insert(now);
        q.waiting.last_change = Some(now);
        drop(q);
        lock(&self.record).behind_since.get_or_insert(now);
        self.wake.notify_all();
    }

    /// Snapshots committed here after `since` (all of them if `None`).
    pub fn commits_after(&self, since: Option<Instant>) -> u64 {
        let r = lock(&self.record);
        r.commits
            .iter()
            .filter(|t| since.is_none_or(|s| **t > s))
            .count() as u64
    }

    /// When this destination last caught up completely, and since when it is behind.
    pub fn lag_marks(&self) -> (Option<Instant>, Option<Instant>) {
        let r = lock(&self.record);
        (r.last_success, r.behind_since)
    }

    /// Pending changed paths of every source (for estimating the bytes behind).
    pub fn pending_paths(&self, limit: usize) -> Vec<PathBuf> {
        let q = lock(&self.queue);
        q.sources
            .iter()
            .flat_map(|w| w.changes.iter().map(Path::to_path_buf))
            .take(limit)
            .collect()
    }

    /// Ask for a full comparison of every source.
    pub fn rescan(&self) {
        let mut q = lock(&self.queue);
        for w in &mut q.sources {
            w.full = true;
        }
        q.waiting.pending = true;
        drop(q);
        self.wake.notify_all();
    }

    /// A command source's interval has come round: run it.
    pub fn command_due(&self, source: usize) {
        let mut q = lock(&self.queue);
        if let Some(w) = q.sources.get_mut(source) {
            w.due = true;
        }
        q.waiting.pending = true;
        drop(q);
        self.wake.notify_all();
    }

    /// Ask for a snapshot now; the answer arrives on the returned channel.
    pub fn request(&self) -> oneshot::Receiver<BackupResult> {
        let (tx, rx) = oneshot::channel();
        let mut q = lock(&self.queue);
        for w in &mut q.sources {
            w.full = true;
            w.due = true;
        }
        q.waiting.pending = true;
        q.waiting.requested = true;
        q.requests.push(tx);
        drop(q);
        self.wake.notify_all();
        rx
    }

    /// Stop the worker after (or, with the shared stop flag set, during) its current run.
    pub fn shutdown(&self) {
        lock(&self.queue).shutdown = true;
        self.wake.notify_all();
    }

    /// Current status.
    pub fn status(&self) -> DestinationStatus {
        let q = lock(&self.queue);
        let r = lock(&self.record);
        let p = &self.control.progress;
        let pending_changes = q.sources.iter().map(|w| w.changes.len() as u64).sum();
        let pending = q.waiting.pending;
        let stalled = self.stalled_for();
        let state = match p.phase() {
            _ if stalled.is_some() => "stalled",
            // Between attempts after a failure, even with nothing queued: not idle.
            Phase::Idle if r.failures > 0 => "retrying",
            Phase::Idle if pending => "waiting",
            phase => phase.name(),
        };
        DestinationStatus {
            name: self.config.name.clone(),
            repo: self.config.location.to_string(),
            state: state.into(),
            last_snapshot: r.last_snapshot.clone(),
            pending_changes,
            pending_objects: p.uploads_pending.load(Ordering::Relaxed),
            pending_bytes: p.upload_bytes_pending.load(Ordering::Relaxed),
            last_error: r.last_error.clone(),
            consecutive_failures: r.failures,
            snapshots: r.snapshots,
            failed_snapshots: r.failed,
            files_processed: p.files.load(Ordering::Relaxed),
            bytes_processed: p.bytes_read.load(Ordering::Relaxed),
            uploads_ok: p.packs_uploaded.load(Ordering::Relaxed),
            uploads_failed: p.uploads_failed.load(Ordering::Relaxed),
            bytes_uploaded: p.bytes_uploaded.load(Ordering::Relaxed),
            lag_snapshots: 0,
            lag_seconds: 0,
            lag_bytes: 0,
            journal_snapshots: 0,
            journal_bytes: 0,
            scrub: lock(&self.scrub).clone(),
            notice: r.notice.clone(),
            stalled_seconds: stalled.map_or(0, |d| d.as_secs()),
            skipped_objects: r.skipped.clone(),
            unsettled_paths: r.warnings.iter().map(|(n, _, _)| n).sum(),
            changing_files: r.warnings.iter().map(|(_, c, _)| c).sum(),
            warnings: r
                .warnings
                .iter()
                .flat_map(|(_, _, w)| w)
                .take(super::status::MAX_LISTED_WARNINGS)
                .cloned()
                .collect(),
            // Filled in by the daemon's status from the alert book.
            last_alert: None,
        }
    }

    /// How long the current round has gone without any progress, once that is longer
    /// than a request may take (`s3.timeout`): a destination that stopped answering
    /// without closing the connection, whose requests are still being retried.
    pub fn stalled_for(&self) -> Option<std::time::Duration> {
        let now = Instant::now();
        let mut seen = self.liveness();
        // A round counts as busy here even between phases (connecting, replaying); the
        // watchdog's idea of busy stays the phases alone, since it restarts everything.
        seen.busy |= self.in_round.load(Ordering::Relaxed);
        let mut motion = lock(&self.motion);
        let (since, said) = match &mut *motion {
            Some((last, since, said)) if *last == seen => (*since, said),
            other => {
                let fresh = other.insert((seen, now, false));
                (now, &mut fresh.2)
            }
        };
        let still = now.duration_since(since);
        let stalled = seen.busy && still > self.config.backend.timeout;
        if stalled && !*said {
            *said = true;
            tracing::warn!(
                destination = %self.config.name,
                "no progress for {}: the destination does not answer; its requests are retried, and shutdown and reload do not wait for them",
                humantime::format_duration(std::time::Duration::from_secs(still.as_secs()))
            );
        }
        stalled.then_some(still)
    }

    /// What the watchdog watches of this destination ([`super::liveness`]).
    pub fn liveness(&self) -> super::liveness::Signature {
        let p = &self.control.progress;
        let n = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        super::liveness::Signature {
            busy: p.phase() != Phase::Idle,
            counters: [
                n(&p.files),
                n(&p.bytes_read),
                n(&p.packs_uploaded),
                n(&p.bytes_uploaded),
                n(&p.uploads_failed),
                n(&p.bytes_done),
            ],
        }
    }

    /// Publish the outcome of a scrub slice.
    pub fn set_scrub(&self, s: super::status::ScrubStatus) {
        *lock(&self.scrub) = Some(s);
    }

    /// The scrub outcome published last.
    pub fn scrub_status(&self) -> Option<super::status::ScrubStatus> {
        lock(&self.scrub).clone()
    }

    /// Block until there is work to run now; `None` on shutdown. While waiting out the
    /// backoff after the destination could not be reached, `probe` is asked every
    /// [`PROBE_INTERVAL`] whether it answers again (without the queue's lock held); once
    /// it does, the wait ends.
    pub(super) fn next_work(
        &self,
        schedule: &Schedule,
        probe: &mut dyn FnMut() -> bool,
    ) -> Option<(Vec<SourceWork>, Vec<oneshot::Sender<BackupResult>>)> {
        let mut q = lock(&self.queue);
        loop {
            if q.shutdown {
                return None;
            }
            let now = Instant::now();
            let backing_off = q.waiting.retry_at.is_some_and(|r| r > now);
            if q.next_probe.is_some_and(|at| backing_off && at <= now) {
                drop(q);
                let back = probe();
                q = lock(&self.queue);
                if back {
                    tracing::info!(destination = %self.config.name, "the destination answers again: trying now");
                    q.waiting.retry_at = None;
                    q.next_probe = None;
                } else {
                    q.next_probe = Some(Instant::now() + PROBE_INTERVAL);
                }
                continue;
            }
            let probe_at = q.next_probe.filter(|_| backing_off);
            match decide(now, &q.waiting, schedule) {
                Decision::Run => {
                    let n = q.sources.len();
                    let work = std::mem::replace(&mut q.sources, vec![SourceWork::default(); n]);
                    let requests = std::mem::take(&mut q.requests);
                    let retry_at = q.waiting.retry_at;
                    q.waiting = Waiting {
                        last_start: Some(now),
                        retry_at,
                        ..Waiting::default()
                    };
                    return Some((work, requests));
                }
                Decision::WaitUntil(t) => {
                    let t = probe_at.map_or(t, |p| t.min(p));
                    q = self
                        .wake
                        .wait_timeout(q, t.saturating_duration_since(now))
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
                Decision::Idle => {
                    q = self.wake.wait(q).unwrap_or_else(|p| p.into_inner());
                }
            }
        }
    }

    /// Make the worker try again at its retry time even with no changes pending (a
    /// journal waits to be replayed).
    pub(super) fn want_retry(&self) {
        lock(&self.queue).waiting.pending = true;
    }

    /// Put back work that did not complete, merged with what arrived meanwhile.
    pub(super) fn requeue(&self, left: &[SourceWork], retry_at: Option<Instant>) {
        let mut q = lock(&self.queue);
        for (w, l) in q.sources.iter_mut().zip(left) {
            w.merge(l);
        }
        if left.iter().any(|w| !w.is_empty()) {
            q.waiting.pending = true;
        }
        q.waiting.retry_at = retry_at;
        if retry_at.is_none() {
            q.next_probe = None;
        }
    }

    /// The destination could not be reached: probe it while backing off.
    pub(super) fn probe_soon(&self) {
        lock(&self.queue).next_probe = Some(Instant::now() + PROBE_INTERVAL);
    }
}
