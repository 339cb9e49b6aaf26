//! What the daemon reports about itself: per destination, the last snapshot, what is
//! pending and the last error. Serialised as JSON for `cairn status --json` and rendered
//! as Prometheus text for the metrics endpoint.

use crate::human::count;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// The last snapshot a destination committed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastSnapshot {
    /// Snapshot id (hex).
    pub id: String,
    /// Its recorded time (RFC 3339).
    pub time: String,
    /// When it became durable, Unix seconds.
    pub completed_unix: u64,
}

/// The last alert raised about a destination (or about none), for `status`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LastAlert {
    /// Its event name.
    pub event: String,
    /// When (RFC 3339).
    pub time: String,
    /// What it said.
    pub message: String,
}

/// One destination as `cairn status` shows it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DestinationStatus {
    /// Configured name.
    pub name: String,
    /// Repository location.
    pub repo: String,
    /// One of [`super::states::STATES`]: idle, waiting (changes pending), scanning,
    /// uploading, committing, retrying (a failure, and no attempt running now) or
    /// stalled.
    pub state: String,
    /// Last committed snapshot, if any since the daemon started (or found at start).
    pub last_snapshot: Option<LastSnapshot>,
    /// Changed paths not yet in a snapshot.
    pub pending_changes: u64,
    /// Packs sealed and waiting to be durable.
    pub pending_objects: u64,
    /// Bytes of those packs.
    pub pending_bytes: u64,
    /// Last failure, cleared by the next success.
    pub last_error: Option<String>,
    /// Failures in a row.
    pub consecutive_failures: u32,
    /// Snapshots committed since the daemon started.
    pub snapshots: u64,
    /// Snapshot attempts that failed since the daemon started.
    pub failed_snapshots: u64,
    /// Files looked at since start.
    pub files_processed: u64,
    /// Bytes of file content read since start.
    pub bytes_processed: u64,
    /// Packs uploaded since start.
    pub uploads_ok: u64,
    /// Pack uploads that failed since start.
    pub uploads_failed: u64,
    /// Bytes uploaded in packs since start.
    pub bytes_uploaded: u64,
    /// How far behind this destination is: snapshots the other destinations committed
    /// since it last caught up (0 when it is current).
    pub lag_snapshots: u64,
    /// Seconds since the oldest change not yet durable here (0 when current).
    pub lag_seconds: u64,
    /// Size of the changed files not yet durable here (an estimate: current sizes).
    pub lag_bytes: u64,
    /// Snapshots journaled locally while the destination was unreachable, waiting to be
    /// replayed into it.
    pub journal_snapshots: u64,
    /// Disk space of that journal.
    pub journal_bytes: u64,
    /// The rotating read-back of this destination, once a slice has run.
    #[serde(default)]
    pub scrub: Option<ScrubStatus>,
    /// Something the operator should know that is not an error, such as a repository
    /// this daemon created at the destination.
    #[serde(default)]
    pub notice: Option<String>,
    /// Seconds the current round has gone without progress, once longer than a request
    /// may take (state `stalled`); 0 otherwise.
    #[serde(default)]
    pub stalled_seconds: u64,
    /// Damaged or foreign objects in `snapshots/` or `index/` that were skipped (backups
    /// go on without them), each with why: restore them from a copy or remove them.
    #[serde(default)]
    pub skipped_objects: Vec<String>,
    /// Paths the latest snapshot of each source did not store (vanished, unreadable)
    /// or stored only as read while they changed: a file written without pause is
    /// never silently missing from, or torn in, the history.
    #[serde(default)]
    pub unsettled_paths: u64,
    /// Of those, files stored marked `changing` (they may mix older and newer bytes).
    #[serde(default)]
    pub changing_files: u64,
    /// The first of those paths, each with why ([`MAX_LISTED_WARNINGS`] at most).
    #[serde(default)]
    pub warnings: Vec<String>,
    /// The last alert raised about this destination (kept across restarts).
    #[serde(default)]
    pub last_alert: Option<LastAlert>,
}

/// Paths with their warnings listed in a destination's status.
pub const MAX_LISTED_WARNINGS: usize = 20;

/// What scrubbing found: each slice reads some packs back and verifies every blob in
/// them; over `scrub_period` every pack is read.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ScrubStatus {
    /// When the last slice finished (Unix seconds).
    pub last_run_unix: u64,
    /// Packs the last slice read.
    pub last_packs_read: u64,
    /// Packs read since the daemon started.
    pub packs_read_total: u64,
    /// Bytes read since the daemon started.
    pub bytes_read_total: u64,
    /// Share of the repository read in the current cycle (0..1).
    pub cycle_done: f64,
    /// Problems the last slice found, confirmed by a second look (0 = healthy).
    pub problems: u64,
    /// The first of them, with the objects named.
    pub problem_messages: Vec<String>,
    /// The last slice's own error (the repository could not be read at all), if any.
    pub error: Option<String>,
}

/// The whole daemon.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DaemonStatus {
    /// The worst of the destinations' states ([`super::states::STATES`] orders them):
    /// `idle` only when every destination is.
    pub state: String,
    /// The destinations in that state, in configuration order.
    #[serde(default)]
    pub state_destinations: Vec<String>,
    /// Whether the file watcher sees every change (false: limits reached, scans only).
    pub watching: bool,
    /// Daemon version.
    pub version: String,
    /// Per destination, in configuration order.
    pub destinations: Vec<DestinationStatus>,
    /// What the operator must know for as long as the daemon runs (the quick start's
    /// passphrase that needs a copy elsewhere).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notices: Vec<String>,
    /// Each `[[notify]]` and how its deliveries go.
    #[serde(default)]
    pub notifiers: Vec<crate::notify::NotifierHealth>,
    /// The last alert about no destination in particular (watch limits).
    #[serde(default)]
    pub last_alert: Option<LastAlert>,
}

impl DaemonStatus {
    /// The overall state from the destinations': the worst of theirs, and the names of
    /// the destinations in it.
    pub fn overall(destinations: &[DestinationStatus]) -> (String, Vec<String>) {
        super::states::worst(
            destinations
                .iter()
                .map(|d| (d.name.as_str(), d.state.as_str())),
        )
    }

    /// The overall state with the destinations in it named (`retrying (offsite)`); plain
    /// `idle` when all are idle.
    pub fn headline(&self) -> String {
        if self.state == "idle" || self.state_destinations.is_empty() {
            self.state.clone()
        } else {
            format!("{} ({})", self.state, self.state_destinations.join(", "))
        }
    }

    /// The one line systemd shows (STATUS=): the headline, then each destination's
    /// state and the age of its last snapshot at `now_unix`, or that it is failing.
    pub fn systemd_line(&self, now_unix: u64) -> String {
        let parts: Vec<String> = self
            .destinations
            .iter()
            .map(|d| {
                let last = d
                    .last_snapshot
                    .as_ref()
                    .map_or("no snapshot yet".to_string(), |l| {
                        format!(
                            "last snapshot {}s ago",
                            now_unix.saturating_sub(l.completed_unix)
                        )
                    });
                match &d.last_error {
                    Some(_) => format!("{}: {} (failing)", d.name, d.state),
                    None => format!("{}: {}, {last}", d.name, d.state),
                }
            })
            .collect();
        format!("{}; {}", self.headline(), parts.join("; "))
    }

    /// Human-readable lines for `cairn status`.
    pub fn render(&self, now_unix: u64) -> String {
        let mut out = format!(
            "cairn daemon {}: {}{}\n",
            self.version,
            self.headline(),
            if self.watching {
                ""
            } else {
                " (file watching limited: changes are found by periodic scans)"
            }
        );
        for n in &self.notices {
            let _ = writeln!(out, "NOTE: {n}");
        }
        for d in &self.destinations {
            let _ = writeln!(out, "\n{} ({})", d.name, d.repo);
            let _ = writeln!(out, "  state:          {}", d.state);
            match &d.last_snapshot {
                Some(s) => {
                    let ago = now_unix.saturating_sub(s.completed_unix);
                    let _ = writeln!(
                        out,
                        "  last snapshot:  {} at {} ({} ago)",
                        &s.id[..s.id.len().min(8)],
                        crate::human::utc_rfc3339(&s.time),
                        humantime::format_duration(std::time::Duration::from_secs(ago))
                    );
                }
                None => {
                    let _ = writeln!(out, "  last snapshot:  none yet");
                }
            }
            let _ = writeln!(
                out,
                "  pending:        {}, {}, {} to upload",
                count(d.pending_changes, "changed path"),
                count(d.pending_objects, "object"),
                count(d.pending_bytes, "byte")
            );
            if d.lag_seconds > 0 || d.lag_snapshots > 0 {
                let _ = writeln!(
                    out,
                    "  behind by:      {}, {}, {}",
                    count(d.lag_snapshots, "snapshot"),
                    count(d.lag_bytes, "byte"),
                    humantime::format_duration(std::time::Duration::from_secs(d.lag_seconds))
                );
            }
            if d.journal_snapshots > 0 {
                let _ = writeln!(
                    out,
                    "  journaled:      {}, {}, replayed when it is reachable",
                    count(d.journal_snapshots, "snapshot"),
                    count(d.journal_bytes, "byte")
                );
            }
            if let Some(n) = &d.notice {
                let _ = writeln!(out, "  note:           {n}");
            }
            for o in &d.skipped_objects {
                let _ = writeln!(
                    out,
                    "  skipped:        {o} (damaged or foreign; run `cairn check`)"
                );
            }
            if d.stalled_seconds > 0 {
                let _ = writeln!(
                    out,
                    "  stalled:        no progress for {}: the destination does not answer (its requests are retried; shutdown and reload do not wait for them)",
                    humantime::format_duration(std::time::Duration::from_secs(d.stalled_seconds))
                );
            }
            if d.unsettled_paths > 0 {
                let _ = writeln!(
                    out,
                    "  not clean:      {} path(s) in the latest snapshots not stored or stored while changing ({} stored while changing):",
                    d.unsettled_paths, d.changing_files
                );
                for w in &d.warnings {
                    let _ = writeln!(out, "                  {w}");
                }
            }
            if let Some(e) = &d.last_error {
                let _ = writeln!(
                    out,
                    "  last error:     {e} ({} in a row)",
                    count(u64::from(d.consecutive_failures), "failure")
                );
            }
            if let Some(sc) = &d.scrub {
                let ago = now_unix.saturating_sub(sc.last_run_unix);
                let verdict = match (&sc.error, sc.problems) {
                    (Some(e), _) => format!("could not run: {e}"),
                    (None, 0) => "no problems".to_string(),
                    (None, n) => format!(
                        "{n} PROBLEM(S): run `cairn check --read-data --destination {}`",
                        d.name
                    ),
                };
                let _ = writeln!(
                    out,
                    "  scrub:          {} ago, {} read back, {verdict}; {:.0}% of this cycle done",
                    humantime::format_duration(std::time::Duration::from_secs(ago)),
                    count(sc.last_packs_read, "pack"),
                    sc.cycle_done * 100.0
                );
                for m in &sc.problem_messages {
                    let _ = writeln!(out, "                  {m}");
                }
            }
            if let Some(a) = &d.last_alert {
                let when = crate::human::utc_rfc3339(&a.time);
                let _ = writeln!(
                    out,
                    "  last alert:     {} at {when}: {}",
                    a.event, a.message
                );
            }
        }
        out
    }

    /// Prometheus text exposition format.
    pub fn metrics(&self) -> String {
        let mut out = String::new();
        let mut family = |name: &str, kind: &str, help: &str, rows: Vec<(String, String)>| {
            write_family(&mut out, name, kind, help, rows);
        };
        let per = |f: &dyn Fn(&DestinationStatus) -> String| -> Vec<(String, String)> {
            self.destinations
                .iter()
                .map(|d| (format!("{{destination=\"{}\"}}", label(&d.name)), f(d)))
                .collect()
        };
        let scrub = |f: &dyn Fn(&ScrubStatus) -> String| -> Vec<(String, String)> {
            self.destinations
                .iter()
                .filter_map(|d| {
                    d.scrub
                        .as_ref()
                        .map(|s| (format!("{{destination=\"{}\"}}", label(&d.name)), f(s)))
                })
                .collect()
        };
        family(
            "cairn_scrub_problems",
            "gauge",
            "Problems the last scrub slice found (0 = every pack read back was intact).",
            scrub(&|s| s.problems.to_string()),
        );
        family(
            "cairn_scrub_packs_read_total",
            "counter",
            "Packs read back and verified by scrubbing.",
            scrub(&|s| s.packs_read_total.to_string()),
        );
        family(
            "cairn_scrub_last_run_timestamp_seconds",
            "gauge",
            "When the last scrub slice finished.",
            scrub(&|s| s.last_run_unix.to_string()),
        );
        family(
            "cairn_scrub_cycle_done_ratio",
            "gauge",
            "Share of the repository read back in the current scrub cycle.",
            scrub(&|s| format!("{:.4}", s.cycle_done)),
        );
        family(
            "cairn_files_processed_total",
            "counter",
            "Files looked at by backups.",
            per(&|d| d.files_processed.to_string()),
        );
        family(
            "cairn_bytes_processed_total",
            "counter",
            "Bytes of file content read by backups.",
            per(&|d| d.bytes_processed.to_string()),
        );
        let mut uploads = Vec::new();
        for d in &self.destinations {
            let n = label(&d.name);
            uploads.push((
                format!("{{destination=\"{n}\",result=\"ok\"}}"),
                d.uploads_ok.to_string(),
            ));
            uploads.push((
                format!("{{destination=\"{n}\",result=\"error\"}}"),
                d.uploads_failed.to_string(),
            ));
        }
        family(
            "cairn_uploads_total",
            "counter",
            "Pack uploads by destination and result.",
            uploads,
        );
        family(
            "cairn_uploaded_bytes_total",
            "counter",
            "Bytes uploaded in packs.",
            per(&|d| d.bytes_uploaded.to_string()),
        );
        let mut snaps = Vec::new();
        for d in &self.destinations {
            let n = label(&d.name);
            snaps.push((
                format!("{{destination=\"{n}\",result=\"ok\"}}"),
                d.snapshots.to_string(),
            ));
            snaps.push((
                format!("{{destination=\"{n}\",result=\"error\"}}"),
                d.failed_snapshots.to_string(),
            ));
        }
        family(
            "cairn_snapshots_total",
            "counter",
            "Snapshot attempts by destination and result.",
            snaps,
        );
        family(
            "cairn_last_success_timestamp_seconds",
            "gauge",
            "Unix time the last snapshot became durable (0: none yet).",
            per(&|d| {
                d.last_snapshot
                    .as_ref()
                    .map_or(0, |s| s.completed_unix)
                    .to_string()
            }),
        );
        family(
            "cairn_queue_depth",
            "gauge",
            "Changed paths waiting for a snapshot.",
            per(&|d| d.pending_changes.to_string()),
        );
        family(
            "cairn_pending_upload_objects",
            "gauge",
            "Packs sealed and not yet durable.",
            per(&|d| d.pending_objects.to_string()),
        );
        family(
            "cairn_pending_upload_bytes",
            "gauge",
            "Bytes of packs not yet durable.",
            per(&|d| d.pending_bytes.to_string()),
        );
        family(
            "cairn_lag_seconds",
            "gauge",
            "Age of the oldest change not yet durable in the destination.",
            per(&|d| d.lag_seconds.to_string()),
        );
        family(
            "cairn_lag_snapshots",
            "gauge",
            "Snapshots other destinations committed since this one caught up.",
            per(&|d| d.lag_snapshots.to_string()),
        );
        family(
            "cairn_journal_snapshots",
            "gauge",
            "Snapshots journaled locally for an unreachable destination.",
            per(&|d| d.journal_snapshots.to_string()),
        );
        family(
            "cairn_journal_bytes",
            "gauge",
            "Disk space of the local journal of a destination.",
            per(&|d| d.journal_bytes.to_string()),
        );
        family(
            "cairn_unsettled_paths",
            "gauge",
            "Paths the latest snapshots did not store, or stored while they changed.",
            per(&|d| d.unsettled_paths.to_string()),
        );
        family(
            "cairn_changing_files",
            "gauge",
            "Files the latest snapshots stored as read while they changed.",
            per(&|d| d.changing_files.to_string()),
        );
        family(
            "cairn_consecutive_failures",
            "gauge",
            "Failed snapshot attempts in a row.",
            per(&|d| d.consecutive_failures.to_string()),
        );
        family(
            "cairn_watching",
            "gauge",
            "1 when the file watcher sees every change, 0 when scans are the fallback.",
            vec![(String::new(), u8::from(self.watching).to_string())],
        );
        out
    }
}

/// One metric family in Prometheus text: its help and type lines, then a line per row
/// (labels, value).
pub fn write_family(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    rows: Vec<(String, String)>,
) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in rows {
        let _ = writeln!(out, "{name}{labels} {value}");
    }
}

/// Escape a label value (backslash, quote, newline).
pub fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_text_is_well_formed() {
        let s = DaemonStatus {
            state: "idle".into(),
            state_destinations: Vec::new(),
            watching: true,
            version: "0".into(),
            destinations: vec![DestinationStatus {
                name: "lan".into(),
                uploads_ok: 3,
                last_snapshot: Some(LastSnapshot {
                    id: "ab".into(),
                    time: "t".into(),
                    completed_unix: 1700000000,
                }),
                ..DestinationStatus::default()
            }],
            notices: Vec::new(),
            ..DaemonStatus::default()
        };
        let m = s.metrics();
        assert!(m.contains("cairn_uploads_total{destination=\"lan\",result=\"ok\"} 3\n"));
        assert!(
            m.contains("cairn_last_success_timestamp_seconds{destination=\"lan\"} 1700000000\n")
        );
        assert!(m.contains("# TYPE cairn_queue_depth gauge\n"));
        assert!(m.contains("cairn_watching 1\n"));
        for line in m.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').expect("name value");
            value.parse::<f64>().expect("numeric value");
        }
        assert_eq!(label("a\"b\\"), "a\\\"b\\\\");
    }

    #[test]
    fn the_header_and_systemd_line_name_the_worst_state_and_its_destinations() {
        let dest = |name: &str, state: &str, error: Option<&str>| DestinationStatus {
            name: name.into(),
            state: state.into(),
            last_error: error.map(str::to_string),
            last_snapshot: Some(LastSnapshot {
                id: "abcdef0123".into(),
                time: "t".into(),
                completed_unix: 100,
            }),
            ..DestinationStatus::default()
        };
        let destinations = vec![
            dest("lan", "idle", None),
            dest("far", "retrying", Some("unreachable")),
            dest("cold", "uploading", None),
        ];
        let (state, state_destinations) = DaemonStatus::overall(&destinations);
        let s = DaemonStatus {
            state,
            state_destinations,
            watching: true,
            version: "0".into(),
            destinations,
            notices: Vec::new(),
            ..DaemonStatus::default()
        };
        assert_eq!(s.headline(), "retrying (far)");
        assert!(
            s.render(105)
                .starts_with("cairn daemon 0: retrying (far)\n"),
            "{}",
            s.render(105)
        );
        assert_eq!(
            s.systemd_line(105),
            "retrying (far); lan: idle, last snapshot 5s ago; far: retrying (failing); cold: uploading, last snapshot 5s ago"
        );
        let all_idle = DaemonStatus {
            state: "idle".into(),
            state_destinations: vec!["lan".into()],
            destinations: vec![dest("lan", "idle", None)],
            ..DaemonStatus::default()
        };
        assert_eq!(
            all_idle.systemd_line(105),
            "idle; lan: idle, last snapshot 5s ago"
        );
    }
}
