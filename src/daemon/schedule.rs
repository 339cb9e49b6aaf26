//! When a destination takes its next snapshot: a pure function of what is pending and
//! the clock, so the timing rules are tested without sleeping.
//!
//! Rules: a snapshot starts once no change has arrived for the quiet period (so a file
//! being written is read after it settles), but never more than `max_delay` after the
//! first pending change (so a file written forever still gets backed up), never sooner
//! than `min_interval` after the previous start, and not before a failed attempt's
//! retry time. A request from `cairn backup --now` skips every wait: the user asked.

use super::config::Schedule;
use std::time::{Duration, Instant};

/// What one destination has waiting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Waiting {
    /// Whether any change (or a rescan) is pending.
    pub pending: bool,
    /// Arrival of the first pending change.
    pub first_change: Option<Instant>,
    /// Arrival of the latest pending change.
    pub last_change: Option<Instant>,
    /// Start of the previous snapshot attempt.
    pub last_start: Option<Instant>,
    /// Earliest retry after a failure.
    pub retry_at: Option<Instant>,
    /// Someone asked for a snapshot now.
    pub requested: bool,
}

/// What to do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Start a snapshot.
    Run,
    /// Nothing to do before this time (or before new changes arrive).
    WaitUntil(Instant),
    /// Nothing to do until new changes arrive.
    Idle,
}

/// Decide for one destination.
pub fn decide(now: Instant, w: &Waiting, s: &Schedule) -> Decision {
    if w.requested {
        return Decision::Run;
    }
    if !w.pending {
        return Decision::Idle;
    }
    let mut due = now;
    if let Some(last) = w.last_change {
        let settle = last + s.quiet_period;
        let cap = w.first_change.map_or(settle, |f| f + s.max_delay);
        due = due.max(settle.min(cap));
    }
    if let Some(start) = w.last_start {
        due = due.max(start + s.min_interval);
    }
    if let Some(retry) = w.retry_at {
        due = due.max(retry);
    }
    if due <= now {
        Decision::Run
    } else {
        Decision::WaitUntil(due)
    }
}

/// Delay before retrying a destination after `failures` failures in a row: 5 s doubling
/// to 30 s, so a destination that is down is polled, not hammered, and one that comes
/// back is caught up within half a minute.
pub fn retry_delay(failures: u32) -> Duration {
    let secs = 5u64.saturating_mul(1u64 << failures.saturating_sub(1).min(6));
    Duration::from_secs(secs.min(30))
}

/// Delay before a command source that failed `failures` times in a row runs again: 30 s
/// doubling, never longer than its own interval `every` (a dump that fails is tried
/// again soon, but a failing hourly dump does not run, or alert, every 30 s).
pub fn command_retry_delay(failures: u32, every: Duration) -> Duration {
    let secs = 30u64.saturating_mul(1u64 << failures.saturating_sub(1).min(10));
    Duration::from_secs(secs).min(every)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched() -> Schedule {
        Schedule {
            quiet_period: Duration::from_secs(2),
            min_interval: Duration::from_secs(10),
            max_delay: Duration::from_secs(60),
            rescan_interval: Duration::from_secs(3600),
            retention_interval: Duration::from_secs(3600),
            ..Schedule::default()
        }
    }

    #[test]
    fn waits_for_quiet_then_runs() {
        let t = Instant::now();
        let mut w = Waiting {
            pending: true,
            first_change: Some(t),
            last_change: Some(t),
            ..Waiting::default()
        };
        let s = sched();
        assert_eq!(
            decide(t, &w, &s),
            Decision::WaitUntil(t + Duration::from_secs(2))
        );
        // Another change pushes the snapshot back.
        w.last_change = Some(t + Duration::from_secs(1));
        assert_eq!(
            decide(t + Duration::from_secs(2), &w, &s),
            Decision::WaitUntil(t + Duration::from_secs(3))
        );
        assert_eq!(decide(t + Duration::from_secs(3), &w, &s), Decision::Run);
    }

    #[test]
    fn constant_writes_are_capped_by_max_delay() {
        let t = Instant::now();
        let w = Waiting {
            pending: true,
            first_change: Some(t),
            last_change: Some(t + Duration::from_secs(59)),
            ..Waiting::default()
        };
        assert_eq!(
            decide(t + Duration::from_secs(59), &w, &sched()),
            Decision::WaitUntil(t + Duration::from_secs(60))
        );
        assert_eq!(
            decide(t + Duration::from_secs(60), &w, &sched()),
            Decision::Run
        );
    }

    #[test]
    fn min_interval_and_retry_hold_back_but_requests_do_not() {
        let t = Instant::now();
        let mut w = Waiting {
            pending: true,
            first_change: Some(t),
            last_change: Some(t),
            last_start: Some(t),
            ..Waiting::default()
        };
        assert_eq!(
            decide(t + Duration::from_secs(3), &w, &sched()),
            Decision::WaitUntil(t + Duration::from_secs(10))
        );
        w.retry_at = Some(t + Duration::from_secs(30));
        assert_eq!(
            decide(t + Duration::from_secs(11), &w, &sched()),
            Decision::WaitUntil(t + Duration::from_secs(30))
        );
        w.requested = true;
        assert_eq!(
            decide(t + Duration::from_secs(11), &w, &sched()),
            Decision::Run
        );
    }

    #[test]
    fn nothing_pending_is_idle() {
        assert_eq!(
            decide(Instant::now(), &Waiting::default(), &sched()),
            Decision::Idle
        );
    }

    #[test]
    fn a_failing_command_backs_off_up_to_its_interval() {
        let hour = Duration::from_secs(3600);
        assert_eq!(command_retry_delay(1, hour), Duration::from_secs(30));
        assert_eq!(command_retry_delay(2, hour), Duration::from_secs(60));
        assert_eq!(command_retry_delay(5, hour), Duration::from_secs(480));
        assert_eq!(command_retry_delay(8, hour), hour);
        assert_eq!(command_retry_delay(99, hour), hour);
        assert_eq!(
            command_retry_delay(1, Duration::from_secs(10)),
            Duration::from_secs(10)
        );
    }

    #[test]
    fn retry_backoff_grows_and_caps() {
        assert_eq!(retry_delay(1), Duration::from_secs(5));
        assert_eq!(retry_delay(2), Duration::from_secs(10));
        assert_eq!(retry_delay(3), Duration::from_secs(20));
        assert_eq!(retry_delay(4), Duration::from_secs(30));
        assert_eq!(retry_delay(50), Duration::from_secs(30));
    }
}
