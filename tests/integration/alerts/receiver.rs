//! A real HTTP server on a loopback port that records every request (method, path,
//! headers, body) and answers 200, or 503 to the next N when told: the receiving end
//! of webhook, healthchecks and ntfy notifiers.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request as received.
#[derive(Clone, Debug)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Whether it was answered 503.
    pub refused: bool,
}

impl Received {
    /// A header's value (names compared without case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// The server; stops when dropped.
pub struct Receiver {
    pub port: u16,
    seen: Arc<Mutex<Vec<Received>>>,
    refuse: Arc<AtomicU32>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Receiver {
    pub fn start() -> Receiver {
        let seen: Arc<Mutex<Vec<Received>>> = Arc::default();
        let refuse = Arc::new(AtomicU32::new(0));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let (s, r) = (seen.clone(), refuse.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(serve(s, r, port_tx, stopped));
        });
        let port = port_rx.recv().expect("receiver did not start");
        Receiver {
            port,
            seen,
            refuse,
            _stop: stop,
        }
    }

    /// `http://127.0.0.1:PORT` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Answer the next `n` requests 503.
    pub fn refuse_next(&self, n: u32) {
        self.refuse.store(n, Ordering::SeqCst);
    }

    pub fn requests(&self) -> Vec<Received> {
        self.seen.lock().expect("lock").clone()
    }

    /// The requests whose path starts with `prefix`, answered 200.
    pub fn accepted(&self, prefix: &str) -> Vec<Received> {
        self.requests()
            .into_iter()
            .filter(|r| !r.refused && r.path.starts_with(prefix))
            .collect()
    }

    /// Wait until `ok` holds for the accepted requests under `prefix`.
    pub fn wait_for(
        &self,
        what: &str,
        prefix: &str,
        timeout: Duration,
        ok: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let start = Instant::now();
        loop {
            let got = self.accepted(prefix);
            if ok(&got) {
                return got;
            }
            if start.elapsed() > timeout {
                panic!(
                    "timed out waiting for {what}; received:\n{:#?}",
                    self.requests()
                        .iter()
                        .map(|r| format!("{} {} {}", r.method, r.path, r.text()))
                        .collect::<Vec<_>>()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

async fn serve(
    seen: Arc<Mutex<Vec<Received>>>,
    refuse: Arc<AtomicU32>,
    port_tx: std::sync::mpsc::Sender<u16>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind");
    let _ = port_tx.send(listener.local_addr().expect("addr").port());
    loop {
        let (socket, _) = tokio::select! {
            a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
            _ = &mut stopped => return,
        };
        let (seen, refuse) = (seen.clone(), refuse.clone());
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (seen, refuse) = (seen.clone(), refuse.clone());
                    async move {
                        use http_body_util::BodyExt;
                        let method = req.method().to_string();
                        let path = req
                            .uri()
                            .path_and_query()
                            .map(|p| p.to_string())
                            .unwrap_or_default();
                        let headers = req
                            .headers()
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                            .collect();
                        let body = req
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes().to_vec())
                            .unwrap_or_default();
                        let refused = refuse
                            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                            .is_ok();
                        seen.lock().expect("lock").push(Received {
                            method,
                            path,
                            headers,
                            body,
                            refused,
                        });
                        let status = if refused { 503 } else { 200 };
                        hyper::Response::builder()
                            .status(status)
                            .body(http_body_util::Full::new(bytes::Bytes::from_static(b"ok")))
                    }
                });
            let _ =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(socket), service)
                    .await;
        });
    }
}
