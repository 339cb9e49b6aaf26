//! Torture: seeded runs that kill backups and prunes with SIGKILL at random moments, S3
//! faults of every kind (a tenth of all requests, plus bursts of total outage) during
//! backup, restore, prune and check, and source files rewritten, truncated, deleted and
//! renamed while they are read. After each: `check` passes and what is restored is exactly
//! what was there when the last completed snapshot was taken.
//!
//! Fixed seeds keep CI to a few minutes; `CAIRN_TORTURE_SEEDS=1,2,3` and
//! `CAIRN_TORTURE_POINTS=200` ask for more. A failure prints its seed: rerun with it.

use crate::support;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use support::fault_proxy::Schedule;
use support::{Env, Kind, describe, json_lines, pseudo_random, restored, snapshot_ids};

fn seeds() -> Vec<u64> {
    std::env::var("CAIRN_TORTURE_SEEDS")
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .filter(|v: &Vec<u64>| !v.is_empty())
        .unwrap_or_else(|| vec![1])
}

fn points(default: usize) -> usize {
    std::env::var("CAIRN_TORTURE_POINTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// xorshift64*: small, seeded, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Relative path → content hash of every regular file under `root`.
fn manifest(root: &Path) -> BTreeMap<PathBuf, blake3::Hash> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).expect("read_dir") {
            let e = e.expect("entry");
            let t = e.file_type().expect("type");
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                let rel = e.path().strip_prefix(root).expect("prefix").to_path_buf();
                out.insert(rel, blake3::hash(&fs::read(e.path()).expect("read")));
            }
        }
    }
    out
}

fn check_passes(env: &Env, read_data: bool, context: &str) {
    let args: &[&str] = if read_data {
        &["check", "--read-data"]
    } else {
        &["check"]
    };
    let out = env.run(args);
    assert!(
        out.status.success(),
        "{context}: check failed: {}",
        describe(&out)
    );
}

/// Restore snapshot `id` and compare it with the manifest taken when it was made.
fn restore_matches(
    env: &Env,
    id: &str,
    src: &Path,
    want: &BTreeMap<PathBuf, blake3::Hash>,
    context: &str,
) {
    let target = env.path(&format!("restore-{}", Instant::now().elapsed().as_nanos()));
    let _ = fs::remove_dir_all(&target);
    let out = env.run(&["restore", id, "--target", target.to_str().expect("utf8")]);
    assert!(
        out.status.success(),
        "{context}: restore failed: {}",
        describe(&out)
    );
    let got = manifest(&restored(&target, src));
    assert!(
        &got == want,
        "{context}: snapshot {id} does not hold the source as it was: {} files restored, {} expected",
        got.len(),
        want.len()
    );
    fs::remove_dir_all(&target).expect("cleanup");
}

/// Change the source a little: rewrite two files, add one, delete one.
fn mutate(src: &Path, rng: &mut Rng, round: usize) {
    let files: Vec<PathBuf> = fs::read_dir(src)
        .expect("ls")
        .map(|e| e.expect("entry").path())
        .collect();
    for _ in 0..2 {
        let f = &files[rng.below(files.len() as u64) as usize];
        let len = 10_000 + rng.below(700_000) as usize;
        fs::write(f, pseudo_random(len, rng.next())).expect("rewrite");
    }
    fs::write(
        src.join(format!("new-{round}")),
        pseudo_random(50_000 + rng.below(400_000) as usize, rng.next()),
    )
    .expect("add");
    if files.len() > 12 {
        let f = &files[rng.below(files.len() as u64) as usize];
        let _ = fs::remove_file(f);
    }
}

#[test]
fn killed_backups_and_prunes_never_lose_a_completed_snapshot() {
    for seed in seeds() {
        crash_torture(seed, points(30));
    }
}

fn crash_torture(seed: u64, points: usize) {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let env = Env::with(Kind::S3);
    env.ok(&["init", "--pack-size", "1"]);
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    for i in 0..14 {
        fs::write(
            src.join(format!("f{i}")),
            pseudo_random(100_000 + rng.below(1_500_000) as usize, rng.next()),
        )
        .expect("write");
    }
    let s = src.to_str().expect("utf8").to_string();
    env.ok(&["backup", &s]);
    // Kill moments are drawn from the time an uninterrupted run of each kind takes: first
    // a backup after a change like the ones below (the first backup reads everything;
    // drawn from its time, too many later runs finished before the kill), then the mean
    // of that and each later run completed.
    mutate(&src, &mut rng, points);
    let started = Instant::now();
    env.ok(&["backup", &s]);
    let mut span_ms = [started.elapsed().as_millis() as u64, 800];
    let mut last = (snapshot_ids(&env).pop().expect("first"), manifest(&src));
    let mut kills = 0;
    for point in 0..points {
        let context = format!("seed {seed}, point {point}");
        let prune = point % 4 == 3;
        let args: Vec<&str> = if prune {
            env.ok(&["forget", "--keep-last", "3"]);
            vec!["prune", "--grace", "0s", "--max-unused", "1%"]
        } else {
            mutate(&src, &mut rng, point);
            vec!["backup", &s]
        };
        let span = span_ms[usize::from(prune)];
        let delay = rng.below(span + span / 5 + 1);
        let before = snapshot_ids(&env).len();
        let t0 = Instant::now();
        let mut child = env
            .cmd(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        std::thread::sleep(Duration::from_millis(delay));
        let finished = child
            .try_wait()
            .expect("try_wait")
            .is_some_and(|s| s.success());
        if !finished {
            let _ = child.kill();
            kills += 1;
        }
        let status = child.wait().expect("wait");
        if finished || status.success() {
            let took = t0.elapsed().as_millis() as u64;
            span_ms[usize::from(prune)] = (span + took) / 2;
        }
        check_passes(&env, false, &context);
        let ids = snapshot_ids(&env);
        if !prune && ids.len() > before.min(3) && ids.last() != Some(&last.0) {
            // The backup committed (before or despite the kill): its snapshot is the
            // source as it is now.
            last = (ids.last().expect("id").clone(), manifest(&src));
        }
        assert_eq!(
            ids.last(),
            Some(&last.0),
            "{context}: the latest snapshot is not the last completed one"
        );
        restore_matches(&env, &last.0, &src, &last.1, &context);
    }
    assert!(
        kills * 2 >= points,
        "seed {seed}: only {kills} of {points} runs were killed"
    );
    // Resume: a clean run completes, and everything verifies byte for byte.
    env.ok(&["backup", &s]);
    env.ok(&["prune", "--grace", "0s"]);
    check_passes(&env, true, &format!("seed {seed}, end"));
    let latest = snapshot_ids(&env).pop().expect("latest");
    restore_matches(
        &env,
        &latest,
        &src,
        &manifest(&src),
        &format!("seed {seed}, end"),
    );
}

#[test]
fn s3_faults_never_commit_anything_corrupt() {
    for seed in seeds() {
        fault_torture(seed);
    }
}

fn fault_torture(seed: u64) {
    let mut rng = Rng(seed.wrapping_mul(0xD1B5_4A32_D192_ED03) | 1);
    let env = Env::init_on(Kind::S3Proxied);
    let proxy = env.proxy.as_ref().expect("proxy");
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    for i in 0..10 {
        fs::write(
            src.join(format!("f{i}")),
            pseudo_random(200_000 + rng.below(2_000_000) as usize, rng.next()),
        )
        .expect("write");
    }
    let s = src.to_str().expect("utf8").to_string();
    // A tenth of all requests fail: 500, 503 SlowDown, resets, stalls, cut-short bodies.
    let faulty = Schedule::all(seed, 20, Duration::from_millis(300));
    let outage = Schedule {
        reset: 1000,
        ..Schedule::clean()
    };
    let stop = Arc::new(AtomicBool::new(false));
    let bursts = {
        let stop = stop.clone();
        let proxy_ptr: *const support::fault_proxy::FaultProxy = proxy;
        let proxy_addr = proxy_ptr as usize;
        let faulty = faulty.clone();
        std::thread::spawn(move || {
            // SAFETY: the proxy outlives this thread, which is joined before `env` drops.
            let proxy = unsafe { &*(proxy_addr as *const support::fault_proxy::FaultProxy) };
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                proxy.set_schedule(Schedule {
                    seed: seed + n,
                    ..faulty.clone()
                });
                std::thread::sleep(Duration::from_millis(1500));
                // A burst of total outage.
                proxy.set_schedule(outage.clone());
                std::thread::sleep(Duration::from_millis(250));
                n += 1;
            }
            proxy.set_schedule(Schedule::clean());
        })
    };
    let mut completed: Vec<(String, BTreeMap<PathBuf, blake3::Hash>)> = Vec::new();
    let mut failures = 0;
    for round in 0..6 {
        mutate(&src, &mut rng, round);
        let before = snapshot_ids_clean(&env);
        let out = env.run(&["backup", &s]);
        let after = snapshot_ids_clean(&env);
        if out.status.success() {
            assert_eq!(after.len(), before.len() + 1, "seed {seed} round {round}");
            completed.push((after.last().expect("id").clone(), manifest(&src)));
        } else {
            failures += 1;
            assert_eq!(
                after,
                before,
                "seed {seed} round {round}: a failed backup committed a snapshot: {}",
                describe(&out)
            );
        }
        // Restores under faults: either the exact data or an error, never wrong bytes.
        if let Some((id, want)) = completed.last() {
            let target = env.path(&format!("r-{seed}-{round}"));
            let out = env.run(&["restore", id, "--target", target.to_str().expect("utf8")]);
            if out.status.success() {
                assert!(
                    &manifest(&restored(&target, &src)) == want,
                    "seed {seed} round {round}: a successful restore under faults differs"
                );
            }
            let _ = fs::remove_dir_all(&target);
        }
        if round == 3 {
            let _ = env.run(&["forget", "--keep-last", "2"]);
            let _ = env.run(&["prune", "--grace", "0s", "--max-unused", "1%"]);
        }
    }
    // Check under faults may fail to read, but must not call a sound repository damaged
    // for a reason other than an unreadable object: no object may be said to fail its
    // hash or authentication, and it must end, not crash.
    let out = env.run(&["check"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        matches!(out.status.code(), Some(0 | 1)) && !text.contains("panicked"),
        "seed {seed}: check under faults crashed: {}",
        describe(&out)
    );
    for wrong in ["does not match", "authentication", "altered"] {
        assert!(
            !text.contains(wrong),
            "seed {seed}: check under faults called a sound object damaged ({wrong:?}): {}",
            describe(&out)
        );
    }
    stop.store(true, Ordering::Relaxed);
    bursts.join().expect("bursts");
    assert!(proxy.faults() > 20, "seed {seed}: too few faults injected");
    assert!(failures < 6, "seed {seed}: no backup ever got through");
    // Faults off: everything kept is whole.
    env.ok(&["prune", "--grace", "0s"]);
    check_passes(&env, true, &format!("fault seed {seed}"));
    let kept = snapshot_ids(&env);
    for (id, want) in &completed {
        if kept.contains(id) {
            restore_matches(&env, id, &src, want, &format!("fault seed {seed}"));
        }
    }
}

/// Snapshot ids, retrying the listing itself through faults.
fn snapshot_ids_clean(env: &Env) -> Vec<String> {
    for _ in 0..20 {
        let out = env.run(&["snapshots", "--json"]);
        if out.status.success()
            && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out.stdout)
        {
            return v
                .as_array()
                .expect("array")
                .iter()
                .map(|s| s["id"].as_str().expect("id").to_string())
                .collect();
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    panic!("snapshots could not be listed through the faults");
}

/// The versions a tortured file may legitimately hold: `len` copies of byte `v`.
fn version_len(v: u8) -> usize {
    match v % 4 {
        0 => 0,
        1 => 300_000,
        2 => 1_100_000,
        _ => 2_500_000,
    }
}

#[test]
fn files_changing_while_read_are_never_stored_torn() {
    for seed in seeds() {
        source_torture(seed);
    }
}

fn source_torture(seed: u64) {
    let env = Env::init_on(Kind::S3);
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    let names: Vec<String> = (0..6).map(|i| format!("t{i}")).collect();
    for (i, n) in names.iter().enumerate() {
        let v = (i % 4) as u8 + 1;
        fs::write(src.join(n), vec![v; version_len(v)]).expect("write");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mutator = {
        let (stop, src, names) = (stop.clone(), src.clone(), names.clone());
        std::thread::spawn(move || {
            let mut rng = Rng(seed | 1);
            while !stop.load(Ordering::Relaxed) {
                let name = &names[rng.below(names.len() as u64) as usize];
                let path = src.join(name);
                let v = rng.below(250) as u8 + 1;
                let body = vec![v; version_len(v)];
                match rng.below(5) {
                    // Rewritten in place, slowly: the torn window a reader may hit.
                    0 | 1 => {
                        if let Ok(mut f) = fs::OpenOptions::new()
                            .write(true)
                            .create(true)
                            .truncate(true)
                            .open(&path)
                        {
                            for piece in body.chunks(64 * 1024) {
                                let _ = std::io::Write::write_all(&mut f, piece);
                                std::thread::sleep(Duration::from_micros(300));
                            }
                        }
                    }
                    // Replaced atomically.
                    2 => {
                        let tmp = src.join(format!(".{name}.tmp"));
                        let _ = fs::write(&tmp, &body);
                        let _ = fs::rename(&tmp, &path);
                    }
                    // Truncated to nothing.
                    3 => {
                        let _ = fs::write(&path, b"");
                    }
                    // Deleted, or renamed away and back.
                    _ => {
                        let away = src.join(format!("{name}.moved"));
                        if fs::rename(&path, &away).is_ok() {
                            std::thread::sleep(Duration::from_millis(2));
                            let _ = fs::rename(&away, &path);
                        } else {
                            let _ = fs::write(&path, &body);
                        }
                    }
                }
            }
        })
    };
    let rounds = points(6).min(12);
    let mut warned = 0;
    for round in 0..rounds {
        let out = env.run(&["backup", "--json", src.to_str().expect("utf8")]);
        let code = out.status.code();
        assert!(
            matches!(code, Some(0) | Some(3)),
            "round {round}: {}",
            describe(&out)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let summary = json_lines(&text).expect("json").pop().expect("summary");
        warned += summary["warnings"].as_array().map_or(0, Vec::len);
        let id = summary["snapshot_id"].as_str().expect("id").to_string();
        let target = env.path(&format!("r{round}"));
        env.ok(&["restore", &id, "--target", target.to_str().expect("utf8")]);
        let root = restored(&target, &src);
        for e in fs::read_dir(&root).expect("ls") {
            let e = e.expect("entry");
            let name = e.file_name().to_string_lossy().into_owned();
            if !e.file_type().expect("type").is_file() {
                continue;
            }
            let data = fs::read(e.path()).expect("read");
            // Every state the file really had is one version, or a prefix of one while a
            // slow rewrite was under way: a writer preempted for longer than the reader's
            // settle time (20 ms; CI's two cores under load do that) is indistinguishable
            // from one that finished, and a prefix is what the file held at that instant.
            // Torn is anything else: bytes of two versions, or more than a version holds.
            let consistent = match data.first() {
                None => true,
                Some(&v) => data.len() <= version_len(v) && data.iter().all(|b| *b == v),
            };
            assert!(
                consistent,
                "round {round}: {name} was stored torn ({} bytes, first {:?}, last {:?}); seed {seed}",
                data.len(),
                data.first(),
                data.last()
            );
        }
        fs::remove_dir_all(&target).expect("cleanup");
    }
    stop.store(true, Ordering::Relaxed);
    mutator.join().expect("mutator");
    eprintln!("seed {seed}: {rounds} backups under churn; {warned} file(s) skipped with a warning");
    check_passes(&env, true, "source torture");
}
