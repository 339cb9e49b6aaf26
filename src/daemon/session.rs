//! Connecting to a destination and opening its repository: the storage stack and the
//! passphrase, then open (or on first use create) the repository, record which
//! repository the destination holds, take over a journal kept under a former name, and
//! the first time find each source's latest snapshot.

use super::destination::{Destination, lock};
use super::env::WorkerEnv;
use super::status::LastSnapshot;
use crate::backup::{BackupContext, snapshot_paths};
use crate::cache::MetadataCache;
use crate::changes::ChangedPaths;
use crate::error::{Error, Result};
use crate::hash::SnapshotId;
use crate::repo::{InitOptions, Repository, init, read_config};
use std::sync::Arc;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// An open repository and its index.
pub(super) struct Session {
    pub(super) repo: Repository,
    pub(super) ctx: BackupContext,
}

/// What the worker keeps between runs, also across reconnects.
#[derive(Default)]
pub(super) struct Memory {
    /// Per source, the snapshot the next one builds on: once known, never re-chosen
    /// by host and paths (another writer with the same host name must not become the
    /// base of a pruned walk).
    pub(super) parents: Option<Vec<Option<SnapshotId>>>,
    /// Per source, paths looked at on every run even without an event: files with
    /// several hard links, and paths skipped with a warning last time.
    pub(super) sticky: Vec<ChangedPaths>,
    /// Per source, the parent's content (so a journaled run needs no read from the
    /// unreachable destination).
    pub(super) parent_snaps: Vec<Option<(SnapshotId, crate::format::snapshot::Snapshot)>>,
    /// Journal index objects already merged into the session's index.
    pub(super) journal_indexes: std::collections::HashSet<crate::hash::IndexId>,
    /// Said once per outage that the journal is full.
    pub(super) journal_full_said: bool,
    /// When the retention rules were last applied.
    pub(super) retention_at: Option<Instant>,
    /// When the Object Lock of everything still needed was last extended.
    pub(super) locks_extended_at: Option<Instant>,
    /// Per command source (by index), failures in a row: its next try waits a backoff of
    /// its own, never longer than its interval, not the destination's 30 s.
    pub(super) command_failures: std::collections::HashMap<usize, u32>,
    /// Command sources that failed in the last round, and when each runs again.
    pub(super) command_retries: Vec<(usize, std::time::Duration)>,
}

/// A destination's storage stack and its passphrase, ready to open its repository.
pub struct Connection {
    /// The storage stack for the destination's location.
    pub backend: Arc<dyn crate::backend::Backend>,
    /// The passphrase, read from its source just now.
    pub passphrase: Zeroizing<Vec<u8>>,
}

/// Connect to a destination, for whoever opens its repository (the worker, the
/// scrubber).
pub fn connect(dest: &Destination, env: &WorkerEnv) -> Result<Connection> {
    let source = dest.config.password.as_ref().unwrap_or(&env.password);
    let passphrase = source.read()?;
    let backend = env
        .rt
        .block_on(crate::backend::open_location(
            &dest.config.location,
            &dest.config.backend,
        ))
        .map_err(|e| Error::InvalidInput(format!("destination {}: {e}", dest.config.name)))?;
    Ok(Connection {
        backend,
        passphrase,
    })
}

/// Open (or on first use create) the repository; the first time, find each source's
/// latest snapshot.
pub(super) fn open_session(
    dest: &Destination,
    env: &WorkerEnv,
    memory: &mut Memory,
) -> Result<Session> {
    let rt = &env.rt;
    let Connection {
        backend,
        passphrase: pass,
    } = connect(dest, env)?;
    let name = &dest.config.name;
    // Dropped on every early return below: siblings waiting on this attempt go on.
    let attempt = env.keyring.attempt(name);
    let repo = match rt.block_on(read_config(backend.as_ref())) {
        Ok(config) => {
            let cache = MetadataCache::new(&env.cache_dir, &config.body.id);
            let hint = cache.key_hint();
            let r = rt.block_on(Repository::open_preferring(backend, config, &pass, hint))?;
            if hint != Some(r.key_id()) {
                cache.put_key_hint(r.key_id());
            }
            r
        }
        Err(Error::RepositoryNotFound { location }) => {
            if let Some(id) = super::identity::reached_before(&env.state_dir, name)? {
                return Err(Error::DestinationMissing {
                    location,
                    id,
                    record: super::identity::record_path(&env.state_dir, name),
                });
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
                return Err(Error::Cancelled);
            };
            let shared = matches!(plan, super::keyring::Plan::Share(_));
            let (super::keyring::Plan::Share(opts) | super::keyring::Plan::Fresh(opts)) = plan;
            let repo = rt.block_on(init(backend, &pass, &opts))?;
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
        Err(e) => return Err(e),
    };
    let id = repo.config().id;
    if let Err(other) = env.keyring.claim(name, id) {
        return Err(Error::InvalidInput(format!(
            "destination {name:?} is the same repository as destination {other:?} (id {}): list it once in the configuration, or point each at its own location",
            id.to_hex()
        )));
    }
    super::identity::recorded(&env.state_dir, name).and_then(|known| {
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
    })?;
    attempt.register(&repo);
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
        let paths: Vec<String> = match &src.command {
            Some(_) => vec![src.label()],
            None => snapshot_paths(&src.paths)?
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect(),
        };
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
