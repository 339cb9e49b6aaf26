//! Delivering one event through one notifier, once: an HTTP request (webhook,
//! healthchecks, ntfy) or a mail. Retrying is the caller's ([`super::hub`]). Errors
//! never carry a URL (its path or query may be a token) or a password.

use super::channel::{Channel, EmailConfig, NotifierConfig, http_request};
use super::event::Event;
use std::time::Duration;

/// How long one delivery may take, connecting included.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(20);

/// Why a delivery failed, in words that name the notifier's host but no secret.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The receiver could not be reached or did not answer in time.
    #[error("could not reach {name}: {reason}")]
    Unreachable {
        /// The notifier.
        name: String,
        /// Why (the URL taken out).
        reason: String,
    },
    /// The receiver answered, refusing.
    #[error("{name} answered HTTP {status}{detail}")]
    Refused {
        /// The notifier.
        name: String,
        /// The status code and reason.
        status: String,
        /// The start of the answer's body, if any.
        detail: String,
    },
    /// The mail server refused or failed the mail.
    #[error("{name}: {reason}")]
    Mail {
        /// The notifier.
        name: String,
        /// What the server or the connection said.
        reason: String,
    },
    /// The notifier's own set-up is unusable (its CA file or password file).
    #[error("{name}: {reason}")]
    Setup {
        /// The notifier.
        name: String,
        /// What is wrong and the fix.
        reason: String,
    },
}

/// A notifier ready to deliver: its configuration and, for HTTP ones, a client that
/// trusts what it should.
pub struct Sender {
    /// What it is.
    pub config: NotifierConfig,
    http: Option<reqwest::Client>,
    ca_pem: Option<Vec<u8>>,
}

impl Sender {
    /// Build the client of `config`; fails if its `ca_file` cannot be read or parsed.
    pub fn new(config: NotifierConfig) -> Result<Sender, NotifyError> {
        let setup = |reason: String| NotifyError::Setup {
            name: config.name.clone(),
            reason,
        };
        let ca_pem = match &config.ca_file {
            Some(p) => Some(std::fs::read(p).map_err(|e| {
                setup(format!(
                    "cannot read ca_file {}: {e}: give a readable PEM file",
                    p.display()
                ))
            })?),
            None => None,
        };
        let http = match config.channel {
            Channel::Email(_) => None,
            _ => {
                let mut b = reqwest::Client::builder()
                    .timeout(DELIVERY_TIMEOUT)
                    .connect_timeout(Duration::from_secs(10))
                    .user_agent(concat!("cairn/", env!("CARGO_PKG_VERSION")));
                if let Some(pem) = &ca_pem {
                    let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| {
                        setup(format!(
                            "ca_file holds no usable PEM certificate ({})",
                            e.without_url()
                        ))
                    })?;
                    for c in certs {
                        b = b.add_root_certificate(c);
                    }
                }
                Some(b.build().map_err(|e| setup(describe(e)))?)
            }
        };
        Ok(Sender {
            config,
            http,
            ca_pem,
        })
    }

    /// Deliver `event` once. `Ok(false)` when the channel has nothing to send for it.
    pub async fn deliver(&self, event: &Event) -> Result<bool, NotifyError> {
        match (&self.config.channel, &self.http) {
            (Channel::Email(m), _) => {
                self.mail(m, event).await?;
                Ok(true)
            }
            (channel, Some(client)) => {
                let Some(req) = http_request(channel, event) else {
                    return Ok(false);
                };
                self.http(client, req).await?;
                Ok(true)
            }
            (_, None) => Ok(false),
        }
    }

    async fn http(
        &self,
        client: &reqwest::Client,
        req: super::channel::HttpRequest,
    ) -> Result<(), NotifyError> {
        let name = &self.config.name;
        let method = if req.method == "GET" {
            reqwest::Method::GET
        } else {
            reqwest::Method::POST
        };
        let mut builder = client.request(method, req.url);
        for (k, v) in &req.headers {
            builder = builder.header(k, v);
        }
        if !req.body.is_empty() {
            builder = builder.body(req.body);
        }
        let answer = builder.send().await.map_err(|e| NotifyError::Unreachable {
            name: name.clone(),
            reason: describe(e),
        })?;
        let status = answer.status();
        if status.is_success() {
            return Ok(());
        }
        let text = answer.text().await.unwrap_or_default();
        let detail: String = text.trim().chars().take(200).collect();
        Err(NotifyError::Refused {
            name: name.clone(),
            status: status.to_string(),
            detail: if detail.is_empty() {
                String::new()
            } else {
                format!(": {detail}")
            },
        })
    }

    async fn mail(&self, m: &EmailConfig, event: &Event) -> Result<(), NotifyError> {
        use lettre::AsyncTransport;
        use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
        let name = &self.config.name;
        let fail = |reason: String| NotifyError::Mail {
            name: name.clone(),
            reason,
        };
        let setup = |reason: String| NotifyError::Setup {
            name: name.clone(),
            reason,
        };
        let message = super::mail::message(m, event).map_err(&setup)?;
        let tls = if m.implicit_tls || m.starttls {
            let mut params = TlsParameters::builder(m.host.clone());
            if let Some(pem) = &self.ca_pem {
                // Every certificate of the file, as for HTTP (lettre reads one per call).
                let text = String::from_utf8_lossy(pem);
                const END: &str = "-----END CERTIFICATE-----";
                let blocks: Vec<String> = text
                    .split_inclusive(END)
                    .filter(|b| b.contains(END))
                    .map(|b| b.trim_start().to_string())
                    .collect();
                if blocks.is_empty() {
                    return Err(setup("ca_file holds no PEM certificate".into()));
                }
                for b in blocks {
                    let cert = Certificate::from_pem(b.as_bytes()).map_err(|e| {
                        setup(format!("ca_file holds no usable PEM certificate ({e})"))
                    })?;
                    params = params.add_root_certificate(cert);
                }
            }
            let params = params
                .build_rustls()
                .map_err(|e| setup(format!("TLS set-up: {e}")))?;
            if m.implicit_tls {
                Tls::Wrapper(params)
            } else {
                Tls::Required(params)
            }
        } else {
            Tls::None
        };
        let mut transport =
            lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::builder_dangerous(&m.host)
                .port(m.port)
                .tls(tls)
                .timeout(Some(DELIVERY_TIMEOUT));
        if let Some(user) = &m.username {
            let password = match &m.password_file {
                Some(p) => read_secret(p).map_err(&setup)?,
                None => String::new(),
            };
            transport = transport.credentials(
                lettre::transport::smtp::authentication::Credentials::new(user.clone(), password),
            );
        }
        // The transport's own timeout covers connecting, not a server that stops
        // answering mid-conversation: the whole delivery is bounded here.
        let sent = tokio::time::timeout(DELIVERY_TIMEOUT, transport.build().send(message)).await;
        match sent {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(fail(mail_error(&e))),
            Err(_) => Err(fail(format!(
                "the mail server did not finish within {}s",
                DELIVERY_TIMEOUT.as_secs()
            ))),
        }
    }
}

/// The first line of a secret file, without its line end; the error names the file and
/// the fix, never the content.
pub fn read_secret(path: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "cannot read password_file {}: {e}: make it readable by the daemon's user",
            path.display()
        )
    })?;
    let line = text.lines().next().unwrap_or_default().to_string();
    if line.is_empty() {
        return Err(format!(
            "password_file {} is empty: write the SMTP password on its first line",
            path.display()
        ));
    }
    Ok(line)
}

/// `first`, then each cause of `err` below it whose words it does not already hold, in
/// one line.
fn with_causes(first: String, err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = first;
    for c in crate::error::causes(err).skip(1) {
        let s = c.to_string();
        if !out.contains(&s) {
            out.push_str(&format!(": {s}"));
        }
    }
    out
}

/// A mail error with its causes.
fn mail_error(e: &lettre::transport::smtp::Error) -> String {
    with_causes(e.to_string(), e)
}

/// An HTTP client error with its causes, the URL taken out.
fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let first = if e.is_timeout() {
        format!("no answer within {}s", DELIVERY_TIMEOUT.as_secs())
    } else {
        e.to_string()
    };
    with_causes(first, &e)
}
