//! Which state changes become events, once each: a destination failing for
//! `failing_after` and its recovery, a source stale for `stale_after` and its return,
//! each damaged object scrubbing confirms, a full journal, exhausted watch limits, and
//! (opt-in) every snapshot started, saved or failed. The marks behind "once" live in
//! [`Book`], a plain value with unit tests, kept in `state_dir/alerts.json` so that a
//! restart in the middle of an outage neither repeats its alert nor forgets to say it
//! ended. [`Alerts`] joins the book to the notifiers ([`crate::notify::Hub`]).

use super::config::AlertRules;
pub use super::status::LastAlert;
use super::status::{DaemonStatus, label, write_family};
use crate::host::now_unix;
use crate::notify::{Event, EventKind, Hub, NotifierHealth};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Mutex;

/// Damaged objects remembered as reported, per destination.
pub const MAX_DAMAGE_REMEMBERED: usize = 1000;

/// A destination's failure marks.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Failing {
    /// The first failed attempt since the last success (Unix seconds).
    since: Option<u64>,
    /// The latest failure.
    error: Option<String>,
    /// `destination_failing` was raised and `destination_recovered` not yet.
    said: bool,
}

/// One source in one destination.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Freshness {
    /// The last successful snapshot, or when the daemon first looked (Unix seconds).
    last_ok: u64,
    /// Whether `last_ok` is a real snapshot, not the first look.
    seen_ok: bool,
    /// `stale` was raised and `stale_recovered` not yet.
    said: bool,
}

/// An event to raise, before the host and time are stamped on it.
#[derive(Clone, Debug, PartialEq)]
pub struct Alert {
    /// What.
    pub kind: EventKind,
    /// About which destination.
    pub destination: Option<String>,
    /// About which source.
    pub source: Option<String>,
    /// About which snapshot.
    pub snapshot: Option<String>,
    /// The line to read.
    pub message: String,
    /// The error behind it.
    pub error: Option<String>,
}

impl Alert {
    fn new(kind: EventKind, destination: Option<&str>, message: String) -> Alert {
        Alert {
            kind,
            destination: destination.map(str::to_string),
            source: None,
            snapshot: None,
            message,
            error: None,
        }
    }
}

/// How a destination's round ended, as alerts need it.
#[derive(Clone, Debug, Default)]
pub struct RoundEnd {
    /// The sources snapshotted: label, snapshot id, and whether unchanged.
    pub saved: Vec<(String, String, bool)>,
    /// Journaled snapshots replayed into the destination.
    pub replayed: u64,
    /// The destination's newest snapshot after the round (hex), if any.
    pub latest: Option<String>,
    /// The round's error, and whether it says nothing of the destination (a source's
    /// command or hook failed).
    pub failed: Option<(String, bool)>,
}

/// What has been said, and what is still to be said, per destination and source.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Book {
    #[serde(default)]
    failing: BTreeMap<String, Failing>,
    #[serde(default)]
    fresh: BTreeMap<String, BTreeMap<String, Freshness>>,
    /// Damaged objects already reported, per destination.
    #[serde(default)]
    damage: BTreeMap<String, BTreeSet<String>>,
    /// The last alert per destination (`""`: about no destination).
    #[serde(default)]
    pub last: BTreeMap<String, LastAlert>,
}

fn ago(now: u64, then: u64) -> String {
    humantime::format_duration(std::time::Duration::from_secs(now.saturating_sub(then))).to_string()
}

fn at(unix: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix as i64)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}

impl Book {
    /// An attempt to snapshot into `dest` failed with `error`.
    pub fn attempt_failed(&mut self, dest: &str, error: &str, now: u64) {
        let f = self.failing.entry(dest.to_string()).or_default();
        f.since.get_or_insert(now);
        f.error = Some(error.to_string());
    }

    /// `dest` accepted a snapshot (or had nothing to take): its recovery, if it was
    /// reported failing.
    pub fn attempt_succeeded(&mut self, dest: &str, now: u64) -> Option<Alert> {
        let f = self.failing.remove(dest)?;
        if !f.said {
            return None;
        }
        let since = f.since.unwrap_or(now);
        Some(Alert::new(
            EventKind::DestinationRecovered,
            Some(dest),
            format!(
                "destination {dest} accepts snapshots again, after failing for {}",
                ago(now, since)
            ),
        ))
    }

    /// `source` has a successful snapshot in `dest` (new or unchanged): its return, if
    /// it was reported stale.
    pub fn source_saved(&mut self, dest: &str, source: &str, now: u64) -> Option<Alert> {
        let entry = self
            .fresh
            .entry(dest.to_string())
            .or_default()
            .entry(source.to_string())
            .or_default();
        let was = std::mem::replace(
            entry,
            Freshness {
                last_ok: now,
                seen_ok: true,
                said: false,
            },
        );
        was.said.then(|| Alert {
            source: Some(source.to_string()),
            ..Alert::new(
                EventKind::StaleRecovered,
                Some(dest),
                format!("{source} has a current snapshot in {dest} again"),
            )
        })
    }

    /// Alerts that time has made due: destinations failing for `failing_after`, and
    /// sources of `layout` (each destination with its sources) without a successful
    /// snapshot for `stale_after`. Forgets destinations and sources no longer in
    /// `layout`; a source seen for the first time counts from `now`.
    pub fn due(
        &mut self,
        rules: &AlertRules,
        now: u64,
        layout: &[(String, Vec<String>)],
    ) -> Vec<Alert> {
        let mut out = Vec::new();
        self.failing
            .retain(|d, _| layout.iter().any(|(n, _)| n == d));
        self.fresh.retain(|d, _| layout.iter().any(|(n, _)| n == d));
        for (dest, f) in &mut self.failing {
            let Some(since) = f.since else { continue };
            if f.said || now.saturating_sub(since) < rules.failing_after.as_secs() {
                continue;
            }
            f.said = true;
            let error = f.error.clone().unwrap_or_default();
            out.push(Alert {
                error: f.error.clone(),
                ..Alert::new(
                    EventKind::DestinationFailing,
                    Some(dest),
                    format!(
                        "destination {dest} has not accepted a snapshot for {} (failing since {}): {error}",
                        ago(now, since),
                        at(since)
                    ),
                )
            });
        }
        for (dest, sources) in layout {
            let marks = self.fresh.entry(dest.clone()).or_default();
            marks.retain(|s, _| sources.contains(s));
            for source in sources {
                let m = marks.entry(source.clone()).or_insert(Freshness {
                    last_ok: now,
                    seen_ok: false,
                    said: false,
                });
                if m.said || now.saturating_sub(m.last_ok) < rules.stale_after.as_secs() {
                    continue;
                }
                m.said = true;
                let last = if m.seen_ok {
                    format!("the last was at {}", at(m.last_ok))
                } else {
                    format!("none since the daemon started at {}", at(m.last_ok))
                };
                let why = self.failing.get(dest).and_then(|f| f.error.clone());
                out.push(Alert {
                    source: Some(source.clone()),
                    error: why,
                    ..Alert::new(
                        EventKind::Stale,
                        Some(dest),
                        format!(
                            "no successful snapshot of {source} in {dest} for {} ({last})",
                            ago(now, m.last_ok)
                        ),
                    )
                });
            }
        }
        out
    }

    /// The confirmed problems of a scrub of `dest` not reported before: each is
    /// reported once, however many scrub cycles find it again (`status` and the log
    /// keep showing it), up to [`MAX_DAMAGE_REMEMBERED`] per destination.
    pub fn new_damage(&mut self, dest: &str, confirmed: &[String]) -> Vec<String> {
        let said = self.damage.entry(dest.to_string()).or_default();
        let fresh: Vec<String> = confirmed
            .iter()
            .filter(|c| !said.contains(*c))
            .cloned()
            .collect();
        for f in &fresh {
            if said.len() >= MAX_DAMAGE_REMEMBERED {
                said.pop_first();
            }
            said.insert(f.clone());
        }
        fresh
    }
}

/// The daemon's alerting: the book, where it is kept, and the notifiers.
pub struct Alerts {
    book: Mutex<Book>,
    path: Option<PathBuf>,
    hub: Hub,
    rules: AlertRules,
    host: String,
    config_file: PathBuf,
}

impl Alerts {
    /// Alerting for a daemon on `host` whose state is in `state_dir` (the book is read
    /// from there; an unreadable one starts afresh, with a warning).
    pub fn new(
        rules: AlertRules,
        host: &str,
        state_dir: Option<&std::path::Path>,
        config_file: &std::path::Path,
        hub: Hub,
    ) -> Alerts {
        let path = state_dir.map(|d| d.join("alerts.json"));
        let book = path
            .as_ref()
            .and_then(|p| match std::fs::read(p) {
                Ok(bytes) => match serde_json::from_slice(&bytes) {
                    Ok(b) => Some(b),
                    Err(e) => {
                        tracing::warn!("{} is unreadable ({e}): alerts start afresh", p.display());
                        None
                    }
                },
                Err(_) => None,
            })
            .unwrap_or_default();
        Alerts {
            book: Mutex::new(book),
            path,
            hub,
            rules,
            host: host.to_string(),
            config_file: config_file.to_path_buf(),
        }
    }

    fn with_book<T>(&self, f: impl FnOnce(&mut Book) -> T) -> T {
        let mut book = self.book.lock().unwrap_or_else(|p| p.into_inner());
        let before = book.clone();
        let out = f(&mut book);
        if *book != before
            && let Some(p) = &self.path
        {
            save(p, &book);
        }
        out
    }

    /// Raise `alerts`: log each, remember it as its destination's last, and hand it to
    /// the notifiers (never waiting for them).
    pub fn raise(&self, alerts: Vec<Alert>) {
        for a in alerts {
            let mut e = Event::new(a.kind, &self.host, a.message);
            e.destination = a.destination;
            e.source = a.source;
            e.snapshot = a.snapshot;
            e.error = a.error;
            if a.kind.is_alert() {
                tracing::warn!(event = %e.event, "alert: {}", e.message);
                let key = e.destination.clone().unwrap_or_default();
                let last = LastAlert {
                    event: e.event.to_string(),
                    time: e.time.clone(),
                    message: e.message.clone(),
                };
                self.with_book(|b| b.last.insert(key, last));
            }
            self.hub.raise(&e);
        }
    }

    /// A destination began a round of snapshots.
    pub fn round_started(&self, dest: &str) {
        self.raise(vec![Alert::new(
            EventKind::SnapshotStarted,
            Some(dest),
            format!("snapshots of {dest} started"),
        )]);
    }

    /// A round of `dest` ended (see [`RoundEnd`]).
    pub fn round_ended(&self, dest: &str, end: &RoundEnd) {
        let now = now_unix();
        let mut out = Vec::new();
        let (saved, failed) = (
            &end.saved,
            end.failed.as_ref().map(|(e, s)| (e.as_str(), *s)),
        );
        if let (n @ 1.., Some(id)) = (end.replayed, &end.latest) {
            out.push(Alert {
                snapshot: Some(id.clone()),
                ..Alert::new(
                    EventKind::SnapshotSaved,
                    Some(dest),
                    format!("{n} journaled snapshot(s) replayed into {dest}"),
                )
            });
        }
        for (source, id, unchanged) in saved {
            let short: String = id.chars().take(8).collect();
            out.push(Alert {
                source: Some(source.clone()),
                snapshot: Some(id.clone()),
                ..Alert::new(
                    EventKind::SnapshotSaved,
                    Some(dest),
                    if *unchanged {
                        format!("{source} in {dest}: unchanged since snapshot {short}")
                    } else {
                        format!("snapshot {short} of {source} saved in {dest}")
                    },
                )
            });
        }
        self.with_book(|b| {
            for (source, _, _) in saved {
                out.extend(b.source_saved(dest, source, now));
            }
            match failed {
                None | Some((_, true)) => out.extend(b.attempt_succeeded(dest, now)),
                Some((error, false)) => b.attempt_failed(dest, error, now),
            }
        });
        if let Some((error, _)) = failed {
            out.push(Alert {
                error: Some(error.to_string()),
                ..Alert::new(
                    EventKind::SnapshotFailed,
                    Some(dest),
                    format!("a snapshot into {dest} failed: {error}"),
                )
            });
        }
        self.raise(out);
    }

    /// Raise whatever time has made due; `layout` is each destination with its sources.
    pub fn tick(&self, layout: &[(String, Vec<String>)]) {
        let due = self.with_book(|b| b.due(&self.rules, now_unix(), layout));
        self.raise(due);
    }

    /// Scrubbing of `dest` confirmed `problems` (each "object: what"); new ones are
    /// raised, with the command that repairs them.
    pub fn scrub_found(&self, dest: &str, problems: &[String]) {
        let fresh = self.with_book(|b| b.new_damage(dest, problems));
        let repair = format!(
            "cairn check --config {} --destination {dest} --read-data --repair",
            self.config_file.display()
        );
        let alerts = fresh
            .into_iter()
            .map(|p| Alert {
                error: Some(p.clone()),
                ..Alert::new(
                    EventKind::ScrubDamage,
                    Some(dest),
                    format!("scrubbing {dest} found damage, confirmed by a second read: {p}. Repair it from the other destinations with `{repair}`"),
                )
            })
            .collect();
        self.raise(alerts);
    }

    /// The journal of unreachable `dest` is full.
    pub fn journal_full(&self, dest: &str, message: String) {
        self.raise(vec![Alert::new(
            EventKind::JournalFull,
            Some(dest),
            message,
        )]);
    }

    /// The watcher ran out of a kernel limit; `advice` says which and how to raise it.
    pub fn watch_limited(&self, advice: String) {
        self.raise(vec![Alert::new(EventKind::WatchLimited, None, advice)]);
    }

    /// The last alert per destination.
    pub fn last(&self) -> BTreeMap<String, LastAlert> {
        self.book
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .last
            .clone()
    }

    /// The notifiers' records.
    pub fn health(&self) -> Vec<NotifierHealth> {
        self.hub.health()
    }

    /// Wait (at most `within`) for queued notifications to go out.
    pub async fn flush(&self, within: std::time::Duration) {
        self.hub.flush(within).await;
    }
}

/// The notifiers' lines of `cairn status` (after [`DaemonStatus::render`]): each one's
/// health, and the last alert about no destination in particular.
pub fn render(status: &DaemonStatus) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    if let Some(a) = &status.last_alert {
        let when = crate::human::utc_rfc3339(&a.time);
        let _ = writeln!(out, "\nlast alert: {} at {when}: {}", a.event, a.message);
    }
    if status.notifiers.is_empty() {
        return out;
    }
    let _ = writeln!(out, "\nnotifiers:");
    for n in &status.notifiers {
        let verdict = match (&n.last_error, n.healthy) {
            (Some(e), false) => format!("FAILING ({} failed attempts): {e}", n.failures),
            _ => "ok".to_string(),
        };
        let _ = writeln!(
            out,
            "  {}: {verdict}; {} delivered, {} dropped, {} waiting",
            n.name, n.delivered, n.dropped, n.queued
        );
    }
    out
}

/// A metric family's rows: labels and value.
type Rows = Vec<(String, String)>;

/// The alerting families of `/metrics` (after [`DaemonStatus::metrics`]).
pub fn metrics(status: &DaemonStatus) -> String {
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, rows: Rows| {
        write_family(&mut out, name, kind, help, rows);
    };
    let per = |f: &dyn Fn(&NotifierHealth) -> String| -> Vec<(String, String)> {
        status
            .notifiers
            .iter()
            .map(|n| (format!("{{notifier=\"{}\"}}", label(&n.name)), f(n)))
            .collect()
    };
    family(
        "cairn_notify_failures_total",
        "counter",
        "Delivery attempts of notifications that failed (each retry counts).",
        per(&|n| n.failures.to_string()),
    );
    family(
        "cairn_notify_delivered_total",
        "counter",
        "Notifications delivered.",
        per(&|n| n.delivered.to_string()),
    );
    family(
        "cairn_notify_dropped_total",
        "counter",
        "Notifications given up (an hour of retries, or a full queue).",
        per(&|n| n.dropped.to_string()),
    );
    family(
        "cairn_notifier_healthy",
        "gauge",
        "1 when the notifier's last delivery attempt succeeded (or none was made yet).",
        per(&|n| u8::from(n.healthy).to_string()),
    );
    let mut rows = Vec::new();
    for d in &status.destinations {
        if let Some(a) = &d.last_alert
            && let Some(t) = crate::host::rfc3339_to_unix(&a.time)
        {
            rows.push((
                format!(
                    "{{destination=\"{}\",event=\"{}\"}}",
                    label(&d.name),
                    a.event
                ),
                t.to_string(),
            ));
        }
    }
    family(
        "cairn_last_alert_timestamp_seconds",
        "gauge",
        "When the last alert about a destination was raised, labelled with its event.",
        rows,
    );
    out
}

/// Write the book whole, through a temporary file and a rename.
fn save(path: &std::path::Path, book: &Book) {
    let Ok(bytes) = serde_json::to_vec_pretty(book) else {
        return;
    };
    let tmp = path.with_extension("json.tmp");
    let written = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        tracing::warn!("cannot keep the alert marks in {}: {e}", path.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn rules() -> AlertRules {
        AlertRules {
            failing_after: Duration::from_secs(900),
            stale_after: Duration::from_secs(3600),
        }
    }

    fn layout() -> Vec<(String, Vec<String>)> {
        vec![("lan".into(), vec!["/srv".into()])]
    }

    fn kinds(a: &[Alert]) -> Vec<EventKind> {
        a.iter().map(|a| a.kind).collect()
    }

    #[test]
    fn a_failing_destination_is_said_once_after_failing_after_and_its_recovery_once() {
        let mut b = Book::default();
        b.attempt_failed("lan", "connection refused", 1000);
        assert!(kinds(&b.due(&rules(), 1000 + 899, &layout())).is_empty());
        // Retries do not move the start or raise anything more.
        b.attempt_failed("lan", "connection refused again", 1500);
        let due = b.due(&rules(), 1900, &layout());
        assert_eq!(kinds(&due), [EventKind::DestinationFailing]);
        assert!(due[0].message.contains("15m"), "{}", due[0].message);
        assert_eq!(due[0].error.as_deref(), Some("connection refused again"));
        b.attempt_failed("lan", "still down", 2500);
        assert!(b.due(&rules(), 2600, &layout()).is_empty());
        let back = b.attempt_succeeded("lan", 3000).expect("recovered");
        assert_eq!(back.kind, EventKind::DestinationRecovered);
        assert!(b.attempt_succeeded("lan", 3001).is_none());
        // A failure shorter than failing_after is never said, nor its end.
        b.attempt_failed("lan", "blip", 4000);
        assert!(b.attempt_succeeded("lan", 4100).is_none());
        assert!(
            b.due(&rules(), 9000, &layout())
                .iter()
                .all(|a| a.kind != EventKind::DestinationFailing)
        );
    }

    #[test]
    fn a_source_without_a_snapshot_for_stale_after_is_stale_once_until_saved() {
        let mut b = Book::default();
        assert!(b.due(&rules(), 100, &layout()).is_empty());
        let due = b.due(&rules(), 100 + 3600, &layout());
        assert_eq!(kinds(&due), [EventKind::Stale]);
        assert!(
            due[0].message.contains("since the daemon started"),
            "{}",
            due[0].message
        );
        assert!(b.due(&rules(), 100 + 7200, &layout()).is_empty());
        let back = b.source_saved("lan", "/srv", 8000).expect("back");
        assert_eq!(back.kind, EventKind::StaleRecovered);
        assert!(b.source_saved("lan", "/srv", 8001).is_none());
        assert!(b.due(&rules(), 8001 + 3599, &layout()).is_empty());
        let due = b.due(&rules(), 8001 + 3600, &layout());
        assert!(
            due[0].message.contains("the last was at"),
            "{}",
            due[0].message
        );
    }

    #[test]
    fn the_book_forgets_what_is_no_longer_configured_and_survives_json() {
        let mut b = Book::default();
        b.attempt_failed("old", "x", 1);
        b.source_saved("old", "/a", 1);
        b.due(&rules(), 2, &layout());
        let back: Book =
            serde_json::from_str(&serde_json::to_string(&b).expect("json")).expect("parse");
        assert_eq!(back, b);
        assert!(!b.failing.contains_key("old") && !b.fresh.contains_key("old"));
    }

    #[test]
    fn each_damaged_object_is_reported_once() {
        let mut b = Book::default();
        let one = vec!["pack ab: bad tag".to_string()];
        assert_eq!(b.new_damage("lan", &one), one);
        assert!(b.new_damage("lan", &one).is_empty());
        let two = vec![one[0].clone(), "pack cd: short".to_string()];
        assert_eq!(
            b.new_damage("lan", &two),
            vec!["pack cd: short".to_string()]
        );
        // A slice that does not read it again does not make it new the next time.
        assert!(b.new_damage("lan", &[]).is_empty());
        assert!(b.new_damage("lan", &one).is_empty());
    }
}
