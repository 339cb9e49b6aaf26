//! Commands around the daemon: running it, checking its configuration, and talking to
//! a running one over its control socket.

use super::stdout::{out, outln};
use anyhow::{Context, Result, bail};
use cairn::daemon::config;
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
    /// Passphrase file in place of the configuration's top-level `password_file`
    /// (destinations with a passphrase of their own keep it).
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
    /// Check a configuration: every problem with its line and the fix, then contact
    /// every destination (credentials, bucket, permissions, repository, passphrase).
    Check {
        /// Configuration file.
        #[arg(long, default_value = config::DEFAULT_CONFIG)]
        config: PathBuf,
        /// Check the file and the local folders only; contact no destination.
        #[arg(long)]
        offline: bool,
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
            offline,
            password_file,
        } => super::config_check::cmd_config_check(config, password_file.as_deref(), *offline),
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
                outln!("{}", serde_json::to_string(&s)?)?;
            } else {
                out!(
                    "{}{}",
                    s.render(cairn::host::now_unix()),
                    cairn::daemon::alerts::render(&s)
                )?;
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
        outln!("{}", serde_json::to_string(&results)?)?;
    } else {
        for line in results.iter().flat_map(control::BackupResult::lines) {
            outln!("{line}")?;
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
