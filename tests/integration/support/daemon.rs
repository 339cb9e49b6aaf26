//! The daemon harness: a real `cairn daemon` process on a configuration file written
//! into a test's scratch area, asked for its status over the control socket the way a
//! user's `cairn status --json` asks, and stopped with SIGTERM. Every daemon test
//! (`daemon*.rs`, `destinations*.rs`) starts its daemons through here.

use super::{Env, describe, pseudo_random};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// The log filter of every test daemon: cairn's own lines, without the AWS SDK's chatter,
/// so that a failing test's log shows what cairn did.
const LOG_FILTER: &str = "info,aws_config=error,aws_smithy_runtime=error,aws_runtime=error";

/// How long a daemon may take to exit after SIGTERM before the test calls it hung.
const STOP_LIMIT: Duration = Duration::from_secs(30);

/// Snapshots soon after a change and as often as wanted, so that tests wait seconds, not
/// minutes; the `[schedule]` lines of most test configurations.
pub const QUICK_SCHEDULE: &str = "quiet_period = \"300ms\"\nmin_interval = \"0s\"\n";

/// A running `cairn daemon`; killed on drop if the test did not stop it, so a failed
/// test leaves no daemon behind.
pub struct Daemon {
    child: Option<Child>,
    config: PathBuf,
    log: PathBuf,
    env: Vec<(&'static str, String)>,
    /// Talk to this socket instead of reading the configuration (which a test may break).
    pub socket: Option<PathBuf>,
}

impl Daemon {
    /// Start a daemon on `config` with the environment of `env`, logging into a fresh file
    /// beside the configuration.
    pub fn start(env: &Env, config: &Path) -> Daemon {
        let log = config.with_extension(format!("log{}", log_number()));
        Daemon::start_logging_to(env, config, &log)
    }

    /// Start a daemon on `config` with the environment of `env`, logging into `log`, for
    /// tests that read the log after the daemon is gone.
    pub fn start_logging_to(env: &Env, config: &Path, log: &Path) -> Daemon {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cairn"));
        cmd.args(["daemon", "--config"])
            .arg(config)
            .env("CAIRN_LOG", LOG_FILTER)
            .env_remove("CAIRN_PASSWORD")
            .env_remove("CAIRN_PASSWORD_FILE")
            .env_remove("CAIRN_PASSWORD_COMMAND")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).expect("log file"));
        apply_env(&mut cmd, &env.env);
        let child = cmd.spawn().expect("start daemon");
        Daemon {
            child: Some(child),
            config: config.to_path_buf(),
            log: log.to_path_buf(),
            env: env.env.clone(),
            socket: None,
        }
    }

    /// Everything the daemon logged so far (empty if nothing yet).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Run `cairn ARGS --config CONFIG` beside the daemon, as a user talks to it.
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cairn"));
        cmd.args(args).arg("--config").arg(&self.config);
        apply_env(&mut cmd, &self.env);
        cmd.output().expect("run cairn")
    }

    /// `cairn status --json`, or `None` while the daemon is not answering yet.
    pub fn status(&self) -> Option<serde_json::Value> {
        let out = match &self.socket {
            Some(s) => self.cli(&["status", "--json", "--socket", s.to_str().expect("utf8")]),
            None => self.cli(&["status", "--json"]),
        };
        serde_json::from_slice(&out.stdout).ok()
    }

    /// Poll the status until `cond` holds; panics with the log after `limit`, or at once
    /// if the daemon exits.
    pub fn wait_for(
        &mut self,
        what: &str,
        limit: Duration,
        cond: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let start = Instant::now();
        loop {
            if let Some(s) = self.status()
                && cond(&s)
            {
                return s;
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(exit)) = c.try_wait()
            {
                panic!(
                    "daemon exited ({exit}) while waiting for {what}\n{}",
                    self.log()
                );
            }
            assert!(
                start.elapsed() < limit,
                "timed out after {limit:?} waiting for {what}; status {:?}\nlog:\n{}",
                self.status(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// How the daemon exited, once it has (`None` while it runs); for tests of a daemon
    /// that must refuse to start.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().expect("wait")?;
        self.child = None;
        Some(status)
    }

    /// SIGTERM, and the time it took to exit (insisting on a clean exit).
    pub fn terminate(&mut self) -> Duration {
        let mut child = self.child.take().expect("running");
        let t = Instant::now();
        // SAFETY: kill has no memory preconditions; the pid is our live child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                assert!(status.success(), "daemon exit {status}\n{}", self.log());
                return t.elapsed();
            }
            assert!(
                t.elapsed() < STOP_LIMIT,
                "daemon ignored SIGTERM\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Send the running daemon a signal (SIGHUP to reload).
    pub fn signal(&self, sig: i32) {
        let pid = self.child.as_ref().expect("running").id() as i32;
        // SAFETY: as above.
        unsafe { libc::kill(pid, sig) };
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Set `vars` on `cmd`; an empty value removes the variable instead.
fn apply_env(cmd: &mut Command, vars: &[(&'static str, String)]) {
    for (k, v) in vars {
        if v.is_empty() {
            cmd.env_remove(k);
        } else {
            cmd.env(k, v);
        }
    }
}

/// A number no other daemon of this test process has used for its log file.
fn log_number() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Write `cairn.toml` into the scratch area: one source `src`, the given
/// `[[destination]]` tables, and the `[schedule]` lines; returns its path.
pub fn write_config(env: &Env, src: &Path, destinations: &str, schedule: &str) -> PathBuf {
    let config = env.path("cairn.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"{state}\"\npassword_file = \"{pw}\"\n\n[[source]]\npaths = [\"{src}\"]\n\n{destinations}\n\n[schedule]\n{schedule}",
            state = env.path("state").display(),
            pw = env.password_file.display(),
            src = src.display(),
        ),
    )
    .expect("write config");
    config
}

/// The `[[destination]]` table of destination `name` at `repo`, with `options` given as
/// `key=value`, the way `-o` takes them.
pub fn destination_table(name: &str, repo: &str, options: &[impl AsRef<str>]) -> String {
    let options: Vec<String> = options
        .iter()
        .map(|o| {
            let (k, v) = o.as_ref().split_once('=').expect("k=v");
            format!("{k:?} = {v:?}")
        })
        .collect();
    format!(
        "[[destination]]\nname = \"{name}\"\nrepo = \"{repo}\"\noptions = {{ {} }}",
        options.join(", ")
    )
}

/// The configuration of the single-destination tests: `source` backed up into the Env's
/// repository (with its options) as destination `primary`, on [`QUICK_SCHEDULE`], and
/// `extra` lines after it (more `[schedule]` keys, or tables of their own).
pub fn primary_config(env: &Env, source: &Path, extra: &str) -> PathBuf {
    write_config(
        env,
        source,
        &destination_table("primary", &env.repo, &env.options),
        &format!("{QUICK_SCHEDULE}{extra}\n"),
    )
}

/// A configuration (as [`primary_config`]) with metrics served on a free port, and the
/// port.
pub fn config_with_metrics(env: &Env, source: &Path) -> (PathBuf, u16) {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let extra = format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n");
    (primary_config(env, source, &extra), port)
}

/// The metrics response (head and text) of the daemon listening on `port`.
pub fn metrics(port: u16) -> String {
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).expect("metrics");
    conn.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n")
        .expect("request");
    let mut body = String::new();
    conn.read_to_string(&mut body).expect("read");
    body
}

/// The id of the first destination's last snapshot, once there is one.
pub fn last_id(s: &serde_json::Value) -> Option<String> {
    s["destinations"][0]["last_snapshot"]["id"]
        .as_str()
        .map(str::to_string)
}

/// Whether the first destination has settled: a snapshot exists, nothing is pending,
/// nothing is running.
pub fn settled(s: &serde_json::Value) -> bool {
    let d = &s["destinations"][0];
    last_id(s).is_some()
        && d["state"] == "idle"
        && d["pending_changes"] == 0
        && d["pending_objects"] == 0
}

/// A small source tree: folders at two depths, text files and two larger binary ones
/// (3 MiB and 700 kB), enough for several packs.
pub fn fill(src: &Path) {
    std::fs::create_dir_all(src.join("docs/deep")).expect("mkdir");
    std::fs::create_dir_all(src.join("photos")).expect("mkdir");
    std::fs::write(src.join("docs/report.txt"), b"quarterly numbers\n").expect("write");
    std::fs::write(src.join("docs/deep/notes.md"), b"# notes\n").expect("write");
    std::fs::write(src.join("photos/a.raw"), pseudo_random(3 << 20, 1)).expect("write");
    std::fs::write(src.join("photos/b.raw"), pseudo_random(700_000, 2)).expect("write");
}

/// `cairn backup --now --json` through the daemon: whether it succeeded, and its results.
pub fn backup_now(d: &Daemon) -> (bool, serde_json::Value) {
    let out = d.cli(&["backup", "--now", "--json"]);
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "backup --now printed no JSON: {}\n{}",
            describe(&out),
            d.log()
        )
    });
    (out.status.success(), v)
}

/// The status of destination `name` in a daemon's status, for tests with several.
pub fn dest<'a>(s: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    s["destinations"]
        .as_array()
        .and_then(|a| a.iter().find(|d| d["name"] == name))
        .expect("destination in status")
}

/// Whether one destination (from [`dest`]) has settled: a snapshot, idle, nothing
/// pending and no error, so a test may compare what it holds.
pub fn dest_settled(d: &serde_json::Value) -> bool {
    !d["last_snapshot"].is_null()
        && d["state"] == "idle"
        && d["pending_changes"] == 0
        && d["last_error"].is_null()
}
