//! A minimal HTTP endpoint serving Prometheus text metrics (`GET /metrics`) on a local
//! address. It reads one request head (bounded) and answers it; nothing else is served.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Largest request head read.
const MAX_HEAD: usize = 8192;

/// Bind the metrics address; the error names it. The metrics name destinations,
/// repository locations and error messages and have no authentication: an address other
/// than loopback is allowed (a Prometheus on another host needs one) but warned about.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    if let Some(w) = exposure_warning(addr) {
        tracing::warn!("{w}");
    }
    TcpListener::bind(addr).await.map_err(|e| {
        format!(
            "cannot listen for metrics on {addr}: {e}: choose a free address in [metrics] listen"
        )
    })
}

/// What to warn about an address reachable from other hosts, if anything.
pub fn exposure_warning(addr: SocketAddr) -> Option<String> {
    (!addr.ip().is_loopback()).then(|| {
        format!(
            "[metrics] listen = \"{addr}\" is reachable from other hosts: anyone who can connect reads destination names, repository locations and error messages (no authentication). Use 127.0.0.1 unless a firewall limits who can connect"
        )
    })
}

/// Serve until dropped; `render` produces the body for each scrape.
pub async fn serve(listener: TcpListener, render: Arc<dyn Fn() -> String + Send + Sync>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            // Out of descriptors, most likely: do not spin.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let render = render.clone();
        tokio::spawn(async move {
            let mut head = Vec::with_capacity(512);
            let mut buf = [0u8; 1024];
            let read = tokio::time::timeout(Duration::from_secs(10), async {
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
            })
            .await;
            if read.is_err() {
                return;
            }
            let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
            let mut parts = line.split(|b| *b == b' ');
            let (method, target) = (
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
            );
            let (status, ctype, body) = if method != b"GET" {
                (
                    "405 Method Not Allowed",
                    "text/plain",
                    "only GET\n".to_string(),
                )
            } else if target == b"/metrics" {
                (
                    "200 OK",
                    "text/plain; version=0.0.4; charset=utf-8",
                    render(),
                )
            } else {
                (
                    "404 Not Found",
                    "text/plain",
                    "metrics are at /metrics\n".to_string(),
                )
            };
            let response = format!(
                "HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

#[cfg(test)]
mod exposure_tests {
    use super::exposure_warning;

    #[test]
    fn only_non_loopback_addresses_are_warned_about() {
        assert!(exposure_warning("127.0.0.1:9100".parse().expect("addr")).is_none());
        assert!(exposure_warning("[::1]:9100".parse().expect("addr")).is_none());
        let w = exposure_warning("0.0.0.0:9100".parse().expect("addr")).expect("warned");
        assert!(w.contains("0.0.0.0:9100"), "{w}");
    }
}
