//! What a destination's record remembers across a configuration reload (SIGHUP): the
//! last snapshot, the last error and failures in a row, the snapshot counts, how far
//! behind it is, the repository it reached and the last scrub's findings. A reload
//! builds new destinations; without this, `status` would forget a failing destination's
//! errors and a healthy one's last snapshot the moment the operator edits an unrelated
//! line. Only a destination with the same name and the same location keeps its
//! history: one removed is forgotten, one pointed elsewhere starts fresh.

use super::destination::{Destination, lock};
use super::status::{LastSnapshot, ScrubStatus};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

/// One destination's history, as its record held it when its instance stopped.
#[derive(Clone, Debug)]
struct Kept {
    last_snapshot: Option<LastSnapshot>,
    last_error: Option<String>,
    failures: u32,
    snapshots: u64,
    failed: u64,
    behind_since: Option<Instant>,
    last_success: Option<Instant>,
    commits: VecDeque<Instant>,
    repo_id: Option<crate::hash::Id>,
    notice: Option<String>,
    scrub: Option<ScrubStatus>,
}

/// The histories of a stopped instance's destinations, keyed by name and location.
#[derive(Clone, Debug, Default)]
pub struct History {
    kept: Vec<(String, String, Kept)>,
}

impl History {
    /// No history: the daemon's first start.
    pub fn none() -> Self {
        History::default()
    }

    /// The histories of `destinations`, read after their workers stopped (a worker that
    /// was not waited for may still finish a hung request; that outcome is not kept).
    pub fn of(destinations: &[Arc<Destination>]) -> Self {
        let kept = destinations
            .iter()
            .map(|d| {
                let r = lock(&d.record);
                let kept = Kept {
                    last_snapshot: r.last_snapshot.clone(),
                    last_error: r.last_error.clone(),
                    failures: r.failures,
                    snapshots: r.snapshots,
                    failed: r.failed,
                    behind_since: r.behind_since,
                    last_success: r.last_success,
                    commits: r.commits.clone(),
                    repo_id: r.repo_id,
                    notice: r.notice.clone(),
                    scrub: d.scrub_status(),
                };
                (d.config.name.clone(), d.config.location.to_string(), kept)
            })
            .collect();
        History { kept }
    }

    /// Give `dest` the history of the destination it continues (same name, same
    /// location), if there was one; otherwise it starts fresh.
    pub fn restore(&self, dest: &Destination) {
        let location = dest.config.location.to_string();
        let Some((_, _, k)) = self
            .kept
            .iter()
            .find(|(name, loc, _)| *name == dest.config.name && *loc == location)
        else {
            return;
        };
        let mut r = lock(&dest.record);
        r.last_snapshot = k.last_snapshot.clone();
        r.last_error = k.last_error.clone();
        r.failures = k.failures;
        r.snapshots = k.snapshots;
        r.failed = k.failed;
        r.behind_since = match (k.behind_since, r.behind_since) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        r.last_success = k.last_success;
        r.commits = k.commits.clone();
        r.repo_id = k.repo_id;
        r.notice = k.notice.clone();
        drop(r);
        if let Some(s) = &k.scrub {
            dest.set_scrub(s.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::config::DestinationConfig;

    fn destination(name: &str, repo: &str) -> Destination {
        let config = DestinationConfig {
            name: name.into(),
            location: crate::backend::parse_location(repo).expect("location"),
            password: None,
            backend: crate::backend::BackendOptions::default(),
            upload_concurrency: 1,
            compression: None,
            retention: None,
            prune: false,
        };
        Destination::new(config, 1, crate::progress::RunControl::default())
    }

    #[test]
    fn a_destination_keeps_its_history_only_under_the_same_name_and_location() {
        let old = Arc::new(destination("lan", "/srv/backup"));
        {
            let mut r = lock(&old.record);
            r.last_snapshot = Some(LastSnapshot {
                id: "ab".into(),
                time: "t".into(),
                completed_unix: 7,
            });
            r.last_error = Some("unreachable".into());
            r.failures = 3;
            r.snapshots = 2;
            r.failed = 4;
        }
        let history = History::of(&[old]);

        let same = destination("lan", "/srv/backup");
        history.restore(&same);
        let s = same.status();
        assert_eq!(s.last_snapshot.map(|l| l.id).as_deref(), Some("ab"));
        assert_eq!(s.last_error.as_deref(), Some("unreachable"));
        assert_eq!(
            (s.consecutive_failures, s.snapshots, s.failed_snapshots),
            (3, 2, 4)
        );
        assert_eq!(s.state, "retrying");

        for other in [
            destination("lan", "/srv/other"),
            destination("wan", "/srv/backup"),
        ] {
            history.restore(&other);
            let s = other.status();
            assert!(s.last_snapshot.is_none() && s.last_error.is_none());
            assert_eq!((s.consecutive_failures, s.snapshots), (0, 0));
        }
        let fresh = destination("lan", "/srv/backup");
        History::none().restore(&fresh);
        assert_eq!(fresh.status().consecutive_failures, 0);
    }

    #[test]
    fn a_destination_with_failures_is_retrying_even_while_nothing_is_queued() {
        let old = Arc::new(destination("far", "/srv/far"));
        lock(&old.record).failures = 2;
        let history = History::of(&[old]);
        let dest = destination("far", "/srv/far");
        history.restore(&dest);
        // The worker takes the start-up comparison: nothing is queued while it connects.
        let taken = dest.next_work(&crate::daemon::config::Schedule::default(), &mut || false);
        assert!(taken.is_some());
        assert!(!lock(&dest.queue).waiting.pending);
        assert_eq!(dest.status().state, "retrying");
    }
}
