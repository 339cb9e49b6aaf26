//! Commands around the daemon: running it, checking its configuration, and talking to
//! a running one over its control socket.

use anyhow::{Context, Result, bail};
use cairn::daemon::config::{self, DaemonConfig, PasswordSource};
use cairn::daemon::control::{self, Request, Response};
use cairn::daemon::quickstart;
use cairn::daemon::status::DaemonStatus;
use std::path::{Path, PathBuf};

/// `cairn daemon`.
#[derive(clap::Args)]
pub struct DaemonArgs {
    /// Configuration file.
    #[arg(long, default_value = config::DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// Back this folder up continuously with no configuration file: to a local repository
    /// in the user's data directory ($XDG_DATA_HOME/cairn; if unset, ~/.local/share/cairn,
    /// or /var/lib/cairn as root), created with a generated passphrase kept beside the
    /// configuration it writes there. Repeat for several folders.
    #[arg(long, value_name = "DIR", conflicts_with = "config")]
    pub watch: Vec<PathBuf>,
    /// Passphrase file for every destination, in place of what the configuration names
    /// (the systemd unit passes its credential this way).
    #[arg(long = "password-file", value_name = "FILE")]
    pub password_file: Option<PathBuf>,
}

/// `cairn config`.
#[derive(clap::Args)]
pub struct ConfigArgs {
    #[command(subcommand)]
    action: ConfigCommand,
}

#[derive(clap::Subcommand)]
enum ConfigCommand {
    /// Check a configuration: every problem with its line and the fix.
    Check {
        /// Configuration file.
        #[arg(long, default_value = config::DEFAULT_CONFIG)]
        config: PathBuf,
        /// Check this passphrase file in place of what the configuration names, as
        /// `cairn daemon --password-file` would use it.
        #[arg(long = "password-file", value_name = "FILE")]
        password_file: Option<PathBuf>,
    },
}

/// `cairn status`.
#[derive(clap::Args)]
pub struct StatusArgs {
    /// Daemon configuration (names the control socket).
    #[arg(long, default_value = config::DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// Control socket, instead of the configuration's.
    #[arg(long)]
    pub socket: Option<PathBuf>,
}

/// `cairn daemon` with its arguments.
pub fn run_daemon(a: &DaemonArgs) -> Result<i32> {
    cmd_daemon(&a.config, a.password_file.as_deref(), &a.watch)
}

/// `cairn config ...`.
pub fn run_config(a: &ConfigArgs) -> Result<i32> {
    match &a.action {
        ConfigCommand::Check {
            config,
            password_file,
        } => cmd_config_check(config, password_file.as_deref()),
    }
}

/// `cairn status` with its arguments.
pub fn run_status(a: &StatusArgs, json: bool) -> Result<i32> {
    cmd_status(&a.config, a.socket.as_deref(), json)
}

/// `cairn daemon`; with `--watch DIR`, on the quick start's embedded default instead of
/// a configuration file.
pub fn cmd_daemon(config: &Path, password_file: Option<&Path>, watch: &[PathBuf]) -> Result<i32> {
    // `_held`, the quick start's lock on its data directory, lives until the daemon stops.
    let (config, notice, _held) = if watch.is_empty() {
        (config.to_path_buf(), None, None)
    } else {
        if password_file.is_some() {
            bail!(
                "--watch makes and uses its own passphrase: leave out --password-file, or write a configuration naming your passphrase and pass --config FILE"
            );
        }
        let dir = quickstart::DataHome::of_process().data_dir()?;
        let cwd = std::env::current_dir().context("the current directory")?;
        let prepared = quickstart::prepare(&dir, watch, &cwd)?;
        let config = prepared.layout.config.clone();
        let notice = prepared.layout.notice();
        (config, Some(notice), Some(prepared))
    };
    let identity = cairn::daemon::Identity {
        hostname: super::hostname(),
        username: super::username(),
        password_file: password_file.map(Path::to_path_buf),
        notice,
    };
    cairn::daemon::run(&config, identity)?;
    Ok(0)
}

/// The configuration `status` and `backup --now` read: the one given, or, when that is
/// the default and does not exist, the quick start's (`cairn daemon --watch DIR`).
fn configuration_in_use(config: &Path) -> PathBuf {
    if config == Path::new(config::DEFAULT_CONFIG) && !config.exists() {
        let quick = quickstart::DataHome::of_process()
            .data_dir()
            .map(|d| quickstart::Layout::in_dir(&d).config);
        if let Ok(q) = quick
            && q.exists()
        {
            return q;
        }
    }
    config.to_path_buf()
}

/// `cairn config check`: every problem with its line, then what would run.
/// `password_file` is the daemon's command-line override, checked in its place.
pub fn cmd_config_check(path: &Path, password_file: Option<&Path>) -> Result<i32> {
    let mut cfg = match config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return Ok(1);
        }
    };
    if let Some(p) = password_file {
        cfg.password = PasswordSource::File(p.to_path_buf());
    }
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    let mut sources = vec![("", &cfg.password)];
    for d in &cfg.destinations {
        if let Some(p) = &d.password {
            sources.push((d.name.as_str(), p));
        }
    }
    for (dest, source) in sources {
        if let Err(e) = source.read() {
            let scope = if dest.is_empty() {
                String::new()
            } else {
                format!("destination {dest:?}: ")
            };
            match source {
                // The credential exists only inside the service; outside it, say so.
                PasswordSource::Credential(_) => warnings.push(format!("{scope}{e}")),
                _ => problems.push(format!("{scope}{e}")),
            }
        }
    }
    for s in &cfg.sources {
        for p in &s.paths {
            match std::fs::symlink_metadata(p) {
                Err(_) => warnings.push(format!(
                    "source path {} does not exist (yet): its source's snapshots fail (and are retried) until it does",
                    p.display()
                )),
                Ok(m) if m.file_type().is_symlink() => warnings.push(format!(
                    "source path {} is a symbolic link: the link is stored, not what it points to; name the target instead",
                    p.display()
                )),
                Ok(_) => {}
            }
        }
    }
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    if !problems.is_empty() {
        eprintln!("configuration {} cannot run as it is:", cfg.file.display());
        for p in &problems {
            eprintln!("  {p}");
        }
        return Ok(1);
    }
    println!("{}", describe(&cfg));
    Ok(0)
}

fn describe(cfg: &DaemonConfig) -> String {
    let mut out = format!("configuration {} is valid\n", cfg.file.display());
    for s in &cfg.sources {
        out.push_str(&format!(
            "  source: {}{}\n",
            s.paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            if s.excludes.is_empty() {
                String::new()
            } else {
                format!(" (excluding {})", s.excludes.join(", "))
            }
        ));
    }
    for d in &cfg.destinations {
        out.push_str(&format!("  destination {}: {}\n", d.name, d.location));
    }
    let s = &cfg.schedule;
    out.push_str(&format!(
        "  schedule: snapshot {} after the last change (at most {} after the first), at most every {}, full rescan every {}\n",
        humantime::format_duration(s.quiet_period),
        humantime::format_duration(s.max_delay),
        humantime::format_duration(s.min_interval),
        humantime::format_duration(s.rescan_interval)
    ));
    out.push_str(&format!(
        "  state: {}; cache: {}; control socket: {}",
        cfg.state_dir.display(),
        cfg.cache_dir.display(),
        cfg.socket.display()
    ));
    if let Some(m) = cfg.metrics_listen {
        out.push_str(&format!("; metrics: http://{m}/metrics"));
    }
    out
}

fn socket(config: &Path, socket: Option<&Path>) -> Result<PathBuf> {
    if let Some(s) = socket {
        return Ok(s.to_path_buf());
    }
    let cfg = config::load(&configuration_in_use(config)).map_err(|e| {
        anyhow::anyhow!("{e}\n(the control socket is named in the configuration; pass --config FILE or --socket PATH)")
    })?;
    Ok(control::socket_of(&cfg))
}

/// `cairn status`.
pub fn cmd_status(config: &Path, sock: Option<&Path>, json: bool) -> Result<i32> {
    let path = socket(config, sock)?;
    match control::call(&path, &Request::Status)? {
        Response::Status(s) => {
            if json {
                println!("{}", serde_json::to_string(&s)?);
            } else {
                print!("{}", s.render(cairn::host::now_unix()));
            }
            Ok(if healthy(&s) { 0 } else { 1 })
        }
        Response::Error { message } => bail!("the daemon refused: {message}"),
        other => bail!("unexpected answer from the daemon: {other:?}"),
    }
}

/// Healthy: no destination is failing.
fn healthy(s: &DaemonStatus) -> bool {
    s.destinations
        .iter()
        .all(|d| d.last_error.is_none() && d.scrub.as_ref().is_none_or(|sc| sc.problems == 0))
}

/// `cairn backup --now`.
pub fn cmd_backup_now(config: &Path, sock: Option<&Path>, json: bool) -> Result<i32> {
    let path = socket(config, sock)?;
    eprintln!("asking the daemon for a snapshot in every destination...");
    let answer = control::call(&path, &Request::Backup).context("cairn backup --now")?;
    let Response::Backup { results } = answer else {
        bail!("unexpected answer from the daemon: {answer:?}");
    };
    let ok = results.iter().all(|r| r.error.is_none());
    if json {
        println!("{}", serde_json::to_string(&results)?);
    } else {
        for r in &results {
            match &r.error {
                None => println!("{}: snapshot {}", r.destination, r.snapshots.join(", ")),
                Some(e) => println!("{}: FAILED: {e}", r.destination),
            }
        }
    }
    Ok(if ok { 0 } else { 1 })
}

/// Open a destination of the daemon's configuration (with its own options and
/// passphrase), and every other destination that can stand in for it (on the same keys)
/// as copies to heal from.
pub fn open_configured(
    rt: &tokio::runtime::Runtime,
    config_path: &Path,
    name: &str,
) -> Result<(cairn::repo::Repository, Vec<cairn::repo::Repository>)> {
    let cfg = config::load(config_path)?;
    let open = |d: &config::DestinationConfig| -> Result<cairn::repo::Repository> {
        let pass = d.password.as_ref().unwrap_or(&cfg.password).read()?;
        let backend = rt.block_on(cairn::backend::open_location(&d.location, &d.backend))?;
        let repo = rt.block_on(cairn::repo::Repository::open(backend, &pass))?;
        super::opened(&repo);
        Ok(repo)
    };
    let Some(primary_cfg) = cfg.destinations.iter().find(|d| d.name == name) else {
        bail!(
            "{} has no destination {name:?}; it has: {}",
            cfg.file.display(),
            cfg.destinations
                .iter()
                .map(|d| d.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    };
    let primary = open(primary_cfg).with_context(|| format!("destination {name:?}"))?;
    let mut copies = Vec::new();
    for d in cfg.destinations.iter().filter(|d| d.name != name) {
        match open(d) {
            Ok(r) if r.shares_keys_with(&primary) => copies.push(r),
            Ok(_) => eprintln!(
                "note: destination {:?} has keys of its own; it cannot heal {name:?} blob by blob (restore from it directly if needed)",
                d.name
            ),
            Err(e) => eprintln!(
                "note: destination {:?} is not available to heal from: {}",
                d.name,
                super::describe_error(&e)
            ),
        }
    }
    Ok((primary, copies))
}
