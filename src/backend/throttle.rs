//! An upload bandwidth cap around any backend, so a backup does not saturate a home or
//! office uplink. Uploads reserve their share of a byte budget that refills at the
//! configured rate; an upload waits until its reservation starts. The average rate over
//! any window longer than one object is the limit; single objects are not paced inside.

use super::{Backend, BackendError, FileType, Handle, ObjectInfo};
use async_trait::async_trait;
use bytes::Bytes;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// When the next upload may start, given the previous reservation: pure, for tests.
pub fn reserve(now: Instant, next_free: Instant, bytes: u64, rate: u64) -> (Instant, Instant) {
    let start = next_free.max(now);
    let cost = Duration::from_secs_f64(bytes as f64 / rate.max(1) as f64);
    (start, start + cost)
}

/// A backend whose `put`s together stay under `rate` bytes per second on average.
#[derive(Debug)]
pub struct ThrottleBackend<B> {
    inner: B,
    rate: u64,
    next_free: Mutex<Instant>,
}

impl<B: Backend> ThrottleBackend<B> {
    /// Wrap `inner` with an upload limit of `rate` bytes per second.
    pub fn new(inner: B, rate: u64) -> Self {
        ThrottleBackend {
            inner,
            rate,
            next_free: Mutex::new(Instant::now()),
        }
    }
}

#[async_trait]
impl<B: Backend> Backend for ThrottleBackend<B> {
    fn location(&self) -> String {
        self.inner.location()
    }

    async fn put(&self, handle: &Handle, data: Bytes) -> Result<(), BackendError> {
        let start = {
            let mut next = self.next_free.lock().await;
            let (start, after) = reserve(Instant::now(), *next, data.len() as u64, self.rate);
            *next = after;
            start
        };
        tokio::time::sleep_until(start).await;
        self.inner.put(handle, data).await
    }

    async fn get(&self, handle: &Handle) -> Result<Vec<u8>, BackendError> {
        self.inner.get(handle).await
    }

    async fn get_range_into(
        &self,
        handle: &Handle,
        offset: u64,
        length: u64,
        buf: Vec<u8>,
    ) -> Result<Vec<u8>, BackendError> {
        self.inner.get_range_into(handle, offset, length, buf).await
    }

    async fn stat(&self, handle: &Handle) -> Result<u64, BackendError> {
        self.inner.stat(handle).await
    }

    async fn list(&self, kind: FileType) -> Result<Vec<ObjectInfo>, BackendError> {
        self.inner.list(kind).await
    }

    async fn delete(&self, handle: &Handle) -> Result<(), BackendError> {
        self.inner.delete(handle).await
    }

    async fn cleanup_stale_uploads(&self, older_than: Duration) -> Result<usize, BackendError> {
        self.inner.cleanup_stale_uploads(older_than).await
    }
    async fn locked_until(
        &self,
        handle: &Handle,
    ) -> Result<Option<std::time::SystemTime>, BackendError> {
        self.inner.locked_until(handle).await
    }

    async fn extend_lock(&self, handle: &Handle) -> Result<bool, BackendError> {
        self.inner.extend_lock(handle).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_queue_at_the_rate() {
        let t0 = Instant::now();
        let (s1, n1) = reserve(t0, t0, 1_000_000, 1_000_000);
        assert_eq!(s1, t0);
        assert_eq!(n1, t0 + Duration::from_secs(1));
        // A second upload right away waits for the first one's second.
        let (s2, n2) = reserve(t0, n1, 500_000, 1_000_000);
        assert_eq!(s2, t0 + Duration::from_secs(1));
        assert_eq!(n2, t0 + Duration::from_millis(1500));
        // After an idle spell, no debt is carried and no burst credit is saved up.
        let later = t0 + Duration::from_secs(10);
        let (s3, _) = reserve(later, n2, 1, 1_000_000);
        assert_eq!(s3, later);
    }

    #[tokio::test]
    async fn uploads_are_paced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let b = ThrottleBackend::new(
            super::super::local::LocalBackend::without_config(dir.path()),
            200_000,
        );
        let t = std::time::Instant::now();
        for i in 0..3 {
            let h = Handle::new(FileType::Pack, format!("{i:064x}"));
            b.put(&h, Bytes::from(vec![0u8; 100_000]))
                .await
                .expect("put");
        }
        // 300 kB at 200 kB/s: the third upload starts after one second.
        assert!(
            t.elapsed() >= Duration::from_millis(950),
            "{:?}",
            t.elapsed()
        );
    }
}
