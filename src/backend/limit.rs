//! A global cap on requests in flight, around any backend, so that many parallel uploads
//! and reads never open more connections than the destination (or the link) tolerates.

use super::{Backend, BackendError, FileType, Handle, ObjectInfo};
use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::Semaphore;

/// A backend that runs at most `n` requests at once.
#[derive(Debug)]
pub struct LimitBackend<B> {
    inner: B,
    permits: Semaphore,
}

impl<B: Backend> LimitBackend<B> {
    /// Wrap `inner` with a limit of `n` concurrent requests.
    pub fn new(inner: B, n: usize) -> Self {
        LimitBackend {
            inner,
            permits: Semaphore::new(n.max(1)),
        }
    }
}

macro_rules! limited {
    ($self:ident, $call:expr) => {{
        // The semaphore is never closed, so acquiring cannot fail.
        let _permit = $self.permits.acquire().await.ok();
        $call.await
    }};
}

#[async_trait]
impl<B: Backend> Backend for LimitBackend<B> {
    fn location(&self) -> String {
        self.inner.location()
    }

    async fn put(&self, handle: &Handle, data: Bytes) -> Result<(), BackendError> {
        limited!(self, self.inner.put(handle, data))
    }

    async fn get(&self, handle: &Handle) -> Result<Vec<u8>, BackendError> {
        limited!(self, self.inner.get(handle))
    }

    async fn get_range_into(
        &self,
        handle: &Handle,
        offset: u64,
        length: u64,
        buf: Vec<u8>,
    ) -> Result<Vec<u8>, BackendError> {
        limited!(self, self.inner.get_range_into(handle, offset, length, buf))
    }

    async fn stat(&self, handle: &Handle) -> Result<u64, BackendError> {
        limited!(self, self.inner.stat(handle))
    }

    async fn list(&self, kind: FileType) -> Result<Vec<ObjectInfo>, BackendError> {
        limited!(self, self.inner.list(kind))
    }

    async fn delete(&self, handle: &Handle) -> Result<(), BackendError> {
        limited!(self, self.inner.delete(handle))
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
        limited!(self, self.inner.locked_until(handle))
    }

    async fn extend_lock(&self, handle: &Handle) -> Result<bool, BackendError> {
        limited!(self, self.inner.extend_lock(handle))
    }
}
