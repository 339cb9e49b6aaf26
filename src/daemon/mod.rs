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

pub mod config;
pub mod control;
pub mod identity;
pub mod journal;
pub mod keyring;
pub mod liveness;
pub mod metrics;
pub mod schedule;
pub mod scrub;
pub mod state_lock;
pub mod status;
pub mod systemd;
pub mod watch;
pub mod worker;

use crate::error::{Error, Result};
use crate::exclude::Excludes;
use crate::progress::RunControl;
use config::{DaemonConfig, SourceConfig};
use control::{Request, Response};
use status::DaemonStatus;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::runtime::Handle as Runtime;
use tokio::signal::unix::{SignalKind, signal};
use worker::{Destination, WorkerEnv};

/// Full scans run at least this often while the file watcher cannot see every change.
pub const FALLBACK_SCAN_INTERVAL: Duration = Duration::from_secs(60);

/// How often the source roots are checked for having been replaced (which drops their
/// watch) and the periodic rescan timer is looked at.
pub const ROOT_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// Who the snapshots say took them.
#[derive(Clone, Debug)]
pub struct Identity {
    /// Host name recorded (a `hostname` in the configuration overrides it).
    pub hostname: String,
    /// User name recorded.
    pub username: String,
    /// Passphrase file given on the command line: overrides the configuration's
    /// passphrase source (the systemd unit passes its credential this way).
    pub password_file: Option<PathBuf>,
}

/// Load the configuration and apply command-line overrides.
fn load_config(path: &Path, identity: &Identity) -> Result<DaemonConfig> {
    let mut config = config::load(path).map_err(|e| Error::InvalidInput(e.to_string()))?;
    if let Some(p) = &identity.password_file {
        config.password = config::PasswordSource::File(p.clone());
    }
    // A passphrase that cannot be read is a set-up mistake: refuse to start (or to
    // reload) rather than retry forever.
    for d in &config.destinations {
        worker::read_passphrase(d.password.as_ref().unwrap_or(&config.password))
            .map_err(|e| Error::InvalidInput(format!("destination {:?}: {e}", d.name)))?;
    }
    Ok(config)
}

/// How long stopping (SIGTERM, SIGINT, a reload) waits for the destinations' workers:
/// each stops at its next check of the stop flag, within moments, unless a request
/// hangs on a destination that does not answer.
const WORKER_STOP_WAIT: Duration = Duration::from_secs(10);

/// Run the daemon with the configuration at `path` until SIGTERM or SIGINT.
pub fn run(path: &Path, identity: Identity) -> Result<()> {
    let config = load_config(path, &identity)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("cairn-io")
        .enable_all()
        .build()
        .map_err(|e| Error::io("start the runtime", "/", e))?;
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
    let mut instance = Instance::start(&config, &identity).await?;
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
                        instance.stop().await;
                        instance = match Instance::start(&new, &identity).await {
                            Ok(i) => {
                                config = new;
                                tracing::info!("configuration reloaded from {}", path.display());
                                i
                            }
                            Err(e) => {
                                tracing::error!("the reloaded configuration cannot start ({e}); going on with the previous one");
                                Instance::start(&config, &identity).await?
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
    instance.stop().await;
    if let Some(w) = watchdog {
        w.abort();
    }
    tracing::info!("stopped");
    Ok(())
}

/// Directories the daemon writes to itself, which must never trigger or enter a backup.
fn own_dirs(config: &DaemonConfig) -> Vec<PathBuf> {
    let mut dirs = vec![
        config.state_dir.clone(),
        config.cache_dir.clone(),
        config.socket.clone(),
    ];
    for d in &config.destinations {
        if let Ok(crate::backend::Location::Local(p)) = crate::backend::parse_location(&d.repo) {
            dirs.push(p);
        }
    }
    dirs.retain(|d| d != Path::new("/"));
    dirs
}

/// The sources with the daemon's own directories excluded where they lie inside them.
fn effective_sources(config: &DaemonConfig, own: &[PathBuf]) -> Vec<SourceConfig> {
    config
        .sources
        .iter()
        .map(|s| {
            let mut s = s.clone();
            // The watcher reports paths under the spelling it was given; use the same
            // clean spelling the backup records.
            s.paths = s
                .paths
                .iter()
                .map(|p| crate::backup::clean_absolute(p).unwrap_or_else(|_| p.clone()))
                .collect();
            for d in own {
                if s.paths.iter().any(|p| d.starts_with(p) && d != p) {
                    tracing::info!(
                        "{} lies inside the source {}; it is left out of backups",
                        d.display(),
                        s.paths[0].display()
                    );
                    s.excludes.push(globset::escape(&d.to_string_lossy()));
                }
            }
            s
        })
        .collect()
}

/// Which source a changed path belongs to, unless excluded there.
struct Router {
    sources: Vec<(Vec<PathBuf>, Excludes)>,
    own: Vec<PathBuf>,
}

impl Router {
    fn new(sources: &[SourceConfig], own: Vec<PathBuf>) -> Self {
        Router {
            sources: sources
                .iter()
                .map(|s| {
                    let ex = Excludes::new(&s.excludes).unwrap_or_default();
                    (s.paths.clone(), ex)
                })
                .collect(),
            own,
        }
    }

    fn route(&self, path: &Path) -> Vec<usize> {
        if watch::inside_any(path, &self.own) {
            return Vec::new();
        }
        let mut out = Vec::new();
        for (i, (roots, excludes)) in self.sources.iter().enumerate() {
            let Some(root) = roots.iter().find(|r| path.starts_with(r)) else {
                continue;
            };
            let excluded = path
                .ancestors()
                .take_while(|a| a.starts_with(root) && *a != root.as_path())
                .any(|a| a.file_name().is_some_and(|n| excludes.matches(a, n)));
            if !excluded {
                out.push(i);
            }
        }
        out
    }
}

/// One running configuration.
struct Instance {
    /// This daemon's hold on the state directory, for as long as the instance runs.
    _state: state_lock::StateLock,
    destinations: Vec<Arc<Destination>>,
    workers: Vec<std::thread::JoinHandle<()>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    watcher: Option<Arc<std::sync::Mutex<watch::Watcher>>>,
    cancel: Arc<AtomicBool>,
    socket: PathBuf,
}

impl Instance {
    async fn start(config: &DaemonConfig, identity: &Identity) -> Result<Self> {
        for dir in [&config.state_dir, &config.cache_dir] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| {
                    Error::InvalidInput(format!(
                        "cannot create {}: {e}: create it, or point state_dir/cache_dir at a writable place",
                        dir.display()
                    ))
                })?;
        }
        let state = state_lock::StateLock::acquire(&config.state_dir)?;
        let listener =
            control::bind(&config.socket).map_err(|e| Error::InvalidInput(e.to_string()))?;
        let metrics_listener = match config.metrics_listen {
            Some(addr) => Some(metrics::bind(addr).await.map_err(Error::InvalidInput)?),
            None => None,
        };
        let own = own_dirs(config);
        let sources = effective_sources(config, &own);
        let cancel = Arc::new(AtomicBool::new(false));
        let destinations: Vec<Arc<Destination>> = config
            .destinations
            .iter()
            .map(|d| {
                let control = RunControl {
                    cancel: cancel.clone(),
                    progress: Arc::default(),
                };
                Arc::new(Destination::new(d.clone(), sources.len(), control))
            })
            .collect();
        let env_degraded = Arc::new(AtomicBool::new(false));
        let env = Arc::new(WorkerEnv {
            rt: Runtime::current(),
            sources: sources.clone(),
            schedule: config.schedule,
            hostname: config
                .hostname
                .clone()
                .unwrap_or_else(|| identity.hostname.clone()),
            username: identity.username.clone(),
            cpu_threads: config.cpu_threads,
            cache_dir: config.cache_dir.clone(),
            password: config.password.clone(),
            degraded: env_degraded.clone(),
            state_dir: config.state_dir.clone(),
            journal_limit: config.journal_limit,
            destination_names: config.destinations.iter().map(|d| d.name.clone()).collect(),
            keyring: keyring::KeyRing::new(
                &config
                    .destinations
                    .iter()
                    .map(|d| {
                        let source = d.password.as_ref().unwrap_or(&config.password);
                        (d.name.clone(), format!("{source:?}"))
                    })
                    .collect::<Vec<_>>(),
            ),
        });
        // Watch first, then start the workers' initial full comparison: a change is
        // either seen by the watcher or already there for the comparison to find.
        // Adding the watches walks every directory, so it runs off the async threads
        // (and tells systemd it may take a while).
        systemd::extend_timeout(Duration::from_secs(300));
        let (tx, mut rx) = tokio::sync::mpsc::channel(4096);
        let lost = Arc::new(watch::RescanFlag::default());
        let roots: Vec<PathBuf> = sources.iter().flat_map(|s| s.paths.clone()).collect();
        let watch_roots = roots.clone();
        let watch_lost = lost.clone();
        let watcher =
            tokio::task::spawn_blocking(move || watch::start(&watch_roots, tx, watch_lost))
                .await
                .map_err(|e| {
                    Error::InvalidInput(format!("the file watcher failed to start: {e}"))
                })?;
        let degraded = watcher.degraded_flag();
        env_degraded.store(degraded.load(Ordering::Relaxed), Ordering::Relaxed);
        let watcher = Arc::new(std::sync::Mutex::new(watcher));
        let mut workers = Vec::new();
        for dest in &destinations {
            let (d, worker_env) = (dest.clone(), env.clone());
            let handle = std::thread::Builder::new()
                .name(format!("cairn-{}", d.config.name))
                .spawn(move || worker::run(d, worker_env))
                .map_err(|e| Error::io("start a destination worker", "/", e))?;
            workers.push(handle);
            if !env.schedule.scrub_period.is_zero() {
                let (d, env) = (dest.clone(), env.clone());
                // Read-only and bounded to one slice; not joined at shutdown.
                std::thread::Builder::new()
                    .name(format!("cairn-scrub-{}", d.config.name))
                    .spawn(move || scrub::run(d, env))
                    .map_err(|e| Error::io("start a scrub thread", "/", e))?;
            }
        }
        let mut tasks = Vec::new();

        let router = Router::new(&sources, own);
        let dests = destinations.clone();
        let router_lost = lost.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    ev = rx.recv() => match ev {
                        Some(watch::WatchEvent::Changed(paths)) => {
                            for p in paths {
                                for i in router.route(&p) {
                                    for d in &dests {
                                        d.changed(i, &p);
                                    }
                                }
                            }
                        }
                        None => break,
                    },
                    () = router_lost.raised() => {}
                }
                if router_lost.take() {
                    tracing::info!("file events were lost; comparing everything");
                    for d in &dests {
                        d.rescan();
                    }
                }
            }
        }));

        // Periodic full comparisons: every rescan_interval, every minute while the
        // watcher is degraded, and at once for a root that was replaced (its watch is
        // re-added first).
        let dests = destinations.clone();
        let rescan_every = config.schedule.rescan_interval;
        let flag = degraded.clone();
        let env_flag = env_degraded.clone();
        let w = watcher.clone();
        tasks.push(tokio::spawn(async move {
            let mut last = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(ROOT_CHECK_INTERVAL).await;
                let w = w.clone();
                let replaced = tokio::task::spawn_blocking(move || {
                    w.lock().map(|mut w| w.recheck_roots()).unwrap_or_default()
                })
                .await
                .unwrap_or_default();
                let is_degraded = flag.load(Ordering::Relaxed);
                env_flag.store(is_degraded, Ordering::Relaxed);
                let every = if is_degraded {
                    rescan_every.min(FALLBACK_SCAN_INTERVAL)
                } else {
                    rescan_every
                };
                if !replaced.is_empty() {
                    tracing::info!(
                        "{} was replaced; watching it again and comparing everything",
                        replaced[0].display()
                    );
                }
                if !replaced.is_empty() || last.elapsed() >= every {
                    last = tokio::time::Instant::now();
                    for d in &dests {
                        d.rescan();
                    }
                }
            }
        }));

        let dests = destinations.clone();
        let flag = degraded.clone();
        let state_dir = config.state_dir.clone();
        let status: Arc<dyn Fn() -> DaemonStatus + Send + Sync> = Arc::new(move || {
            let destinations: Vec<_> = dests
                .iter()
                .map(|d| {
                    let mut st = d.status();
                    let j = journal::Journal::size_of_all(&state_dir, &d.config.name);
                    st.journal_snapshots = j.snapshots;
                    st.journal_bytes = j.bytes;
                    let (last_success, behind_since) = d.lag_marks();
                    if let Some(since) = behind_since {
                        st.lag_seconds = since.elapsed().as_secs();
                        st.lag_snapshots = dests
                            .iter()
                            .filter(|o| !Arc::ptr_eq(o, d))
                            .map(|o| o.commits_after(last_success))
                            .sum();
                        st.lag_bytes = d
                            .pending_paths(10_000)
                            .iter()
                            .filter_map(|p| std::fs::symlink_metadata(p).ok())
                            .filter(|m| m.is_file())
                            .map(|m| m.len())
                            .sum();
                    }
                    st
                })
                .collect();
            DaemonStatus {
                state: DaemonStatus::overall(&destinations).into(),
                watching: !flag.load(Ordering::Relaxed),
                version: env!("CARGO_PKG_VERSION").into(),
                destinations,
            }
        });

        let dests = destinations.clone();
        let st = status.clone();
        let handler: control::Handler = Arc::new(move |req| {
            let dests = dests.clone();
            let st = st.clone();
            Box::pin(async move {
                match req {
                    Request::Status => Response::Status(st()),
                    Request::Backup => {
                        let waits: Vec<_> = dests
                            .iter()
                            .map(|d| (d.config.name.clone(), d.request()))
                            .collect();
                        let mut results = Vec::new();
                        for (name, rx) in waits {
                            results.push(rx.await.unwrap_or(control::BackupResult {
                                destination: name,
                                snapshots: Vec::new(),
                                error: Some(
                                    "the daemon stopped before the snapshot was made".into(),
                                ),
                            }));
                        }
                        Response::Backup { results }
                    }
                }
            })
        });
        tasks.push(tokio::spawn(control::serve(listener, handler)));

        if let Some(l) = metrics_listener {
            let st = status.clone();
            tasks.push(tokio::spawn(metrics::serve(
                l,
                Arc::new(move || st().metrics()),
            )));
        }

        let st = status.clone();
        tasks.push(tokio::spawn(async move {
            let mut last = String::new();
            loop {
                let line = summary_line(&st());
                if line != last {
                    systemd::status(&line);
                    last = line;
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }));
        tracing::info!(
            "watching {} source path(s) for {} destination(s): {}",
            roots.len(),
            destinations.len(),
            destinations
                .iter()
                .map(|d| format!("{} ({})", d.config.name, d.config.repo))
                .collect::<Vec<_>>()
                .join(", ")
        );
        Ok(Instance {
            _state: state,
            destinations,
            workers,
            tasks,
            watcher: Some(watcher),
            cancel,
            socket: config.socket.clone(),
        })
    }

    /// Stop everything: running snapshots stop before committing, workers exit.
    async fn stop(mut self) {
        self.cancel.store(true, Ordering::Relaxed);
        for d in &self.destinations {
            d.shutdown();
        }
        self.watcher = None;
        for t in &self.tasks {
            t.abort();
        }
        // Wait for the aborts, so that a reload can bind the same addresses again.
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
        // A worker stops at its next check of the stop flag; one whose request hangs on a
        // destination that does not answer is not waited for past WORKER_STOP_WAIT: it
        // commits nothing once stopped, and the process exit (or, on reload, its request
        // timing out) ends it. Every other destination, a reload and the exit go on.
        let workers: Vec<_> = self.workers.drain(..).collect();
        let joined = tokio::time::timeout(WORKER_STOP_WAIT, async {
            for w in workers {
                let _ = tokio::task::spawn_blocking(move || w.join()).await;
            }
        })
        .await;
        if joined.is_err() {
            tracing::warn!(
                "a destination did not stop within {}s (a request that hangs): not waiting for it",
                WORKER_STOP_WAIT.as_secs()
            );
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// The one-line status systemd shows.
fn summary_line(s: &DaemonStatus) -> String {
    let now = worker::now_unix();
    let parts: Vec<String> = s
        .destinations
        .iter()
        .map(|d| {
            let last = d
                .last_snapshot
                .as_ref()
                .map_or("no snapshot yet".to_string(), |l| {
                    format!(
                        "last snapshot {}s ago",
                        now.saturating_sub(l.completed_unix)
                    )
                });
            match &d.last_error {
                Some(_) => format!("{}: {} (failing)", d.name, d.state),
                None => format!("{}: {}, {last}", d.name, d.state),
            }
        })
        .collect();
    format!("{}; {}", s.state, parts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_respects_sources_excludes_and_own_dirs() {
        let sources = vec![
            SourceConfig {
                paths: vec!["/srv/data".into()],
                excludes: vec!["*.tmp".into(), "/srv/data/cache".into()],
                one_file_system: false,
                tags: vec![],
                allow_root_change: false,
            },
            SourceConfig {
                paths: vec!["/etc".into()],
                excludes: vec![],
                one_file_system: false,
                tags: vec![],
                allow_root_change: false,
            },
        ];
        let r = Router::new(&sources, vec!["/srv/data/.cairn-state".into()]);
        assert_eq!(r.route(Path::new("/srv/data/a.txt")), [0]);
        assert_eq!(r.route(Path::new("/etc/hosts")), [1]);
        assert!(r.route(Path::new("/srv/data/x.tmp")).is_empty());
        assert!(r.route(Path::new("/srv/data/cache/deep/file")).is_empty());
        assert!(
            r.route(Path::new("/srv/data/.cairn-state/cache/x"))
                .is_empty()
        );
        assert!(r.route(Path::new("/srv/database")).is_empty());
        // Excluded names apply at any depth, also to directories above the file.
        assert!(
            r.route(Path::new("/srv/data/build.tmp/inner.txt"))
                .is_empty()
        );
    }
}
