//! One running configuration: start-up in named steps (folders and the state lock, the
//! control and metrics sockets, the destinations and their shared environment, the
//! watcher, then the threads and tasks that drive them) and an orderly stop. A reload
//! stops one instance and starts the next.

use super::alerts::Alerts;
use super::config::DaemonConfig;
use super::control::{self, Request, Response};
use super::destination::Destination;
use super::env::WorkerEnv;
use super::history::History;
use super::routing::{Router, effective_sources, own_dirs};
use super::status::DaemonStatus;
use super::worker;
use super::{
    FALLBACK_SCAN_INTERVAL, Identity, ROOT_CHECK_INTERVAL, WORKER_STOP_WAIT, journal, keyring,
    metrics, scrub, state_lock, systemd, watch,
};
use crate::error::{Error, Result};
use crate::progress::RunControl;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::runtime::Handle as Runtime;
use tokio::sync::mpsc::Receiver;
use tokio::task::JoinHandle;

/// Builds the daemon's status on demand (control socket, metrics, systemd's line).
type StatusFn = Arc<dyn Fn() -> DaemonStatus + Send + Sync>;

/// One running configuration.
pub(super) struct Instance {
    /// This daemon's hold on the state directory, for as long as the instance runs.
    _state: state_lock::StateLock,
    pub(super) destinations: Vec<Arc<Destination>>,
    workers: Vec<std::thread::JoinHandle<()>>,
    tasks: Vec<JoinHandle<()>>,
    watcher: Option<Arc<std::sync::Mutex<watch::Watcher>>>,
    cancel: Arc<AtomicBool>,
    socket: PathBuf,
    alerts: Arc<Alerts>,
}

/// The watcher, started, with what its users need.
struct Watching {
    watcher: Arc<std::sync::Mutex<watch::Watcher>>,
    events: Receiver<watch::WatchEvent>,
    lost: Arc<watch::RescanFlag>,
    /// Raised while the watcher may miss changes.
    degraded: Arc<AtomicBool>,
    roots: usize,
}

impl Instance {
    /// Start `config`; fails (having started nothing that outlives it) if a folder, the
    /// state lock, a socket or the watcher cannot be had. Destinations that continue one
    /// of the previous instance's take its `history` on.
    pub(super) async fn start(
        config: &DaemonConfig,
        identity: &Identity,
        history: &History,
    ) -> Result<Self> {
        create_own_dirs(config)?;
        let state = state_lock::StateLock::acquire(&config.state_dir)?;
        let listener =
            control::bind(&config.socket).map_err(|e| Error::InvalidInput(e.to_string()))?;
        let metrics_listener = match config.metrics_listen {
            Some(addr) => Some(metrics::bind(addr).await.map_err(Error::InvalidInput)?),
            None => None,
        };
        let own = own_dirs(config);
        let env = Arc::new(worker_env(config, identity, &own));
        let alerts = env.alerts.clone();
        let cancel = Arc::new(AtomicBool::new(false));
        let destinations: Vec<Arc<Destination>> = config
            .destinations
            .iter()
            .map(|d| {
                let control = RunControl {
                    cancel: cancel.clone(),
                    progress: Arc::default(),
                };
                let dest = Destination::new(d.clone(), env.sources.len(), control);
                history.restore(&dest);
                Arc::new(dest)
            })
            .collect();
        // Watch first, then start the workers' initial full comparison: a change is
        // either seen by the watcher or already there for the comparison to find.
        let watching = start_watcher(&env).await?;
        env.degraded
            .store(watching.degraded.load(Ordering::Relaxed), Ordering::Relaxed);
        let workers = spawn_workers(&destinations, &env)?;
        let status = status_fn(
            &destinations,
            &watching.degraded,
            &config.state_dir,
            identity.notice.clone(),
            &alerts,
        );
        let mut tasks = vec![
            spawn_router(
                Router::new(&env.sources, own),
                watching.events,
                watching.lost.clone(),
                &destinations,
            ),
            spawn_rescans(
                &destinations,
                config.schedule.rescan_interval,
                watching.degraded.clone(),
                env.degraded.clone(),
                watching.watcher.clone(),
            ),
            tokio::spawn(control::serve(
                listener,
                control_handler(&destinations, &status),
            )),
            spawn_systemd_status(status.clone()),
            spawn_alert_clock(&env, config.alerts),
        ];
        tasks.extend(spawn_command_timers(&destinations, &env));
        if let Some(l) = metrics_listener {
            let st = status.clone();
            tasks.push(tokio::spawn(metrics::serve(
                l,
                Arc::new(move || {
                    let s = st();
                    s.metrics() + &super::alerts::metrics(&s)
                }),
            )));
        }
        tracing::info!(
            "watching {} source path(s) for {} destination(s): {}",
            watching.roots,
            destinations.len(),
            destinations
                .iter()
                .map(|d| format!("{} ({})", d.config.name, d.config.location))
                .collect::<Vec<_>>()
                .join(", ")
        );
        Ok(Instance {
            _state: state,
            destinations,
            workers,
            tasks,
            watcher: Some(watching.watcher),
            cancel,
            socket: config.socket.clone(),
            alerts,
        })
    }

    /// Wait (at most `within`) for the notifications raised so far to go out: the
    /// daemon's last words before it exits.
    pub(super) async fn flush_alerts(&self, within: Duration) {
        self.alerts.flush(within).await;
    }

    /// Stop everything: running snapshots stop before committing, workers exit.
    pub(super) async fn stop(mut self) {
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

/// The state and cache folders, private to the daemon's user.
fn create_own_dirs(config: &DaemonConfig) -> Result<()> {
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
    Ok(())
}

/// What every destination's worker shares.
fn worker_env(config: &DaemonConfig, identity: &Identity, own: &[PathBuf]) -> WorkerEnv {
    let hostname = config
        .hostname
        .clone()
        .unwrap_or_else(|| identity.hostname.clone());
    WorkerEnv {
        alerts: Arc::new(start_alerts(config, &hostname)),
        rt: Runtime::current(),
        sources: effective_sources(config, own),
        schedule: config.schedule,
        hostname,
        username: identity.username.clone(),
        cpu_threads: config.cpu_threads,
        cache_dir: config.cache_dir.clone(),
        password: config.password.clone(),
        degraded: Arc::new(AtomicBool::new(false)),
        state_dir: config.state_dir.clone(),
        journal_limit: config.journal_limit,
        destination_names: config.destinations.iter().map(|d| d.name.clone()).collect(),
        keyring: keyring::KeyRing::new(
            &config
                .destinations
                .iter()
                .map(|d| {
                    let source = d.password.as_ref().unwrap_or(&config.password);
                    (d.name.clone(), source.clone())
                })
                .collect::<Vec<_>>(),
        ),
    }
}

/// Start watching every source path. Adding the watches walks every directory, so it
/// runs off the async threads (and tells systemd it may take a while).
async fn start_watcher(env: &WorkerEnv) -> Result<Watching> {
    systemd::extend_timeout(Duration::from_secs(300));
    let (tx, events) = tokio::sync::mpsc::channel(4096);
    let lost = Arc::new(watch::RescanFlag::default());
    let roots: Vec<PathBuf> = env.sources.iter().flat_map(|s| s.paths.clone()).collect();
    let count = roots.len();
    let watch_lost = lost.clone();
    let alerts = env.alerts.clone();
    let on_limit: Arc<dyn Fn(String) + Send + Sync> =
        Arc::new(move |advice| alerts.watch_limited(advice));
    let watcher =
        tokio::task::spawn_blocking(move || watch::start(&roots, tx, watch_lost, on_limit))
            .await
            .map_err(|e| Error::Internal(format!("the file watcher failed to start: {e}")))?;
    Ok(Watching {
        degraded: watcher.degraded_flag(),
        watcher: Arc::new(std::sync::Mutex::new(watcher)),
        events,
        lost,
        roots: count,
    })
}

/// One worker thread per destination, and its scrub thread when scrubbing is on.
fn spawn_workers(
    destinations: &[Arc<Destination>],
    env: &Arc<WorkerEnv>,
) -> Result<Vec<std::thread::JoinHandle<()>>> {
    let mut workers = Vec::new();
    for dest in destinations {
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
    Ok(workers)
}

/// Hand each changed path to every destination's queue for the sources it belongs to;
/// when the watcher lost events, ask every destination for a full comparison.
fn spawn_router(
    router: Router,
    mut events: Receiver<watch::WatchEvent>,
    lost: Arc<watch::RescanFlag>,
    destinations: &[Arc<Destination>],
) -> JoinHandle<()> {
    let dests = destinations.to_vec();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                ev = events.recv() => match ev {
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
                () = lost.raised() => {}
            }
            if lost.take() {
                tracing::info!("file events were lost; comparing everything");
                for d in &dests {
                    d.rescan();
                }
            }
        }
    })
}

/// Periodic full comparisons: every rescan_interval, every minute while the watcher is
/// degraded, and at once for a root that was replaced (its watch is re-added first).
fn spawn_rescans(
    destinations: &[Arc<Destination>],
    rescan_every: Duration,
    degraded: Arc<AtomicBool>,
    env_degraded: Arc<AtomicBool>,
    watcher: Arc<std::sync::Mutex<watch::Watcher>>,
) -> JoinHandle<()> {
    let dests = destinations.to_vec();
    tokio::spawn(async move {
        let mut last = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(ROOT_CHECK_INTERVAL).await;
            let w = watcher.clone();
            let replaced = tokio::task::spawn_blocking(move || {
                w.lock().map(|mut w| w.recheck_roots()).unwrap_or_default()
            })
            .await
            .unwrap_or_default();
            let is_degraded = degraded.load(Ordering::Relaxed);
            env_degraded.store(is_degraded, Ordering::Relaxed);
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
    })
}

/// A timer per command source: every `every`, the command is due in every destination
/// (it also runs at start-up and on `backup --now`).
fn spawn_command_timers(destinations: &[Arc<Destination>], env: &WorkerEnv) -> Vec<JoinHandle<()>> {
    env.sources
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.command.as_ref().map(|c| (i, c.every)))
        .map(|(i, every)| {
            let dests = destinations.to_vec();
            tokio::spawn(async move {
                let mut ticks =
                    tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    ticks.tick().await;
                    for d in &dests {
                        d.command_due(i);
                    }
                }
            })
        })
        .collect()
}

/// The daemon's status as of the moment it is called: each destination's record, its
/// journal, and how far it lags behind the others.
fn status_fn(
    destinations: &[Arc<Destination>],
    degraded: &Arc<AtomicBool>,
    state_dir: &std::path::Path,
    notice: Option<String>,
    alerts: &Arc<Alerts>,
) -> StatusFn {
    let dests = destinations.to_vec();
    let alerts = alerts.clone();
    let flag = degraded.clone();
    let state_dir = state_dir.to_path_buf();
    Arc::new(move || {
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
        let last = alerts.last();
        let mut destinations = destinations;
        for d in &mut destinations {
            d.last_alert = last.get(&d.name).cloned();
        }
        let (state, state_destinations) = DaemonStatus::overall(&destinations);
        DaemonStatus {
            state,
            state_destinations,
            watching: !flag.load(Ordering::Relaxed),
            version: env!("CARGO_PKG_VERSION").into(),
            destinations,
            notices: notice.iter().cloned().collect(),
            notifiers: alerts.health(),
            last_alert: last.get("").cloned(),
        }
    })
}

/// The notifiers of `config`, started, and the alert book of its state directory. A
/// notifier that cannot be set up (its CA file went missing since `config check`) is
/// left out, loudly; the others work.
fn start_alerts(config: &DaemonConfig, hostname: &str) -> Alerts {
    let senders = config
        .notifiers
        .iter()
        .filter_map(|n| match crate::notify::Sender::new(n.clone()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!("notifier left out: {e}");
                None
            }
        })
        .collect();
    let hub = crate::notify::Hub::start(senders, &Runtime::current());
    Alerts::new(
        config.alerts,
        hostname,
        Some(&config.state_dir),
        &config.file,
        hub,
    )
}

/// Raise the alerts time makes due (a destination failing for `failing_after`, a
/// source stale for `stale_after`), on a clock of its own: a worker that hangs does
/// not stop its sources from being reported stale.
fn spawn_alert_clock(env: &Arc<WorkerEnv>, rules: super::config::AlertRules) -> JoinHandle<()> {
    let layout: Vec<(String, Vec<String>)> = env
        .destination_names
        .iter()
        .map(|d| (d.clone(), env.sources.iter().map(|s| s.label()).collect()))
        .collect();
    let alerts = env.alerts.clone();
    let every = (rules.failing_after.min(rules.stale_after) / 10)
        .clamp(Duration::from_secs(1), Duration::from_secs(30));
    tokio::spawn(async move {
        loop {
            alerts.tick(&layout);
            tokio::time::sleep(every).await;
        }
    })
}

/// Answers the control socket: `cairn status` and `cairn backup --now`.
fn control_handler(destinations: &[Arc<Destination>], status: &StatusFn) -> control::Handler {
    let dests = destinations.to_vec();
    let st = status.clone();
    Arc::new(move |req| {
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
                            error: Some("the daemon stopped before the snapshot was made".into()),
                            outcomes: Vec::new(),
                        }));
                    }
                    Response::Backup { results }
                }
            }
        })
    })
}

/// Keep systemd's one-line status current.
fn spawn_systemd_status(status: StatusFn) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = String::new();
        loop {
            let line = status().systemd_line(crate::host::now_unix());
            if line != last {
                systemd::status(&line);
                last = line;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    })
}
