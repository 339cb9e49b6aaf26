//! Retries with exponential backoff and full jitter, around any backend.
//!
//! Only errors the backend marks retryable are retried (5xx, SlowDown, timeouts, resets,
//! truncated bodies); "not found", "access denied" and the like fail at once. Retrying a
//! `put` is safe because every backend's `put` is atomic: a failed attempt leaves no
//! partial object under the final name.

use super::{Backend, BackendError, FileType, Handle, ObjectInfo};
use async_trait::async_trait;
use bytes::Bytes;
use std::sync::Mutex;
use std::time::Duration;

/// Longest single wait between attempts.
const MAX_DELAY: Duration = Duration::from_secs(30);

/// A backend whose retryable failures are retried.
#[derive(Debug)]
pub struct RetryBackend<B> {
    inner: B,
    attempts: u32,
    base: Duration,
    rng: Mutex<u64>,
}

impl<B: Backend> RetryBackend<B> {
    /// Wrap `inner`: up to `attempts` tries per call, first delay `base`. `seed` feeds the
    /// jitter so tests can replay a schedule.
    pub fn new(inner: B, attempts: u32, base: Duration, seed: u64) -> Self {
        RetryBackend {
            inner,
            attempts: attempts.max(1),
            base,
            rng: Mutex::new(seed | 1),
        }
    }

    /// The wait before retry number `retry` (0-based): uniform in [0, min(cap, base*2^retry)].
    fn delay(&self, retry: u32) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32.checked_shl(retry.min(20)).unwrap_or(u32::MAX))
            .min(MAX_DELAY);
        let mut x = self.rng.lock().map(|g| *g).unwrap_or(1);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if let Ok(mut g) = self.rng.lock() {
            *g = x;
        }
        let nanos = ceiling.as_nanos() as u64;
        Duration::from_nanos(if nanos == 0 { 0 } else { x % (nanos + 1) })
    }

    async fn retry<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T, BackendError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, BackendError>>,
    {
        let mut attempt = 0;
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_retryable() && attempt + 1 < self.attempts => {
                    let wait = self.delay(attempt);
                    tracing::info!(
                        "{what} failed (attempt {} of {}), retrying in {wait:?}: {e}",
                        attempt + 1,
                        self.attempts
                    );
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

#[async_trait]
impl<B: Backend> Backend for RetryBackend<B> {
    fn location(&self) -> String {
        self.inner.location()
    }

    async fn put(&self, handle: &Handle, data: Bytes) -> Result<(), BackendError> {
        self.retry(&format!("write {handle}"), || {
            self.inner.put(handle, data.clone())
        })
        .await
    }

    async fn get(&self, handle: &Handle) -> Result<Vec<u8>, BackendError> {
        self.retry(&format!("read {handle}"), || self.inner.get(handle))
            .await
    }

    async fn get_range_into(
        &self,
        handle: &Handle,
        offset: u64,
        length: u64,
        buf: Vec<u8>,
    ) -> Result<Vec<u8>, BackendError> {
        // The first attempt gets the buffer; a retry, after a failure, a new one.
        let buf = std::sync::Mutex::new(Some(buf));
        self.retry(&format!("read {handle}"), || {
            let b = buf
                .lock()
                .ok()
                .and_then(|mut b| b.take())
                .unwrap_or_default();
            self.inner.get_range_into(handle, offset, length, b)
        })
        .await
    }

    async fn stat(&self, handle: &Handle) -> Result<u64, BackendError> {
        self.retry(&format!("stat {handle}"), || self.inner.stat(handle))
            .await
    }

    async fn list(&self, kind: FileType) -> Result<Vec<ObjectInfo>, BackendError> {
        self.retry(&format!("list {}", kind.dir()), || self.inner.list(kind))
            .await
    }

    async fn delete(&self, handle: &Handle) -> Result<(), BackendError> {
        self.retry(&format!("delete {handle}"), || self.inner.delete(handle))
            .await
    }

    async fn cleanup_stale_uploads(
        &self,
        older_than: std::time::Duration,
    ) -> Result<usize, BackendError> {
        self.inner.cleanup_stale_uploads(older_than).await
    }

    async fn locked_until(
        &self,
        handle: &Handle,
    ) -> Result<Option<std::time::SystemTime>, BackendError> {
        self.retry(&format!("read the lock of {handle}"), || {
            self.inner.locked_until(handle)
        })
        .await
    }

    async fn extend_lock(&self, handle: &Handle) -> Result<bool, BackendError> {
        self.retry(&format!("extend the lock of {handle}"), || {
            self.inner.extend_lock(handle)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::local::LocalBackend;

    #[test]
    fn delays_grow_and_stay_within_the_cap() {
        let r = RetryBackend::new(
            LocalBackend::new("/nonexistent"),
            5,
            Duration::from_millis(100),
            42,
        );
        for retry in 0..40 {
            let d = r.delay(retry);
            let cap = Duration::from_millis(100)
                .saturating_mul(1u32.checked_shl(retry.min(20)).unwrap_or(u32::MAX))
                .min(MAX_DELAY);
            assert!(d <= cap, "retry {retry}: {d:?} > {cap:?}");
        }
    }
}
