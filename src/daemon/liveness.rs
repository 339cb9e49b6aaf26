//! Whether the daemon's destinations are making progress, for the systemd watchdog.
//!
//! The watchdog is fed only while every destination that is busy (scanning, uploading,
//! committing) has moved some counter (files looked at, bytes read, packs uploaded or
//! failed) within [`STALL_LIMIT`]. A worker frozen for good (a read that never returns,
//! a lock never released) then stops the feeding, and systemd restarts the service
//! instead of leaving it to report stale health forever. An idle destination, or one
//! waiting to retry, is not busy. The limit is long, since a single pack upload over a
//! slow, throttled link can take many minutes without a counter moving.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long a busy destination may go without any counter moving.
pub const STALL_LIMIT: Duration = Duration::from_secs(30 * 60);

/// What is observed of one destination at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Signature {
    /// In a phase where something must move (not idle).
    pub busy: bool,
    /// Counters that move when work is done.
    pub counters: [u64; 6],
}

/// The last change seen of each destination.
#[derive(Debug, Default)]
pub struct Liveness {
    seen: HashMap<String, (Signature, Instant)>,
}

impl Liveness {
    /// The destinations, of those observed now, that are busy and have not moved for
    /// `limit`. Destinations no longer observed are forgotten.
    pub fn stalled(
        &mut self,
        now: Instant,
        observed: &[(String, Signature)],
        limit: Duration,
    ) -> Vec<String> {
        self.seen
            .retain(|name, _| observed.iter().any(|(n, _)| n == name));
        let mut out = Vec::new();
        for (name, sig) in observed {
            match self.seen.get(name) {
                Some((last, since)) if last == sig => {
                    if sig.busy && now.duration_since(*since) >= limit {
                        out.push(name.clone());
                    }
                }
                _ => {
                    self.seen.insert(name.clone(), (*sig, now));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig(busy: bool, n: u64) -> Signature {
        Signature {
            busy,
            counters: [n, 0, 0, 0, 0, 0],
        }
    }

    #[test]
    fn only_a_busy_destination_that_does_not_move_is_stalled() {
        let mut l = Liveness::default();
        let t0 = Instant::now();
        let limit = Duration::from_secs(60);
        let at = |s: u64| t0 + Duration::from_secs(s);
        let obs = |a: Signature, b: Signature| vec![("a".to_string(), a), ("b".to_string(), b)];
        assert!(
            l.stalled(at(0), &obs(sig(true, 1), sig(false, 1)), limit)
                .is_empty()
        );
        // Idle for long is fine; busy and moving is fine.
        assert!(
            l.stalled(at(50), &obs(sig(true, 2), sig(false, 1)), limit)
                .is_empty()
        );
        assert!(
            l.stalled(at(100), &obs(sig(true, 2), sig(false, 1)), limit)
                .is_empty()
        );
        // Busy, the same counters for the whole limit: stalled.
        assert_eq!(
            l.stalled(at(110), &obs(sig(true, 2), sig(false, 1)), limit),
            vec!["a".to_string()]
        );
        // It moves again: no longer stalled.
        assert!(
            l.stalled(at(120), &obs(sig(true, 3), sig(false, 1)), limit)
                .is_empty()
        );
        // Going idle resets the clock too.
        assert!(
            l.stalled(at(200), &obs(sig(false, 3), sig(false, 1)), limit)
                .is_empty()
        );
        assert!(
            l.stalled(at(230), &obs(sig(true, 3), sig(false, 1)), limit)
                .is_empty()
        );
        assert!(
            l.stalled(at(280), &obs(sig(true, 3), sig(false, 1)), limit)
                .is_empty()
        );
        assert_eq!(
            l.stalled(at(300), &obs(sig(true, 3), sig(false, 1)), limit)
                .len(),
            1
        );
    }
}
