//! One round of a destination's worker: snapshot every source with work into the
//! repository, or, while the destination cannot be reached, into its local journal.

use super::destination::{Destination, SourceWork, lock};
use super::env::WorkerEnv;
use super::session::{Memory, Session, open_session};
use super::source_run::{Snapshotted, for_source, snapshot_source};
use super::status::LastSnapshot;
use crate::backup::{BackupContext, BackupOptions, backup_with};
use crate::cache::MetadataCache;
use crate::changes::ChangedPaths;
use crate::error::{Error, Result};
use crate::hash::SnapshotId;
use crate::host::now_unix;
use std::sync::atomic::Ordering;

/// A snapshot a round answered with, for the log, the counts and `backup --now`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Made {
    /// The snapshot: a new one, or the existing one that already holds the source.
    pub(super) id: SnapshotId,
    /// Nothing changed since the existing snapshot `id`; no new one was written.
    pub(super) unchanged: bool,
    /// Which source (index into the configuration's sources).
    pub(super) source: usize,
}

/// Snapshot every source with work. Each source that succeeds has its work cleared from
/// `work`, so afterwards `work` holds exactly what is left; one failing source does not
/// stop the others. Returns the snapshots made (and whether each was unchanged) and the
/// first error.
pub(super) fn run_once(
    dest: &Destination,
    env: &WorkerEnv,
    session: &mut Option<Session>,
    memory: &mut Memory,
    work: &mut [SourceWork],
) -> (Vec<Made>, Result<()>) {
    let mut made = Vec::new();
    let rt = &env.rt;
    if session.is_none() {
        match open_session(dest, env, memory) {
            Ok(s) => *session = Some(s),
            Err(e) => return (made, Err(e)),
        }
    }
    let Some(s) = session.as_mut() else {
        return (made, Err(Error::Internal("no repository session".into())));
    };
    // History journaled while the destination was unreachable goes in first, oldest
    // snapshot first.
    let journal =
        super::journal::Journal::new(&env.state_dir, &dest.config.name, &s.repo.config().id);
    let waiting = journal.size();
    if waiting.snapshots > 0 {
        tracing::info!(
            destination = %dest.config.name,
            "catching up: replaying {} journaled snapshot(s) ({} bytes)",
            waiting.snapshots,
            waiting.bytes
        );
    }
    let cache = MetadataCache::new(&env.cache_dir, &s.repo.config().id);
    let replay = journal.replay(&s.repo, Some(&cache), &dest.control, &dest.config.name);
    match rt.block_on(replay) {
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
        Ok(None) => {
            memory.journal_indexes.clear();
        }
        Ok(Some(done)) if done.snapshots == 0 => {
            memory.journal_indexes.clear();
        }
        Ok(Some(done)) => {
            let n = done.snapshots;
            tracing::info!(destination = %dest.config.name, "replayed {n} journaled snapshot(s); caught up");
            let mut r = lock(&dest.record);
            r.snapshots += n;
            if let Some((id, time)) = done.latest {
                // The destination's newest snapshot is the newest replayed one (until the
                // round's own snapshot, if it makes one).
                r.last_snapshot = Some(LastSnapshot {
                    id: id.to_hex(),
                    time,
                    completed_unix: now_unix(),
                });
            }
            drop(r);
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
        if src.command.is_some() && !w.due {
            // A rescan or a file event does not run a command; its interval does.
            *w = SourceWork::default();
            continue;
        }
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
        let Snapshotted {
            report,
            after_failed,
        } = match snapshot_source(dest, env, s, i, &opts) {
            Ok(r) => r,
            Err(Error::Cancelled) => return (made, Err(Error::Cancelled)),
            Err(e) => {
                let e = for_source(e, src, env.sources.len() > 1);
                match &src.command {
                    // A command that failed runs again on a backoff of its own; the
                    // destination is fine (an unreachable one keeps the work queued).
                    Some(c) if !e.is_unreachable() => {
                        let n = memory.command_failures.entry(i).or_insert(0);
                        *n += 1;
                        let delay = super::schedule::command_retry_delay(*n, c.every);
                        memory.command_retries.push((i, delay));
                        *w = SourceWork::default();
                        tracing::warn!(destination = %dest.config.name, "{e} (runs again in {})", humantime::format_duration(delay));
                    }
                    _ => tracing::warn!(destination = %dest.config.name, "{e}"),
                }
                first_error.get_or_insert(e);
                continue;
            }
        };
        memory.command_failures.remove(&i);
        if let Some(e) = after_failed {
            let e = for_source(e, src, true);
            tracing::warn!(destination = %dest.config.name, "snapshot {} saved, but {e}", report.id.short());
            first_error.get_or_insert(e);
        }
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
        made.push(Made {
            id: report.id,
            unchanged: report.unchanged,
            source: i,
        });
        // The next source dedups against what other writers stored meanwhile (what
        // this one stored is in the index already); if the destination just went
        // down, the next source's own run finds out.
        if let Err(e) = rt.block_on(s.ctx.refresh(&s.repo)) {
            tracing::debug!(destination = %dest.config.name, "index refresh after a snapshot: {e}");
        }
    }
    (made, first_error.map_or(Ok(()), Err))
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
    // The journal's too: its packs go to the destination as they are.
    opts.compression = dest.config.compression;
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
pub(super) fn journal_of(env: &WorkerEnv, dest: &Destination) -> Option<super::journal::Journal> {
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
pub(super) fn journal_once(
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
            let message = format!(
                "the journal of {} is full ({} bytes of {}): no more snapshots are journaled; the destination catches up from the source data when it is back",
                dest.config.name, size.bytes, env.journal_limit
            );
            tracing::warn!(destination = %dest.config.name, "{message}");
            env.alerts.journal_full(&dest.config.name, message);
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
        // A command's output is not journaled: it runs again when the destination is back.
        if w.is_empty() || parents[i].is_none() || env.sources[i].command.is_some() {
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
