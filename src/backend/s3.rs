//! A repository in an S3-compatible bucket (AWS S3, MinIO, Garage, Ceph RGW, B2, R2).
//!
//! PUT is atomic in S3: an object appears whole under its name or not at all, so a failed
//! or retried upload never leaves a partial object visible. Objects at or above the
//! multipart threshold go up in parts with bounded concurrency; a failed multipart upload
//! is aborted before the error is returned. The SDK's own retries are off: retrying is the
//! job of [`super::retry::RetryBackend`], so one policy covers every backend and tests can
//! see every attempt. Errors are mapped to [`BackendError`] with the bucket, the endpoint and
//! what to do for the mistakes users make (credentials, bucket name, region, clock, TLS).

use super::options::{BackendOptions, ChecksumMode, S3Location};
use super::{Backend, BackendError, FileType, Handle, ObjectInfo};
use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, StorageClass};
use bytes::Bytes;
use std::io;
use std::time::Duration;
use tokio::task::JoinSet;

/// Most a read reserves before the body arrives; a larger body grows the buffer as it comes.
const READ_RESERVE: u64 = 64 * 1024 * 1024;

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
}

/// Leaves an upload's body out of its SigV4 signature (`UNSIGNED-PAYLOAD`) when, and only
/// when, the request itself goes over TLS. TLS already guards every byte on the wire, and
/// hashing each body cost a first backup a tenth of cairn's CPU (user time 5.35 to 4.82 s),
/// plus as much again on a server that checks it. Over plain HTTP the signed hash is the
/// only check against a body damaged in transit, so it stays, as AWS's own SDKs do; also
/// with `s3.checksum=when-supported`, since a server may accept a body whose CRC32
/// disagrees (s3s-fs does). The scheme is read from the request, not from cairn's own
/// endpoint setting, because the SDK also finds endpoints in the AWS profile.
#[derive(Debug)]
struct UnsignedOverTls;

impl aws_sdk_s3::config::Intercept for UnsignedOverTls {
    fn name(&self) -> &'static str {
        "UnsignedOverTls"
    }

    fn modify_before_signing(
        &self,
        ctx: &mut aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextMut<'_>,
        _components: &aws_sdk_s3::config::RuntimeComponents,
        cfg: &mut aws_sdk_s3::config::ConfigBag,
    ) -> Result<(), aws_sdk_s3::error::BoxError> {
        use aws_runtime::auth::PayloadSigningOverride;
        let tls = ctx
            .request()
            .uri()
            .get(..6)
            .is_some_and(|s| s.eq_ignore_ascii_case("https:"));
        // A streaming checksum trailer sets its own override; that one stands.
        if tls && cfg.load::<PayloadSigningOverride>().is_none() {
            cfg.interceptor_state()
                .store_put(PayloadSigningOverride::unsigned_payload());
        }
        Ok(())
    }
}

/// Why the S3 client could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct S3SetupError(pub String);

/// An HTTP client as the SDK builds its default one (rustls, proxy settings from
/// `HTTP_PROXY`, `HTTPS_PROXY` and `NO_PROXY`), trusting `trust`. Certificates are loaded
/// when the client first connects.
fn http_client(
    trust: aws_smithy_http_client::tls::TrustStore,
) -> Result<aws_sdk_s3::config::SharedHttpClient, aws_smithy_http_client::HttpClientError> {
    use aws_smithy_http_client::{Connector, proxy::ProxyConfig, tls};
    let ctx = tls::TlsContext::builder().with_trust_store(trust).build()?;
    Ok(
        aws_smithy_http_client::Builder::new().build_with_connector_fn(move |settings, parts| {
            let mut b = Connector::builder()
                .tls_provider(tls::Provider::Rustls(
                    tls::rustls_provider::CryptoMode::AwsLc,
                ))
                .tls_context(ctx.clone());
            b.set_connector_settings(settings.cloned());
            if let Some(parts) = parts {
                b.set_sleep_impl(parts.sleep_impl());
            }
            b.set_proxy_config(Some(ProxyConfig::from_env()));
            b.build()
        }),
    )
}

impl S3Backend {
    /// Build a client from the AWS environment (credentials, profile, region, endpoint
    /// variables) and the options.
    pub async fn connect(
        location: S3Location,
        opts: &BackendOptions,
    ) -> Result<Self, S3SetupError> {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(10).min(opts.timeout))
                    .operation_attempt_timeout(opts.timeout)
                    .build(),
            );
        if let Some(profile) = &opts.profile {
            loader = loader.profile_name(profile);
        }
        if let (Some(id), Some(secret)) = (&opts.access_key_id, &opts.secret_access_key) {
            loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new(
                id.clone(),
                secret.expose().to_string(),
                None,
                None,
                "cairn-options",
            ));
        }
        // Region: the option, then AWS_REGION / AWS_DEFAULT_REGION, then the profile, then
        // us-east-1 (which S3-compatible servers accept). The instance metadata service is
        // left out on purpose: off EC2 it only adds a slow failure and a warning.
        let region = aws_config::meta::region::RegionProviderChain::first_try(
            opts.region.clone().map(Region::new),
        )
        .or_else(aws_config::environment::EnvironmentVariableRegionProvider::new())
        .or_else(aws_config::profile::ProfileFileRegionProvider::new())
        .or_else(Region::new("us-east-1"));
        loader = loader.region(region);
        let env_endpoint = std::env::var("AWS_ENDPOINT_URL_S3")
            .or_else(|_| std::env::var("AWS_ENDPOINT_URL"))
            .ok()
            .filter(|e| !e.is_empty());
        let endpoint = location.endpoint.clone().or(env_endpoint);
        let plain_http = endpoint
            .as_deref()
            .is_some_and(|e| e.to_ascii_lowercase().starts_with("http://"));
        // Nothing to verify over plain HTTP: the S3 client trusts no certificates. Loading
        // the system's came before the first request of every command: `cairn snapshots`
        // from a cold cache took 0.34 s with them, 0.30 s without. The credential
        // providers share the loader's client and may call AWS over HTTPS (STS, SSO, web
        // identity), so it goes there too only when the keys are static: given as options,
        // or in the environment, which the default chain reads first.
        let plain_client = (plain_http && opts.ca_bundle.is_none())
            .then(|| http_client(aws_smithy_http_client::tls::TrustStore::empty()))
            .transpose()
            .map_err(|e| S3SetupError(format!("HTTP client: {e}")))?;
        let env_keys = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]
            .iter()
            .all(|k| std::env::var_os(k).is_some_and(|v| !v.is_empty()));
        let static_keys = (opts.access_key_id.is_some() && opts.secret_access_key.is_some())
            || (env_keys && opts.profile.is_none());
        if let Some(http) = plain_client.clone().filter(|_| static_keys) {
            loader = loader.http_client(http);
        }
        if let Some(ca) = &opts.ca_bundle {
            let pem = std::fs::read(ca).map_err(|e| {
                S3SetupError(format!(
                    "cannot read CA bundle {} (option s3.ca-bundle): {e}",
                    ca.display()
                ))
            })?;
            let trust =
                aws_smithy_http_client::tls::TrustStore::default().with_pem_certificate(pem);
            let http = http_client(trust)
                .map_err(|e| S3SetupError(format!("CA bundle {}: {e}", ca.display())))?;
            loader = loader.http_client(http);
        }
        let shared = loader.load().await;
        let mut b = aws_sdk_s3::config::Builder::from(&shared);
        if let Some(http) = plain_client {
            b = b.http_client(http);
        }
        if let Some(e) = &endpoint {
            b = b.endpoint_url(e.clone());
        }
        // An endpoint of one's own (also one from the AWS profile's `endpoint_url`) is
        // a self-hosted server, which rarely has a DNS name per bucket: path-style.
        let own_endpoint = endpoint.is_some() || shared.endpoint_url().is_some();
        b = b.force_path_style(opts.path_style.unwrap_or(own_endpoint));
        let (req, resp) = match opts.checksum {
            ChecksumMode::WhenRequired => (
                RequestChecksumCalculation::WhenRequired,
                ResponseChecksumValidation::WhenRequired,
            ),
            ChecksumMode::WhenSupported => (
                RequestChecksumCalculation::WhenSupported,
                ResponseChecksumValidation::WhenSupported,
            ),
        };
        b = b
            .request_checksum_calculation(req)
            .response_checksum_validation(resp);
        let endpoint_display = endpoint
            .or_else(|| shared.endpoint_url().map(str::to_string))
            .unwrap_or_else(|| "AWS S3".to_string());
        Ok(S3Backend {
            always_sign_payload: opts.always_sign_payload,
            client: Client::from_conf(b.build()),
            location,
            endpoint_display,
            storage_class: opts.storage_class.as_deref().map(StorageClass::from),
            object_lock: opts.object_lock,
            multipart_threshold: opts.multipart_threshold,
            part_size: opts.part_size,
            part_concurrency: opts.part_concurrency.max(1),
        })
    }

    fn key(&self, h: &Handle) -> String {
        self.key_of(&h.path())
    }

    fn key_of(&self, rel: &str) -> String {
        if self.location.prefix.is_empty() {
            rel.to_string()
        } else {
            format!("{}/{rel}", self.location.prefix)
        }
    }

    fn where_(&self) -> String {
        format!(
            "bucket {:?} at {}",
            self.location.bucket, self.endpoint_display
        )
    }

    /// Turn an SDK error into a [`BackendError`] that says what to do.
    fn map_err<E>(
        &self,
        op: &'static str,
        object: String,
        err: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    ) -> BackendError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let location = self.location.display();
        let where_ = self.where_();
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
                        format!("{where_} does not exist: create it, or check the bucket name"),
                        false,
                    ),
                    (404, _) | (_, "NoSuchKey") => BackendError::NotFound { object, location },
                    (_, "RequestTimeTooSkewed") => remote(
                        format!(
                            "{where_} rejected the request because this machine's clock is off by more than 15 minutes: fix the time (timedatectl set-ntp true)"
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
                            "{where_} is in another region ({code} {msg}): set the region with -o s3.region=REGION or AWS_REGION"
                        ),
                        false,
                    ),
                    (_, "InvalidAccessKeyId" | "SignatureDoesNotMatch") => remote(
                        format!(
                            "{where_} rejected the credentials ({code}): check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the profile"
                        ),
                        false,
                    ),
                    (403, _) | (_, "AccessDenied") => remote(
                        format!(
                            "access denied to {where_} ({code} {msg}): check the credentials and that the bucket policy allows s3:GetObject, s3:PutObject and s3:ListBucket (s3:DeleteObject for prune)"
                        ),
                        false,
                    ),
                    (500..=599 | 429 | 408, _)
                    | (
                        _,
                        "SlowDown" | "InternalError" | "RequestTimeout" | "ServiceUnavailable"
                        | "TooManyRequests",
                    ) => remote(format!("{where_} answered {status} {code} {msg}"), true),
                    // The body's hash or checksum disagreed with what arrived: damaged on
                    // the way, which sending it again fixes. A server that cannot check the
                    // SDK's checksums answers so every time, hence the hint.
                    (_, "XAmzContentSHA256Mismatch" | "BadDigest") => remote(
                        format!(
                            "{where_} answered {status} {code} {msg}: the body did not arrive as sent. If this repeats, the server may not accept the SDK's checksums: try -o s3.checksum=when-required"
                        ),
                        true,
                    ),
                    _ => remote(format!("{where_} answered {status} {code} {msg}"), false),
                }
            }
            SdkError::TimeoutError(_) => unreachable(
                io::ErrorKind::TimedOut,
                format!("request to {where_} timed out"),
            ),
            SdkError::DispatchFailure(df) => {
                let text = format!("{}", DisplayErrorContext(&err));
                let lower = text.to_lowercase();
                if df.is_timeout() {
                    unreachable(
                        io::ErrorKind::TimedOut,
                        format!("connecting to {where_} timed out"),
                    )
                } else if lower.contains("certificate") || lower.contains("unknownissuer") {
                    remote(
                        format!(
                            "TLS certificate of {where_} was not accepted: {text}. For a self-signed certificate pass its CA with -o s3.ca-bundle=FILE"
                        ),
                        false,
                    )
                } else if lower.contains("tls") || lower.contains("handshake") {
                    // Often a reset during the handshake, which a retry can fix; a plain
                    // http server behind an https URL ends here too.
                    remote(
                        format!(
                            "TLS handshake with {where_} failed: {text}. Check that the endpoint speaks https (or write http://)"
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
                        format!("cannot reach {where_}: {text}"),
                    )
                } else {
                    remote(format!("cannot reach {where_}: {text}"), false)
                }
            }
            SdkError::ResponseError(_) => remote(
                format!(
                    "unreadable response from {where_}: {}",
                    DisplayErrorContext(&err)
                ),
                true,
            ),
            _ => remote(
                format!("request to {where_} failed: {}", DisplayErrorContext(&err)),
                false,
            ),
        }
    }

    /// GET a whole object or a byte range, into `body` (cleared first; a caller reading
    /// range after range passes the same buffer back). The declared length is checked
    /// before the body is buffered (a server answering a range with the whole object, or a
    /// huge object, is refused), and the body received must match it exactly.
    async fn read(
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

    /// A body larger than asked for: for a whole object, more than its type may be (the
    /// object is not one of its kind); for a range, a server fault.
    fn oversized(&self, handle: &Handle, whole: bool, got: i64, limit: u64) -> BackendError {
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
                self.where_()
            )),
            retryable: false,
        }
    }

    fn body_err(
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
                self.where_()
            )),
            retryable: true,
        }
    }

    /// Lock mode and retain-until date for a write made now, if locking is on.
    fn lock_now(
        &self,
    ) -> Option<(
        aws_sdk_s3::types::ObjectLockMode,
        aws_sdk_s3::primitives::DateTime,
    )> {
        let lock = self.object_lock?;
        let mode = if lock.compliance {
            aws_sdk_s3::types::ObjectLockMode::Compliance
        } else {
            aws_sdk_s3::types::ObjectLockMode::Governance
        };
        let until = std::time::SystemTime::now() + lock.period;
        Some((mode, aws_sdk_s3::primitives::DateTime::from(until)))
    }

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

    async fn put_multipart(&self, h: &Handle, data: Bytes) -> Result<(), BackendError> {
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
                tracing::warn!(
                    "aborting multipart upload of {key} failed: {}",
                    DisplayErrorContext(&e)
                );
            }
        }
        result
    }

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
    async fn abort_stale_uploads(&self, older_than: Duration) -> Result<usize, BackendError> {
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
                            self.where_()
                        )),
                        retryable: true,
                    });
                }
            }
        }
        Ok(out)
    }

    async fn delete(&self, handle: &Handle) -> Result<(), BackendError> {
        // On an Object Lock bucket (always versioned) a plain delete only hides the
        // object behind a delete marker. Packs are deleted version and all, to free the
        // space, which S3 refuses while the lock lasts (prune never asks before then).
        // Metadata objects that a lock still holds (an index object a prune rewrote) are
        // hidden instead: readers no longer see them, and the locked version stays, as
        // the lock promises, until it expires.
        let version = if self.object_lock.is_some() {
            match self
                .client
                .head_object()
                .bucket(&self.location.bucket)
                .key(self.key(handle))
                .send()
                .await
            {
                Ok(h) => {
                    let locked = h
                        .object_lock_retain_until_date()
                        .and_then(|d| std::time::SystemTime::try_from(*d).ok())
                        .is_some_and(|t| t > std::time::SystemTime::now());
                    if locked && handle.kind != FileType::Pack {
                        None
                    } else {
                        h.version_id().map(str::to_string)
                    }
                }
                Err(e) => match self.map_err("stat", handle.path(), e) {
                    BackendError::NotFound { .. } => return Ok(()),
                    other => return Err(other),
                },
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
            .and_then(|d| std::time::SystemTime::try_from(*d).ok())
            .filter(|t| *t > std::time::SystemTime::now());
        Ok(until)
    }

    async fn extend_lock(&self, handle: &Handle) -> Result<bool, BackendError> {
        let Some((mode, until)) = self.lock_now() else {
            return Ok(false);
        };
        let retention = aws_sdk_s3::types::ObjectLockRetention::builder()
            .mode(match mode {
                aws_sdk_s3::types::ObjectLockMode::Compliance => {
                    aws_sdk_s3::types::ObjectLockRetentionMode::Compliance
                }
                _ => aws_sdk_s3::types::ObjectLockRetentionMode::Governance,
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
