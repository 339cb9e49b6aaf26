//! What `cairn config check` checks beyond the file itself: that each passphrase can be
//! read, that the sources exist, that a local destination's folder can be created, and,
//! unless told to stay offline, that every destination answers as the daemon will need
//! it to: credentials, bucket and region (a listing), permission to put, get and delete
//! (a small probe object written, read back and removed), the repository (its `config`
//! read, its id compared with the one the daemon's state remembers) and the passphrase
//! (the repository opened). Destinations are contacted in parallel, each within
//! [`DESTINATION_TIMEOUT`], so one that hangs costs one timeout, not one per request.
//!
//! Nothing here changes a repository: the probe object is the only write, under a name
//! no reader takes for a key (`keys/.cairn-config-check-<random>`), and it is deleted
//! again; with Object Lock on, where it could not be, no probe is written.

use super::config::{DaemonConfig, DestinationConfig, PasswordSource};
use crate::backend::{Backend, FileType, Handle, Location, open_location};
use crate::error::Error;
use bytes::Bytes;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Longest one destination's whole check may take (connecting is capped at 10 s by the
/// S3 client's connect timeout): past it, the destination is reported as not answering.
pub const DESTINATION_TIMEOUT: Duration = Duration::from_secs(45);

/// Longest one request of the check may take: a check should answer in seconds, not
/// wait out the daemon's own (longer) request timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// How serious a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// The daemon would fail (or do the wrong thing): `config check` exits non-zero.
    Problem,
    /// Worth knowing, but the daemon can run (and retries).
    Warning,
}

/// One thing the check found, with the fix in its message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// How serious.
    pub level: Level,
    /// The destination it concerns, if one.
    pub destination: Option<String>,
    /// What is wrong and what to do.
    pub message: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.destination {
            Some(d) => write!(f, "destination {d:?}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// What contacting one destination found: its findings, and a line for the summary
/// saying what was reached (the repository's id, whether the passphrase opened it).
#[derive(Clone, Debug)]
pub struct Contact {
    /// The destination's name.
    pub destination: String,
    /// What went wrong, if anything.
    pub findings: Vec<Finding>,
    /// What was reached, for the summary (empty when nothing was).
    pub reached: String,
}

impl Contact {
    fn problem(&mut self, message: String) {
        self.findings.push(Finding {
            level: Level::Problem,
            destination: Some(self.destination.clone()),
            message,
        });
    }

    fn warning(&mut self, message: String) {
        self.findings.push(Finding {
            level: Level::Warning,
            destination: Some(self.destination.clone()),
            message,
        });
    }
}

/// The checks that need no network: passphrases, sources, local destinations' folders.
/// Offline, a local destination's missing parent is only a warning (the disk may be
/// mounted by the time the daemon runs); otherwise it is a problem.
pub fn local_checks(cfg: &DaemonConfig, offline: bool) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut sources = vec![(None, &cfg.password)];
    for d in &cfg.destinations {
        if let Some(p) = &d.password {
            sources.push((Some(d.name.clone()), p));
        }
    }
    for (destination, source) in sources {
        if let Err(e) = source.read() {
            out.push(Finding {
                // A credential exists only inside the service: outside it, a warning.
                level: match source {
                    PasswordSource::Credential(_) => Level::Warning,
                    _ => Level::Problem,
                },
                destination,
                message: e.to_string(),
            });
        }
    }
    for s in &cfg.sources {
        for p in &s.paths {
            let message = match std::fs::symlink_metadata(p) {
                Err(_) => format!(
                    "source path {} does not exist (yet): its source's snapshots fail (and are retried) until it does",
                    p.display()
                ),
                Ok(m) if m.file_type().is_symlink() => format!(
                    "source path {} is a symbolic link: the link is stored, not what it points to; name the target instead",
                    p.display()
                ),
                Ok(_) => continue,
            };
            out.push(Finding {
                level: Level::Warning,
                destination: None,
                message,
            });
        }
    }
    out.extend(stale_between_snapshots(cfg));
    for d in &cfg.destinations {
        if let Location::Local(dir) = &d.location
            && let Some(message) = missing_parent(dir)
        {
            out.push(Finding {
                level: if offline {
                    Level::Warning
                } else {
                    Level::Problem
                },
                destination: Some(d.name.clone()),
                message,
            });
        }
    }
    out
}

/// Sources snapshotted less often than `[alerts] stale_after`: each would be reported
/// stale between two of its snapshots (a watched source is confirmed at least every
/// `rescan_interval`, a command source every `every`).
fn stale_between_snapshots(cfg: &DaemonConfig) -> Vec<Finding> {
    let stale = cfg.alerts.stale_after;
    cfg.sources
        .iter()
        .filter_map(|s| {
            let (every, key) = match &s.command {
                Some(c) => (c.every, "its `every`"),
                None => (cfg.schedule.rescan_interval, "`schedule.rescan_interval`"),
            };
            (every >= stale).then(|| Finding {
                level: Level::Warning,
                destination: None,
                message: format!(
                    "source {} is snapshotted every {} ({key}), not more often than `alerts.stale_after` = {}: it would be reported stale between snapshots; make stale_after longer",
                    s.label(),
                    humantime::format_duration(every),
                    humantime::format_duration(stale)
                ),
            })
        })
        .collect()
}

/// The `ReadWritePaths=` line the systemd unit needs for a local destination: the unit
/// sees the file system read-only except where it says.
pub fn read_write_paths(dir: &Path) -> String {
    format!("ReadWritePaths={}", dir.display())
}

/// Why a local repository folder cannot be created, if it cannot: its parent is missing
/// (a disk not mounted, a typo), with the commands that fix it.
fn missing_parent(dir: &Path) -> Option<String> {
    if dir.exists() {
        return None;
    }
    let parent = dir.parent()?;
    if parent.is_dir() {
        return None;
    }
    Some(format!(
        "{} cannot be created: its parent folder {} does not exist. Mount the backup disk there, or run `mkdir -p -m 700 {}`; under systemd the unit must also be allowed to write there: `systemctl edit cairn` and add [Service] {}",
        dir.display(),
        parent.display(),
        dir.display(),
        read_write_paths(dir)
    ))
}

/// Contact every destination at once; one [`Contact`] per destination, in the
/// configuration's order.
pub async fn contact_all(cfg: &DaemonConfig) -> Vec<Contact> {
    let checks = cfg.destinations.iter().map(|d| async move {
        match tokio::time::timeout(DESTINATION_TIMEOUT, contact(cfg, d)).await {
            Ok(c) => c,
            Err(_) => {
                let mut c = Contact {
                    destination: d.name.clone(),
                    findings: Vec::new(),
                    reached: String::new(),
                };
                c.problem(format!(
                    "no answer from {} within {} s: check that the address and port are right and reachable from this machine (firewall, VPN), and that the server is up",
                    d.location,
                    DESTINATION_TIMEOUT.as_secs()
                ));
                c
            }
        }
    });
    futures_util::future::join_all(checks).await
}

/// Contact one destination, step by step; a step that fails ends the check of this
/// destination (what follows would fail for the same reason).
async fn contact(cfg: &DaemonConfig, d: &DestinationConfig) -> Contact {
    let mut c = Contact {
        destination: d.name.clone(),
        findings: Vec::new(),
        reached: String::new(),
    };
    if let Location::Local(dir) = &d.location
        && !dir.exists()
    {
        // Its parent was judged by `local_checks`.
        if let Some(seen) = seen(&mut c, cfg, d) {
            no_repository(
                &mut c,
                cfg,
                d,
                seen,
                &d.location.to_string(),
                "not created yet: the daemon creates the repository at its first start",
            );
        }
        return c;
    }
    let mut opts = d.backend.clone();
    opts.attempts = opts.attempts.min(2);
    opts.timeout = opts.timeout.min(REQUEST_TIMEOUT);
    opts.upload_limit = None;
    opts.download_limit = None;
    let backend = match open_location(&d.location, &opts).await {
        Ok(b) => b,
        Err(e) => {
            c.problem(format!("cannot set up its storage: {e}"));
            return c;
        }
    };
    if let Err(e) = backend.list(FileType::Key).await {
        c.problem(format!(
            "cannot list its keys: {e} (the daemon needs to list, read and write objects there)"
        ));
        return c;
    }
    match &d.location {
        Location::Local(dir) => probe_local(&mut c, dir),
        Location::S3(_) if d.backend.object_lock.is_some() => {}
        Location::S3(_) => probe_object(&mut c, backend.as_ref(), d.prune).await,
    }
    if c.findings.iter().any(|f| f.level == Level::Problem) {
        return c;
    }
    repository(&mut c, cfg, d, backend).await;
    c
}

/// Write, read back and delete a probe object: the permissions a backup (put, get) and a
/// prune (delete) need. A refused delete matters only where this destination prunes.
async fn probe_object(c: &mut Contact, backend: &dyn Backend, prunes: bool) {
    let mut random = [0u8; 8];
    if crate::crypto::random_bytes(&mut random).is_err() {
        return;
    }
    // A dot-name: listings pass over it, so one left behind is never taken for a key.
    let name = format!(".cairn-config-check-{}", hex::encode(random));
    let handle = Handle::new(FileType::Key, name);
    let body = Bytes::from_static(b"written by cairn config check; safe to delete\n");
    if let Err(e) = backend.put(&handle, body.clone()).await {
        c.problem(format!(
            "cannot write objects: {e} (the daemon's key needs permission to put objects)"
        ));
        return;
    }
    match backend.get(&handle).await {
        Ok(b) if b == body => {}
        Ok(_) => c.problem(format!(
            "the object {handle} read back differs from what was written: the server or a proxy in between changes data"
        )),
        Err(e) => c.problem(format!(
            "cannot read back the object it wrote: {e} (the daemon's key needs permission to get objects)"
        )),
    }
    if let Err(e) = backend.delete(&handle).await {
        let message = format!(
            "cannot delete objects: {e}; the probe object {handle} stays (harmless: cairn passes it over; remove it by hand when you can)"
        );
        if prunes {
            c.problem(format!(
                "{message}. Its retention has prune = true, which needs permission to delete objects: grant it, or remove prune and run `cairn prune` from a more privileged place"
            ));
        } else {
            c.warning(format!(
                "{message} (only prune deletes objects, and this destination does not prune)"
            ));
        }
    }
}

/// A local repository folder: can this user create files in it?
fn probe_local(c: &mut Contact, dir: &Path) {
    let mut random = [0u8; 8];
    if crate::crypto::random_bytes(&mut random).is_err() {
        return;
    }
    let probe = dir.join(format!(".cairn-config-check-{}", hex::encode(random)));
    match std::fs::write(&probe, b"cairn config check\n") {
        Ok(()) => {
            let _ = std::fs::remove_file(&probe);
        }
        Err(e) => c.problem(format!(
            "cannot write into {}: {e}; run the check as the user the daemon runs as (root for the service), and under systemd allow it with `systemctl edit cairn`: [Service] {}",
            dir.display(),
            read_write_paths(dir)
        )),
    }
}

/// The repository id the daemon's state remembers for `d` (`Some(None)`: never reached),
/// or `None` when the record cannot be read, reported as a problem.
fn seen(c: &mut Contact, cfg: &DaemonConfig, d: &DestinationConfig) -> Option<Option<String>> {
    match super::identity::reached_before(&cfg.state_dir, &d.name) {
        Ok(seen) => Some(seen),
        Err(e) => {
            c.problem(e.to_string());
            None
        }
    }
}

/// What the check says of a destination that holds no repository: the daemon creates
/// one there (`yet`), unless it reached one before, when it refuses with
/// [`Error::DestinationMissing`] and the check says the same words.
fn no_repository(
    c: &mut Contact,
    cfg: &DaemonConfig,
    d: &DestinationConfig,
    seen: Option<String>,
    location: &str,
    yet: &str,
) {
    match seen {
        Some(id) => c.problem(
            Error::DestinationMissing {
                location: location.to_string(),
                id,
                record: super::identity::record_path(&cfg.state_dir, &d.name),
            }
            .to_string(),
        ),
        None => c.reached = yet.to_string(),
    }
}

/// The repository there: present (or to be created), the one the daemon's state
/// remembers, and opened by its passphrase.
async fn repository(
    c: &mut Contact,
    cfg: &DaemonConfig,
    d: &DestinationConfig,
    backend: Arc<dyn Backend>,
) {
    let Some(seen) = seen(c, cfg, d) else {
        return;
    };
    let config = match crate::repo::read_config(backend.as_ref()).await {
        Ok(config) => config,
        Err(Error::RepositoryNotFound { location }) => {
            no_repository(
                c,
                cfg,
                d,
                seen,
                &location,
                "reached; no repository yet: the daemon creates it at its first start",
            );
            return;
        }
        Err(e) => {
            c.problem(format!("cannot read its repository: {e}"));
            return;
        }
    };
    let id = config.body.id.to_hex();
    if let Some(known) = &seen
        && *known != id
    {
        c.problem(format!(
            "it holds repository {id}, but the daemon's state remembers repository {known} there: a different disk or bucket. Correct `repo`, or, if the change is meant, delete {}",
            super::identity::record_path(&cfg.state_dir, &d.name).display()
        ));
        return;
    }
    let source = d.password.as_ref().unwrap_or(&cfg.password);
    let Ok(pass) = source.read() else {
        // Reported by the local checks.
        c.reached = format!("reached repository {id}; passphrase not tried");
        return;
    };
    match crate::repo::Repository::open_with_config(backend, config, &pass).await {
        Ok(_) => c.reached = format!("reached repository {id}, opened with its passphrase"),
        Err(e) => c.problem(format!("repository {id}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_parent_gives_the_mkdir_and_the_unit_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = dir.path().join("absent/cairn");
        let m = missing_parent(&repo).expect("reported");
        assert!(
            m.contains(&format!("mkdir -p -m 700 {}", repo.display())),
            "{m}"
        );
        assert!(
            m.contains(&format!("ReadWritePaths={}", repo.display())),
            "{m}"
        );
        assert_eq!(missing_parent(&dir.path().join("cairn")), None);
    }
}
