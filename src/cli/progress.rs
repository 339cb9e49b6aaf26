//! How long-running commands show progress: an indicatif bar on a terminal, JSON lines
//! with `--json`, nothing with `--quiet` or when stderr is not a terminal. A thread reads
//! the run's [`Progress`] atomics; the work itself never waits for the display.

use cairn::progress::Progress;
use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How results and progress are shown, from the global `--json` and `--quiet`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// Human text; progress bars when stderr is a terminal.
    Human {
        /// No progress and no chatter, only results and errors.
        quiet: bool,
    },
    /// JSON lines on stdout: `status` lines while working, then one `summary`.
    Json,
}

impl Output {
    /// From the global flags.
    pub fn new(json: bool, quiet: bool) -> Self {
        if json {
            Output::Json
        } else {
            Output::Human { quiet }
        }
    }

    /// Whether this is `--json`.
    pub fn json(self) -> bool {
        self == Output::Json
    }

    /// Whether human chatter (what is being done, hints) goes to stderr.
    pub fn chatty(self) -> bool {
        self == Output::Human { quiet: false }
    }

    /// Whether a live display is wanted at all (so a command may spend effort on totals).
    pub fn shows_progress(self) -> bool {
        match self {
            Output::Json => true,
            Output::Human { quiet } => !quiet && std::io::stderr().is_terminal(),
        }
    }
}

/// A running progress display; [`Reporter::finish`] (or drop) ends it.
pub struct Reporter {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Reporter {
    /// Start showing `progress` of the command `action` ("backup", "restore", ...), whose
    /// `files` counter counts `unit` ("files", "packs").
    pub fn start(
        action: &'static str,
        unit: &'static str,
        progress: Arc<Progress>,
        out: Output,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = if out.shows_progress() {
            let stop = stop.clone();
            Some(std::thread::spawn(move || match out {
                Output::Json => json_loop(action, unit, &progress, &stop),
                Output::Human { .. } => bar_loop(action, unit, &progress, &stop),
            }))
        } else {
            None
        };
        Reporter { stop, thread }
    }

    /// Stop the display and clear the bar.
    pub fn finish(mut self) {
        self.end();
    }

    fn end(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.end();
    }
}

/// Sleep up to `d`, waking early when stopped; returns whether to stop.
fn wait(stop: &AtomicBool, d: Duration) -> bool {
    let until = Instant::now() + d;
    while Instant::now() < until {
        if stop.load(Ordering::Relaxed) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    stop.load(Ordering::Relaxed)
}

fn bar_loop(action: &'static str, unit: &str, p: &Progress, stop: &AtomicBool) {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(10));
    let counting = ProgressStyle::with_template(
        "{spinner} {prefix} [{elapsed_precise}] {bytes} {binary_bytes_per_sec} {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_spinner());
    let measured = ProgressStyle::with_template(
        "{prefix} [{elapsed_precise}] [{wide_bar}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(counting.clone());
    bar.set_prefix(action);
    let mut has_total = false;
    loop {
        let stopping = wait(stop, Duration::from_millis(100));
        let total = Progress::get(&p.bytes_total);
        let done = Progress::get(&p.bytes_done);
        if total > 0 && !has_total {
            bar.set_style(measured.clone());
            has_total = true;
        }
        if has_total {
            bar.set_length(total.max(done));
        }
        bar.set_position(done);
        let files = Progress::get(&p.files);
        let files_total = Progress::get(&p.files_total);
        let of = if files_total > 0 {
            format!("{files}/{files_total} {unit}")
        } else {
            format!("{files} {unit}")
        };
        bar.set_message(format!("{of} {}", short_path(&p.current(), 50)));
        if stopping {
            break;
        }
    }
    bar.finish_and_clear();
}

/// The tail of a long path, so the bar stays on one line.
fn short_path(p: &str, max: usize) -> String {
    let n = p.chars().count();
    if n <= max {
        return p.to_string();
    }
    let tail: String = p.chars().skip(n - (max - 1)).collect();
    format!("…{tail}")
}

fn json_loop(action: &'static str, unit: &str, p: &Progress, stop: &AtomicBool) {
    let start = Instant::now();
    loop {
        let stopping = wait(stop, Duration::from_secs(1));
        let elapsed = start.elapsed().as_secs_f64();
        let done = Progress::get(&p.bytes_done);
        let total = Progress::get(&p.bytes_total);
        let mut line = serde_json::json!({
            "message_type": "status",
            "action": action,
            "seconds_elapsed": (elapsed * 10.0).round() / 10.0,
            format!("{unit}_done"): Progress::get(&p.files),
            "bytes_done": done,
            "current": p.current(),
        });
        if p.phase() != cairn::progress::Phase::Idle {
            line["phase"] = p.phase().name().into();
        }
        if total > 0 {
            line[format!("total_{unit}")] = Progress::get(&p.files_total).into();
            line["total_bytes"] = total.into();
            line["percent_done"] = (done.min(total) as f64 / total as f64).into();
            if done > 0 && done < total {
                let rate = done as f64 / elapsed.max(0.001);
                line["seconds_remaining"] = ((total - done) as f64 / rate).round().into();
            }
        }
        // A closed stdout (a pipe to `head`) must not end the work; stop reporting.
        let mut out = std::io::stdout().lock();
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() || stopping {
            break;
        }
    }
}

/// Bytes for people: `1.2 GiB`.
pub fn bytes(n: u64) -> String {
    HumanBytes(n).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_paths_keep_their_tail() {
        assert_eq!(short_path("/a/b", 10), "/a/b");
        let s = short_path("/very/long/path/to/some/file.txt", 12);
        assert_eq!(s.chars().count(), 12);
        assert!(s.ends_with("file.txt"), "{s}");
    }
}
