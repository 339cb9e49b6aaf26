//! Setting up the SDK client an [`S3Backend`] sends its requests through.
//!
//! Everything a request depends on before it leaves is decided here, once per backend:
//! credentials, region, endpoint and addressing style, the HTTP client and which
//! certificates it trusts (none over plain HTTP, an extra CA from `s3.ca-bundle`),
//! timeouts, checksum mode, and the SDK's own retries (off: retrying is the job of
//! [`crate::backend::retry::RetryBackend`]).

use super::S3Backend;
use crate::backend::options::{BackendOptions, ChecksumMode, S3Location};
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::types::StorageClass;
use std::time::Duration;

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

/// Where the credentials come from, in the words error messages use to say where to fix
/// a rejected key.
#[derive(Debug, Clone)]
pub(super) struct CredentialsOrigin {
    /// Where the access key id is set.
    pub(super) id: String,
    /// Where the secret access key is set.
    pub(super) secret: String,
    /// Both, for a refusal that does not say which is wrong.
    pub(super) both: String,
}

impl CredentialsOrigin {
    /// From the options and the environment. `static_keys`: they are given as options or
    /// in the environment, which the SDK's default chain reads before any profile.
    fn of(opts: &BackendOptions, static_keys: bool) -> Self {
        let all = |id: &str, secret: &str, both: &str| CredentialsOrigin {
            id: id.to_string(),
            secret: secret.to_string(),
            both: both.to_string(),
        };
        if opts.access_key_id.is_some() && opts.secret_access_key.is_some() {
            return all(
                "the destination's access_key_id",
                "the destination's secret_access_key_file",
                "the destination's access_key_id and secret_access_key_file",
            );
        }
        if static_keys {
            return all(
                "AWS_ACCESS_KEY_ID in the environment",
                "AWS_SECRET_ACCESS_KEY in the environment",
                "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY in the environment",
            );
        }
        let profile = opts
            .profile
            .clone()
            .or_else(|| std::env::var("AWS_PROFILE").ok().filter(|p| !p.is_empty()));
        match profile {
            Some(p) => {
                let it = format!("AWS profile {p:?} (~/.aws/credentials)");
                all(&it, &it, &it)
            }
            None => all(
                "AWS_ACCESS_KEY_ID or the default AWS profile",
                "AWS_SECRET_ACCESS_KEY or the default AWS profile",
                "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the default AWS profile (~/.aws/credentials)",
            ),
        }
    }
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
        // the system's came before the first request of every command and slowed a cold
        // `cairn snapshots` (docs/PERFORMANCE.md, session 9, "No trust store over plain
        // HTTP"). The credential providers share the loader's client and may call AWS over
        // HTTPS (STS, SSO, web identity), so it goes there too only when the keys are
        // static: given as options, or in the environment, which the default chain reads
        // first.
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
        let region = shared
            .region()
            .map_or_else(|| "us-east-1".to_string(), |r| r.to_string());
        let credentials = CredentialsOrigin::of(opts, static_keys);
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
            credentials,
            region,
        })
    }
}
