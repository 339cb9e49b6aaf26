//! Turning what went wrong with a request into a [`BackendError`] a user can act on.
//!
//! Every S3 request's failure passes through here. The result names the bucket and the
//! endpoint, says what to do for the mistakes users make (credentials, bucket name,
//! region, clock, TLS), and says whether a retry can help, which is what
//! [`crate::backend::retry::RetryBackend`] goes by. The wording is user-facing and the
//! integration tests match it: change it only on purpose.

use super::S3Backend;
use super::transport::{self, Transport};
use crate::backend::{BackendError, Handle};
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use std::io;

/// The region a server asked for in a region error: the `x-amz-bucket-region` header
/// (also on a HEAD, which has no body), else the body's `<Region>`.
fn region_asked(raw: &HttpResponse) -> Option<String> {
    let from_body = || {
        let body = std::str::from_utf8(raw.body().bytes()?).ok()?;
        let start = body.find("<Region>")? + "<Region>".len();
        let len = body[start..].find("</Region>")?;
        Some(body[start..start + len].trim().to_string())
    };
    raw.headers()
        .get("x-amz-bucket-region")
        .map(|r| r.trim().to_string())
        .or_else(from_body)
        // Only a plain region name goes into the message and the fix.
        .filter(|r| {
            !r.is_empty()
                && r.len() <= 64
                && r.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

impl S3Backend {
    /// Turn an SDK error into a [`BackendError`] that says what to do; `op` and `object`
    /// name what was being done to which object, for the message.
    pub(super) fn map_err<E>(
        &self,
        op: &'static str,
        object: String,
        err: SdkError<E, HttpResponse>,
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
                let lower_msg = msg.to_lowercase();
                let wrong_secret = |code: &str| {
                    format!(
                        "{bucket} rejected the credentials ({code}): the secret access key is wrong, it does not match the access key id; check the secret key in {}",
                        self.credentials.secret
                    )
                };
                let unknown_key = |code: &str| {
                    format!(
                        "{bucket} rejected the credentials ({code}): it does not know the access key id; check {}, and that the key exists on that server",
                        self.credentials.id
                    )
                };
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
                    | (301, _) => remote(self.wrong_region(se.raw(), &code), false),
                    (_, "SignatureDoesNotMatch") => remote(wrong_secret(&code), false),
                    (_, "InvalidAccessKeyId" | "NotSignedUp") => remote(unknown_key(&code), false),
                    // Garage answers AccessDenied and says which in its message.
                    (_, "AccessDenied") if lower_msg.contains("invalid signature") => {
                        remote(wrong_secret(&code), false)
                    }
                    (_, "AccessDenied") if lower_msg.contains("no such key") => {
                        remote(unknown_key(&code), false)
                    }
                    (403, _) | (_, "AccessDenied") => remote(
                        format!(
                            "access denied to {bucket} ({status} {code} {msg}): check the credentials in {} and that the bucket policy allows s3:GetObject, s3:PutObject and s3:ListBucket (s3:DeleteObject for prune)",
                            self.credentials.both
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
                let endpoint = &self.endpoint_display;
                let cause = df
                    .as_connector_error()
                    .and_then(std::error::Error::source)
                    .map(transport::classify);
                match cause {
                    _ if df.is_timeout() => unreachable(
                        io::ErrorKind::TimedOut,
                        format!(
                            "connecting to {bucket} timed out: check that the host is up, the endpoint's host and port are right, and no firewall drops the connection"
                        ),
                    ),
                    Some(Transport::Refused) => unreachable(
                        io::ErrorKind::ConnectionRefused,
                        format!(
                            "cannot reach {bucket}: connection refused by {endpoint}, so nothing listens there: check that the server is running and the endpoint's port is right"
                        ),
                    ),
                    Some(Transport::Reset) => unreachable(
                        io::ErrorKind::ConnectionReset,
                        format!(
                            "cannot reach {bucket}: {endpoint} closed the connection before answering: check the endpoint's port and scheme (http:// or https://), and any proxy or firewall in between"
                        ),
                    ),
                    Some(Transport::TimedOut) => unreachable(
                        io::ErrorKind::TimedOut,
                        format!(
                            "connecting to {bucket} timed out: check that the host is up, the endpoint's host and port are right, and no firewall drops the connection"
                        ),
                    ),
                    Some(Transport::Unreachable) => unreachable(
                        io::ErrorKind::HostUnreachable,
                        format!(
                            "cannot reach {bucket}: there is no route to the host of {endpoint}: check the network and the endpoint's host"
                        ),
                    ),
                    Some(Transport::Dns) => unreachable(
                        io::ErrorKind::ConnectionReset,
                        format!(
                            "cannot reach {bucket}: the host name of {endpoint} does not resolve: check its spelling and this machine's DNS"
                        ),
                    ),
                    Some(Transport::Certificate(why)) => remote(
                        format!(
                            "the TLS certificate of {bucket} was not accepted: {why}. For a self-signed certificate pass its CA with -o s3.ca-bundle=FILE"
                        ),
                        false,
                    ),
                    // Often a reset during the handshake, which a retry can fix; a plain
                    // http server behind an https URL ends here too.
                    Some(Transport::Tls) => remote(
                        format!(
                            "the TLS handshake with {bucket} failed: check that the endpoint speaks https (or write http://)"
                        ),
                        true,
                    ),
                    Some(Transport::Other(text)) if df.is_io() || df.is_other() => unreachable(
                        io::ErrorKind::ConnectionReset,
                        format!(
                            "cannot reach {bucket}: {text}: check the endpoint and the network"
                        ),
                    ),
                    Some(Transport::Other(text)) => {
                        remote(format!("cannot reach {bucket}: {text}"), false)
                    }
                    None => remote(
                        format!("cannot reach {bucket}: {}", transport::plain_text(&err)),
                        false,
                    ),
                }
            }
            SdkError::ResponseError(_) => remote(
                format!(
                    "unreadable response from {bucket}: {}",
                    transport::plain_text(&err)
                ),
                true,
            ),
            _ => remote(
                format!(
                    "request to {bucket} failed: {}",
                    transport::plain_text(&err)
                ),
                false,
            ),
        }
    }

    /// A region error in words: the region the server asked for, when it said, and how
    /// to set it.
    fn wrong_region(&self, raw: &HttpResponse, code: &str) -> String {
        let bucket = self.describe_bucket();
        let ours = &self.region;
        let code = if code.is_empty() {
            raw.status().as_u16().to_string()
        } else {
            code.to_string()
        };
        match region_asked(raw) {
            Some(asked) => format!(
                "{bucket} is in region {asked}, not {ours} ({code}): set the region with -o s3.region={asked} (in cairn.toml: \"s3.region\" = \"{asked}\" in the destination's options) or AWS_REGION={asked}"
            ),
            None => format!(
                "{bucket} is in another region than {ours} ({code}): set the bucket's region with -o s3.region=REGION (in cairn.toml: \"s3.region\" = \"REGION\" in the destination's options) or AWS_REGION"
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
