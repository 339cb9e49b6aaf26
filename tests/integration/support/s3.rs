//! Real S3 servers for tests: `s3s-fs` served over HTTP (or HTTPS with a test CA) on
//! 127.0.0.1 with an ephemeral port and SigV4 authentication, one runtime thread per
//! server, stopped on drop.

use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use tokio::sync::oneshot;
use tokio_rustls::rustls;

/// Access key every test server accepts.
pub const ACCESS_KEY: &str = "cairn-test-access";
/// Secret key every test server accepts.
pub const SECRET_KEY: &str = "cairn-test-secret-key-0123456789";

/// One request as the server saw it: what the tests check about how cairn signs.
#[derive(Clone, Debug)]
pub struct SeenRequest {
    /// HTTP method.
    pub method: String,
    /// Path and query.
    pub target: String,
    /// The `x-amz-content-sha256` header: a hex digest, `UNSIGNED-PAYLOAD`, or empty.
    pub content_sha256: String,
}

/// One running s3s-fs server.
pub struct S3Server {
    /// Port on 127.0.0.1.
    pub port: u16,
    /// PEM of the CA that signed the server's certificate, for a server started with
    /// [`S3Server::start_tls`].
    pub ca_pem: Option<String>,
    /// Every request received, in order.
    pub seen: Arc<Mutex<Vec<SeenRequest>>>,
    root: tempfile::TempDir,
    tls_scheme: bool,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl S3Server {
    /// Start a server with the given buckets already created.
    pub fn start(buckets: &[&str]) -> Self {
        Self::start_with_keys(buckets, ACCESS_KEY, SECRET_KEY)
    }

    /// Start a server that accepts only this key pair.
    pub fn start_with_keys(buckets: &[&str], access: &str, secret: &str) -> Self {
        Self::launch(buckets, (access, secret), None)
    }

    /// Start a server that speaks only HTTPS, with a certificate for 127.0.0.1 signed by a
    /// CA made for this server alone (in `ca_pem`): no system trusts it.
    pub fn start_tls(buckets: &[&str]) -> Self {
        let (config, ca_pem) = test_tls();
        let mut s = Self::launch(buckets, (ACCESS_KEY, SECRET_KEY), Some(Arc::new(config)));
        s.ca_pem = Some(ca_pem);
        s
    }

    fn launch(
        buckets: &[&str],
        (access, secret): (&str, &str),
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Self {
        let root = tempfile::tempdir().expect("server root");
        for b in buckets {
            std::fs::create_dir(root.path().join(b)).expect("bucket dir");
        }
        let dir = root.path().to_path_buf();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let keys = (access.to_string(), secret.to_string());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let tls_scheme = tls.is_some();
        let listen = Listen {
            tls,
            seen: seen.clone(),
        };
        let thread = std::thread::spawn(move || serve(dir, keys, listen, port_tx, stop_rx));
        let port = port_rx.recv().expect("server did not start");
        S3Server {
            port,
            ca_pem: None,
            seen,
            tls_scheme,
            root,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`, or `https://` for a server started with TLS.
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls_scheme { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The requests received so far.
    pub fn seen(&self) -> Vec<SeenRequest> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Where the server keeps its files (bucket = folder).
    pub fn root(&self) -> &Path {
        self.root.path()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How a server listens: in the clear or over TLS, and where it records requests.
struct Listen {
    tls: Option<Arc<rustls::ServerConfig>>,
    seen: Arc<Mutex<Vec<SeenRequest>>>,
}

/// A TLS configuration for `127.0.0.1` and the PEM of the CA that signed its certificate.
fn test_tls() -> (rustls::ServerConfig, String) {
    let c = loopback_certificate();
    let private = rustls::pki_types::PrivateKeyDer::Pkcs8(c.key_der.into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_no_client_auth()
    .with_single_cert(vec![c.cert_der.into()], private)
    .expect("TLS configuration");
    (config, c.ca_pem)
}

/// A server certificate for 127.0.0.1 and its key, signed by a CA made for it alone.
pub struct LoopbackCertificate {
    pub cert_pem: String,
    pub cert_der: Vec<u8>,
    pub key_pem: String,
    pub key_der: Vec<u8>,
    /// The CA that signed it (PEM): trust this, and only this server is trusted.
    pub ca_pem: String,
}

/// A fresh [`LoopbackCertificate`], for the TLS servers of the tests (S3, SMTP).
pub fn loopback_certificate() -> LoopbackCertificate {
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "cairn test CA");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().expect("server key");
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "127.0.0.1");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &issuer).expect("server certificate");
    LoopbackCertificate {
        cert_pem: cert.pem(),
        cert_der: cert.der().to_vec(),
        key_pem: key.serialize_pem(),
        key_der: key.serialize_der(),
        ca_pem: ca_cert.pem(),
    }
}

fn serve(
    dir: PathBuf,
    (access, secret): (String, String),
    listen: Listen,
    port_tx: std::sync::mpsc::Sender<u16>,
    mut stop: oneshot::Receiver<()>,
) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("server runtime");
    rt.block_on(async move {
        let fs = s3s_fs::FileSystem::new(&dir).expect("s3s-fs");
        let mut b = S3ServiceBuilder::new(fs);
        b.set_auth(SimpleAuth::from_single(access, secret));
        let s3 = b.build();
        let seen = listen.seen.clone();
        let service = hyper::service::service_fn(move |req: hyper::Request<_>| {
            let header = req.headers().get("x-amz-content-sha256");
            if let Ok(mut seen) = seen.lock() {
                seen.push(SeenRequest {
                    method: req.method().to_string(),
                    target: req.uri().to_string(),
                    content_sha256: header
                        .and_then(|h| h.to_str().ok())
                        .unwrap_or_default()
                        .to_string(),
                });
            }
            hyper::service::Service::call(&s3, req)
        });
        let tls = listen.tls.map(tokio_rustls::TlsAcceptor::from);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        port_tx
            .send(listener.local_addr().expect("addr").port())
            .expect("report port");
        let http =
            hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((socket, _)) = accepted else { continue };
                    let (http, service) = (http.clone(), service.clone());
                    match tls.clone() {
                        None => {
                            tokio::spawn(async move {
                                let io = hyper_util::rt::TokioIo::new(socket);
                                let _ = http.serve_connection(io, service).await;
                            });
                        }
                        Some(acceptor) => {
                            tokio::spawn(async move {
                                // A client that does not trust the CA ends the handshake.
                                let Ok(stream) = acceptor.accept(socket).await else { return };
                                let io = hyper_util::rt::TokioIo::new(stream);
                                let _ = http.serve_connection(io, service).await;
                            });
                        }
                    }
                }
                _ = &mut stop => break,
            }
        }
    });
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
}

/// Environment for a `cairn` child process so that it uses the test credentials and never
/// reads the developer's AWS configuration or an instance metadata service.
pub fn aws_env() -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_string()),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_string()),
        ("AWS_REGION", "us-east-1".to_string()),
        ("AWS_CONFIG_FILE", "/nonexistent/aws-config".to_string()),
        (
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/aws-credentials".to_string(),
        ),
        ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
        ("AWS_ENDPOINT_URL", String::new()),
        ("AWS_ENDPOINT_URL_S3", String::new()),
    ]
}

/// Backend options that reach a test server (its keys, a region), then `options` as `-o`
/// takes them: for tests that open a repository in-process instead of through `cairn`.
pub fn backend_options(options: &[String]) -> cairn::backend::BackendOptions {
    let mut o = cairn::backend::BackendOptions {
        access_key_id: Some(ACCESS_KEY.into()),
        secret_access_key: Some(SECRET_KEY.into()),
        region: Some("us-east-1".into()),
        ..Default::default()
    };
    o.apply(options).expect("options");
    o
}
