//! Starting a user's command without a shell: its argument vector as given, as another
//! user if configured, in a process group of its own (so that a timeout or a stop ends
//! everything it started, `sh -c` pipelines included), with its error output read line
//! by line into the log and the last of it kept for the error message.

use super::user::{self, RunAs};
use crate::error::{Error, Result};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Where a command's output lines go (the log, or the terminal).
pub type LineSink = Arc<dyn Fn(&str) + Send + Sync>;

/// A command to run: what, as whom, and with which extra environment.
#[derive(Clone, Debug, Default)]
pub struct Spec {
    /// Program and arguments; the program is looked up in `PATH` unless it has a `/`.
    pub argv: Vec<String>,
    /// The account it runs as; `None` runs it as cairn's own user.
    pub user: Option<RunAs>,
    /// Variables added to its environment (`CAIRN_SOURCE` and friends).
    pub env: Vec<(String, String)>,
}

/// cairn's own secrets in its environment, never passed to a command or hook (nor to a
/// password command, which could otherwise run cairn and so itself again).
pub(crate) const PRIVATE_VARS: &[&str] = &[
    "CAIRN_PASSWORD",
    "CAIRN_PASSWORD_FILE",
    "CAIRN_PASSWORD_COMMAND",
];

/// Storage credentials, not passed to a command that runs as another user.
const CREDENTIAL_VARS: &[&str] = &[
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_PROFILE",
    "CREDENTIALS_DIRECTORY",
];

/// Lines of error output kept for the message of a failed command.
const TAIL_LINES: usize = 10;
/// Bytes of one kept line, at most.
const TAIL_LINE_BYTES: usize = 500;

/// The command line as a person would type it: arguments with spaces or quotes quoted.
pub fn shown(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            let plain = !a.is_empty()
                && a.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
            if plain {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The last lines of a stream, collected by a thread while the command runs.
#[derive(Default)]
pub(super) struct Tail(Mutex<VecDeque<String>>);

impl Tail {
    /// The kept lines, oldest first, joined; empty when there were none.
    pub(super) fn text(&self) -> String {
        let lines = self.0.lock().map(|l| l.clone()).unwrap_or_default();
        lines.into_iter().collect::<Vec<_>>().join("\n")
    }
}

/// Read `from` line by line into `log` (prefixed), keeping the last lines in `tail`.
pub(super) fn drain(
    from: impl Read + Send + 'static,
    log: LineSink,
    prefix: String,
    tail: Option<Arc<Tail>>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(from);
        let mut raw = Vec::new();
        loop {
            raw.clear();
            match reader.read_until(b'\n', &mut raw) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let line = String::from_utf8_lossy(&raw);
            let line = line.trim_end();
            if line.is_empty() {
                continue;
            }
            log(&format!("{prefix}{line}"));
            if let Some(t) = &tail
                && let Ok(mut kept) = t.0.lock()
            {
                if kept.len() == TAIL_LINES {
                    kept.pop_front();
                }
                let mut l = line.to_string();
                if l.len() > TAIL_LINE_BYTES {
                    let mut end = TAIL_LINE_BYTES;
                    while !l.is_char_boundary(end) {
                        end -= 1;
                    }
                    l.truncate(end);
                    l.push('…');
                }
                kept.push_back(l);
            }
        }
    })
}

/// Start `spec` with standard input closed and standard output and error piped. The
/// error names the program and the fix when it cannot start.
pub(super) fn spawn(spec: &Spec) -> Result<Child> {
    let Some((program, args)) = spec.argv.split_first() else {
        return Err(Error::SourceFailed(
            "an empty command: name a program to run".into(),
        ));
    };
    let mut cmd = Command::new(program);
    // The repository's passphrase is cairn's alone: a dump or a hook never sees it, and a
    // command run as another user does not get cairn's storage credentials either.
    for var in PRIVATE_VARS {
        cmd.env_remove(var);
    }
    if spec.user.is_some() {
        for var in CREDENTIAL_VARS {
            cmd.env_remove(var);
        }
    }
    cmd.args(args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    if let Some(who) = &spec.user {
        user::may_run_as(who).map_err(Error::SourceFailed)?;
        user::apply(&mut cmd, who);
    }
    cmd.spawn().map_err(|e| {
        let why = if e.kind() == std::io::ErrorKind::NotFound {
            format!("`{program}` was not found: install it, or give its full path")
        } else {
            format!("`{program}` could not be started: {e}")
        };
        Error::SourceFailed(format!("command `{}`: {why}", shown(&spec.argv)))
    })
}

/// Whether `child` has ended, without reaping it: its process id (and group id) stay
/// its own until it is reaped, so signals to its group cannot reach a newcomer.
pub(super) fn has_exited(child: &Child) -> bool {
    // SAFETY: siginfo_t is plain data that waitid fills; WNOWAIT leaves the child
    // waitable, WNOHANG returns at once.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let rc = unsafe {
        libc::waitid(
            libc::P_PID,
            child.id() as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    // SAFETY: si_pid is set by waitid when a child was found (0 while it runs).
    rc != 0 || unsafe { info.si_pid() } != 0
}

/// How long a stopped command's group has to end after SIGTERM before SIGKILL.
const GRACE: Duration = Duration::from_secs(5);

/// Signal the process group `child` leads (made with `process_group(0)`); a group that
/// is already gone is no error.
pub(super) fn signal_group(child: &Child, signal: libc::c_int) {
    // SAFETY: kill on the group of a child that has not been reaped yet (callers make
    // sure), so the id is still ours.
    unsafe { libc::kill(-(child.id() as libc::pid_t), signal) };
}

/// End a command and everything it started: SIGTERM to its process group, SIGKILL to
/// what is left of the group after a grace period (or once the leader is gone: a child
/// that ignores SIGTERM must not outlive it), then reap the leader.
pub(super) fn stop_group(child: &mut Child) {
    if !has_exited(child) {
        signal_group(child, libc::SIGTERM);
        let deadline = Instant::now() + GRACE;
        while Instant::now() < deadline && !has_exited(child) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    signal_group(child, libc::SIGKILL);
    let _ = child.wait();
}

/// Wait for the threads reading a command's output, but not past `limit`: a process it
/// left running in the background may hold its pipes open for good. Those not done by
/// then are left to end on their own.
pub(super) fn join_for(readers: Vec<JoinHandle<()>>, limit: Duration) {
    let deadline = Instant::now() + limit;
    for r in readers {
        while !r.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if r.is_finished() {
            let _ = r.join();
        }
    }
}

/// How a command ended, in words: "exited with status 3", "was killed by signal 9".
pub fn status_words(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(s)) => format!("was killed by signal {s}"),
        _ => "ended abnormally".into(),
    }
}

/// "<what> <how>; the end of its error output: ..." for a failed command.
pub(super) fn failure(what: &str, how: &str, tail: &str) -> String {
    if tail.is_empty() {
        format!("{what} {how} (it wrote no error output)")
    } else {
        format!("{what} {how}; the end of its error output:\n{tail}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines_are_shown_quoted_where_needed() {
        let argv: Vec<String> = ["sh", "-c", "echo 'hi' | wc", "app.dump"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(shown(&argv), r"sh -c 'echo '\''hi'\'' | wc' app.dump");
    }
}
