//! Bandwidth caps around any backend, so a backup does not saturate a home or office
//! uplink, nor a restore or a scrub its downlink. Each direction has a byte budget that
//! refills at its configured rate, and each transfer reserves its share of it. An upload
//! waits until its reservation starts; the average rate over any window longer than one
//! object is the limit (single objects are not paced inside). A download is handed over
//! when its reservation ends, so reading N bytes takes at least N / rate: a ranged read
//! reserves its length before it is made, a whole object (whose size is known only once
//! it is here) after it arrived, once the reads before it have had their turn.

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

/// One direction's budget: its rate and when what is reserved so far has passed.
#[derive(Debug)]
struct Pace {
    rate: u64,
    next_free: Mutex<Instant>,
}

impl Pace {
    fn new(rate: u64) -> Self {
        Pace {
            rate,
            next_free: Mutex::new(Instant::now()),
        }
    }

    /// Reserve `bytes` now: when the reservation starts and ends.
    async fn take(&self, bytes: u64) -> (Instant, Instant) {
        let mut next = self.next_free.lock().await;
        let (start, end) = reserve(Instant::now(), *next, bytes, self.rate);
        *next = end;
        (start, end)
    }

    /// When what is reserved so far has passed.
    async fn free_at(&self) -> Instant {
        *self.next_free.lock().await
    }
}

/// A backend whose `put`s together stay under one rate and whose reads (`get`,
/// `get_range_into`) under another, each in bytes per second on average.
#[derive(Debug)]
pub struct ThrottleBackend<B> {
    inner: B,
    upload: Option<Pace>,
    download: Option<Pace>,
}

impl<B: Backend> ThrottleBackend<B> {
    /// Wrap `inner` with an upload limit of `rate` bytes per second.
    pub fn new(inner: B, rate: u64) -> Self {
        ThrottleBackend::with_limits(inner, Some(rate), None)
    }

    /// Wrap `inner` with an upload and a download limit in bytes per second (`None`: that
    /// direction is not limited).
    pub fn with_limits(inner: B, upload: Option<u64>, download: Option<u64>) -> Self {
        ThrottleBackend {
            inner,
            upload: upload.map(Pace::new),
            download: download.map(Pace::new),
        }
    }
}

#[async_trait]
impl<B: Backend> Backend for ThrottleBackend<B> {
    fn location(&self) -> String {
        self.inner.location()
    }

    async fn put(&self, handle: &Handle, data: Bytes) -> Result<(), BackendError> {
        if let Some(pace) = &self.upload {
            let (start, _) = pace.take(data.len() as u64).await;
            tokio::time::sleep_until(start).await;
        }
        self.inner.put(handle, data).await
    }

    async fn get(&self, handle: &Handle) -> Result<Vec<u8>, BackendError> {
        let Some(pace) = &self.download else {
            return self.inner.get(handle).await;
        };
        tokio::time::sleep_until(pace.free_at().await).await;
        let data = self.inner.get(handle).await?;
        let (_, end) = pace.take(data.len() as u64).await;
        tokio::time::sleep_until(end).await;
        Ok(data)
    }

    async fn get_range_into(
        &self,
        handle: &Handle,
        offset: u64,
        length: u64,
        buf: Vec<u8>,
    ) -> Result<Vec<u8>, BackendError> {
        let Some(pace) = &self.download else {
            return self.inner.get_range_into(handle, offset, length, buf).await;
        };
        let (start, end) = pace.take(length).await;
        tokio::time::sleep_until(start).await;
        let data = self
            .inner
            .get_range_into(handle, offset, length, buf)
            .await?;
        tokio::time::sleep_until(end).await;
        Ok(data)
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

    #[test]
    fn a_download_is_handed_over_when_its_share_of_the_budget_has_passed() {
        // Downloads use the same reservations, but wait for the end of theirs: one read
        // of two seconds' worth takes two seconds, even with nothing before it.
        let t0 = Instant::now();
        let (_, ready) = reserve(t0, t0, 2_000_000, 1_000_000);
        assert_eq!(ready, t0 + Duration::from_secs(2));
        // A whole object is reserved once it is here, after the reads before it.
        let arrived = t0 + Duration::from_millis(500);
        let (start, ready) = reserve(arrived, t0 + Duration::from_secs(2), 250_000, 1_000_000);
        assert_eq!(start, t0 + Duration::from_secs(2));
        assert_eq!(ready, t0 + Duration::from_millis(2250));
        // A rate of 0 would never end a reservation: it counts as 1 byte per second.
        let (_, ready) = reserve(t0, t0, 3, 0);
        assert_eq!(ready, t0 + Duration::from_secs(3));
    }

    #[tokio::test]
    async fn downloads_are_paced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let b = ThrottleBackend::with_limits(
            super::super::local::LocalBackend::without_config(dir.path()),
            None,
            Some(200_000),
        );
        let h = Handle::new(FileType::Pack, format!("{:064x}", 1));
        b.put(&h, Bytes::from(vec![7u8; 100_000]))
            .await
            .expect("put");
        let t = std::time::Instant::now();
        let part = b
            .get_range_into(&h, 0, 60_000, Vec::new())
            .await
            .expect("range");
        assert_eq!(part.len(), 60_000);
        let whole = b.get(&h).await.expect("get");
        assert_eq!(whole.len(), 100_000);
        // 160 kB at 200 kB/s: 0.8 s, the whole object's share paid after it arrived.
        assert!(
            t.elapsed() >= Duration::from_millis(750),
            "{:?}",
            t.elapsed()
        );
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
