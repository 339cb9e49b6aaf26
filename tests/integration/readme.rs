//! The README is a walk-through; this test follows it. Every ```sh block runs, in order, in
//! one bash script with `set -e`, as a new user would type it. What a test cannot have is
//! substituted, and only that: `~` is a scratch home, the system paths are moved into a
//! scratch root, the example hosts (`nas.lan:9000`, `garage.lan:3900`, AWS's `s3://`) are
//! in-process S3 servers on 127.0.0.1 that accept exactly the example keys, and the package's
//! `/etc/cairn/cairn.toml` is the shipped example. Other blocks (```shell: cargo, apt,
//! systemctl, mc, garage, aws) must hold no `cairn` command, so none escapes the test.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::s3::S3Server;

/// System paths the walk-through uses, moved under the scratch root.
const SYSTEM_PATHS: &[&str] = &[
    "/etc/cairn",
    "/srv/data",
    "/var/backups/cairn",
    "/var/lib/cairn",
    "/var/cache/cairn",
    "/run/cairn",
    "/mnt",
];

/// (info string, body) of every fenced block.
fn blocks(md: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in md.lines() {
        let fence = line.trim_start().starts_with("```");
        match (&mut current, fence) {
            (None, true) => {
                current = Some((line.trim_start()[3..].trim().to_string(), String::new()));
            }
            (Some(_), true) => out.extend(current.take()),
            (Some((_, body)), false) => {
                body.push_str(line);
                body.push('\n');
            }
            (None, false) => {}
        }
    }
    out
}

fn move_paths(text: &str, root: &Path) -> String {
    let mut s = text.to_string();
    for p in SYSTEM_PATHS {
        s = s.replace(p, &format!("{}{p}", root.display()));
    }
    s
}

#[test]
fn every_readme_command_runs_as_written() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(manifest.join("README.md")).expect("README");
    let all = blocks(&readme);
    for (info, body) in &all {
        if info == "sh" {
            continue;
        }
        for line in body.lines() {
            let l = line.trim_start().trim_start_matches("$ ");
            assert!(
                !l.starts_with("cairn ") && !l.contains("| cairn ") && !l.contains("&& cairn "),
                "README has a `cairn` command in a ```{info} block, which no test runs: {line}\nPut it in a ```sh block."
            );
        }
    }
    let script_blocks: Vec<&str> = all
        .iter()
        .filter(|(i, _)| i == "sh")
        .map(|(_, b)| b.as_str())
        .collect();
    assert!(script_blocks.len() >= 8, "the walk-through lost its blocks");

    let scratch = tempfile::tempdir().expect("scratch");
    let root = scratch.path().join("root");
    let home = scratch.path().join("home");
    std::fs::create_dir_all(&home).expect("home");
    // What every Debian system has (`/var/backups`: the example destination's parent).
    for p in ["/etc/cairn", "/run/cairn", "/mnt", "/var/backups"] {
        std::fs::create_dir_all(format!("{}{p}", root.display())).expect("system dir");
    }
    // What the package installs: the example configuration, paths moved.
    let example =
        std::fs::read_to_string(manifest.join("config/cairn.toml")).expect("example config");
    std::fs::write(
        root.join("etc/cairn/cairn.toml"),
        move_paths(&example, &root),
    )
    .expect("config");

    let minio = S3Server::start_with_keys(&["backups"], "cairn-host1", "minio-secret-change-me");
    let garage = S3Server::start_with_keys(
        &["backups"],
        "GK31c2f218a2e44f485b94239e",
        "garage-secret-change-me",
    );
    let aws = S3Server::start_with_keys(
        &["my-backups"],
        "AKIAIOSFODNN7EXAMPLE",
        "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY",
    );

    let pid_file = scratch.path().join("daemon.pid");
    let mut script = String::from("set -euxo pipefail\n");
    script.push_str(&format!(
        "trap '[ -f {pid} ] && kill $(cat {pid}) 2>/dev/null; wait' EXIT\n",
        pid = pid_file.display()
    ));
    for body in &script_blocks {
        let mut body = move_paths(body, &root)
            .replace("http://nas.lan:9000", &minio.endpoint())
            .replace("http://garage.lan:3900", &garage.endpoint());
        // The foreground daemon goes to the background, and the walk-through continues
        // once its control socket answers.
        body = body
            .lines()
            .map(|l| {
                if l.contains("# runs until Ctrl-C") {
                    let cmd = l.split('#').next().unwrap_or_default().trim();
                    format!(
                        "{cmd} > {log} 2>&1 & echo $! > {pid}\nfor i in $(seq 150); do [ -S {sock} ] && break; sleep 0.2; done\n",
                        log = scratch.path().join("daemon.log").display(),
                        pid = pid_file.display(),
                        sock = root.join("run/cairn/control.sock").display()
                    )
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        script.push_str(&body);
    }

    let bin_dir: PathBuf = Path::new(env!("CARGO_BIN_EXE_cairn"))
        .parent()
        .expect("bin dir")
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(&script)
        .current_dir(&home)
        .env_clear()
        .env("PATH", path)
        .env("HOME", &home)
        .env("LANG", "C.UTF-8")
        .env("AWS_CONFIG_FILE", "/nonexistent/aws-config")
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/aws-credentials",
        )
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_ENDPOINT_URL_S3", aws.endpoint())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().expect("bash");
    let started = Instant::now();
    let pid = child.id();
    let waiter = std::thread::spawn(move || child.wait_with_output());
    while !waiter.is_finished() {
        if started.elapsed() > Duration::from_secs(600) {
            // SAFETY: plain kill(2) of our own child.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = waiter.join().expect("join").expect("output");
    let log = std::fs::read_to_string(scratch.path().join("daemon.log")).unwrap_or_default();
    assert!(
        out.status.success(),
        "the README walk-through failed ({:?}):\n--- stdout\n{}\n--- stderr (commands traced with +)\n{}\n--- daemon log\n{log}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // The results the text promises.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let notes = home.join("Documents/notes.txt");
    let rel = notes.strip_prefix("/").expect("absolute");
    assert_eq!(
        std::fs::read_to_string(home.join("restored").join(rel)).expect("restored notes"),
        "my first file\na second line\n"
    );
    assert!(
        stdout.contains("my first file\na second line\n"),
        "restore to stdout: {stdout}"
    );
    assert_eq!(
        std::fs::read_to_string(home.join("documents-copy/todo.txt")).expect("folder restore"),
        "draft\n"
    );
    assert!(
        root.join("mnt/restore").join(rel).is_file(),
        "fresh-machine restore"
    );
    assert!(
        root.join("var/backups/cairn/config").is_file(),
        "the daemon created its repository"
    );
    for server in [&minio, &garage] {
        assert!(server.root().join("backups/host1/config").is_file());
    }
    assert!(aws.root().join("my-backups/host1/config").is_file());
}
