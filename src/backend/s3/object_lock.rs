//! S3 Object Lock: what a write asks the bucket to retain, and what a delete may remove.
//!
//! With `s3.object-lock` set, every object is written with a retention date (in governance
//! or compliance mode), the date is renewed on objects still needed
//! (`prune::extend_locks`), and a delete decides per object whether to remove the version
//! (packs, to free the space) or only hide it behind a delete marker (metadata a lock
//! still holds). The README's "S3 Object Lock" says what the lock protects against and how
//! to set a bucket up.

use super::S3Backend;
use crate::backend::{BackendError, FileType, Handle};
use aws_sdk_s3::primitives::DateTime;
use aws_sdk_s3::types::{ObjectLockMode, ObjectLockRetention, ObjectLockRetentionMode};
use std::time::SystemTime;

impl S3Backend {
    /// Lock mode and retain-until date for a write made now, if locking is on.
    pub(super) fn lock_now(&self) -> Option<(ObjectLockMode, DateTime)> {
        let lock = self.object_lock?;
        let mode = if lock.compliance {
            ObjectLockMode::Compliance
        } else {
            ObjectLockMode::Governance
        };
        let until = SystemTime::now() + lock.period;
        Some((mode, DateTime::from(until)))
    }

    /// The version a delete of `handle` removes on an Object Lock bucket: `None` hides the
    /// object behind a delete marker instead. An object already gone is
    /// [`BackendError::NotFound`].
    ///
    /// On an Object Lock bucket (always versioned) a plain delete only hides the object
    /// behind a delete marker. Packs are deleted version and all, to free the space, which
    /// S3 refuses while the lock lasts (prune never asks before then). Metadata objects
    /// that a lock still holds (an index object a prune rewrote) are hidden instead:
    /// readers no longer see them, and the locked version stays, as the lock promises,
    /// until it expires.
    pub(super) async fn version_to_delete(
        &self,
        handle: &Handle,
    ) -> Result<Option<String>, BackendError> {
        let h = self
            .client
            .head_object()
            .bucket(&self.location.bucket)
            .key(self.key(handle))
            .send()
            .await
            .map_err(|e| self.map_err("stat", handle.path(), e))?;
        let locked = h
            .object_lock_retain_until_date()
            .and_then(|d| SystemTime::try_from(*d).ok())
            .is_some_and(|t| t > SystemTime::now());
        Ok(if locked && handle.kind != FileType::Pack {
            None
        } else {
            h.version_id().map(str::to_string)
        })
    }

    /// Until when the lock holds the object, if it still does.
    pub(super) async fn retained_until(
        &self,
        handle: &Handle,
    ) -> Result<Option<SystemTime>, BackendError> {
        let out = self
            .client
            .head_object()
            .bucket(&self.location.bucket)
            .key(self.key(handle))
            .send()
            .await
            .map_err(|e| self.map_err("stat", handle.path(), e))?;
        let until = out
            .object_lock_retain_until_date()
            .and_then(|d| SystemTime::try_from(*d).ok())
            .filter(|t| *t > SystemTime::now());
        Ok(until)
    }

    /// Move the object's retain-until date to a full lock period from now; `false` when
    /// locking is off and there is nothing to extend.
    pub(super) async fn extend_retention(&self, handle: &Handle) -> Result<bool, BackendError> {
        let Some((mode, until)) = self.lock_now() else {
            return Ok(false);
        };
        let retention = ObjectLockRetention::builder()
            .mode(match mode {
                ObjectLockMode::Compliance => ObjectLockRetentionMode::Compliance,
                _ => ObjectLockRetentionMode::Governance,
            })
            .retain_until_date(until)
            .build();
        self.client
            .put_object_retention()
            .bucket(&self.location.bucket)
            .key(self.key(handle))
            .retention(retention)
            .send()
            .await
            .map_err(|e| self.map_err("extend the lock of", handle.path(), e))?;
        Ok(true)
    }
}
