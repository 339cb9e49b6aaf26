//! Real S3 servers for tests: `s3s-fs` served over HTTP on 127.0.0.1 with an ephemeral
//! port and SigV4 authentication, one runtime thread per server, stopped on drop.

use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use tokio::sync::oneshot;

/// Access key every test server accepts.
pub const ACCESS_KEY: &str = "cairn-test-access";
/// Secret key every test server accepts.
pub const SECRET_KEY: &str = "cairn-test-secret-key-0123456789";

/// One running s3s-fs server.
pub struct S3Server {
    /// Port on 127.0.0.1.
    pub port: u16,
    root: tempfile::TempDir,
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
        let root = tempfile::tempdir().expect("server root");
        for b in buckets {
            std::fs::create_dir(root.path().join(b)).expect("bucket dir");
        }
        let dir = root.path().to_path_buf();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let keys = (access.to_string(), secret.to_string());
        let thread = std::thread::spawn(move || serve(dir, keys, port_tx, stop_rx));
        let port = port_rx.recv().expect("server did not start");
        S3Server {
            port,
            root,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
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

fn serve(
    dir: PathBuf,
    (access, secret): (String, String),
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
        let service = b.build();
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
                    let conn = http
                        .serve_connection(hyper_util::rt::TokioIo::new(socket), service.clone())
                        .into_owned();
                    tokio::spawn(async move {
                        let _ = conn.await;
                    });
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
