//! `prune` on a real S3 server: it shrinks the bucket and everything left restores; it
//! can be killed anywhere and run again; and a backup running at the same time is not
//! broken by it.

use crate::support;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use support::fault_proxy::Schedule;
use support::{Env, Kind, assert_same_tree, pseudo_random, restored};

fn bucket_bytes(env: &Env) -> u64 {
    fn walk(p: &Path) -> u64 {
        std::fs::read_dir(p)
            .map(|rd| {
                rd.flatten()
                    .map(|e| match e.metadata() {
                        Ok(m) if m.is_dir() => walk(&e.path()),
                        Ok(m) => m.len(),
                        Err(_) => 0,
                    })
                    .sum()
            })
            .unwrap_or(0)
    }
    walk(&env.objects_dir().join("data"))
}

fn check_ok(env: &Env, read_data: bool) {
    let args: &[&str] = if read_data {
        &["check", "--read-data"]
    } else {
        &["check"]
    };
    let out = env.run(args);
    assert!(
        out.status.success(),
        "check failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn restore_each(env: &Env, src_of: impl Fn(&str) -> Option<std::path::PathBuf>) {
    let list: serde_json::Value =
        serde_json::from_str(&env.ok(&["snapshots", "--json"])).expect("json");
    for s in list.as_array().expect("array") {
        let id = s["id"].as_str().expect("id");
        let target = env.path(&format!("r-{}", &id[..8]));
        env.ok(&["restore", id, "--target", target.to_str().expect("utf8")]);
        if let Some(src) = src_of(id) {
            assert_same_tree(&src, &restored(&target, &src));
        }
    }
}

#[test]
fn prune_shrinks_the_bucket_and_what_is_left_restores() {
    let env = Env::init_on(Kind::S3);
    let src = env.path("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    std::fs::write(src.join("keep.bin"), pseudo_random(2 << 20, 1)).expect("write");
    for i in 0..4u64 {
        std::fs::write(src.join("churn.bin"), pseudo_random(3 << 20, 10 + i)).expect("write");
        env.ok(&["backup", src.to_str().expect("utf8")]);
    }
    let before = bucket_bytes(&env);
    env.ok(&["forget", "--keep-last", "1"]);
    // Dry run changes nothing.
    env.ok(&["prune", "--dry-run", "--grace", "0s"]);
    assert_eq!(bucket_bytes(&env), before);
    // First run condemns (nothing deleted yet), second deletes.
    let out = env.ok(&["prune", "--grace", "0s"]);
    assert!(out.contains("condemned"), "{out}");
    check_ok(&env, true);
    env.ok(&["prune", "--grace", "0s"]);
    let after = bucket_bytes(&env);
    // Three of the four 3 MiB churn files are gone.
    assert!(after * 10 < before * 7, "{before} -> {after} bytes");
    check_ok(&env, true);
    env.restore_latest_and_compare(&src, "latest");
    // A default grace period keeps condemned packs for a day.
    std::fs::write(src.join("churn.bin"), pseudo_random(1 << 20, 99)).expect("write");
    env.ok(&["backup", src.to_str().expect("utf8")]);
    env.ok(&["forget", "--keep-last", "1"]);
    env.ok(&["prune"]);
    let out = env.ok(&["prune", "--json"]);
    let r = support::json_lines(&out)
        .expect("json")
        .pop()
        .expect("summary");
    assert!(r["waiting_packs"].as_u64() > Some(0), "{r}");
    assert_eq!(r["deleted_packs"], 0, "{r}");
}

#[test]
fn a_prune_killed_anywhere_leaves_a_sound_repository_and_runs_again() {
    let env = Env::init_on(Kind::S3);
    let src = env.path("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    std::fs::write(src.join("base.bin"), pseudo_random(1 << 20, 2)).expect("write");
    let points: usize = std::env::var("CAIRN_TORTURE_POINTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    for i in 0..points {
        // New garbage each round: a snapshot that is forgotten at once, and a small
        // file that changes (so packs become partly unused and get repacked).
        std::fs::write(
            src.join("churn.bin"),
            pseudo_random(600_000, 100 + i as u64),
        )
        .expect("write");
        std::fs::write(src.join("small.txt"), format!("round {i}")).expect("write");
        env.ok(&["backup", src.to_str().expect("utf8")]);
        env.ok(&["forget", "--keep-last", "1"]);
        let mut child = env
            .cmd(&["prune", "--grace", "0s", "--max-unused", "1%"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prune");
        // Kill at a different moment each round.
        std::thread::sleep(Duration::from_millis(150 + 90 * i as u64));
        let _ = child.kill();
        let _ = child.wait();
        check_ok(&env, false);
    }
    env.ok(&["prune", "--grace", "0s"]);
    env.ok(&["prune", "--grace", "0s"]);
    check_ok(&env, true);
    let src2 = src.clone();
    restore_each(&env, move |_| Some(src2.clone()));
}

#[test]
fn a_backup_running_during_prune_restores_afterwards() {
    let mut env = Env::init_on(Kind::S3Proxied);
    // The proxy holds the backup's snapshot upload back for a while (below): requests
    // must be allowed to wait that long.
    env.options.push("s3.timeout=60s".into());
    let old = env.path("old");
    let new = env.path("new");
    std::fs::create_dir_all(&old).expect("mkdir");
    std::fs::create_dir_all(&new).expect("mkdir");
    std::fs::write(old.join("shared.bin"), pseudo_random(4 << 20, 7)).expect("write");
    std::fs::write(old.join("gone.bin"), pseudo_random(2 << 20, 8)).expect("write");
    env.ok(&["backup", old.to_str().expect("utf8")]);
    // The new tree shares data with the snapshot about to be forgotten.
    std::fs::write(new.join("shared.bin"), pseudo_random(4 << 20, 7)).expect("write");
    std::fs::write(new.join("own.bin"), pseudo_random(12 << 20, 9)).expect("write");
    env.ok(&["forget", "--keep-last", "0", "--keep-tag", "none"]);
    let index_dir = env.objects_dir().join("index");
    let indexes = || std::fs::read_dir(&index_dir).map_or(0, |d| d.count());
    let before = indexes();
    // The backup's snapshot arrives only well after the prune below has run, so the
    // prune sees no snapshot using the shared data and condemns it: the interleaving
    // that needs the next prune to take those blobs back into the index.
    let mut held = Schedule::clean();
    held.methods = vec!["PUT"];
    held.target_contains = Some("/snapshots/");
    held.delay = Some(Duration::from_secs(12));
    env.proxy.as_ref().expect("proxy").set_schedule(held);
    let backup = env
        .cmd(&["backup", new.to_str().expect("utf8")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("backup");
    // Its packs and index object are stored once a new index object is listed.
    let start = std::time::Instant::now();
    while indexes() == before {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the backup stored no index"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let prune = env.cmd(&["prune"]).output().expect("prune");
    assert!(
        prune.status.success(),
        "{}",
        String::from_utf8_lossy(&prune.stderr)
    );
    let condemned = String::from_utf8_lossy(&prune.stdout).into_owned();
    assert!(
        snapshot_count(&env) == 0,
        "the prune ran before the backup's snapshot was stored: {condemned}"
    );
    let b = backup.wait_with_output().expect("wait");
    assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));
    env.proxy
        .as_ref()
        .expect("proxy")
        .set_schedule(Schedule::clean());
    env.restore_latest_and_compare(&new, "during");
    // The next prune finds the new snapshot using condemned data and revives it; later
    // prunes (the grace period over) keep what the new snapshot uses.
    let revived = env.ok(&["prune", "--grace", "0s", "--json"]);
    let last = revived
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    let report: serde_json::Value = serde_json::from_str(last).expect("json");
    assert!(
        report["revived_blobs"].as_u64().is_some_and(|n| n > 0),
        "the revival path did not run: {revived} (the first prune said: {condemned})"
    );
    env.ok(&["prune", "--grace", "0s"]);
    check_ok(&env, true);
    env.restore_latest_and_compare(&new, "after");
}

fn snapshot_count(env: &Env) -> usize {
    let v: serde_json::Value =
        serde_json::from_str(&env.ok(&["snapshots", "--json"])).expect("json");
    v.as_array().map_or(0, Vec::len)
}

#[test]
fn packs_in_no_index_are_swept_after_the_grace_period() {
    let env = Env::init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    std::fs::write(src.join("kept.bin"), pseudo_random(1 << 20, 3)).expect("write");
    env.ok(&["backup", src.to_str().expect("utf8")]);
    // What a backup killed between its pack uploads and its index object leaves.
    let name = "ab".repeat(32);
    let orphan = env.objects_dir().join("data").join(&name[..2]).join(&name);
    std::fs::create_dir_all(orphan.parent().expect("dir")).expect("mkdir");
    std::fs::write(&orphan, pseudo_random(300_000, 4)).expect("plant");
    // The first prune only condemns it: a backup running now may index it yet.
    let out = env.ok(&["prune", "--grace", "0s"]);
    assert!(out.contains("in no index"), "{out}");
    assert!(orphan.exists(), "deleted without a grace period");
    // The next one, the grace period over, deletes it; what snapshots use stays.
    env.ok(&["prune", "--grace", "0s"]);
    assert!(!orphan.exists(), "an orphan pack was never swept");
    check_ok(&env, true);
    env.restore_latest_and_compare(&src, "restored");
}
