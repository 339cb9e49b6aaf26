//! One destination's worker: a thread that waits for pending changes to settle, then
//! snapshots every source with changes into its repository. Each destination has its
//! own worker, queue, retry state and repository session, so one that is slow, down or
//! rejecting never holds up the others. Work that fails stays queued (merged with what
//! arrives meanwhile) and is retried with backoff.

use super::alerts::RoundEnd;
use super::control::{BackupResult, SnapshotOutcome};
use super::destination::{Destination, MAX_COMMIT_TIMES, lock};
use super::env::WorkerEnv;
use super::round::{journal_of, journal_once, run_once};
use super::schedule::retry_delay;
use super::session::{Memory, Session};
use crate::changes::ChangedPaths;
use crate::error::{Error, Result};
use crate::repo::Repository;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

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
    loop {
        let mut probe = || answers(&dest, &env);
        let Some((mut work, requests)) = dest.next_work(&env.schedule, &mut probe) else {
            break;
        };
        let started = Instant::now();
        // A round that only replays the journal or retries nothing is no snapshot.
        if work.iter().any(|w| !w.is_empty()) {
            env.alerts.round_started(&name);
        }
        dest.in_round.store(true, Ordering::Relaxed);
        let before = lock(&dest.record).snapshots;
        let (made, result) = run_once(&dest, &env, &mut session, &mut memory, &mut work);
        let replayed = lock(&dest.record).snapshots.saturating_sub(before);
        dest.in_round.store(false, Ordering::Relaxed);
        for (i, delay) in memory.command_retries.drain(..) {
            let d = dest.clone();
            env.rt.spawn(async move {
                tokio::time::sleep(delay).await;
                d.command_due(i);
            });
        }
        // A source's command or hook that failed says nothing of the destination:
        // retention and Object Lock upkeep go on.
        let destination_ok = matches!(&result, Ok(()) | Err(Error::SourceFailed(_)));
        if let Some(s) = session.as_ref() {
            lock(&dest.record).skipped = s
                .repo
                .skipped()
                .list()
                .into_iter()
                .map(|(object, reason)| format!("{object}: {reason}"))
                .collect();
        }
        let fresh: Vec<_> = made.iter().filter(|m| !m.unchanged).collect();
        if !fresh.is_empty() {
            tracing::info!(
                destination = %name,
                "snapshot {} committed in {:.1}s",
                fresh.iter().map(|m| m.id.short()).collect::<Vec<_>>().join(", "),
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
        if destination_ok
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
        if destination_ok
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
        if !matches!(result, Err(Error::Cancelled)) {
            let end = RoundEnd {
                saved: made
                    .iter()
                    .filter_map(|m| {
                        let s = env.sources.get(m.source)?;
                        Some((s.label(), m.id.to_hex(), m.unchanged))
                    })
                    .collect(),
                replayed,
                latest: lock(&dest.record)
                    .last_snapshot
                    .as_ref()
                    .map(|l| l.id.clone()),
                failed: result
                    .as_ref()
                    .err()
                    .map(|e| (e.to_string(), matches!(e, Error::SourceFailed(_)))),
            };
            env.alerts.round_ended(&name, &end);
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
                } else if !matches!(e, Error::SourceFailed(_)) {
                    // A failure may leave the session's view stale: reopen next time. A
                    // source's command or hook failing says nothing of the repository.
                    session = None;
                }
                dest.requeue(&work, Some(Instant::now() + delay));
                // Probed only when no connection could be made: a server that answers
                // (5xx, SlowDown) or a disk that is not there would pass a probe and
                // cut the backoff short.
                if matches!(&e, Error::Backend(b) if b.is_transport_failure()) {
                    dest.probe_soon();
                }
                if journal_of(&env, &dest).is_some_and(|j| j.size().snapshots > 0) {
                    // Come back to replay it even if nothing else changes.
                    dest.want_retry();
                }
                Some(note)
            }
        };
        let outcomes: Vec<SnapshotOutcome> = made
            .iter()
            .map(|m| SnapshotOutcome {
                id: m.id.to_hex(),
                paths: env.sources.get(m.source).map_or_else(Vec::new, |s| {
                    if s.command.is_some() {
                        return vec![s.label()];
                    }
                    s.paths.iter().map(|p| p.display().to_string()).collect()
                }),
                unchanged: m.unchanged,
            })
            .collect();
        for tx in requests {
            let _ = tx.send(BackupResult {
                destination: name.clone(),
                snapshots: made.iter().map(|m| m.id.to_hex()).collect(),
                error: error.clone(),
                outcomes: outcomes.clone(),
            });
        }
    }
    // Answer whoever still waits: no snapshot will come from this worker.
    for tx in std::mem::take(&mut lock(&dest.queue).requests) {
        let _ = tx.send(BackupResult {
            destination: name.clone(),
            snapshots: Vec::new(),
            error: Some("the daemon stopped before the snapshot was made".into()),
            outcomes: Vec::new(),
        });
    }
}

/// How long a probe of a destination that could not be reached may take.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Whether the destination answers again: one small request (the config object's
/// metadata; "not found" is an answer too), through a storage stack of its own that
/// makes one attempt, not the retries of the destination's own.
fn answers(dest: &Destination, env: &WorkerEnv) -> bool {
    let ask = async {
        let mut opts = dest.config.backend.clone();
        opts.attempts = 1;
        opts.timeout = opts.timeout.min(PROBE_TIMEOUT);
        let backend = crate::backend::open_location(&dest.config.location, &opts)
            .await
            .ok()?;
        match backend.stat(&crate::backend::Handle::config()).await {
            Ok(_) => Some(()),
            Err(e) if e.is_not_found() => Some(()),
            Err(e) => {
                tracing::debug!(destination = %dest.config.name, "probe: {e}");
                None
            }
        }
    };
    // The timer is made inside the runtime, which it needs.
    let asked = env
        .rt
        .block_on(async { tokio::time::timeout(PROBE_TIMEOUT, ask).await });
    matches!(asked, Ok(Some(())))
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
