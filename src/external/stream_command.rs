//! A command whose standard output is a backup's stream (a database dump). Its error
//! output goes to the log and its last lines into the error when it fails; a stop of the
//! backup (the daemon shutting down or reloading) ends its whole process group at once,
//! even while it writes nothing, so a dump blocked on a lock never holds a worker.

use super::process::{
    LineSink, Spec, Tail, drain, failure, has_exited, join_for, shown, signal_group, spawn,
    status_words, stop_group,
};
use crate::error::{Error, Result};
use std::process::{Child, ChildStdout};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long the rest of a command's error output may take once it has exited (a process
/// it left in the background may keep the pipe open).
const STDERR_WAIT: Duration = Duration::from_secs(2);

/// A running command whose output is being stored. Dropped before [`Self::finish`], it
/// stops the command (the stream was abandoned).
pub struct StreamCommand {
    child: Arc<Child>,
    argv: Vec<String>,
    tail: Arc<Tail>,
    stderr: Option<JoinHandle<()>>,
    /// Set when the caller is done with the child: the watcher stops looking.
    done: Arc<AtomicBool>,
    watcher: Option<JoinHandle<()>>,
    cancel: Arc<AtomicBool>,
    finished: bool,
}

impl StreamCommand {
    /// Start the command; its output is read from the returned pipe. Its error output
    /// goes to `log` line by line. Raising `cancel` ends its process group (SIGTERM, then
    /// SIGKILL after a grace period), which also ends the stream.
    pub fn start(
        spec: &Spec,
        log: LineSink,
        cancel: Arc<AtomicBool>,
    ) -> Result<(StreamCommand, ChildStdout)> {
        let mut child = spawn(spec)?;
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            stop_group(&mut child);
            return Err(Error::Internal("a command's pipes were not made".into()));
        };
        let tail = Arc::new(Tail::default());
        let stderr = drain(stderr, log, String::new(), Some(tail.clone()));
        let child = Arc::new(child);
        let done = Arc::new(AtomicBool::new(false));
        let watcher = {
            let (child, done, cancel) = (child.clone(), done.clone(), cancel.clone());
            std::thread::spawn(move || watch(&child, &done, &cancel))
        };
        Ok((
            StreamCommand {
                child,
                argv: spec.argv.clone(),
                tail,
                stderr: Some(stderr),
                done,
                watcher: Some(watcher),
                cancel,
                finished: false,
            },
            stdout,
        ))
    }

    /// Wait for the command to end (its output was read to the end); an error unless it
    /// exited 0, with its status and the end of its error output.
    pub fn finish(&mut self) -> Result<()> {
        while !has_exited(&self.child) {
            std::thread::sleep(Duration::from_millis(10));
        }
        let status = self.reap()?;
        if let Some(h) = self.stderr.take() {
            join_for(vec![h], STDERR_WAIT);
        }
        if self.cancel.load(Ordering::Relaxed) {
            return Err(Error::Cancelled);
        }
        if status.success() {
            return Ok(());
        }
        Err(Error::SourceFailed(failure(
            &format!("command `{}`", shown(&self.argv)),
            &format!("{}, so nothing was saved", status_words(status)),
            &self.tail.text(),
        )))
    }

    /// Stop the watcher, then reap the child (its id is only then free for reuse).
    fn reap(&mut self) -> Result<std::process::ExitStatus> {
        self.done.store(true, Ordering::Relaxed);
        if let Some(w) = self.watcher.take() {
            let _ = w.join();
        }
        self.finished = true;
        let child = Arc::get_mut(&mut self.child)
            .ok_or_else(|| Error::Internal("a command's watcher still holds it".into()))?;
        child
            .wait()
            .map_err(|e| Error::io("wait for the command", &self.argv[0], e))
    }
}

/// The watcher of a running command: once `cancel` is raised, SIGTERM to its group, and
/// SIGKILL after the grace period. Never reaps (the owner does, after this returns).
fn watch(child: &Child, done: &AtomicBool, cancel: &AtomicBool) {
    let mut termed: Option<Instant> = None;
    while !done.load(Ordering::Relaxed) {
        if cancel.load(Ordering::Relaxed) && !has_exited(child) {
            match termed {
                None => {
                    signal_group(child, libc::SIGTERM);
                    termed = Some(Instant::now());
                }
                Some(t) if t.elapsed() > Duration::from_secs(5) => {
                    signal_group(child, libc::SIGKILL);
                }
                Some(_) => {}
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for StreamCommand {
    fn drop(&mut self) {
        if !self.finished {
            self.done.store(true, Ordering::Relaxed);
            if let Some(w) = self.watcher.take() {
                let _ = w.join();
            }
            if let Some(child) = Arc::get_mut(&mut self.child) {
                stop_group(child);
            }
        }
        if let Some(h) = self.stderr.take() {
            join_for(vec![h], STDERR_WAIT);
        }
    }
}
