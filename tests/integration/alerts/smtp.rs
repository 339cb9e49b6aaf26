//! A real SMTP server for mail notifiers: aiosmtpd (from PyPI; `.ci/run` installs it in
//! a virtual environment and names its Python in CAIRN_AIOSMTPD_PYTHON), started on a
//! loopback port with STARTTLS required (a certificate from a CA made for the test) and
//! a login, writing each mail it takes to a folder as JSON.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The server script: STARTTLS required before AUTH and MAIL; each message saved with
/// its envelope, whether TLS was on, and who logged in.
const SCRIPT: &str = r#"
import asyncio, json, os, ssl, sys, time
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

port, cert, key, out, user, password = sys.argv[1:7]

class Handler:
    async def handle_DATA(self, server, session, envelope):
        record = {
            "from": envelope.mail_from,
            "to": envelope.rcpt_tos,
            "data": envelope.content.decode("utf-8", "replace"),
            "tls": session.ssl is not None,
            "login": (session.auth_data.login.decode() if session.auth_data and hasattr(session.auth_data, "login") else None),
        }
        name = os.path.join(out, "%f.json" % time.time())
        with open(name + ".tmp", "w") as f:
            json.dump(record, f)
        os.rename(name + ".tmp", name)
        return "250 OK"

def auth(server, session, envelope, mechanism, data):
    ok = data.login == user.encode() and data.password == password.encode()
    # handled=False: the server answers 535 itself.
    return AuthResult(success=ok, handled=False, auth_data=data if ok else None)

ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
ctx.load_cert_chain(cert, key)
c = Controller(Handler(), hostname="127.0.0.1", port=int(port), tls_context=ctx,
               require_starttls=True, authenticator=auth, auth_require_tls=True,
               server_hostname="127.0.0.1")
c.start()
print("READY", flush=True)
try:
    while True:
        time.sleep(3600)
finally:
    c.stop()
"#;

/// One mail the server took.
#[derive(Debug)]
pub struct Mail {
    pub from: String,
    pub to: Vec<String>,
    pub data: String,
    pub tls: bool,
    pub login: Option<String>,
}

pub struct Smtp {
    child: Child,
    pub port: u16,
    out: PathBuf,
    /// The CA that signed the server's certificate (PEM file).
    pub ca_file: PathBuf,
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Python that has aiosmtpd, if any; in CI its absence fails the test.
fn python() -> Option<String> {
    if let Ok(p) = std::env::var("CAIRN_AIOSMTPD_PYTHON") {
        return Some(p);
    }
    let ok = Command::new("python3")
        .args(["-c", "import aiosmtpd"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return Some("python3".into());
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "aiosmtpd is not installed: .ci/run installs it and sets CAIRN_AIOSMTPD_PYTHON"
    );
    eprintln!("skipping the mail part: aiosmtpd is not installed (pip install aiosmtpd==1.4.6)");
    None
}

impl Smtp {
    /// Start the server in `dir` with login `user`/`password`; `None` when aiosmtpd is
    /// not installed outside CI.
    pub fn start(dir: &Path, user: &str, password: &str) -> Option<Smtp> {
        let python = python()?;
        let c = crate::support::s3::loopback_certificate();
        let (cert_pem, key_pem, ca_pem) = (c.cert_pem, c.key_pem, c.ca_pem);
        let files = dir.join("smtp");
        let out = files.join("mails");
        std::fs::create_dir_all(&out).expect("mkdir");
        let (cert, key, ca_file, script) = (
            files.join("cert.pem"),
            files.join("key.pem"),
            files.join("ca.pem"),
            files.join("server.py"),
        );
        std::fs::write(&cert, cert_pem).expect("cert");
        std::fs::write(&key, key_pem).expect("key");
        std::fs::write(&ca_file, ca_pem).expect("ca");
        std::fs::write(&script, SCRIPT).expect("script");
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let mut child = Command::new(python)
            .arg(&script)
            .args([
                &port.to_string(),
                &path(&cert),
                &path(&key),
                &path(&out),
                user,
                password,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start aiosmtpd");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read");
        assert_eq!(line.trim(), "READY", "aiosmtpd did not start");
        Some(Smtp {
            child,
            port,
            out,
            ca_file,
        })
    }

    /// The mails taken so far, oldest first.
    pub fn mails(&self) -> Vec<Mail> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(&self.out)
            .expect("read mails")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        names.sort();
        names
            .iter()
            .map(|p| {
                let v: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(p).expect("mail")).expect("json");
                Mail {
                    from: v["from"].as_str().unwrap_or_default().to_string(),
                    to: v["to"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|t| t.as_str().map(String::from))
                                .collect()
                        })
                        .unwrap_or_default(),
                    data: v["data"].as_str().unwrap_or_default().to_string(),
                    tls: v["tls"].as_bool().unwrap_or(false),
                    login: v["login"].as_str().map(String::from),
                }
            })
            .collect()
    }

    /// Wait until `n` mails are in.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Mail> {
        let start = Instant::now();
        loop {
            let m = self.mails();
            if m.len() >= n {
                return m;
            }
            assert!(
                start.elapsed() < timeout,
                "timed out waiting for {n} mail(s): {m:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn path(p: &Path) -> String {
    p.display().to_string()
}
