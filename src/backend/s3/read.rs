//! Reading objects back: whole ones and byte ranges of packs.
//!
//! Every GET of the backend goes through [`S3Backend::read`], which holds the bucket to
//! the backend contract: exactly the bytes asked for or an error, a short body is
//! [`BackendError::Truncated`], and a body larger than the object's kind allows (or than
//! the range asked for) is refused before it is held in memory.

use super::S3Backend;
use crate::backend::{BackendError, Handle};
use std::io;

/// Most a read reserves before the body arrives; a larger body grows the buffer as it comes.
const READ_RESERVE: u64 = 64 * 1024 * 1024;

impl S3Backend {
    /// GET a whole object or a byte range, into `body` (cleared first; a caller reading
    /// range after range passes the same buffer back). The declared length is checked
    /// before the body is buffered (a server answering a range with the whole object, or a
    /// huge object, is refused), and the body received must match it exactly.
    pub(super) async fn read(
        &self,
        handle: &Handle,
        range: Option<(u64, u64)>,
        mut body: Vec<u8>,
    ) -> Result<Vec<u8>, BackendError> {
        let mut req = self
            .client
            .get_object()
            .bucket(&self.location.bucket)
            .key(self.key(handle));
        if let Some((offset, length)) = range {
            // Offsets come from index entries, which a hostile bucket controls: a range
            // past 2^64 is refused here rather than overflowing into a nonsense request.
            let last = offset
                .checked_add(length - 1)
                .ok_or_else(|| BackendError::Io {
                    op: "read",
                    object: handle.path(),
                    location: self.location.display(),
                    source: io::Error::other(format!(
                        "range of {length} bytes at offset {offset} ends past 2^64"
                    )),
                    retryable: false,
                })?;
            req = req.range(format!("bytes={offset}-{last}"));
        }
        let out = req
            .send()
            .await
            .map_err(|e| self.map_err("read", handle.path(), e))?;
        let declared = out.content_length();
        let limit = range.map_or(handle.kind.max_stored_len(), |(_, length)| length);
        if declared.is_some_and(|n| n < 0 || n as u64 > limit) {
            return Err(self.oversized(handle, range.is_none(), declared.unwrap_or(-1), limit));
        }
        let wanted = match range {
            Some((_, length)) => Some(length),
            None => declared.map(|n| n.max(0) as u64),
        };
        // Copied once, frame by frame, into a buffer of the expected size: collecting the
        // frames first and then flattening them cost two copies into fresh memory, the
        // largest share of a restore's CPU after decompression. The reservation is capped
        // so that a length a hostile server declares cannot reserve gigabytes up front.
        body.clear();
        body.reserve(wanted.unwrap_or(0).min(READ_RESERVE) as usize);
        let mut stream = out.body;
        while let Some(frame) = stream
            .try_next()
            .await
            .map_err(|e| self.body_err("read", handle.path(), e))?
        {
            if (body.len() + frame.len()) as u64 > limit {
                let got = i64::try_from(body.len() + frame.len()).unwrap_or(i64::MAX);
                return Err(self.oversized(handle, range.is_none(), got, limit));
            }
            // Past the reservation, to the declared size at once rather than doubling:
            // the bytes are arriving, and the length was checked against the limit.
            if body.len() + frame.len() > body.capacity()
                && let Some(w) = wanted
            {
                body.reserve_exact((w as usize).saturating_sub(body.len()).max(frame.len()));
            }
            body.extend_from_slice(&frame);
        }
        if let Some(wanted) = wanted
            && body.len() as u64 != wanted
        {
            return Err(BackendError::Truncated {
                object: handle.path(),
                location: self.location.display(),
                offset: range.map_or(0, |(offset, _)| offset),
                wanted,
                got: body.len() as u64,
            });
        }
        Ok(body)
    }
}
