//! The backup daemon: watches the sources and keeps every destination within seconds of
//! them.
//!
//! Shape: a file watcher ([`watch`]) feeds changed paths to every destination's queue;
//! each destination has its own worker thread ([`worker`]) that waits for changes to
//! settle ([`schedule`]), then runs a backup that re-reads only what changed and commits
//! a complete snapshot. A control socket ([`control`]) serves `cairn status` and
//! `cairn backup --now`; [`metrics`] serves Prometheus text; [`systemd`] reports
//! readiness, status and watchdog pings. SIGTERM stops every run before it commits
//! anything half done; SIGHUP reloads the configuration (a broken one is refused and
//! the running one kept).
//!
//! Where things are: start-up and stop of one configuration in [`instance`]; a
//! destination's queue, record and status in [`destination`]; its worker loop in
//! [`worker`], one round of it in [`round`], and connecting and opening its repository
//! in [`session`]; which source a changed path belongs to in [`routing`]; what a
//! destination's record keeps across a reload in [`history`]; the order of the states
//! `status` summarises in [`states`].

pub mod alerts;
pub mod config;
pub mod control;
pub mod destination;
pub mod env;
mod history;
pub mod identity;
mod instance;
pub mod journal;
pub mod keyring;
pub mod liveness;
pub mod metrics;
pub mod preflight;
pub mod quickstart;
pub mod replay;
mod round;
mod routing;
pub mod schedule;
pub mod scrub;
pub mod session;
mod source_run;
pub mod state_lock;
pub mod states;
pub mod status;
pub mod systemd;
pub mod watch;
pub mod worker;

use crate::error::{Error, Result};
use config::DaemonConfig;
use destination::Destination;
use instance::Instance;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{SignalKind, signal};

/// Full scans run at least this often while the file watcher cannot see every change.
pub const FALLBACK_SCAN_INTERVAL: Duration = Duration::from_secs(60);

/// How often the source roots are checked for having been replaced (which drops their
/// watch) and the periodic rescan timer is looked at.
pub const ROOT_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// Who the snapshots say took them, and what the command line adds to the
/// configuration.
#[derive(Clone, Debug)]
pub struct Identity {
    /// Host name recorded (a `hostname` in the configuration overrides it).
    pub hostname: String,
    /// User name recorded.
    pub username: String,
    /// Passphrase file given on the command line: overrides the configuration's
    /// passphrase source (`cairn daemon --password-file`).
    pub password_file: Option<PathBuf>,
    /// Said loudly at start and shown by `status` for as long as the daemon runs (the
    /// quick start's warning that its passphrase needs a copy elsewhere).
    pub notice: Option<String>,
}

/// Load the configuration and apply command-line overrides.
fn load_config(path: &Path, identity: &Identity) -> Result<DaemonConfig> {
    let mut config = config::load(path)?;
    if let Some(p) = &identity.password_file {
        config.password = config::PasswordSource::File(p.clone());
    }
    // A passphrase that cannot be read is a set-up mistake: refuse to start (or to
    // reload) rather than retry forever.
    for d in &config.destinations {
        d.password
            .as_ref()
            .unwrap_or(&config.password)
            .read()
            .map_err(|e| Error::InvalidInput(format!("destination {:?}: {e}", d.name)))?;
    }
    Ok(config)
}

/// How long stopping (SIGTERM, SIGINT, a reload) waits for the destinations' workers:
/// each stops at its next check of the stop flag, within moments, unless a request
/// hangs on a destination that does not answer.
const WORKER_STOP_WAIT: Duration = Duration::from_secs(10);

/// How long a stopping daemon waits for notifications still queued (a receiver that is
/// down is not waited for longer).
const ALERT_FLUSH_WAIT: Duration = Duration::from_secs(5);

/// Run the daemon with the configuration at `path` until SIGTERM or SIGINT.
pub fn run(path: &Path, identity: Identity) -> Result<()> {
    let config = load_config(path, &identity)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("cairn-io")
        .enable_all()
        .build()
        .map_err(|e| Error::io("start the runtime", "/", e))?;
    if let Some(n) = &identity.notice {
        tracing::warn!("{n}");
    }
    let result = rt.block_on(main_loop(path, config, identity));
    // Not waiting for blocking work a hung request holds: the process ends here.
    rt.shutdown_timeout(Duration::from_secs(1));
    result
}

async fn main_loop(path: &Path, mut config: DaemonConfig, identity: Identity) -> Result<()> {
    let sig =
        |kind: SignalKind| signal(kind).map_err(|e| Error::io("install a signal handler", "/", e));
    let mut term = sig(SignalKind::terminate())?;
    let mut int = sig(SignalKind::interrupt())?;
    let mut hup = sig(SignalKind::hangup())?;
    // The watchdog is fed for the whole life of the process, reloads included, while
    // the runtime is alive and every busy destination makes progress (`liveness`): a
    // worker frozen for good gets the service restarted.
    let watched: Arc<std::sync::Mutex<Vec<Arc<Destination>>>> = Arc::default();
    let watchdog = systemd::watchdog_interval().map(|every| {
        let watched = watched.clone();
        tokio::spawn(async move {
            let mut live = liveness::Liveness::default();
            let mut said = false;
            loop {
                let observed: Vec<(String, liveness::Signature)> = watched
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .iter()
                    .map(|d| (d.config.name.clone(), d.liveness()))
                    .collect();
                let stalled = live.stalled(
                    std::time::Instant::now(),
                    &observed,
                    liveness::STALL_LIMIT,
                );
                if stalled.is_empty() {
                    systemd::watchdog();
                    said = false;
                } else if !said {
                    said = true;
                    tracing::error!(
                        "destination(s) {} made no progress for {}: the watchdog is no longer fed, so systemd restarts the service",
                        stalled.join(", "),
                        humantime::format_duration(liveness::STALL_LIMIT)
                    );
                }
                tokio::time::sleep(every).await;
            }
        })
    });
    let mut instance = Instance::start(&config, &identity, &history::History::none()).await?;
    *watched.lock().unwrap_or_else(|p| p.into_inner()) = instance.destinations.clone();
    systemd::ready();
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                systemd::reloading();
                match load_config(path, &identity) {
                    Ok(new) => {
                        let running = instance.destinations.clone();
                        instance.stop().await;
                        // Read once stopped: the last rounds' outcomes are in.
                        let history = history::History::of(&running);
                        drop(running);
                        instance = match Instance::start(&new, &identity, &history).await {
                            Ok(i) => {
                                config = new;
                                tracing::info!("configuration reloaded from {}", path.display());
                                i
                            }
                            Err(e) => {
                                tracing::error!("the reloaded configuration cannot start ({e}); going on with the previous one");
                                Instance::start(&config, &identity, &history).await?
                            }
                        };
                    }
                    Err(e) => tracing::error!("configuration not reloaded, the running one stays in force: {e}"),
                }
                *watched.lock().unwrap_or_else(|p| p.into_inner()) =
                    instance.destinations.clone();
                systemd::ready();
            }
        }
    }
    systemd::stopping();
    tracing::info!("stopping");
    instance.flush_alerts(ALERT_FLUSH_WAIT).await;
    instance.stop().await;
    if let Some(w) = watchdog {
        w.abort();
    }
    tracing::info!("stopped");
    Ok(())
}
