//! Secrets never reach a log: a full run of every command, and of the daemon, at the most
//! verbose log level (the AWS SDK's included), against a real S3 server, and no output
//! holds the passphrases or the S3 secret key. Files holding secrets that others could
//! read are refused.

use crate::support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::s3::{ACCESS_KEY, SECRET_KEY, aws_env};
use support::{Env, Kind, describe, pseudo_random};

const PASSPHRASE: &str = "test passphrase";
const NEW_PASSPHRASE: &str = "second secret words";

fn assert_clean(what: &str, text: &str) {
    for secret in [PASSPHRASE, NEW_PASSPHRASE, SECRET_KEY] {
        assert!(
            !text.contains(secret),
            "{what} printed the secret {secret:?}:\n{text}"
        );
    }
    // Hex or base64 renderings of the passphrase bytes would be as bad.
    let hex = hex_of(PASSPHRASE);
    assert!(!text.contains(&hex), "{what} printed the passphrase in hex");
}

fn hex_of(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn no_command_and_no_daemon_log_holds_a_secret() {
    let env = Env::with(Kind::S3);
    assert_eq!(
        fs::read_to_string(&env.password_file).expect("read"),
        format!("{PASSPHRASE}\n")
    );
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    fs::write(src.join("a"), pseudo_random(2 << 20, 3)).expect("write");
    let s = src.to_str().expect("utf8");
    let new_pass = env.path("new-pass");
    fs::write(&new_pass, format!("{NEW_PASSPHRASE}\n")).expect("write");
    fs::set_permissions(&new_pass, fs::Permissions::from_mode(0o600)).expect("chmod");
    let target = env.path("restored");
    let runs: Vec<Vec<&str>> = vec![
        vec!["init"],
        vec!["backup", s],
        vec!["backup", s, "--json"],
        vec!["snapshots"],
        vec![
            "restore",
            "latest",
            "--target",
            target.to_str().expect("utf8"),
        ],
        vec!["check", "--read-data"],
        vec![
            "key",
            "add",
            "--new-password-file",
            new_pass.to_str().expect("utf8"),
        ],
        vec!["key", "list"],
        vec!["forget", "--keep-last", "1", "--prune"],
        vec!["stats"],
    ];
    for args in &runs {
        let out = env
            .cmd(args)
            .env("CAIRN_LOG", "trace")
            .output()
            .expect("run");
        assert!(out.status.success(), "{args:?}: {}", describe(&out));
        assert_clean(&format!("cairn {args:?}"), &describe(&out));
    }
    // A wrong passphrase's error does not echo what was typed.
    let out = env
        .cmd(&["snapshots"])
        .env_remove("CAIRN_PASSWORD_FILE")
        .env("CAIRN_PASSWORD", "second secret words, almost")
        .env("CAIRN_LOG", "trace")
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(!describe(&out).contains("almost"), "{}", describe(&out));

    // The daemon, with the S3 secret key in a file named by the configuration.
    let key_file = env.path("s3-secret");
    fs::write(&key_file, format!("{SECRET_KEY}\n")).expect("write");
    fs::set_permissions(&key_file, fs::Permissions::from_mode(0o600)).expect("chmod");
    let socket = env.path("control.sock");
    let config = env.path("cairn.toml");
    fs::write(
        &config,
        format!(
            r#"state_dir = "{state}"
password_file = "{pass}"
[[source]]
paths = ["{s}"]
[[destination]]
name = "bucket"
repo = "{repo}"
access_key_id = "{ACCESS_KEY}"
secret_access_key_file = "{key}"
options = {{ "s3.retries" = 3 }}
[schedule]
quiet_period = "200ms"
min_interval = "0s"
[control]
socket = "{sock}"
"#,
            state = env.path("state").display(),
            pass = env.password_file.display(),
            repo = env.repo,
            key = key_file.display(),
            sock = socket.display(),
        ),
    )
    .expect("config");
    let log = env.path("daemon.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cairn"));
    cmd.args(["daemon", "--config"])
        .arg(&config)
        .env("CAIRN_LOG", "trace")
        .env_remove("CAIRN_PASSWORD")
        .env_remove("CAIRN_PASSWORD_FILE")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).expect("log"));
    for (k, v) in aws_env() {
        if !k.starts_with("AWS_ACCESS") && !k.starts_with("AWS_SECRET") && !v.is_empty() {
            cmd.env(k, v);
        }
    }
    let mut daemon = cmd.spawn().expect("daemon");
    let started = Instant::now();
    while !socket.exists() && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
    }
    fs::write(src.join("b"), "new file").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["backup", "--now", "--socket"])
        .arg(&socket)
        .output()
        .expect("backup --now");
    // SAFETY: plain kill(2) of our own child.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let _ = daemon.wait();
    let text = fs::read_to_string(&log).unwrap_or_default();
    assert!(
        out.status.success(),
        "backup --now: {}\n{text}",
        describe(&out)
    );
    assert!(
        text.len() > 1000,
        "the trace log is suspiciously short:\n{text}"
    );
    assert_clean("the daemon's trace log", &text);
}

#[test]
fn secret_files_others_can_read_are_refused() {
    let env = Env::with(Kind::Local);
    fs::set_permissions(&env.password_file, fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = env.run(&["init"]);
    assert!(!out.status.success(), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("chmod 600") && err.contains("mode 644"),
        "{err}"
    );
    assert!(
        !std::path::Path::new(&env.repo).join("config").exists(),
        "nothing may be created with a refused passphrase"
    );
}
