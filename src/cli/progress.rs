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

fn bar_loop(action: &'static str, unit: &'static str, p: &Progress, stop: &AtomicBool) {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(10));
    // The line is laid out here, to the terminal's width ([`line`]); indicatif only
    // draws and clears it.
    bar.set_style(
        ProgressStyle::with_template("{msg}").unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let start = Instant::now();
    loop {
        let stopping = wait(stop, Duration::from_millis(100));
        let elapsed = start.elapsed();
        let done = Progress::get(&p.bytes_done);
        let frame = Frame {
            action,
            elapsed,
            done,
            total: Progress::get(&p.bytes_total),
            rate: done as f64 / elapsed.as_secs_f64().max(0.001),
            files: Progress::get(&p.files),
            files_total: Progress::get(&p.files_total),
            unit,
            path: p.current(),
        };
        bar.set_message(line(&frame, terminal_width()));
        if stopping {
            break;
        }
    }
    bar.finish_and_clear();
}

/// The width of the terminal on stderr, or 80 columns when it does not say.
fn terminal_width() -> usize {
    // SAFETY: TIOCGWINSZ only fills the winsize given; on a descriptor that is not a
    // terminal it fails and leaves it zeroed.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
    if ok && ws.ws_col > 0 {
        usize::from(ws.ws_col)
    } else {
        80
    }
}

/// What one progress line shows.
struct Frame {
    /// The command: "backup", "restore", ...
    action: &'static str,
    elapsed: Duration,
    /// Bytes done, and of how many (0: not known yet).
    done: u64,
    total: u64,
    /// Bytes per second so far.
    rate: f64,
    /// Items done (`unit`: "files", "packs"), and of how many (0: not known yet).
    files: u64,
    files_total: u64,
    unit: &'static str,
    /// What is being worked on.
    path: String,
}

/// The progress line, at most `width` columns wide, so it stays one line that the next
/// redraw replaces: the command, time and bytes always; then, as room allows, the ETA,
/// the item count, the rate and a bar; the path gets what is left, cut from the front.
fn line(f: &Frame, width: usize) -> String {
    let secs = f.elapsed.as_secs();
    let head = format!(
        "{} [{:02}:{:02}:{:02}]",
        f.action,
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    );
    let amount = if f.total > 0 {
        format!("{}/{}", bytes(f.done), bytes(f.total))
    } else {
        bytes(f.done)
    };
    let eta = (f.total > 0 && f.done > 0 && f.done < f.total && f.rate > 0.0).then(|| {
        let left = Duration::from_secs(((f.total - f.done) as f64 / f.rate).round() as u64);
        format!("ETA {}", humantime::format_duration(left))
    });
    let items = if f.files_total > 0 {
        format!("{}/{} {}", f.files, f.files_total, f.unit)
    } else {
        format!("{} {}", f.files, f.unit)
    };
    let rate = format!("{}/s", bytes(f.rate as u64));
    let cols = |s: &str| s.chars().count();
    // Always the head and the amount; the rest by priority while it fits, keeping room
    // for a path of at least 16 columns once the ETA and the count are in.
    let mut used = cols(&head) + 1 + cols(&amount);
    let fits = |used: usize, n: usize| used + 1 + n <= width;
    let eta = eta.filter(|s| fits(used, cols(s)));
    used += eta.as_ref().map_or(0, |s| 1 + cols(s));
    let items = Some(items).filter(|s| fits(used, cols(s)));
    used += items.as_ref().map_or(0, |s| 1 + cols(s));
    let path_min = cols(&f.path).min(16);
    let reserve = if path_min > 0 { path_min + 1 } else { 0 };
    let rate = Some(rate).filter(|s| fits(used + reserve, cols(s)));
    used += rate.as_ref().map_or(0, |s| 1 + cols(s));
    // A bar of 10 to 30 cells (plus brackets) when a total is known and it fits.
    let bar_cells = width.saturating_sub(used + reserve + 3).min(30);
    let bar = (f.total > 0 && bar_cells >= 10).then(|| {
        let filled = (f.done.min(f.total) as f64 / f.total as f64 * bar_cells as f64) as usize;
        used += 1 + bar_cells + 2;
        format!("[{}{}]", "#".repeat(filled), "-".repeat(bar_cells - filled))
    });
    let path_room = width.saturating_sub(used + 1);
    let path = (!f.path.is_empty() && path_room >= path_min.max(1))
        .then(|| short_path(&f.path, path_room));
    let parts = [Some(head), bar, Some(amount), rate, eta, items, path];
    let out = parts.into_iter().flatten().collect::<Vec<_>>().join(" ");
    // Only a width narrower than the head and amount gets here too long.
    out.chars().take(width).collect()
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

    fn frame(path: &str) -> Frame {
        Frame {
            action: "backup",
            elapsed: Duration::from_secs(3723),
            done: 1_288_490_188,
            total: 3_650_722_201,
            rate: 45.6 * 1024.0 * 1024.0,
            files: 12_345,
            files_total: 67_890,
            unit: "files",
            path: path.to_string(),
        }
    }

    #[test]
    fn the_progress_line_fits_80_and_40_columns() {
        let long = "/home/someone/Documents/projects/2026/a rather long folder name/and a file with a long name.txt";
        let at80 = line(&frame(long), 80);
        assert!(at80.chars().count() <= 80, "{at80:?}");
        assert!(
            at80.starts_with("backup [01:02:03] 1.20 GiB/3.40 GiB"),
            "{at80:?}"
        );
        assert!(at80.contains("12345/67890 files"), "{at80:?}");
        assert!(at80.ends_with("name.txt"), "{at80:?}");
        // Wider: the rate and a bar too, and more of the path.
        let at160 = line(&frame(long), 160);
        assert!(at160.chars().count() <= 160, "{at160:?}");
        assert!(at160.starts_with("backup [01:02:03] [#"), "{at160:?}");
        assert!(at160.contains("45.60 MiB/s"), "{at160:?}");
        assert!(at160.ends_with("a file with a long name.txt"), "{at160:?}");
        let at40 = line(&frame(long), 40);
        assert!(at40.chars().count() <= 40, "{at40:?}");
        assert!(at40.contains("1.20 GiB/3.40 GiB"), "{at40:?}");
        // Nothing to cut: a short path and an unknown total.
        let mut small = frame("/a");
        small.total = 0;
        let at80 = line(&small, 80);
        assert!(at80.ends_with(" /a"), "{at80:?}");
        assert!(!at80.contains("[#") && !at80.contains("[-"), "{at80:?}");
        // Narrower than the essentials: cut, still one line.
        assert_eq!(line(&frame(long), 10).chars().count(), 10);
    }

    #[test]
    fn long_paths_keep_their_tail() {
        assert_eq!(short_path("/a/b", 10), "/a/b");
        let s = short_path("/very/long/path/to/some/file.txt", 12);
        assert_eq!(s.chars().count(), 12);
        assert!(s.ends_with("file.txt"), "{s}");
    }
}
