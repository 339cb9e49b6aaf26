//! Delivery in the background: each notifier has its own queue and task, so a slow or
//! failing receiver delays nobody (raising an event never waits, and never blocks a
//! backup), and each retries with backoff. What happened is kept per notifier for
//! `status` and the metrics.

use super::event::Event;
use super::send::Sender;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Events queued per notifier; beyond, new ones are dropped (and counted).
const QUEUE: usize = 256;

/// First wait before a retry; it doubles up to [`MAX_RETRY_DELAY`].
const FIRST_RETRY_DELAY: Duration = Duration::from_secs(1);

/// Longest wait between two attempts.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(300);

/// How long an event is retried before it is given up (and counted as dropped).
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(3600);

/// One notifier as `status` shows it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NotifierHealth {
    /// Its name (kind and host unless configured).
    pub name: String,
    /// webhook, healthchecks, ntfy or email.
    pub kind: String,
    /// Whether its last attempt succeeded (true before any).
    pub healthy: bool,
    /// Events delivered.
    pub delivered: u64,
    /// Attempts that failed (each retry counts).
    pub failures: u64,
    /// Events given up: retried for an hour, or dropped from a full queue.
    pub dropped: u64,
    /// Events waiting for delivery.
    pub queued: u64,
    /// The last failure's reason (no secrets in it).
    pub last_error: Option<String>,
    /// When the last delivery succeeded (Unix seconds).
    pub last_delivered_unix: Option<u64>,
}

/// One notifier's queue and record.
struct Slot {
    sender: Arc<Sender>,
    tx: mpsc::Sender<(Event, Instant)>,
    health: Arc<Mutex<NotifierHealth>>,
}

/// Every notifier of a configuration, each with its delivery task.
#[derive(Clone, Default)]
pub struct Hub {
    slots: Arc<Vec<Slot>>,
}

fn lock(m: &Mutex<NotifierHealth>) -> std::sync::MutexGuard<'_, NotifierHealth> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Hub {
    /// No notifiers: events go nowhere.
    pub fn none() -> Hub {
        Hub::default()
    }

    /// Start a delivery task per notifier on `rt`.
    pub fn start(senders: Vec<Sender>, rt: &tokio::runtime::Handle) -> Hub {
        let slots = senders
            .into_iter()
            .map(|s| {
                let (tx, rx) = mpsc::channel(QUEUE);
                let health = Arc::new(Mutex::new(NotifierHealth {
                    name: s.config.name.clone(),
                    kind: s.config.kind().to_string(),
                    healthy: true,
                    ..NotifierHealth::default()
                }));
                let sender = Arc::new(s);
                rt.spawn(deliver_all(sender.clone(), rx, health.clone()));
                Slot { sender, tx, health }
            })
            .collect();
        Hub {
            slots: Arc::new(slots),
        }
    }

    /// Queue `event` for every notifier that wants it; never waits.
    pub fn raise(&self, event: &Event) {
        for slot in self.slots.iter() {
            if !slot.sender.config.wants(event) {
                continue;
            }
            match slot.tx.try_send((event.clone(), Instant::now())) {
                Ok(()) => lock(&slot.health).queued += 1,
                Err(_) => {
                    let mut h = lock(&slot.health);
                    h.dropped += 1;
                    tracing::warn!(
                        notifier = %h.name,
                        "notification {} dropped: {QUEUE} are already waiting for delivery",
                        event.event
                    );
                }
            }
        }
    }

    /// Each notifier's record, in configuration order.
    pub fn health(&self) -> Vec<NotifierHealth> {
        self.slots.iter().map(|s| lock(&s.health).clone()).collect()
    }

    /// Wait until every queue is delivered or `within` has passed (a stopping daemon
    /// sends what it just raised, but does not hang on a receiver that is down).
    pub async fn flush(&self, within: Duration) {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline && self.health().iter().any(|h| h.queued > 0) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The delay before retry `n` (1-based).
pub fn retry_delay(n: u32) -> Duration {
    FIRST_RETRY_DELAY
        .saturating_mul(1u32 << n.saturating_sub(1).min(16))
        .min(MAX_RETRY_DELAY)
}

/// Deliver a notifier's events in order, each retried with backoff until delivered or
/// [`GIVE_UP_AFTER`] has passed.
async fn deliver_all(
    sender: Arc<Sender>,
    mut rx: mpsc::Receiver<(Event, Instant)>,
    health: Arc<Mutex<NotifierHealth>>,
) {
    let name = sender.config.name.clone();
    // The hour of retries counts from when the event was raised, not from when its turn
    // came: events queued behind one being retried do not each get an hour more.
    while let Some((event, raised)) = rx.recv().await {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match sender.deliver(&event).await {
                Ok(sent) => {
                    let mut h = lock(&health);
                    h.healthy = true;
                    if sent {
                        h.delivered += 1;
                        h.last_delivered_unix = Some(crate::host::now_unix());
                    }
                    break;
                }
                Err(e) => {
                    let delay = retry_delay(attempt);
                    let give_up = raised.elapsed() + delay > GIVE_UP_AFTER;
                    {
                        let mut h = lock(&health);
                        h.healthy = false;
                        h.failures += 1;
                        h.last_error = Some(e.to_string());
                        if give_up {
                            h.dropped += 1;
                        }
                    }
                    if give_up {
                        tracing::error!(notifier = %name, "notification {} given up after {attempt} attempts: {e}", event.event);
                        break;
                    }
                    tracing::warn!(
                        notifier = %name,
                        "notification {} not delivered (trying again in {}): {e}",
                        event.event,
                        humantime::format_duration(delay)
                    );
                    tokio::time::sleep(delay).await;
                }
            }
        }
        let mut h = lock(&health);
        h.queued = h.queued.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_from_a_second_to_five_minutes() {
        let d: Vec<u64> = (1..=12).map(|n| retry_delay(n).as_secs()).collect();
        assert_eq!(d, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
    }
}
