//! The control socket: `cairn status` and `cairn backup --now` talk to the running daemon
//! through a Unix socket that only the daemon's user can open (mode 0600). The protocol
//! is one JSON request line answered by one JSON response line.

use super::status::DaemonStatus;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt as _, AsyncWriteExt};
use tokio::net::UnixListener;

/// Longest request line accepted.
const MAX_REQUEST: usize = 4096;

/// What a client asks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case")]
pub enum Request {
    /// Report status.
    Status,
    /// Take a snapshot in every destination now and answer when done.
    Backup,
}

/// One destination's result of a requested snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupResult {
    /// Destination name.
    pub destination: String,
    /// Snapshot ids answered with (one per source), new or existing; `outcomes` says
    /// which.
    pub snapshots: Vec<String>,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// Per snapshot in `snapshots`, what it holds and whether it is new: with nothing
    /// changed the answer is the existing snapshot, and the user is told so rather than
    /// led to believe one was made. Empty from a daemon older than this field.
    #[serde(default)]
    pub outcomes: Vec<SnapshotOutcome>,
}

/// One snapshot a requested backup answered with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotOutcome {
    /// Snapshot id (hex).
    pub id: String,
    /// The source paths it holds.
    pub paths: Vec<String>,
    /// Nothing changed since the snapshot `id`, which already held it all: no new
    /// snapshot was written.
    pub unchanged: bool,
}

impl BackupResult {
    /// What `cairn backup --now` says of this destination, one line per snapshot.
    pub fn lines(&self) -> Vec<String> {
        let dest = &self.destination;
        if let Some(e) = &self.error {
            return vec![format!("{dest}: FAILED: {e}")];
        }
        if self.outcomes.is_empty() {
            return vec![format!("{dest}: snapshot {}", self.snapshots.join(", "))];
        }
        self.outcomes
            .iter()
            .map(|o| {
                let paths = o.paths.join(", ");
                if o.unchanged {
                    format!(
                        "{dest}: nothing changed: the existing snapshot {} holds {paths}",
                        o.id
                    )
                } else {
                    format!("{dest}: new snapshot {} holds {paths}", o.id)
                }
            })
            .collect()
    }
}

/// What the daemon answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Response {
    /// Answer to [`Request::Status`].
    Status(DaemonStatus),
    /// Answer to [`Request::Backup`].
    Backup {
        /// Per destination.
        results: Vec<BackupResult>,
    },
    /// The request could not be served.
    Error {
        /// Why.
        message: String,
    },
}

/// Why a client call failed, phrased for the user.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ControlError(pub String);

/// Bind the socket, refusing to steal it from a daemon that still answers and removing
/// one left behind by a daemon that died.
pub fn bind(path: &Path) -> Result<UnixListener, ControlError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| {
            ControlError(format!(
                "cannot create the control socket's directory {}: {e}",
                parent.display()
            ))
        })?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(ControlError(format!(
                "another cairn daemon is already running (its control socket {} answers): stop it first, or give this one another [control] socket",
                path.display()
            )));
        }
        let _ = std::fs::remove_file(path);
    }
    let listener = UnixListener::bind(path).map_err(|e| {
        ControlError(format!(
            "cannot create the control socket {}: {e}",
            path.display()
        ))
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| ControlError(format!("cannot restrict {}: {e}", path.display())))?;
    Ok(listener)
}

/// Answers requests.
pub type Handler =
    Arc<dyn Fn(Request) -> Pin<Box<dyn Future<Output = Response> + Send>> + Send + Sync>;

/// Serve connections until the task is dropped.
pub async fn serve(listener: UnixListener, handler: Handler) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of descriptors, most likely: do not spin.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut reader = tokio::io::BufReader::new(read).take(MAX_REQUEST as u64);
            let mut line = String::new();
            let response = match reader.read_line(&mut line).await {
                Ok(_) => match serde_json::from_str::<Request>(line.trim()) {
                    Ok(req) => handler(req).await,
                    Err(e) => Response::Error {
                        message: format!("bad request: {e}"),
                    },
                },
                Err(e) => Response::Error {
                    message: format!("bad request: {e}"),
                },
            };
            let mut out = serde_json::to_vec(&response).unwrap_or_default();
            out.push(b'\n');
            let _ = write.write_all(&out).await;
        });
    }
}

/// Send one request and wait for the answer (blocking; a snapshot may take a while).
pub fn call(path: &Path, req: &Request) -> Result<Response, ControlError> {
    let mut stream = std::os::unix::net::UnixStream::connect(path).map_err(|e| {
        ControlError(match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => format!(
                "no cairn daemon is listening on {}: start it (`systemctl start cairn`), or pass the --config file it runs with",
                path.display()
            ),
            std::io::ErrorKind::PermissionDenied => format!(
                "permission denied on {}: run this as the daemon's user (root for the packaged service)",
                path.display()
            ),
            _ => format!("cannot reach the daemon at {}: {e}", path.display()),
        })
    })?;
    let mut line = serde_json::to_vec(req).map_err(|e| ControlError(e.to_string()))?;
    line.push(b'\n');
    stream
        .write_all(&line)
        .map_err(|e| ControlError(format!("sending to the daemon: {e}")))?;
    let mut answer = String::new();
    BufReader::new(stream)
        .read_line(&mut answer)
        .map_err(|e| ControlError(format!("reading the daemon's answer: {e}")))?;
    if answer.is_empty() {
        return Err(ControlError(
            "the daemon closed the connection without answering (is it stopping?)".into(),
        ));
    }
    serde_json::from_str(answer.trim())
        .map_err(|e| ControlError(format!("the daemon's answer is not understood: {e}")))
}

/// The socket a configuration names, for clients.
pub fn socket_of(config: &super::config::DaemonConfig) -> PathBuf {
    config.socket.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_round_trips() {
        for r in [Request::Status, Request::Backup] {
            let j = serde_json::to_string(&r).expect("json");
            assert_eq!(serde_json::from_str::<Request>(&j).expect("parse"), r);
        }
        assert_eq!(
            serde_json::to_string(&Request::Backup).expect("json"),
            r#"{"command":"backup"}"#
        );
        let resp = Response::Backup {
            results: vec![BackupResult {
                destination: "lan".into(),
                snapshots: vec!["ab".into()],
                error: None,
                outcomes: vec![SnapshotOutcome {
                    id: "ab".into(),
                    paths: vec!["/srv".into()],
                    unchanged: true,
                }],
            }],
        };
        let j = serde_json::to_string(&resp).expect("json");
        assert_eq!(serde_json::from_str::<Response>(&j).expect("parse"), resp);
        // An answer without outcomes (an older daemon) is still understood.
        let old = r#"{"destination":"lan","snapshots":["ab"],"error":null}"#;
        let r: BackupResult = serde_json::from_str(old).expect("old answer");
        assert_eq!(r.lines(), vec!["lan: snapshot ab".to_string()]);
    }

    #[test]
    fn an_unchanged_answer_names_the_existing_snapshot_and_what_it_holds() {
        let r = BackupResult {
            destination: "lan".into(),
            snapshots: vec!["ab".into(), "cd".into()],
            error: None,
            outcomes: vec![
                SnapshotOutcome {
                    id: "ab".into(),
                    paths: vec!["/srv".into(), "/etc".into()],
                    unchanged: true,
                },
                SnapshotOutcome {
                    id: "cd".into(),
                    paths: vec!["/home".into()],
                    unchanged: false,
                },
            ],
        };
        assert_eq!(
            r.lines(),
            vec![
                "lan: nothing changed: the existing snapshot ab holds /srv, /etc".to_string(),
                "lan: new snapshot cd holds /home".to_string(),
            ]
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_live_socket_is_not_stolen_and_a_dead_one_is_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.sock");
        let l = bind(&path).expect("bind");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let handler: Handler = Arc::new(|_req| {
            Box::pin(async {
                Response::Error {
                    message: "pong".into(),
                }
            })
        });
        let server = tokio::spawn(serve(l, handler));
        let err = bind(&path).expect_err("second daemon");
        assert!(err.0.contains("already running"), "{err}");
        let p = path.clone();
        let answer = tokio::task::spawn_blocking(move || call(&p, &Request::Status))
            .await
            .expect("join")
            .expect("call");
        assert_eq!(
            answer,
            Response::Error {
                message: "pong".into()
            }
        );
        server.abort();
        let _ = server.await;
        // The listener is gone but the file stays, as after a crash.
        assert!(path.exists());
        bind(&path).expect("rebind over a dead socket");
    }
}
