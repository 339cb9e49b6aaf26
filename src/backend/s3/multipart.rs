//! Uploads in parts, for objects at or above `s3.multipart-threshold`.
//!
//! An upload is created, its parts go up with at most `s3.part-concurrency` in flight,
//! and it is completed only when every part arrived, so the object appears whole or not
//! at all. A failed upload is aborted before the error is returned; uploads that a crash
//! left behind are found and aborted later by [`S3Backend::abort_stale_uploads`].

use super::S3Backend;
use super::signing::UnsignedOverTls;
use crate::backend::{BackendError, Handle};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use std::io;
use std::time::Duration;
use tokio::task::JoinSet;

impl S3Backend {
    /// Store `data` under `h` as a multipart upload; on failure the upload is aborted
    /// (best effort) and the part's error returned.
    pub(super) async fn put_multipart(&self, h: &Handle, data: Bytes) -> Result<(), BackendError> {
        let key = self.key(h);
        let lock = self.lock_now();
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.location.bucket)
            .key(&key)
            .set_storage_class(self.storage_class.clone())
            .set_object_lock_mode(lock.as_ref().map(|l| l.0.clone()))
            .set_object_lock_retain_until_date(lock.map(|l| l.1))
            .send()
            .await
            .map_err(|e| self.map_err("start multipart upload of", h.path(), e))?;
        let upload_id = created.upload_id().unwrap_or_default().to_string();
        let result = self.upload_parts(h, &key, &upload_id, data).await;
        if result.is_err() {
            // Best effort: a left-over upload costs storage but is invisible to readers.
            if let Err(e) = self
                .client
                .abort_multipart_upload()
                .bucket(&self.location.bucket)
                .key(&key)
                .upload_id(&upload_id)
                .send()
                .await
            {
                let e = self.map_err("abort multipart upload of", h.path(), e);
                tracing::warn!("{e} (a later backup removes the parts left over)");
            }
        }
        result
    }

    /// Send the parts of `data` with bounded concurrency and complete the upload; the
    /// first failed part stops the others.
    async fn upload_parts(
        &self,
        h: &Handle,
        key: &str,
        upload_id: &str,
        data: Bytes,
    ) -> Result<(), BackendError> {
        let part = self.part_size as usize;
        let mut set: JoinSet<Result<CompletedPart, BackendError>> = JoinSet::new();
        let mut parts = Vec::new();
        let mut next = 0usize;
        let mut number = 1i32;
        while next < data.len() || !set.is_empty() {
            while next < data.len() && set.len() < self.part_concurrency {
                let end = (next + part).min(data.len());
                let chunk = data.slice(next..end);
                let (me, key, id, obj, n) = (
                    self.clone(),
                    key.to_string(),
                    upload_id.to_string(),
                    h.path(),
                    number,
                );
                set.spawn(async move {
                    let part = me
                        .client
                        .upload_part()
                        .bucket(&me.location.bucket)
                        .key(&key)
                        .upload_id(&id)
                        .part_number(n)
                        .content_length(chunk.len() as i64)
                        .body(ByteStream::from(chunk));
                    let sent = if me.always_sign_payload {
                        part.send().await
                    } else {
                        part.customize().interceptor(UnsignedOverTls).send().await
                    };
                    let out = sent.map_err(|e| me.map_err("upload part of", obj, e))?;
                    Ok(CompletedPart::builder()
                        .part_number(n)
                        .set_e_tag(out.e_tag().map(str::to_string))
                        .build())
                });
                next = end;
                number += 1;
            }
            match set.join_next().await {
                Some(Ok(Ok(p))) => parts.push(p),
                Some(Ok(Err(e))) => {
                    // Stop the other parts before the caller aborts the upload.
                    set.shutdown().await;
                    return Err(e);
                }
                Some(Err(join)) => {
                    return Err(BackendError::Io {
                        op: "upload part of",
                        object: h.path(),
                        location: self.location.display(),
                        source: io::Error::other(join.to_string()),
                        retryable: false,
                    });
                }
                None => break,
            }
        }
        parts.sort_by_key(|p| p.part_number());
        self.client
            .complete_multipart_upload()
            .bucket(&self.location.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| self.map_err("complete multipart upload of", h.path(), e))?;
        Ok(())
    }

    /// Abort multipart uploads under this repository's prefix that started more than
    /// `older_than` ago: left by a crashed or killed upload. Younger ones may belong to a
    /// backup running right now on another host.
    pub(super) async fn abort_stale_uploads(
        &self,
        older_than: Duration,
    ) -> Result<usize, BackendError> {
        let prefix = self.key_of("data/");
        let resp = self
            .client
            .list_multipart_uploads()
            .bucket(&self.location.bucket)
            .prefix(&prefix)
            .send()
            .await
            .map_err(|e| self.map_err("list multipart uploads in", prefix.clone(), e))?;
        let cutoff = std::time::SystemTime::now() - older_than;
        let mut aborted = 0;
        for u in resp.uploads() {
            let started = u
                .initiated()
                .and_then(|t| std::time::SystemTime::try_from(*t).ok());
            if started.is_some_and(|s| s < cutoff)
                && let (Some(key), Some(id)) = (u.key(), u.upload_id())
            {
                self.client
                    .abort_multipart_upload()
                    .bucket(&self.location.bucket)
                    .key(key)
                    .upload_id(id)
                    .send()
                    .await
                    .map_err(|e| self.map_err("abort multipart upload of", key.to_string(), e))?;
                aborted += 1;
            }
        }
        Ok(aborted)
    }
}
