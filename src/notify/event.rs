//! What cairn tells its operator: the kinds of event, and one event as every notifier
//! receives it (a webhook posts it as JSON as is). Pure data: which events a state
//! change raises is decided in [`crate::daemon::alerts`], how each channel words or
//! routes one in [`super::channel`].

use serde::{Deserialize, Serialize};
use std::fmt;

/// The kinds of event. The first group are alerts (sent unless a notifier's `events`
/// says otherwise); the snapshot events are opt-in, being one per snapshot or attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A destination has not accepted a snapshot for `failing_after` of trying.
    DestinationFailing,
    /// A destination that was reported failing accepted a snapshot again.
    DestinationRecovered,
    /// No successful snapshot of a source in a destination for `stale_after`.
    Stale,
    /// A source reported stale has a successful snapshot there again.
    StaleRecovered,
    /// Scrubbing confirmed a damaged object (a second read saw the same).
    ScrubDamage,
    /// An unreachable destination's local journal is full: no more history is kept
    /// for it until it is back.
    JournalFull,
    /// The kernel's inotify limits ran out: changes are found by periodic scans only.
    WatchLimited,
    /// A destination started a round of snapshots (for healthchecks' `/start`).
    SnapshotStarted,
    /// A snapshot attempt failed (every one, retries included).
    SnapshotFailed,
    /// A snapshot was saved (or a source found unchanged since its last one).
    SnapshotSaved,
    /// `cairn notify test`: sent to every notifier whatever its `events`.
    Test,
}

impl EventKind {
    /// Every kind, in the order documented.
    pub const ALL: [EventKind; 11] = [
        EventKind::DestinationFailing,
        EventKind::DestinationRecovered,
        EventKind::Stale,
        EventKind::StaleRecovered,
        EventKind::ScrubDamage,
        EventKind::JournalFull,
        EventKind::WatchLimited,
        EventKind::SnapshotStarted,
        EventKind::SnapshotFailed,
        EventKind::SnapshotSaved,
        EventKind::Test,
    ];

    /// The name configurations and payloads use.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::DestinationFailing => "destination_failing",
            EventKind::DestinationRecovered => "destination_recovered",
            EventKind::Stale => "stale",
            EventKind::StaleRecovered => "stale_recovered",
            EventKind::ScrubDamage => "scrub_damage",
            EventKind::JournalFull => "journal_full",
            EventKind::WatchLimited => "watch_limited",
            EventKind::SnapshotStarted => "snapshot_started",
            EventKind::SnapshotFailed => "snapshot_failed",
            EventKind::SnapshotSaved => "snapshot_saved",
            EventKind::Test => "test",
        }
    }

    /// The kind a name in `events = [...]` stands for.
    pub fn parse(name: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Whether a notifier without an `events` list gets it: every alert, and not the
    /// per-snapshot events (one per attempt would be a flood).
    pub fn is_alert(self) -> bool {
        !matches!(
            self,
            EventKind::SnapshotStarted | EventKind::SnapshotFailed | EventKind::SnapshotSaved
        )
    }

    /// What the event says about the operator's data, for a channel's priority,
    /// healthchecks' endpoint and a mail's subject.
    pub fn tone(self) -> Tone {
        match self {
            EventKind::DestinationFailing
            | EventKind::Stale
            | EventKind::ScrubDamage
            | EventKind::SnapshotFailed => Tone::Trouble,
            EventKind::JournalFull | EventKind::WatchLimited => Tone::Warning,
            EventKind::DestinationRecovered
            | EventKind::StaleRecovered
            | EventKind::SnapshotSaved
            | EventKind::Test => Tone::Good,
            EventKind::SnapshotStarted => Tone::Start,
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How an event reads: something is wrong, something may become wrong, all is well,
/// or work began.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tone {
    /// Backups are not happening or data is damaged: the operator must act.
    Trouble,
    /// Backups go on, less well (no journal, scans instead of events).
    Warning,
    /// Something was fixed, saved or tested.
    Good,
    /// A snapshot began.
    Start,
}

/// One event, as sent. Optional fields are left out of the JSON when they do not apply.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// What happened.
    pub event: EventKind,
    /// The host the daemon runs on (its configured `hostname`, if any).
    pub host: String,
    /// One line a person can act on.
    pub message: String,
    /// When it was raised (RFC 3339, UTC).
    pub time: String,
    /// The destination it concerns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    /// The source it concerns (its paths, or `/NAME` of a command source).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The snapshot it concerns (id, hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// The error behind it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Event {
    /// An event raised now on `host`.
    pub fn new(event: EventKind, host: &str, message: impl Into<String>) -> Self {
        Event {
            event,
            host: host.to_string(),
            message: message.into(),
            time: crate::host::now_rfc3339(),
            destination: None,
            source: None,
            snapshot: None,
            error: None,
        }
    }

    /// The same event about `destination`.
    pub fn destination(mut self, destination: &str) -> Self {
        self.destination = Some(destination.to_string());
        self
    }

    /// The same event about `source`.
    pub fn source(mut self, source: &str) -> Self {
        self.source = Some(source.to_string());
        self
    }

    /// The same event about `snapshot`.
    pub fn snapshot(mut self, snapshot: &str) -> Self {
        self.snapshot = Some(snapshot.to_string());
        self
    }

    /// The same event with the error behind it.
    pub fn error(mut self, error: &str) -> Self {
        self.error = Some(error.to_string());
        self
    }

    /// A short title: host, what, and where (a mail's subject, an ntfy title).
    pub fn title(&self) -> String {
        let what = match self.event {
            EventKind::DestinationFailing => "backups failing",
            EventKind::DestinationRecovered => "backups working again",
            EventKind::Stale => "backup stale",
            EventKind::StaleRecovered => "backup current again",
            EventKind::ScrubDamage => "damaged data found",
            EventKind::JournalFull => "journal full",
            EventKind::WatchLimited => "watch limits reached",
            EventKind::SnapshotStarted => "snapshot started",
            EventKind::SnapshotFailed => "snapshot failed",
            EventKind::SnapshotSaved => "snapshot saved",
            EventKind::Test => "test notification",
        };
        match &self.destination {
            Some(d) => format!("cairn on {}: {what} ({d})", self.host),
            None => format!("cairn on {}: {what}", self.host),
        }
    }

    /// The event as plain text: the message, then every field that applies (a mail's
    /// body, a healthchecks failure's log entry).
    pub fn text(&self) -> String {
        let mut out = format!(
            "{}\n\nevent: {}\nhost: {}\ntime: {}\n",
            self.message, self.event, self.host, self.time
        );
        for (name, value) in [
            ("destination", &self.destination),
            ("source", &self.source),
            ("snapshot", &self.snapshot),
            ("error", &self.error),
        ] {
            if let Some(v) = value {
                out.push_str(&format!("{name}: {v}\n"));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_name_that_parses_back_and_serialises_as_itself() {
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.name()), Some(k));
            assert_eq!(
                serde_json::to_string(&k).expect("json"),
                format!("\"{}\"", k.name())
            );
        }
        assert_eq!(EventKind::parse("destination_failed"), None);
    }

    #[test]
    fn the_json_has_the_fields_that_apply_and_no_others() {
        let e = Event::new(EventKind::DestinationFailing, "web-1", "offsite down")
            .destination("offsite")
            .error("connection refused");
        let v: serde_json::Value =
            serde_json::from_str(&serde_json::to_string(&e).expect("json")).expect("parse");
        assert_eq!(v["event"], "destination_failing");
        assert_eq!(v["host"], "web-1");
        assert_eq!(v["destination"], "offsite");
        assert_eq!(v["error"], "connection refused");
        assert!(v.get("source").is_none() && v.get("snapshot").is_none());
        time::OffsetDateTime::parse(
            v["time"].as_str().expect("time"),
            &time::format_description::well_known::Rfc3339,
        )
        .expect("RFC 3339 time");
        assert_eq!(e.title(), "cairn on web-1: backups failing (offsite)");
        assert!(e.text().contains("error: connection refused\n"));
    }

    #[test]
    fn snapshot_events_are_opt_in_and_alerts_are_not() {
        let opt_in: Vec<_> = EventKind::ALL
            .into_iter()
            .filter(|k| !k.is_alert())
            .collect();
        assert_eq!(
            opt_in,
            [
                EventKind::SnapshotStarted,
                EventKind::SnapshotFailed,
                EventKind::SnapshotSaved
            ]
        );
    }
}
