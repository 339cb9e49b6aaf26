//! Turning what went wrong with a request into a [`BackendError`] a user can act on.
//!
//! Every S3 request's failure passes through here. The result names the bucket and the
//! endpoint, says what to do for the mistakes users make (credentials, bucket name,
//! region, clock, TLS), and says whether a retry can help, which is what
//! [`crate::backend::retry::RetryBackend`] goes by. The wording is user-facing and the
//! integration tests match it: change it only on purpose.

use super::S3Backend;
use crate::backend::{BackendError, Handle};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use std::io;

impl S3Backend {
    /// Turn an SDK error into a [`BackendError`] that says what to do; `op` and `object`
    /// name what was being done to which object, for the message.
    pub(super) fn map_err<E>(
        &self,
        op: &'static str,
        object: String,
        err: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    ) -> BackendError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let location = self.location.display();
        let bucket = self.describe_bucket();
        let failed = |kind: io::ErrorKind, message: String, retryable: bool| BackendError::Io {
            op,
            object: object.clone(),
            location: location.clone(),
            source: io::Error::new(kind, message),
            retryable,
        };
        let remote =
            |message: String, retryable: bool| failed(io::ErrorKind::Other, message, retryable);
        // No answer came (as opposed to an answer the server gave): the kind tells
        // readers so ([`BackendError::is_transport_failure`]).
        let unreachable = |kind: io::ErrorKind, message: String| failed(kind, message, true);
        match &err {
            SdkError::ServiceError(se) => {
                let status = se.raw().status().as_u16();
                let code = se.err().code().unwrap_or("").to_string();
                let msg = se.err().message().unwrap_or("").to_string();
                match (status, code.as_str()) {
                    (_, "NoSuchBucket") => remote(
                        format!("{bucket} does not exist: create it, or check the bucket name"),
                        false,
                    ),
                    (404, _) | (_, "NoSuchKey") => BackendError::NotFound { object, location },
                    (_, "RequestTimeTooSkewed") => remote(
                        format!(
                            "{bucket} rejected the request because this machine's clock is off by more than 15 minutes: fix the time (timedatectl set-ntp true)"
                        ),
                        false,
                    ),
                    (
                        _,
                        "AuthorizationHeaderMalformed"
                        | "PermanentRedirect"
                        | "IllegalLocationConstraintException",
                    )
                    | (301, _) => remote(
                        format!(
                            "{bucket} is in another region ({code} {msg}): set the region with -o s3.region=REGION or AWS_REGION"
                        ),
                        false,
                    ),
                    (_, "InvalidAccessKeyId" | "SignatureDoesNotMatch") => remote(
                        format!(
                            "{bucket} rejected the credentials ({code}): check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the profile"
                        ),
                        false,
                    ),
                    (403, _) | (_, "AccessDenied") => remote(
                        format!(
                            "access denied to {bucket} ({code} {msg}): check the credentials and that the bucket policy allows s3:GetObject, s3:PutObject and s3:ListBucket (s3:DeleteObject for prune)"
                        ),
                        false,
                    ),
                    (500..=599 | 429 | 408, _)
                    | (
                        _,
                        "SlowDown" | "InternalError" | "RequestTimeout" | "ServiceUnavailable"
                        | "TooManyRequests",
                    ) => remote(format!("{bucket} answered {status} {code} {msg}"), true),
                    // The body's hash or checksum disagreed with what arrived: damaged on
                    // the way, which sending it again fixes. A server that cannot check the
                    // SDK's checksums answers so every time, hence the hint.
                    (_, "XAmzContentSHA256Mismatch" | "BadDigest") => remote(
                        format!(
                            "{bucket} answered {status} {code} {msg}: the body did not arrive as sent. If this repeats, the server may not accept the SDK's checksums: try -o s3.checksum=when-required"
                        ),
                        true,
                    ),
                    _ => remote(format!("{bucket} answered {status} {code} {msg}"), false),
                }
            }
            SdkError::TimeoutError(_) => unreachable(
                io::ErrorKind::TimedOut,
                format!("request to {bucket} timed out"),
            ),
            SdkError::DispatchFailure(df) => {
                let text = format!("{}", DisplayErrorContext(&err));
                let lower = text.to_lowercase();
                if df.is_timeout() {
                    unreachable(
                        io::ErrorKind::TimedOut,
                        format!("connecting to {bucket} timed out"),
                    )
                } else if lower.contains("certificate") || lower.contains("unknownissuer") {
                    remote(
                        format!(
                            "TLS certificate of {bucket} was not accepted: {text}. For a self-signed certificate pass its CA with -o s3.ca-bundle=FILE"
                        ),
                        false,
                    )
                } else if lower.contains("tls") || lower.contains("handshake") {
                    // Often a reset during the handshake, which a retry can fix; a plain
                    // http server behind an https URL ends here too.
                    remote(
                        format!(
                            "TLS handshake with {bucket} failed: {text}. Check that the endpoint speaks https (or write http://)"
                        ),
                        true,
                    )
                } else if lower.contains("refused") {
                    unreachable(
                        io::ErrorKind::ConnectionRefused,
                        format!(
                            "connection refused by {}: is the server running and the port right?",
                            self.endpoint_display
                        ),
                    )
                } else if df.is_io() || df.is_other() {
                    unreachable(
                        io::ErrorKind::ConnectionReset,
                        format!("cannot reach {bucket}: {text}"),
                    )
                } else {
                    remote(format!("cannot reach {bucket}: {text}"), false)
                }
            }
            SdkError::ResponseError(_) => remote(
                format!(
                    "unreadable response from {bucket}: {}",
                    DisplayErrorContext(&err)
                ),
                true,
            ),
            _ => remote(
                format!("request to {bucket} failed: {}", DisplayErrorContext(&err)),
                false,
            ),
        }
    }

    /// A body larger than asked for: for a whole object, more than its type may be (the
    /// object is not one of its kind); for a range, a server fault.
    pub(super) fn oversized(
        &self,
        handle: &Handle,
        whole: bool,
        got: i64,
        limit: u64,
    ) -> BackendError {
        if whole {
            return BackendError::Invalid {
                object: handle.path(),
                location: self.location.display(),
                reason: format!(
                    "{got} bytes or more, where an object of its kind has at most {limit} (docs/FORMAT.md, section 17)"
                ),
            };
        }
        BackendError::Io {
            op: "read",
            object: handle.path(),
            location: self.location.display(),
            source: io::Error::other(format!(
                "{} sent a body of {got} bytes where at most {limit} were expected",
                self.describe_bucket()
            )),
            retryable: false,
        }
    }

    /// The connection broke while a body was arriving: worth another try.
    pub(super) fn body_err(
        &self,
        op: &'static str,
        object: String,
        e: impl std::fmt::Display,
    ) -> BackendError {
        BackendError::Io {
            op,
            object,
            location: self.location.display(),
            source: io::Error::other(format!(
                "reading the body from {} failed: {e}",
                self.describe_bucket()
            )),
            retryable: true,
        }
    }
}
