//! One destination's worker: a thread that waits for pending changes to settle, then
//! snapshots every source with changes into its repository. Each destination has its
//! own worker, queue, retry state and repository session, so one that is slow, down or
//! rejecting never holds up the others. Work that fails stays queued (merged with what
//! arrives meanwhile) and is retried with backoff.

use super::config::{DestinationConfig, PasswordSource, Schedule, SourceConfig};
use super::control::BackupResult;
use super::schedule::{Decision, Waiting, decide, retry_delay};
use super::status::{DestinationStatus, LastSnapshot};
use crate::backup::{BackupContext, BackupOptions, backup_with, snapshot_paths};
use crate::cache::MetadataCache;
use crate::changes::ChangedPaths;
use crate::error::{Error, Result};
use crate::hash::SnapshotId;
use crate::progress::{Phase, RunControl};
use crate::repo::{InitOptions, Repository, init, read_config};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::runtime::Handle as Runtime;
use tokio::sync::oneshot;
use zeroize::Zeroizing;

/// Changed paths remembered per source before falling back to a full comparison.
pub const MAX_PENDING_PATHS: usize = 100_000;

/// What one source needs in one destination.
#[derive(Clone, Debug, Default)]
pub struct SourceWork {
    /// Paths reported changed.
    pub changes: ChangedPaths,
    /// Compare everything (start-up, rescans, lost events).
    pub full: bool,
}

impl SourceWork {
    fn is_empty(&self) -> bool {
        !self.full && self.changes.is_empty()
    }

    fn merge(&mut self, other: &SourceWork) {
        self.full |= other.full;
        self.changes.merge(&other.changes);
    }
}

/// The queue a destination's worker takes work from.
#[derive(Debug, Default)]
struct Queue {
    sources: Vec<SourceWork>,
    waiting: Waiting,
    requests: Vec<oneshot::Sender<BackupResult>>,
    shutdown: bool,
}

/// What the worker reports between runs.
#[derive(Debug, Default)]
struct Record {
    last_snapshot: Option<LastSnapshot>,
    last_error: Option<String>,
    failures: u32,
    snapshots: u64,
    failed: u64,
    /// When the oldest change not yet durable here arrived.
    behind_since: Option<Instant>,
    /// When this destination last completed a run with nothing left over.
    last_success: Option<Instant>,
    /// When recent snapshots were committed (bounded), to count another destination's lag.
    commits: std::collections::VecDeque<Instant>,
    /// Id of the destination's repository, once opened.
    repo_id: Option<crate::hash::Id>,
    /// Something the operator should know that is not an error (a repository created).
    notice: Option<String>,
    /// Damaged or foreign objects the session skipped, each with why.
    skipped: Vec<String>,
    /// Per source, the warnings of its latest snapshot: how many paths were not stored
    /// or stored while changing, how many of them changing, and the first of them,
    /// each with why.
    warnings: Vec<(u64, u64, Vec<String>)>,
}

/// Commit times remembered per destination for lag counts.
const MAX_COMMIT_TIMES: usize = 10_000;

/// A destination: configuration, queue, record and live counters.
pub struct Destination {
    /// Its configuration.
    pub config: DestinationConfig,
    queue: Mutex<Queue>,
    wake: Condvar,
    record: Mutex<Record>,
    scrub: Mutex<Option<super::status::ScrubStatus>>,
    /// Set while the worker runs a round (connecting, replaying, backing up): a round
    /// in which nothing moves for a request timeout hangs on the destination.
    in_round: std::sync::atomic::AtomicBool,
    /// The progress last seen, and since when it has not changed.
    motion: Mutex<Option<(super::liveness::Signature, Instant, bool)>>,
    /// Stop flag (shared by all destinations) and this destination's counters.
    pub control: RunControl,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
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
                    full: true
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

    /// Ask for a snapshot now; the answer arrives on the returned channel.
    pub fn request(&self) -> oneshot::Receiver<BackupResult> {
        let (tx, rx) = oneshot::channel();
        let mut q = lock(&self.queue);
        for w in &mut q.sources {
            w.full = true;
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
            Phase::Idle if pending && r.failures > 0 => "retrying",
            Phase::Idle if pending => "waiting",
            phase => phase.name(),
        };
        DestinationStatus {
            name: self.config.name.clone(),
            repo: self.config.repo.clone(),
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

    /// Block until there is work to run now; `None` on shutdown.
    fn next_work(
        &self,
        schedule: &Schedule,
    ) -> Option<(Vec<SourceWork>, Vec<oneshot::Sender<BackupResult>>)> {
        let mut q = lock(&self.queue);
        loop {
            if q.shutdown {
                return None;
            }
            let now = Instant::now();
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
    fn want_retry(&self) {
        lock(&self.queue).waiting.pending = true;
    }

    /// Put back work that did not complete, merged with what arrived meanwhile.
    fn requeue(&self, left: &[SourceWork], retry_at: Option<Instant>) {
        let mut q = lock(&self.queue);
        for (w, l) in q.sources.iter_mut().zip(left) {
            w.merge(l);
        }
        if left.iter().any(|w| !w.is_empty()) {
            q.waiting.pending = true;
        }
        q.waiting.retry_at = retry_at;
    }
}

/// What every worker shares.
pub struct WorkerEnv {
    /// Runtime for I/O.
    pub rt: Runtime,
    /// Sources, with the daemon's own directories excluded.
    pub sources: Vec<SourceConfig>,
    /// Timing rules.
    pub schedule: Schedule,
    /// Recorded host name.
    pub hostname: String,
    /// Recorded user name.
    pub username: String,
    /// Threads per backup that read, compress and seal (at least), and large files read
    /// at once.
    pub cpu_threads: usize,
    /// Metadata cache root.
    pub cache_dir: PathBuf,
    /// Passphrase of destinations without their own.
    pub password: PasswordSource,
    /// Set while the watcher may miss changes: every run then compares everything.
    pub degraded: Arc<std::sync::atomic::AtomicBool>,
    /// Shares master secrets between destinations with the same passphrase.
    pub keyring: super::keyring::KeyRing,
    /// Where journals live.
    pub state_dir: PathBuf,
    /// Disk space one destination's journal may use (0: no journal).
    pub journal_limit: u64,
    /// Every configured destination's name: a journal kept under a name that is no
    /// longer configured (a destination renamed) is taken over by the destination that
    /// now holds its repository.
    pub destination_names: Vec<String>,
}

/// An open repository and its index.
struct Session {
    repo: Repository,
    ctx: BackupContext,
}

/// What the worker keeps between runs, also across reconnects.
#[derive(Default)]
struct Memory {
    /// Per source, the snapshot the next one builds on: once known, never re-chosen
    /// by host and paths (another writer with the same host name must not become the
    /// base of a pruned walk).
    parents: Option<Vec<Option<SnapshotId>>>,
    /// Per source, paths looked at on every run even without an event: files with
    /// several hard links, and paths skipped with a warning last time.
    sticky: Vec<ChangedPaths>,
    /// Per source, the parent's content (so a journaled run needs no read from the
    /// unreachable destination).
    parent_snaps: Vec<Option<(SnapshotId, crate::format::snapshot::Snapshot)>>,
    /// Journal index objects already merged into the session's index.
    journal_indexes: std::collections::HashSet<crate::hash::IndexId>,
    /// Said once per outage that the journal is full.
    journal_full_said: bool,
    /// When the retention rules were last applied.
    retention_at: Option<Instant>,
    /// When the Object Lock of everything still needed was last extended.
    locks_extended_at: Option<Instant>,
}

/// Destinations (by name) with a worker thread alive in this process, across reloads.
static RUNNING: Mutex<Vec<String>> = Mutex::new(Vec::new());
static RUNNING_CHANGED: Condvar = Condvar::new();

/// A destination's place as its one live worker: a worker a reload stopped but did not
/// wait for (a request hanging on the destination) may still finish that request, so
/// the next worker of the same destination starts only once it has exited. Workers of
/// other destinations never wait for it.
struct OnlyWorker(String);

impl OnlyWorker {
    /// Wait for the previous worker of `name` to exit; `None` if `stop` is raised first.
    fn take(name: &str, stop: &std::sync::atomic::AtomicBool) -> Option<Self> {
        let mut running = lock(&RUNNING);
        let mut said = false;
        while running.iter().any(|n| n == name) {
            if stop.load(Ordering::Relaxed) {
                return None;
            }
            if !said {
                said = true;
                tracing::warn!(destination = %name, "waiting for the previous worker of this destination to finish its request before starting");
            }
            running = RUNNING_CHANGED
                .wait_timeout(running, std::time::Duration::from_millis(500))
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        running.push(name.to_string());
        Some(OnlyWorker(name.to_string()))
    }
}

impl Drop for OnlyWorker {
    fn drop(&mut self) {
        lock(&RUNNING).retain(|n| n != &self.0);
        RUNNING_CHANGED.notify_all();
    }
}

/// The worker loop; returns on shutdown.
pub fn run(dest: Arc<Destination>, env: Arc<WorkerEnv>) {
    let name = dest.config.name.clone();
    let Some(_only) = OnlyWorker::take(&name, &dest.control.cancel) else {
        return;
    };
    let mut session: Option<Session> = None;
    let mut memory = Memory {
        sticky: vec![ChangedPaths::new(); env.sources.len()],
        parent_snaps: vec![None; env.sources.len()],
        ..Memory::default()
    };
    while let Some((mut work, requests)) = dest.next_work(&env.schedule) {
        let started = Instant::now();
        dest.in_round.store(true, Ordering::Relaxed);
        let (made, result) = run_once(&dest, &env, &mut session, &mut memory, &mut work);
        dest.in_round.store(false, Ordering::Relaxed);
        if let Some(s) = session.as_ref() {
            lock(&dest.record).skipped = s
                .repo
                .skipped()
                .list()
                .into_iter()
                .map(|(object, reason)| format!("{object}: {reason}"))
                .collect();
        }
        let fresh: Vec<_> = made.iter().filter(|(_, unchanged)| !unchanged).collect();
        if !fresh.is_empty() {
            tracing::info!(
                destination = %name,
                "snapshot {} committed in {:.1}s",
                fresh.iter().map(|(id, _)| id.short()).collect::<Vec<_>>().join(", "),
                started.elapsed().as_secs_f64()
            );
        }
        {
            let mut r = lock(&dest.record);
            r.snapshots += fresh.len() as u64;
            for _ in &fresh {
                if r.commits.len() == MAX_COMMIT_TIMES {
                    r.commits.pop_front();
                }
                r.commits.push_back(Instant::now());
            }
        }
        if result.is_ok()
            && !fresh.is_empty()
            && let (Some(policy), Some(s)) = (&dest.config.retention, session.as_ref())
            && memory
                .retention_at
                .is_none_or(|t| t.elapsed() >= env.schedule.retention_interval)
        {
            memory.retention_at = Some(Instant::now());
            match apply_retention(&s.repo, env.as_ref(), policy) {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(destination = %name, "retention: removed {n} snapshot(s)");
                    if dest.config.prune {
                        match crate::prune::prune(
                            &s.repo,
                            &env.rt,
                            &crate::prune::PruneOptions::default(),
                        ) {
                            Ok(r) => tracing::info!(
                                destination = %name,
                                "prune: {} pack(s) condemned, {} deleted ({} bytes freed)",
                                r.condemned_packs,
                                r.deleted_packs,
                                r.deleted_bytes
                            ),
                            Err(e) => tracing::warn!(destination = %name, "prune failed: {e}"),
                        }
                    }
                }
                Err(e) => tracing::warn!(destination = %name, "retention not applied: {e}"),
            }
        }
        if result.is_ok()
            && let (Some(lock), Some(s)) = (dest.config.backend.object_lock, session.as_ref())
            && memory
                .locks_extended_at
                .is_none_or(|t| t.elapsed() >= lock.period / 3)
        {
            match crate::prune::extend_locks(&s.repo, &env.rt) {
                Ok(n) => {
                    memory.locks_extended_at = Some(Instant::now());
                    tracing::info!(destination = %name, "extended the Object Lock of {n} object(s)");
                }
                Err(e) => tracing::warn!(destination = %name, "could not extend Object Locks: {e}"),
            }
        }
        let error = match result {
            Ok(()) => {
                let mut r = lock(&dest.record);
                r.failures = 0;
                r.last_error = None;
                r.last_success = Some(started);
                // Changes that arrived during the run are still to come.
                r.behind_since = None;
                drop(r);
                dest.requeue(&[], None);
                let q = lock(&dest.queue);
                let still = q.sources.iter().any(|w| !w.changes.is_empty());
                let first = q.waiting.first_change;
                drop(q);
                if still {
                    lock(&dest.record).behind_since = first;
                }
                None
            }
            Err(Error::Cancelled) => {
                tracing::info!(destination = %name, "snapshot stopped for shutdown; nothing half-written is referenced");
                dest.requeue(&work, None);
                Some("stopped before completion: the daemon is stopping or reloading".to_string())
            }
            Err(e) => {
                let mut r = lock(&dest.record);
                r.failures += 1;
                r.failed += 1;
                r.last_error = Some(e.to_string());
                let delay = retry_delay(r.failures);
                drop(r);
                tracing::error!(
                    destination = %name,
                    "snapshot failed (retrying in {}): {e}",
                    humantime::format_duration(delay)
                );
                let mut note = e.to_string();
                if e.is_unreachable() {
                    // Keep the session (its index says what the destination holds) and
                    // write the snapshot into the local journal instead.
                    match journal_once(&dest, &env, session.as_mut(), &mut memory, &mut work) {
                        Ok(0) => {}
                        Ok(n) => {
                            tracing::info!(destination = %name, "{n} snapshot(s) journaled locally, to be replayed when the destination is back");
                            note.push_str("; the snapshot is journaled locally and replayed when the destination is back");
                        }
                        Err(j) => tracing::warn!(destination = %name, "not journaled: {j}"),
                    }
                } else {
                    // A failure may leave the session's view stale: reopen next time.
                    session = None;
                }
                dest.requeue(&work, Some(Instant::now() + delay));
                if journal_of(&env, &dest).is_some_and(|j| j.size().snapshots > 0) {
                    // Come back to replay it even if nothing else changes.
                    dest.want_retry();
                }
                Some(note)
            }
        };
        for tx in requests {
            let _ = tx.send(BackupResult {
                destination: name.clone(),
                snapshots: made.iter().map(|(id, _)| id.to_hex()).collect(),
                error: error.clone(),
            });
        }
    }
    // Answer whoever still waits: no snapshot will come from this worker.
    for tx in std::mem::take(&mut lock(&dest.queue).requests) {
        let _ = tx.send(BackupResult {
            destination: name.clone(),
            snapshots: Vec::new(),
            error: Some("the daemon stopped before the snapshot was made".into()),
        });
    }
}

/// Snapshot every source with work. Each source that succeeds has its work cleared from
/// `work`, so afterwards `work` holds exactly what is left; one failing source does not
/// stop the others. Returns the snapshots made (and whether each was unchanged) and the
/// first error.
fn run_once(
    dest: &Destination,
    env: &WorkerEnv,
    session: &mut Option<Session>,
    memory: &mut Memory,
    work: &mut [SourceWork],
) -> (Vec<(SnapshotId, bool)>, Result<()>) {
    let mut made = Vec::new();
    let rt = &env.rt;
    if session.is_none() {
        match open_session(dest, env, memory) {
            Ok(s) => *session = Some(s),
            Err(e) => return (made, Err(e)),
        }
    }
    let Some(s) = session.as_mut() else {
        return (
            made,
            Err(Error::InvalidInput("no repository session".into())),
        );
    };
    // History journaled while the destination was unreachable goes in first, oldest
    // snapshot first.
    let journal =
        super::journal::Journal::new(&env.state_dir, &dest.config.name, &s.repo.config().id);
    match rt.block_on(journal.replay(&s.repo, &dest.control)) {
        Ok(None) if !memory.journal_indexes.is_empty() => {
            // The journal vanished before it was replayed (deleted by hand, or its disk
            // failed): the index must forget the blobs it held, and the parents built
            // on it are gone too.
            tracing::warn!(destination = %dest.config.name, "the journal disappeared before it was replayed; comparing everything again");
            let cache = MetadataCache::new(&env.cache_dir, &s.repo.config().id);
            s.ctx = BackupContext::new(Some(cache));
            memory.journal_indexes.clear();
            memory.parents = None;
            for p in &mut memory.parent_snaps {
                *p = None;
            }
            for w in work.iter_mut() {
                w.full = true;
            }
            *session = None;
            return (
                made,
                Err(Error::InvalidInput(
                    "the journal disappeared before it was replayed; comparing everything again"
                        .into(),
                )),
            );
        }
        Ok(None | Some(0)) => {
            memory.journal_indexes.clear();
        }
        Ok(Some(n)) => {
            tracing::info!(destination = %dest.config.name, "replayed {n} journaled snapshot(s)");
            lock(&dest.record).snapshots += n;
            memory.journal_indexes.clear();
            memory.journal_full_said = false;
        }
        Err(e) => return (made, Err(e)),
    }
    if journal.left_some_out() {
        // The parents may be snapshots that were left out: start from what the
        // destination really holds, comparing everything.
        memory.parents = None;
        for p in &mut memory.parent_snaps {
            *p = None;
        }
        for w in work.iter_mut() {
            w.full = true;
        }
        let cache = MetadataCache::new(&env.cache_dir, &s.repo.config().id);
        s.ctx = BackupContext::new(Some(cache));
    }
    if let Err(e) = rt.block_on(s.ctx.refresh(&s.repo)) {
        return (made, Err(e));
    }
    // After a prune or repair elsewhere, compare everything once: entries carried over
    // from the parent might name data that is gone.
    let degraded = env.degraded.load(Ordering::Relaxed) || s.ctx.take_rewritten();
    let parents = memory
        .parents
        .get_or_insert_with(|| vec![None; env.sources.len()]);
    let mut first_error = None;
    for (i, w) in work.iter_mut().enumerate() {
        if w.is_empty() {
            continue;
        }
        if dest.control.cancelled() {
            return (made, Err(Error::Cancelled));
        }
        let src = &env.sources[i];
        let full = w.full || degraded || parents[i].is_none();
        let mut opts = source_options(
            dest,
            env,
            i,
            w,
            &memory.sticky[i],
            &memory.parent_snaps[i],
            parents[i],
            full,
        );
        opts.max_uploads = dest.config.upload_concurrency;
        opts.trim_cache = env.sources.len() == 1;
        let report = match backup_with(&s.repo, rt, &opts, &mut s.ctx) {
            Ok(r) => r,
            Err(Error::Cancelled) => return (made, Err(Error::Cancelled)),
            Err(e) => {
                let e = if env.sources.len() > 1 && !e.is_unreachable() {
                    Error::InvalidInput(format!("source {}: {e}", src.paths[0].display()))
                } else {
                    e
                };
                tracing::warn!(destination = %dest.config.name, "{e}");
                first_error.get_or_insert(e);
                continue;
            }
        };
        for warning in report.warnings.iter().take(20) {
            tracing::warn!(destination = %dest.config.name, "{}: {}", warning.path.display(), warning.reason);
        }
        if report.warnings.len() > 20 {
            tracing::warn!(destination = %dest.config.name, "... and {} more paths not stored, or stored while changing", report.warnings.len() - 20);
        }
        let mut sticky = ChangedPaths::new();
        if !full {
            sticky.merge(&memory.sticky[i]);
        }
        for p in &report.multi_link_files {
            sticky.insert(p);
        }
        for warning in &report.warnings {
            sticky.insert(&warning.path);
        }
        memory.sticky[i] = sticky;
        parents[i] = Some(report.id);
        memory.parent_snaps[i] = Some((report.id, report.snapshot.clone()));
        {
            let mut r = lock(&dest.record);
            r.last_snapshot = Some(LastSnapshot {
                id: report.id.to_hex(),
                time: report.snapshot.time.clone(),
                completed_unix: now_unix(),
            });
            if let Some(slot) = r.warnings.get_mut(i) {
                let changing = report.warnings.iter().filter(|w| w.stored).count() as u64;
                let listed = report
                    .warnings
                    .iter()
                    .take(super::status::MAX_LISTED_WARNINGS)
                    .map(|w| format!("{}: {}", w.path.display(), w.reason))
                    .collect();
                *slot = (report.warnings.len() as u64, changing, listed);
            }
        }
        *w = SourceWork::default();
        made.push((report.id, report.unchanged));
        // The next source dedups against what other writers stored meanwhile (what
        // this one stored is in the index already); if the destination just went
        // down, the next source's own run finds out.
        if let Err(e) = rt.block_on(s.ctx.refresh(&s.repo)) {
            tracing::debug!(destination = %dest.config.name, "index refresh after a snapshot: {e}");
        }
    }
    (made, first_error.map_or(Ok(()), Err))
}

/// Apply a destination's retention rules to this host's snapshots there (grouped by
/// paths, as `forget --host` would); returns how many snapshots were removed. Only
/// snapshot objects go: the data stays until a prune.
fn apply_retention(
    repo: &Repository,
    env: &WorkerEnv,
    policy: &crate::retention::Policy,
) -> Result<u64> {
    use crate::retention::{Candidate, apply};
    let rt = &env.rt;
    let all = rt.block_on(repo.list_snapshots())?;
    let mut groups: std::collections::BTreeMap<Vec<String>, Vec<&crate::repo::SnapshotEntry>> =
        std::collections::BTreeMap::new();
    for e in all.iter().filter(|e| e.snapshot.hostname == env.hostname) {
        let mut paths = e.snapshot.paths.clone();
        paths.sort();
        groups.entry(paths).or_default().push(e);
    }
    let now = time::OffsetDateTime::now_utc();
    let mut removed = 0;
    for members in groups.values() {
        let candidates: Vec<Candidate> = members
            .iter()
            .filter_map(|e| {
                time::OffsetDateTime::parse(
                    &e.snapshot.time,
                    &time::format_description::well_known::Rfc3339,
                )
                .ok()
                .map(|time| Candidate {
                    time,
                    tags: e.snapshot.tags.clone(),
                })
            })
            .collect();
        if candidates.len() != members.len() {
            // A snapshot with an unreadable time: leave the whole group alone.
            continue;
        }
        for (e, reasons) in members.iter().zip(apply(&candidates, policy, now)) {
            if reasons.is_empty() {
                let h =
                    crate::backend::Handle::new(crate::backend::FileType::Snapshot, e.id.to_hex());
                rt.block_on(repo.backend().delete(&h))?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}

/// Backup options for source `i`, building on `parent`: a comparison of everything
/// when `full`, else of the changed and sticky paths only.
#[allow(clippy::too_many_arguments)]
fn source_options(
    dest: &Destination,
    env: &WorkerEnv,
    i: usize,
    work: &SourceWork,
    sticky: &ChangedPaths,
    remembered: &Option<(SnapshotId, crate::format::snapshot::Snapshot)>,
    parent: Option<SnapshotId>,
    full: bool,
) -> BackupOptions {
    let src = &env.sources[i];
    let mut opts = BackupOptions::new(
        src.paths.clone(),
        env.hostname.clone(),
        env.username.clone(),
        crate::host::now_rfc3339(),
    );
    opts.excludes = src.excludes.clone();
    opts.tags = src.tags.clone();
    opts.one_file_system = src.one_file_system;
    opts.guard_roots = !src.allow_root_change;
    opts.workers = env.cpu_threads;
    opts.parent = parent;
    opts.parent_snapshot = parent_content(remembered, parent);
    opts.changed = (!full).then(|| {
        let mut c = work.changes.clone();
        c.merge(sticky);
        c
    });
    opts.control = dest.control.clone();
    opts.skip_if_unchanged = true;
    opts
}

/// The remembered content of the parent, only if it is the parent's.
fn parent_content(
    remembered: &Option<(SnapshotId, crate::format::snapshot::Snapshot)>,
    parent: Option<SnapshotId>,
) -> Option<crate::format::snapshot::Snapshot> {
    match (remembered, parent) {
        (Some((id, snap)), Some(p)) if *id == p => Some(snap.clone()),
        _ => None,
    }
}

/// The journal of this destination's repository, once its identity is known.
fn journal_of(env: &WorkerEnv, dest: &Destination) -> Option<super::journal::Journal> {
    let id = lock(&dest.record).repo_id?;
    Some(super::journal::Journal::new(
        &env.state_dir,
        &dest.config.name,
        &id,
    ))
}

/// Snapshot the remaining work into the local journal, building on what the session's
/// index says the destination holds. Returns how many snapshots were journaled; each
/// journaled source's work is cleared from `work`.
fn journal_once(
    dest: &Destination,
    env: &WorkerEnv,
    session: Option<&mut Session>,
    memory: &mut Memory,
    work: &mut [SourceWork],
) -> Result<u64> {
    let Some(s) = session else {
        return Ok(0);
    };
    if env.journal_limit == 0 || work.iter().all(SourceWork::is_empty) {
        return Ok(0);
    }
    let journal =
        super::journal::Journal::new(&env.state_dir, &dest.config.name, &s.repo.config().id);
    let size = journal.size();
    if size.bytes >= env.journal_limit {
        if !memory.journal_full_said {
            memory.journal_full_said = true;
            tracing::warn!(
                destination = %dest.config.name,
                "the journal is full ({} bytes of {}): no more snapshots are journaled; the destination catches up from the source data when it is back",
                size.bytes,
                env.journal_limit
            );
        }
        return Ok(0);
    }
    let rt = &env.rt;
    let jrepo = journal.repository(&s.repo);
    let Some(parents) = memory.parents.as_mut() else {
        return Ok(0);
    };
    let mut journaled = 0;
    for (i, w) in work.iter_mut().enumerate() {
        if w.is_empty() || parents[i].is_none() {
            continue;
        }
        dest.control.check()?;
        let mut opts = source_options(
            dest,
            env,
            i,
            w,
            &memory.sticky[i],
            &memory.parent_snaps[i],
            parents[i],
            w.full,
        );
        if opts.parent_snapshot.is_none() {
            // The parent's content must come from memory: the destination is down.
            continue;
        }
        opts.max_uploads = 2;
        opts.trim_cache = false;
        // The parent may be in the destination, not the journal.
        opts.verify_parent = false;
        opts.max_upload_bytes = Some(env.journal_limit.saturating_sub(journal.size().bytes));
        let report = backup_with(&jrepo, rt, &opts, &mut s.ctx)?;
        // What the journal now holds counts as held: the journal reaches the
        // destination before anything built on it.
        for info in rt.block_on(jrepo.backend().list(crate::backend::FileType::Index))? {
            let Some(id) = crate::hash::Id::from_object_name(&info.name).map(crate::hash::IndexId)
            else {
                continue;
            };
            if memory.journal_indexes.insert(id) {
                let file = rt.block_on(jrepo.load_index_file(id))?;
                s.ctx.add_packs(&file);
            }
        }
        parents[i] = Some(report.id);
        memory.parent_snaps[i] = Some((report.id, report.snapshot.clone()));
        *w = SourceWork::default();
        if !report.unchanged {
            journaled += 1;
        }
    }
    Ok(journaled)
}

/// Seconds since the epoch.
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A destination's storage stack and its passphrase.
pub type Connection = (Arc<dyn crate::backend::Backend>, Zeroizing<Vec<u8>>);

/// A destination's storage stack and passphrase, for whoever opens its repository (the
/// worker, the scrubber).
pub fn connect(dest: &Destination, env: &WorkerEnv) -> Result<Connection> {
    let source = dest.config.password.as_ref().unwrap_or(&env.password);
    let pass = read_passphrase(source)?;
    let backend = env
        .rt
        .block_on(crate::backend::open(
            &dest.config.repo,
            &dest.config.backend,
        ))
        .map_err(|e| Error::InvalidInput(format!("destination {}: {e}", dest.config.name)))?;
    Ok((backend, pass))
}

/// Open (or on first use create) the repository; the first time, find each source's
/// latest snapshot.
fn open_session(dest: &Destination, env: &WorkerEnv, memory: &mut Memory) -> Result<Session> {
    let rt = &env.rt;
    let (backend, pass) = connect(dest, env)?;
    let name = &dest.config.name;
    let repo = match rt.block_on(read_config(backend.as_ref())) {
        Ok(config) => {
            let cache = MetadataCache::new(&env.cache_dir, &config.body.id);
            let hint = cache.key_hint();
            match rt.block_on(Repository::open_preferring(backend, config, &pass, hint)) {
                Ok(r) => {
                    if hint != Some(r.key_id()) {
                        cache.put_key_hint(r.key_id());
                    }
                    r
                }
                Err(e) => {
                    env.keyring.release(name);
                    return Err(e);
                }
            }
        }
        Err(Error::RepositoryNotFound { location }) => {
            match super::identity::reached_before(&env.state_dir, name) {
                Ok(None) => {}
                Ok(Some(id)) => {
                    env.keyring.release(name);
                    return Err(Error::DestinationMissing {
                        location,
                        id,
                        record: super::identity::record_path(&env.state_dir, name),
                    });
                }
                Err(e) => {
                    env.keyring.release(name);
                    return Err(e);
                }
            }
            let base = InitOptions::new(
                crate::host::now_rfc3339(),
                env.hostname.clone(),
                env.username.clone(),
            );
            let Some(plan) =
                env.keyring
                    .plan(name, base, Duration::from_secs(60), &dest.control.cancel)
            else {
                env.keyring.release(name);
                return Err(Error::Cancelled);
            };
            let shared = matches!(plan, super::keyring::Plan::Share(_));
            let (super::keyring::Plan::Share(opts) | super::keyring::Plan::Fresh(opts)) = plan;
            match rt.block_on(init(backend, &pass, &opts)) {
                Ok(repo) => {
                    let note = format!(
                        "created a new repository at {location} (id {}){}",
                        repo.config().id.to_hex(),
                        if shared {
                            " on the keys of another destination with the same passphrase (the copies can heal each other)"
                        } else {
                            ""
                        }
                    );
                    tracing::warn!(destination = %name, "{note}");
                    lock(&dest.record).notice = Some(note);
                    repo
                }
                Err(e) => {
                    env.keyring.release(name);
                    return Err(e);
                }
            }
        }
        Err(e) => {
            env.keyring.release(name);
            return Err(e);
        }
    };
    let id = repo.config().id;
    if let Err(other) = env.keyring.claim(name, id) {
        env.keyring.release(name);
        return Err(Error::InvalidInput(format!(
            "destination {name:?} is the same repository as destination {other:?} (id {}): list it once in the configuration, or point each at its own location",
            id.to_hex()
        )));
    }
    let remembered = super::identity::recorded(&env.state_dir, name).and_then(|known| {
        match known {
            Some(known) if known == id => Ok(()),
            known => {
                if let Some(old) = known {
                    tracing::warn!(
                        destination = %name,
                        "the destination now holds repository {} instead of {} (a different disk or bucket); backing up into it",
                        id.to_hex(),
                        old.to_hex()
                    );
                }
                super::identity::record(&env.state_dir, name, &id)
            }
        }
    });
    if let Err(e) = remembered {
        env.keyring.release(name);
        return Err(e);
    }
    env.keyring.register(name, &repo);
    lock(&dest.record).repo_id = Some(id);
    match super::journal::Journal::adopt(&env.state_dir, name, &id, &env.destination_names) {
        Ok(Some(from)) => tracing::warn!(
            destination = %name,
            "took over the journal kept under the former name {from:?} for this repository: it is replayed here"
        ),
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(
                destination = %name,
                "a journal of this repository under a former name (in {}) could not be taken over: {e}; move its folder {} to journal/{name}/ by hand",
                env.state_dir.join("journal").display(),
                id.to_hex()
            )
        }
    }
    let cache = MetadataCache::new(&env.cache_dir, &repo.config().id);
    let mut ctx = BackupContext::new(Some(cache));
    rt.block_on(ctx.refresh(&repo))?;
    if memory.parents.is_some() {
        return Ok(Session { repo, ctx });
    }
    let snapshots = rt.block_on(repo.list_snapshots())?;
    let mut parents = Vec::new();
    let mut snaps = Vec::new();
    let mut latest: Option<LastSnapshot> = None;
    for src in &env.sources {
        let paths: Vec<String> = snapshot_paths(&src.paths)?
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        let found = snapshots
            .iter()
            .rev()
            .find(|e| e.snapshot.hostname == env.hostname && e.snapshot.paths == paths);
        if let Some(e) = found
            && latest.as_ref().is_none_or(|l| l.time < e.snapshot.time)
        {
            latest = Some(LastSnapshot {
                id: e.id.to_hex(),
                time: e.snapshot.time.clone(),
                completed_unix: crate::host::rfc3339_to_unix(&e.snapshot.time).unwrap_or(0),
            });
        }
        parents.push(found.map(|e| e.id));
        snaps.push(found.map(|e| (e.id, e.snapshot.clone())));
    }
    let mut r = lock(&dest.record);
    if r.last_snapshot.is_none() {
        r.last_snapshot = latest;
    }
    memory.parents = Some(parents);
    memory.parent_snaps = snaps;
    Ok(Session { repo, ctx })
}

/// The passphrase from its configured source.
pub fn read_passphrase(source: &PasswordSource) -> Result<Zeroizing<Vec<u8>>> {
    match source {
        PasswordSource::File(p) => crate::secret::read_secret_file(p, "password_file"),
        PasswordSource::Credential(name) => {
            let dir = std::env::var_os("CREDENTIALS_DIRECTORY").ok_or_else(|| {
                Error::InvalidInput(format!(
                    "password_credential = {name:?} but no systemd credentials are available (CREDENTIALS_DIRECTORY is unset): add `LoadCredential={name}:/etc/cairn/passphrase` to the unit, or use password_file"
                ))
            })?;
            crate::secret::read_secret_file(&Path::new(&dir).join(name), "systemd credential")
        }
        PasswordSource::Environment => {
            if let Some(f) = std::env::var_os("CAIRN_PASSWORD_FILE").filter(|v| !v.is_empty()) {
                return crate::secret::read_secret_file(Path::new(&f), "CAIRN_PASSWORD_FILE");
            }
            if let Some(p) = std::env::var_os("CAIRN_PASSWORD").filter(|v| !v.is_empty()) {
                use std::os::unix::ffi::OsStringExt;
                return Ok(Zeroizing::new(p.into_vec()));
            }
            Err(Error::InvalidInput(
                "no passphrase configured: set password_file (or password_credential) in the configuration, or CAIRN_PASSWORD_FILE in the daemon's environment".into(),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    #[test]
    fn a_destination_has_one_live_worker_and_others_do_not_wait() {
        let stop = AtomicBool::new(false);
        let first = OnlyWorker::take("unit-a", &stop).expect("first");
        // Another destination starts at once.
        let other = OnlyWorker::take("unit-b", &stop).expect("other");
        // The same destination waits for the first to exit.
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let stop = AtomicBool::new(false);
            let second = OnlyWorker::take("unit-a", &stop);
            let _ = tx.send(());
            second.is_some()
        });
        assert!(
            rx.recv_timeout(std::time::Duration::from_millis(700))
                .is_err(),
            "the second worker started while the first was alive"
        );
        drop(first);
        rx.recv_timeout(std::time::Duration::from_secs(5))
            .expect("the second worker starts once the first exits");
        assert!(waiter.join().expect("join"));
        drop(other);
        // A stop ends the wait without a place.
        let held = OnlyWorker::take("unit-c", &stop).expect("held");
        let stopped = AtomicBool::new(true);
        assert!(OnlyWorker::take("unit-c", &stopped).is_none());
        drop(held);
    }
}
