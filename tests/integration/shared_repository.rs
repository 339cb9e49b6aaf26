//! Two hosts back up into one S3 repository for a minute while a third forgets and
//! prunes with a short grace period, and their files keep changing (one a log that is
//! appended to all the time). No command may fail for a reason other than the documented
//! ones, and afterwards every snapshot restores and `check --read-data` passes.

use crate::support;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::fault_proxy::Schedule;
use support::{Env, Kind, describe, snapshot_ids};

/// How long the hosts work side by side.
const RUN_FOR: Duration = Duration::from_secs(60);

/// The prunes' grace period: short, so that packs are condemned and deleted during the
/// run, yet longer than any one backup here takes (the documented condition for prune to
/// be safe beside backups; the test checks it held).
const GRACE: Duration = Duration::from_secs(8);

/// One finished command: which loop ran it, what it printed, how long it took.
struct Ran {
    who: String,
    code: Option<i32>,
    stdout: String,
    stderr: String,
    took: Duration,
}

/// A small deterministic generator, so that a failure can be replayed by its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A host's files: some shared with the other host (deduplicated across hosts), some its
/// own, and a log.
fn make_source(dir: &Path, host: u64) {
    fs::create_dir_all(dir.join("docs")).expect("mkdir");
    for n in 0..12u64 {
        let seed = if n < 4 { 1000 + n } else { host * 100 + n };
        let len = 20_000 + (seed * 7919 % 400_000) as usize;
        fs::write(
            dir.join(format!("docs/f{n:02}.bin")),
            support::pseudo_random(len, seed),
        )
        .expect("write");
    }
    fs::write(dir.join("app.log"), "start\n").expect("write");
}

/// Change one thing in `dir`: rewrite, create or delete a file.
fn change(dir: &Path, rng: &mut Rng) {
    let n = rng.below(16);
    let path = dir.join(format!("docs/f{n:02}.bin"));
    match rng.below(4) {
        0 => {
            let _ = fs::remove_file(&path);
        }
        _ => {
            let len = 1_000 + rng.below(300_000) as usize;
            let _ = fs::write(&path, support::pseudo_random(len, rng.next()));
        }
    }
}

/// Run `cmd` and record it.
fn record(log: &Mutex<Vec<Ran>>, who: &str, mut cmd: Command) {
    let start = Instant::now();
    let out = cmd.output().expect("run cairn");
    let ran = Ran {
        who: who.to_string(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        took: start.elapsed(),
    };
    log.lock().expect("log").push(ran);
}

/// Whether a backup's warnings are all documented outcomes of files changing under it:
/// a file deleted before it was read, or one stored as read while it changed.
fn documented_warnings(summary: &serde_json::Value) -> bool {
    summary["warnings"].as_array().is_some_and(|w| {
        w.iter().all(|w| {
            let reason = w["reason"].as_str().unwrap_or_default();
            let path = w["path"].as_str().unwrap_or_default();
            reason.contains("vanished before it could be read")
                // The log only grows: never marked.
                || (w["stored"] == true
                    && reason.contains("may mix older and newer bytes")
                    && !path.ends_with("app.log"))
        })
    })
}

#[test]
fn two_hosts_forget_and_prune_for_a_minute_and_every_snapshot_restores() {
    let env = Env::init_on(Kind::S3Proxied);
    // A little latency on every request: listings and reads of the hosts overlap more.
    let mut schedule = Schedule::clean();
    schedule.delay = Some(Duration::from_millis(2));
    env.proxy.as_ref().expect("proxy").set_schedule(schedule);
    let hosts: Vec<(String, PathBuf)> = ["alpha", "beta"]
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let dir = env.path(&format!("src-{h}"));
            make_source(&dir, i as u64 + 1);
            (h.to_string(), dir)
        })
        .collect();
    let stop = AtomicBool::new(false);
    let log: Arc<Mutex<Vec<Ran>>> = Arc::default();
    let deadline = Instant::now() + RUN_FOR;
    std::thread::scope(|s| {
        let mut loops = Vec::new();
        let stop = &stop;
        for (i, (host, dir)) in hosts.iter().enumerate() {
            // Files change all the time...
            s.spawn(move || {
                let mut rng = Rng(0x9e37_79b9 + i as u64);
                while !stop.load(Ordering::Relaxed) {
                    change(dir, &mut rng);
                    std::thread::sleep(Duration::from_millis(40));
                }
            });
            // ...and the log never stops growing.
            s.spawn(move || {
                let mut f = fs::OpenOptions::new()
                    .append(true)
                    .open(dir.join("app.log"))
                    .expect("open log");
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    writeln!(f, "{host} event {n}").expect("append");
                    std::thread::sleep(Duration::from_millis(2));
                }
            });
            // A host: back up, again and again, with its own metadata cache.
            let (log, env) = (log.clone(), &env);
            loops.push(s.spawn(move || {
                while Instant::now() < deadline {
                    let mut c = env.cmd(&[
                        "backup",
                        "--json",
                        "--host",
                        host,
                        dir.to_str().expect("utf8"),
                    ]);
                    c.env("CAIRN_CACHE_DIR", env.path(&format!("cache-{host}")));
                    record(&log, &format!("backup {host}"), c);
                }
            }));
        }
        // Retention: forget all but the last two of each host, and prune.
        let (log2, env2) = (log.clone(), &env);
        loops.push(s.spawn(move || {
            while Instant::now() < deadline {
                record(&log2, "forget", env2.cmd(&["forget", "--keep-last", "2"]));
                std::thread::sleep(Duration::from_millis(500));
            }
        }));
        let (log3, env3) = (log.clone(), &env);
        loops.push(s.spawn(move || {
            let grace = format!("{}s", GRACE.as_secs());
            while Instant::now() < deadline {
                let c = env3.cmd(&["prune", "--json", "--grace", &grace, "--max-unused", "0%"]);
                record(&log3, "prune", c);
                std::thread::sleep(Duration::from_millis(200));
            }
        }));
        // The writers stop once every command loop has ended.
        for l in loops {
            l.join().expect("command loop");
        }
        stop.store(true, Ordering::Relaxed);
    });

    let log = log.lock().expect("log");
    let mut failures = Vec::new();
    let (mut backups, mut deleted, mut slowest) = (0, 0u64, Duration::ZERO);
    for r in log.iter() {
        let ok = match r.who.as_str() {
            w if w.starts_with("backup") => {
                backups += 1;
                slowest = slowest.max(r.took);
                let summary = support::json_lines(&r.stdout)
                    .ok()
                    .and_then(|l| l.last().cloned())
                    .unwrap_or_default();
                r.code == Some(0) || (r.code == Some(3) && documented_warnings(&summary))
            }
            "prune" => {
                if let Some(v) = support::json_lines(&r.stdout)
                    .ok()
                    .and_then(|l| l.last().cloned())
                {
                    deleted += v["deleted_packs"].as_u64().unwrap_or(0);
                }
                r.code == Some(0)
            }
            _ => r.code == Some(0),
        };
        if !ok {
            failures.push(format!(
                "{} (exit {:?}, {:.1} s): {}{}",
                r.who,
                r.code,
                r.took.as_secs_f64(),
                r.stderr,
                r.stdout
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "commands failed:\n{}",
        failures.join("\n")
    );
    assert!(
        slowest < GRACE,
        "a backup took {slowest:?}, longer than the grace period: the run says nothing"
    );
    assert!(backups >= 10, "only {backups} backups ran");
    assert!(
        deleted > 0,
        "no prune deleted anything: the run did not test deletion"
    );

    env.proxy
        .as_ref()
        .expect("proxy")
        .set_schedule(Schedule::clean());
    env.ok(&["check", "--read-data"]);
    let ids = snapshot_ids(&env);
    assert!(ids.len() >= 2, "{ids:?}");
    for id in &ids {
        let target = env.path(&format!("restore-{id}"));
        let out = env.run(&["restore", id, "--target", target.to_str().expect("utf8")]);
        assert!(out.status.success(), "snapshot {id}: {}", describe(&out));
    }
    // Once the files stand still, each host's next backup is its files exactly.
    for (host, dir) in &hosts {
        env.ok(&["backup", "--host", host, dir.to_str().expect("utf8")]);
        let target = env.path(&format!("final-{host}"));
        let latest = snapshot_ids(&env).last().cloned().expect("latest");
        env.ok(&[
            "restore",
            &latest,
            "--target",
            target.to_str().expect("utf8"),
        ]);
        support::assert_same_tree(dir, &support::restored(&target, dir));
    }
    eprintln!(
        "{backups} backups (slowest {slowest:?}), {} commands, {deleted} packs deleted, {} snapshots left",
        log.len(),
        ids.len()
    );
}
