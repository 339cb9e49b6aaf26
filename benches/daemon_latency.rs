//! Change-to-durable latency of `cairn daemon`: how long from a file write until a
//! snapshot holding it is committed in the destination, measured end to end against a
//! real S3 server (in-process `s3s-fs` on loopback) over many single-file changes.
//!
//! Run: `cargo bench --bench daemon_latency` (CAIRN_BENCH_CHANGES sets the number of
//! changes, default 30; CAIRN_BENCH_FILES the size of the watched tree, default 20000).
//! Prints p50, p95 and max, with and without the configured quiet period.

#[path = "../tests/integration/support/mod.rs"]
mod support;

use cairn::daemon::control::{self, Request, Response};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{Env, Kind, pseudo_random};

const QUIET: Duration = Duration::from_millis(500);

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn last_snapshot(socket: &Path) -> Option<(String, bool)> {
    match control::call(socket, &Request::Status).ok()? {
        Response::Status(s) => {
            let d = s.destinations.first()?;
            let settled = d.state == "idle" && d.pending_changes == 0 && d.pending_objects == 0;
            Some((d.last_snapshot.as_ref()?.id.clone(), settled))
        }
        _ => None,
    }
}

fn wait_for_new(socket: &Path, old: Option<&str>, limit: Duration) -> Option<String> {
    let t = Instant::now();
    while t.elapsed() < limit {
        if let Some((id, settled)) = last_snapshot(socket)
            && settled
            && Some(id.as_str()) != old
        {
            return Some(id);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!(
            "daemon_latency is a benchmark: run it with `cargo bench --bench daemon_latency`"
        );
        return;
    }
    let changes = env_or("CAIRN_BENCH_CHANGES", 30);
    let files = env_or("CAIRN_BENCH_FILES", 20_000);
    let env = Env::with(Kind::S3);
    let src = env.path("src");
    for i in 0..files {
        let dir = src.join(format!("d{:03}/e{:02}", i % 500, i % 7));
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(
            dir.join(format!("f{i}.txt")),
            format!("file {i}\n").repeat(i % 50 + 1),
        )
        .expect("write");
    }
    let state = env.path("state");
    let config = env.path("cairn.toml");
    let options: Vec<String> = env
        .options
        .iter()
        .filter_map(|o| o.split_once('='))
        .map(|(k, v)| format!("{k:?} = {v:?}"))
        .collect();
    std::fs::write(
        &config,
        format!(
            "state_dir = \"{}\"\npassword_file = \"{}\"\n[[source]]\npaths = [\"{}\"]\n[[destination]]\nname = \"s3\"\nrepo = \"{}\"\noptions = {{ {} }}\n[schedule]\nquiet_period = \"{}ms\"\nmin_interval = \"0s\"\n",
            state.display(),
            env.password_file.display(),
            src.display(),
            env.repo,
            options.join(", "),
            QUIET.as_millis()
        ),
    )
    .expect("config");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cairn"));
    cmd.args(["daemon", "--config"])
        .arg(&config)
        .env("CAIRN_LOG", "warn,aws_config=error,aws_runtime=error")
        .stdin(Stdio::null());
    for (k, v) in &env.env {
        if v.is_empty() {
            cmd.env_remove(k);
        } else {
            cmd.env(k, v);
        }
    }
    let mut child = cmd.spawn().expect("start daemon");
    let socket = state.join("cairn.sock");
    let t = Instant::now();
    let Some(mut last) = wait_for_new(&socket, None, Duration::from_secs(600)) else {
        let _ = child.kill();
        panic!("no first snapshot");
    };
    println!(
        "first snapshot of {files} files: {:.2}s (includes creating the repository)",
        t.elapsed().as_secs_f64()
    );
    let mut samples = Vec::new();
    for i in 0..changes {
        let path = src.join(format!(
            "d{:03}/e{:02}/f{}.txt",
            (i * 37) % 500,
            (i * 37) % 7,
            i * 37
        ));
        let t = Instant::now();
        std::fs::write(&path, pseudo_random(10_000 + i * 100, i as u64)).expect("change");
        match wait_for_new(&socket, Some(&last), Duration::from_secs(60)) {
            Some(id) => {
                samples.push(t.elapsed());
                last = id;
            }
            None => {
                let _ = child.kill();
                panic!("change {i} never reached a snapshot");
            }
        }
    }
    // SAFETY: kill has no memory preconditions; the pid is our live child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let (p50, p95, max) = (
        percentile(&samples, 0.50),
        percentile(&samples, 0.95),
        *samples.last().expect("samples"),
    );
    println!(
        "change-to-durable latency over {} single-file changes in a {files}-file tree (S3 on loopback):",
        samples.len()
    );
    println!(
        "  total        p50 {:7.1} ms   p95 {:7.1} ms   max {:7.1} ms",
        ms(p50),
        ms(p95),
        ms(max)
    );
    println!(
        "  minus quiet  p50 {:7.1} ms   p95 {:7.1} ms   max {:7.1} ms   (quiet_period {} ms)",
        ms(p50) - ms(QUIET),
        ms(p95) - ms(QUIET),
        ms(max) - ms(QUIET),
        QUIET.as_millis()
    );
    println!(
        "{{\"changes\":{},\"files\":{files},\"quiet_ms\":{},\"p50_ms\":{:.1},\"p95_ms\":{:.1},\"max_ms\":{:.1}}}",
        samples.len(),
        QUIET.as_millis(),
        ms(p50),
        ms(p95),
        ms(max)
    );
}
