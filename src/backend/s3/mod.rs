//! A repository in an S3-compatible bucket (AWS S3, MinIO, Garage, Ceph RGW, B2, R2).
//!
//! PUT is atomic in S3: an object appears whole under its name or not at all, so a failed
//! or retried upload never leaves a partial object visible. Objects at or above the
//! multipart threshold go up in parts with bounded concurrency; a failed multipart upload
//! is aborted before the error is returned. The SDK's own retries are off: retrying is the
//! job of [`super::retry::RetryBackend`], so one policy covers every backend and tests can
//! see every attempt. Errors are mapped to [`BackendError`] with the bucket, the endpoint and
//! what to do for the mistakes users make (credentials, bucket name, region, clock, TLS).
//!
//! This file holds the [`Backend`] implementation; its parts live beside it: `client`
//! (setting up the SDK client), `signing` (when an upload's body goes unsigned), `read`
//! (GETs held to the contract's lengths), `multipart` (uploads in parts), `object_lock`
//! (retention dates and what a delete removes), `errors` (SDK errors in words a user
//! can act on) and `transport` (why a request got no answer, from the error's causes).

mod client;
mod errors;
mod multipart;
mod object_lock;
mod read;
mod signing;
mod transport;

pub use client::S3SetupError;

use super::options::S3Location;
use super::{Backend, BackendError, FileType, Handle, ObjectInfo};
use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::StorageClass;
use bytes::Bytes;
use signing::UnsignedOverTls;
use std::io;
use std::time::Duration;

/// An S3 bucket (and prefix) holding one repository.
#[derive(Debug, Clone)]
pub struct S3Backend {
    client: Client,
    location: S3Location,
    endpoint_display: String,
    storage_class: Option<StorageClass>,
    multipart_threshold: u64,
    part_size: u64,
    part_concurrency: usize,
    object_lock: Option<super::options::ObjectLock>,
    /// Sign every upload's body hash, whatever the scheme (`s3.sign-payload=always`);
    /// otherwise [`UnsignedOverTls`] leaves it out of requests that go over TLS.
    always_sign_payload: bool,
    /// Where the credentials come from, as error messages name it ("AWS_SECRET_ACCESS_KEY
    /// in the environment"), so a rejected key says where to fix it.
    credentials: client::CredentialsOrigin,
    /// The region requests are signed for, named when a server asks for another.
    region: String,
}

impl S3Backend {
    /// The key of an object in the bucket: its path in the repository under the prefix.
    fn key(&self, h: &Handle) -> String {
        self.key_of(&h.path())
    }

    /// The key of a path relative to the repository (also a listing prefix).
    fn key_of(&self, rel: &str) -> String {
        if self.location.prefix.is_empty() {
            rel.to_string()
        } else {
            format!("{}/{rel}", self.location.prefix)
        }
    }

    /// The bucket and the endpoint it was reached at, as error messages name them, so a
    /// user with several destinations sees which one failed.
    fn describe_bucket(&self) -> String {
        format!(
            "bucket {:?} at {}",
            self.location.bucket, self.endpoint_display
        )
    }

    /// Store `data` under `h` in one PUT, below the multipart threshold.
    async fn put_single(&self, h: &Handle, data: Bytes) -> Result<(), BackendError> {
        let key = self.key(h);
        let lock = self.lock_now();
        let put = self
            .client
            .put_object()
            .bucket(&self.location.bucket)
            .key(&key)
            .content_length(data.len() as i64)
            .set_storage_class(self.storage_class.clone())
            .set_object_lock_mode(lock.as_ref().map(|l| l.0.clone()))
            .set_object_lock_retain_until_date(lock.map(|l| l.1))
            .body(ByteStream::from(data));
        let sent = if self.always_sign_payload {
            put.send().await
        } else {
            put.customize().interceptor(UnsignedOverTls).send().await
        };
        sent.map_err(|e| self.map_err("write", h.path(), e))?;
        Ok(())
    }
}

#[async_trait]
impl Backend for S3Backend {
    fn location(&self) -> String {
        self.location.display()
    }

    async fn put(&self, handle: &Handle, data: Bytes) -> Result<(), BackendError> {
        if data.len() as u64 >= self.multipart_threshold {
            self.put_multipart(handle, data).await
        } else {
            self.put_single(handle, data).await
        }
    }

    async fn get(&self, handle: &Handle) -> Result<Vec<u8>, BackendError> {
        self.read(handle, None, Vec::new()).await
    }

    async fn get_range_into(
        &self,
        handle: &Handle,
        offset: u64,
        length: u64,
        buf: Vec<u8>,
    ) -> Result<Vec<u8>, BackendError> {
        if length == 0 {
            return Ok(Vec::new());
        }
        self.read(handle, Some((offset, length)), buf).await
    }

    async fn stat(&self, handle: &Handle) -> Result<u64, BackendError> {
        let out = self
            .client
            .head_object()
            .bucket(&self.location.bucket)
            .key(self.key(handle))
            .send()
            .await
            .map_err(|e| self.map_err("stat", handle.path(), e))?;
        Ok(out.content_length().unwrap_or(0).max(0) as u64)
    }

    async fn list(&self, kind: FileType) -> Result<Vec<ObjectInfo>, BackendError> {
        let prefix = if kind == FileType::Config {
            self.key_of("config")
        } else {
            self.key_of(&format!("{}/", kind.dir()))
        };
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        let mut token_seen = std::collections::HashSet::new();
        loop {
            let resp = self
                .client
                .list_objects_v2()
                .bucket(&self.location.bucket)
                .prefix(&prefix)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| self.map_err("list", prefix.clone(), e))?;
            for o in resp.contents() {
                let Some(key) = o.key() else { continue };
                let rel = &key[prefix.len().min(key.len())..];
                let name = rel.rsplit('/').next().unwrap_or(rel);
                if kind == FileType::Config {
                    if rel.is_empty() {
                        out.push(ObjectInfo {
                            name: String::new(),
                            size: o.size().unwrap_or(0).max(0) as u64,
                            modified: o
                                .last_modified()
                                .and_then(|t| std::time::SystemTime::try_from(*t).ok()),
                        });
                    }
                    continue;
                }
                if name.is_empty() || name.starts_with('.') {
                    continue;
                }
                out.push(ObjectInfo {
                    name: name.to_string(),
                    size: o.size().unwrap_or(0).max(0) as u64,
                    modified: o
                        .last_modified()
                        .and_then(|t| std::time::SystemTime::try_from(*t).ok()),
                });
            }
            if resp.is_truncated() != Some(true) {
                break;
            }
            // A truncated listing without a fresh token would silently hide objects (an
            // older `latest`) or loop forever: both are errors.
            match resp.next_continuation_token() {
                Some(t) if token_seen.insert(t.to_string()) => token = Some(t.to_string()),
                _ => {
                    return Err(BackendError::Io {
                        op: "list",
                        object: prefix.clone(),
                        location: self.location.display(),
                        source: io::Error::other(format!(
                            "{} returned a truncated listing without a new continuation token",
                            self.describe_bucket()
                        )),
                        retryable: true,
                    });
                }
            }
        }
        Ok(out)
    }

    async fn delete(&self, handle: &Handle) -> Result<(), BackendError> {
        // On an Object Lock bucket a plain delete only hides the object; which version
        // goes, if any, is `version_to_delete`'s call.
        let version = if self.object_lock.is_some() {
            match self.version_to_delete(handle).await {
                Ok(v) => v,
                Err(BackendError::NotFound { .. }) => return Ok(()),
                Err(other) => return Err(other),
            }
        } else {
            None
        };
        match self
            .client
            .delete_object()
            .bucket(&self.location.bucket)
            .key(self.key(handle))
            .set_version_id(version)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match self.map_err("delete", handle.path(), e) {
                BackendError::NotFound { .. } => Ok(()),
                other => Err(other),
            },
        }
    }

    async fn cleanup_stale_uploads(&self, older_than: Duration) -> Result<usize, BackendError> {
        self.abort_stale_uploads(older_than).await
    }

    async fn locked_until(
        &self,
        handle: &Handle,
    ) -> Result<Option<std::time::SystemTime>, BackendError> {
        self.retained_until(handle).await
    }

    async fn extend_lock(&self, handle: &Handle) -> Result<bool, BackendError> {
        self.extend_retention(handle).await
    }
}
