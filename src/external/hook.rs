//! Hooks around a snapshot: `before`, `after` and `on_failure` commands (argument
//! vectors, no shell), each with a time limit. The order, for the daemon and the command
//! line alike:
//! 1. `before` runs; if it fails or times out, no snapshot is attempted.
//! 2. The snapshot is made.
//! 3. `after` runs whenever `before` succeeded, whether the snapshot was saved or not,
//!    so that what `before` set up (a file-system snapshot, a locked table) is always
//!    undone; it gets `CAIRN_SNAPSHOT_ID` when a snapshot was saved, `CAIRN_ERROR` when
//!    not.
//! 4. `on_failure` runs when any of the above failed, with `CAIRN_ERROR` saying what.
//!
//! Every hook gets `CAIRN_HOOK` (its own name), `CAIRN_SOURCE` and `CAIRN_DESTINATION`
//! from the caller; its output goes line by line to the log.

use super::process::{
    LineSink, Spec, Tail, drain, failure, join_for, shown, spawn, status_words, stop_group,
};
use crate::error::{Error, Result};
use crate::hash::SnapshotId;
use crate::progress::RunControl;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a hook may run by default before it is stopped.
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// The hooks of one source (or one command line backup).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Hooks {
    /// Runs before the snapshot; failing, it prevents it.
    pub before: Option<Vec<String>>,
    /// Runs after every attempt that `before` let start.
    pub after: Option<Vec<String>>,
    /// Runs when anything failed.
    pub on_failure: Option<Vec<String>>,
    /// Time limit of each hook.
    pub timeout: Duration,
}

/// What a snapshot with hooks came to once `before` succeeded: the snapshot's own
/// result, and a failure of the `after` hook, which does not undo a saved snapshot but
/// must be reported.
pub struct Outcome<T, E = Error> {
    /// The snapshot, or why there is none.
    pub result: Result<T, E>,
    /// The `after` hook failed (the snapshot, if any, stands).
    pub after_failed: Option<Error>,
}

impl Hooks {
    /// Whether there is any hook to run.
    pub fn is_empty(&self) -> bool {
        self.before.is_none() && self.after.is_none() && self.on_failure.is_none()
    }

    /// Run `body` (which makes the snapshot) between the hooks, in the module's order.
    /// `env` is what every hook gets (`CAIRN_SOURCE`, `CAIRN_DESTINATION`); `id` tells
    /// the snapshot's id from what `body` returns. The error is a `before` hook's
    /// failure (`on_failure` has run): no snapshot was attempted.
    pub fn around<T, E: std::fmt::Display>(
        &self,
        env: &[(String, String)],
        log: &LineSink,
        control: &RunControl,
        id: impl Fn(&T) -> SnapshotId,
        body: impl FnOnce() -> Result<T, E>,
    ) -> Result<Outcome<T, E>> {
        let timeout = if self.timeout.is_zero() {
            DEFAULT_HOOK_TIMEOUT
        } else {
            self.timeout
        };
        // `after` and `on_failure` run even when the snapshot was stopped (a shutdown):
        // what `before` set up is undone, bounded by the time limit alone.
        let unstoppable = RunControl::default();
        let run = |name: &str, argv: &Option<Vec<String>>, extra: Vec<(String, String)>| {
            let Some(argv) = argv else { return Ok(()) };
            let control = if name == "before" {
                control
            } else {
                &unstoppable
            };
            let mut all = env.to_vec();
            all.push(("CAIRN_HOOK".into(), name.into()));
            all.extend(extra);
            let spec = Spec {
                argv: argv.clone(),
                user: None,
                env: all,
            };
            run_hook(name, &spec, timeout, log, control)
        };
        if let Err(e) = run("before", &self.before, Vec::new()) {
            let e = match e {
                Error::Cancelled => e,
                e => Error::SourceFailed(format!("{e}; no snapshot was made")),
            };
            let _ = run("on_failure", &self.on_failure, error_env(&e));
            return Err(e);
        }
        let result = body();
        let extra = match &result {
            Ok(t) => vec![("CAIRN_SNAPSHOT_ID".to_string(), id(t).to_hex())],
            Err(e) => error_env(e),
        };
        let after_failed = run("after", &self.after, extra).err();
        let failed = match (&result, &after_failed) {
            (Err(e), _) => Some(e.to_string()),
            (_, Some(e)) => Some(e.to_string()),
            _ => None,
        };
        if let Some(why) = failed {
            let _ = run(
                "on_failure",
                &self.on_failure,
                vec![("CAIRN_ERROR".into(), why)],
            );
        }
        Ok(Outcome {
            result,
            after_failed,
        })
    }
}

fn error_env(e: &impl std::fmt::Display) -> Vec<(String, String)> {
    vec![("CAIRN_ERROR".into(), e.to_string())]
}

/// Run one hook to its end or its time limit (or a stop); its output goes to `log`.
pub fn run_hook(
    name: &str,
    spec: &Spec,
    timeout: Duration,
    log: &LineSink,
    control: &RunControl,
) -> Result<()> {
    let what = format!("{name} hook `{}`", shown(&spec.argv));
    log(&format!("running the {what}"));
    let mut child = spawn(spec).map_err(|e| Error::SourceFailed(format!("{name} hook: {e}")))?;
    let tail = Arc::new(Tail::default());
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        readers.push(drain(out, log.clone(), format!("{name}: "), None));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(drain(
            err,
            log.clone(),
            format!("{name}: "),
            Some(tail.clone()),
        ));
    }
    let deadline = Instant::now() + timeout;
    let ended = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) => {}
            Err(e) => break Err(Error::io("wait for a hook", &spec.argv[0], e)),
        }
        if control.cancelled() {
            stop_group(&mut child);
            break Err(Error::Cancelled);
        }
        if Instant::now() >= deadline {
            stop_group(&mut child);
            break Err(Error::SourceFailed(format!(
                "{what} did not finish within {} and was stopped: make it faster, or raise `hook_timeout`",
                humantime::format_duration(timeout)
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // A hook that left a child holding its output open must not hold the snapshot up.
    join_for(readers, Duration::from_secs(2));
    let status = ended?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::SourceFailed(failure(
            &what,
            &status_words(status),
            &tail.text(),
        )))
    }
}
