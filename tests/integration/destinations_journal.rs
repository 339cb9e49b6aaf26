//! The daemon's journal: snapshots taken while a destination is down are kept locally,
//! in order, across restarts, under a renamed destination and through a replay that
//! cannot read, and replayed once it is back, also into a storm of S3 faults. One real
//! S3 server on loopback behind the fault proxy, which takes it down and brings it back.

use crate::support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::daemon::{
    Daemon, QUICK_SCHEDULE, dest, dest_settled, destination_table, write_config,
};
use support::fault_proxy::{FaultProxy, Schedule};
use support::s3::{S3Server, aws_env};
use support::{Env, pseudo_random, restored};

#[test]
fn snapshots_taken_while_the_only_destination_is_down_are_journaled_and_replayed_in_order() {
    let mut env = Env::new();
    env.env = aws_env();
    let src = env.path("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    std::fs::write(src.join("base.bin"), pseudo_random(2 << 20, 5)).expect("write");
    std::fs::write(src.join("doc.txt"), b"state 0").expect("write");
    let (_server, proxy, repo, config) = one_proxied_destination(&env, &src, "only");
    let mut d = Daemon::start_logging_to(&env, &config, &env.path("daemon.log"));
    d.wait_for("the first snapshot", Duration::from_secs(60), |s| {
        dest_settled(dest(s, "only"))
    });

    // Down: two states are journaled locally, in order.
    proxy.set_schedule(Schedule {
        reset: 1000,
        ..Schedule::clean()
    });
    std::fs::write(
        src.join("doc.txt"),
        b"state 1, written while the bucket is down",
    )
    .expect("write");
    d.wait_for("one journaled snapshot", Duration::from_secs(30), |s| {
        dest(s, "only")["journal_snapshots"] == 1
    });
    std::fs::write(src.join("doc.txt"), b"state 2").expect("write");
    std::fs::write(src.join("new.bin"), pseudo_random(300_000, 6)).expect("write");
    let s = d.wait_for("two journaled snapshots", Duration::from_secs(60), |s| {
        dest(s, "only")["journal_snapshots"] == 2
    });
    assert!(dest(&s, "only")["journal_bytes"].as_u64() > Some(0), "{s}");
    // The journal holds what is new, not the 2 MiB the bucket already has.
    assert!(
        dest(&s, "only")["journal_bytes"].as_u64() < Some(1 << 20),
        "{s}\n{}",
        d.log()
    );

    // A restart while still down keeps the journal.
    d.terminate();
    let mut d = Daemon::start_logging_to(&env, &config, &env.path("daemon2.log"));
    std::thread::sleep(Duration::from_secs(2));
    let s = d.wait_for("status after restart", Duration::from_secs(30), |_| true);
    assert_eq!(dest(&s, "only")["journal_snapshots"], 2, "{s}");

    // Back: the journal is replayed (oldest first), then the current state follows.
    proxy.set_schedule(Schedule::clean());
    d.wait_for("replay and catch-up", Duration::from_secs(90), |s| {
        let o = dest(s, "only");
        dest_settled(o) && o["journal_snapshots"] == 0
    });
    assert!(
        d.log().contains("replayed 2 journaled snapshot(s)"),
        "{}",
        d.log()
    );
    d.terminate();
    // The journaled state 1 is in the bucket: restore it and read doc.txt.
    let (count, doc) = doc_of_snapshot(&env, &repo, &src, 1);
    assert!(count >= 3, "{count} snapshots");
    assert_eq!(doc, b"state 1, written while the bucket is down");
    env.restore_latest_from_and_compare(&repo, &src, "latest");
}

/// How many snapshots `repo` holds, and `doc.txt` of `src` as the `nth` oldest of
/// them stored it (restored into a folder of its own).
fn doc_of_snapshot(env: &Env, repo: &str, src: &Path, nth: usize) -> (usize, Vec<u8>) {
    let listed: serde_json::Value = serde_json::from_str(&String::from_utf8_lossy(
        &env.cmd(&["snapshots", "--json", "--repo", repo])
            .output()
            .expect("list")
            .stdout,
    ))
    .expect("json");
    let mut by_time: Vec<&serde_json::Value> = listed.as_array().expect("array").iter().collect();
    by_time.sort_by_key(|s| s["time"].as_str().unwrap_or("").to_string());
    let id = by_time
        .get(nth)
        .and_then(|s| s["id"].as_str())
        .unwrap_or_else(|| {
            panic!("no snapshot number {nth} in {listed}");
        });
    let target = env.path(&format!("snapshot-{nth}-{id}"));
    env.restore_from(repo, id, &target);
    let doc = std::fs::read(restored(&target, src).join("doc.txt")).expect("doc");
    (by_time.len(), doc)
}

/// One S3 destination `name` behind the fault proxy (quick retries, 2 s timeouts), and
/// a configuration backing `src` up into it; the server is returned to keep it running.
fn one_proxied_destination(
    env: &Env,
    src: &Path,
    name: &str,
) -> (S3Server, FaultProxy, String, PathBuf) {
    let server = S3Server::start(&["backups"]);
    let proxy = FaultProxy::start(server.port, Schedule::clean());
    let repo = format!("s3:{}/backups/host1", proxy.endpoint());
    let config = write_config(env, src, &proxied_destination(name, &repo), QUICK_SCHEDULE);
    (server, proxy, repo, config)
}

/// The configuration table of destination `name` at `repo`, with quick retries.
fn proxied_destination(name: &str, repo: &str) -> String {
    destination_table(name, repo, &QUICK_RETRIES)
}

/// Quick retries and 2 s timeouts: a destination that is down is seen as down in seconds.
const QUICK_RETRIES: [&str; 3] = ["s3.retry-delay=20ms", "s3.retries=2", "s3.timeout=2s"];

/// Take the destination behind `proxy` down (every connection reset), write `content`
/// into `src/doc.txt`, and wait until the daemon has journaled `n` snapshots for it.
fn journal_while_down(
    d: &mut Daemon,
    proxy: &FaultProxy,
    src: &Path,
    name: &str,
    content: &[u8],
    n: u64,
) {
    proxy.set_schedule(Schedule {
        reset: 1000,
        ..Schedule::clean()
    });
    std::fs::write(src.join("doc.txt"), content).expect("write");
    d.wait_for("a journaled snapshot", Duration::from_secs(30), |s| {
        dest(s, name)["journal_snapshots"] == n
    });
}

#[test]
fn a_replay_that_cannot_read_the_destination_keeps_the_journal_and_replays_later() {
    let mut env = Env::new();
    env.env = aws_env();
    let src = env.path("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    std::fs::write(src.join("base.bin"), pseudo_random(1 << 20, 7)).expect("write");
    std::fs::write(src.join("doc.txt"), b"state 0").expect("write");
    let (_server, proxy, repo, config) = one_proxied_destination(&env, &src, "only");
    let mut d = Daemon::start_logging_to(&env, &config, &env.path("daemon.log"));
    d.wait_for("the first snapshot", Duration::from_secs(60), |s| {
        dest_settled(dest(s, "only"))
    });
    journal_while_down(&mut d, &proxy, &src, "only", b"state 1, journaled", 1);
    // Half back: everything answers but listings of packs (what the replay reads to
    // see that the journaled snapshot's data is all there) are refused.
    let refused = proxy.faults();
    proxy.set_schedule(Schedule {
        reset: 1000,
        methods: vec!["GET"],
        target_contains: Some("data%2F"),
        ..Schedule::clean()
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while proxy.faults() < refused + 3 {
        assert!(
            Instant::now() < deadline,
            "no replay listed the packs:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Give it a few rounds of trying.
    std::thread::sleep(Duration::from_secs(5));
    let s = d.wait_for("status", Duration::from_secs(10), |_| true);
    assert!(
        !d.log().contains("is left out"),
        "a refused read is not a pruned destination:\n{}",
        d.log()
    );
    assert_eq!(
        dest(&s, "only")["journal_snapshots"],
        1,
        "the journal stays: {s}"
    );

    // Back for good: the journal is replayed.
    proxy.set_schedule(Schedule::clean());
    d.wait_for("replay and catch-up", Duration::from_secs(90), |s| {
        let o = dest(s, "only");
        dest_settled(o) && o["journal_snapshots"] == 0
    });
    assert!(
        d.log().contains("replayed 1 journaled snapshot(s)"),
        "{}",
        d.log()
    );
    d.terminate();
    env.restore_latest_from_and_compare(&repo, &src, "latest");
}

#[test]
fn a_destination_renamed_while_its_journal_waits_replays_it_under_the_new_name() {
    let mut env = Env::new();
    env.env = aws_env();
    let src = env.path("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    std::fs::write(src.join("doc.txt"), b"state 0").expect("write");
    let (_server, proxy, repo, config) = one_proxied_destination(&env, &src, "old");
    let mut d = Daemon::start_logging_to(&env, &config, &env.path("daemon.log"));
    d.wait_for("the first snapshot", Duration::from_secs(60), |s| {
        dest_settled(dest(s, "old"))
    });
    // Down: a state is journaled under the old name.
    let state1 = b"state 1, journaled under the old name";
    journal_while_down(&mut d, &proxy, &src, "old", state1, 1);
    d.terminate();

    // The destination is renamed, and the bucket is back.
    let config = write_config(
        &env,
        &src,
        &proxied_destination("new", &repo),
        QUICK_SCHEDULE,
    );
    proxy.set_schedule(Schedule::clean());
    let mut d = Daemon::start_logging_to(&env, &config, &env.path("daemon2.log"));
    d.wait_for("replay and catch-up", Duration::from_secs(90), |s| {
        let o = dest(s, "new");
        dest_settled(o) && o["journal_snapshots"] == 0
    });
    let log = d.log();
    d.terminate();
    assert!(log.contains("took over the journal"), "{log}");
    assert!(log.contains("replayed 1 journaled snapshot(s)"), "{log}");
    // The journaled state reached the bucket.
    let (count, doc) = doc_of_snapshot(&env, &repo, &src, 1);
    assert!(count >= 2, "{count} snapshots");
    assert_eq!(doc, state1);
}

/// Fault torture during catch-up: a destination comes back from an outage into a storm
/// of S3 faults (a tenth of all requests, every kind, plus bursts of total outage) and
/// must still replay its journal and catch up, committing nothing corrupt: afterwards
/// `check --read-data` passes and the latest snapshot restores equal to the source.
#[test]
fn catching_up_through_s3_faults_commits_nothing_corrupt() {
    let seed: u64 = std::env::var("CAIRN_TORTURE_SEEDS")
        .ok()
        .and_then(|v| v.split(',').next().and_then(|s| s.trim().parse().ok()))
        .unwrap_or(1);
    let mut env = Env::new();
    env.env = aws_env();
    let src = env.path("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    for i in 0..4u64 {
        std::fs::write(src.join(format!("f{i}")), pseudo_random(900_000, i + seed)).expect("write");
    }
    let far = S3Server::start(&["offsite"]);
    let proxy = FaultProxy::start(far.port, Schedule::clean());
    let far_repo = format!("s3:{}/offsite/host1", proxy.endpoint());
    let config = write_config(
        &env,
        &src,
        &destination_table(
            "far",
            &far_repo,
            &["s3.retry-delay=20ms", "s3.retries=4", "s3.timeout=3s"],
        ),
        QUICK_SCHEDULE,
    );
    let mut d = Daemon::start_logging_to(&env, &config, &env.path("daemon.log"));
    d.wait_for("the first snapshot", Duration::from_secs(60), |s| {
        dest_settled(dest(s, "far"))
    });
    // Down: snapshots go to the journal.
    proxy.set_schedule(Schedule {
        reset: 1000,
        ..Schedule::clean()
    });
    for round in 0..3u64 {
        std::fs::write(
            src.join(format!("while-down-{round}")),
            pseudo_random(400_000, 100 + round + seed),
        )
        .expect("write");
        std::fs::write(src.join("f0"), format!("round {round}")).expect("write");
        d.wait_for("a journaled snapshot", Duration::from_secs(30), |s| {
            dest(s, "far")["journal_snapshots"].as_u64() > Some(round)
        });
    }
    // Back, into a storm: faults on a tenth of the requests, and outage bursts.
    let storm = Schedule::all(seed, 20, Duration::from_millis(300));
    let started = Instant::now();
    let mut n = 0;
    let s = loop {
        proxy.set_schedule(Schedule {
            seed: seed + n,
            ..storm.clone()
        });
        std::thread::sleep(Duration::from_millis(1500));
        if let Some(s) = d.status()
            && dest_settled(dest(&s, "far"))
            && dest(&s, "far")["journal_snapshots"] == 0
        {
            break s;
        }
        // Every third round, a burst of total outage.
        if n % 3 == 2 {
            proxy.set_schedule(Schedule {
                reset: 1000,
                ..Schedule::clean()
            });
            std::thread::sleep(Duration::from_millis(300));
        }
        n += 1;
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "no catch-up through the faults (seed {seed}): {:?}\n{}",
            d.status(),
            d.log()
        );
    };
    assert!(proxy.faults() > 10, "seed {seed}: too few faults");
    proxy.set_schedule(Schedule::clean());
    d.terminate();
    let out = env
        .cmd(&["check", "--read-data", "--repo", &far_repo])
        .output()
        .expect("check");
    assert!(
        out.status.success(),
        "seed {seed}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    env.restore_latest_from_and_compare(&far_repo, &src, "after-storm");
    let snaps: serde_json::Value = serde_json::from_slice(
        &env.cmd(&["snapshots", "--json", "--repo", &far_repo])
            .output()
            .expect("snapshots")
            .stdout,
    )
    .expect("json");
    assert!(
        snaps.as_array().map_or(0, Vec::len) >= 4,
        "seed {seed}: the journaled history was not replayed: {snaps} {s}"
    );
}

/// GET requests of objects under `data/` (pack reads, not listings) the proxy has
/// received so far.
fn pack_reads(proxy: &FaultProxy) -> usize {
    let received = proxy
        .stats
        .received
        .lock()
        .map(|r| r.clone())
        .unwrap_or_default();
    received
        .iter()
        .filter(|line| line.starts_with("GET ") && line.contains("/data/"))
        .count()
}

/// The newest snapshot in `repo`, by time.
fn newest_snapshot(env: &Env, repo: &str) -> String {
    let listed: serde_json::Value = serde_json::from_slice(
        &env.cmd(&["snapshots", "--json", "--repo", repo])
            .output()
            .expect("list")
            .stdout,
    )
    .expect("json");
    let mut all: Vec<&serde_json::Value> = listed.as_array().expect("array").iter().collect();
    all.sort_by_key(|s| s["time"].as_str().unwrap_or("").to_string());
    all.last().expect("a snapshot")["id"]
        .as_str()
        .expect("id")
        .to_string()
}

/// Catch-up costs what the journal holds: one small change journaled in a tree of
/// 2,000 directories is replayed without reading the destination's trees back (the
/// replay read every tree from the bucket, one GET of a pack per directory). Meanwhile
/// `status` says `replaying`, the log says it starts and ends, and afterwards `status`
/// shows the replayed snapshot as the latest.
#[test]
fn catching_up_costs_what_the_journal_holds_and_shows_it() {
    let mut env = Env::new();
    env.env = aws_env();
    let src = env.path("src");
    // CAIRN_CATCHUP_DIRS=100000 measures the case (the time is printed).
    let dirs: usize = std::env::var("CAIRN_CATCHUP_DIRS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    for a in 0..dirs.div_ceil(50) {
        for b in 0..50 {
            let dir = src.join(format!("d{a:02}")).join(format!("e{b:02}"));
            std::fs::create_dir_all(&dir).expect("mkdir");
            std::fs::write(dir.join("f.txt"), format!("{a} {b}")).expect("write");
        }
    }
    std::fs::write(src.join("doc.txt"), b"state 0").expect("write");
    let (_server, proxy, repo, config) = one_proxied_destination(&env, &src, "only");
    let mut d = Daemon::start_logging_to(&env, &config, &env.path("daemon.log"));
    d.wait_for("the first snapshot", Duration::from_secs(120), |s| {
        dest_settled(dest(s, "only"))
    });
    // One 47-byte change while the bucket is down, two levels deep.
    proxy.set_schedule(Schedule {
        reset: 1000,
        ..Schedule::clean()
    });
    std::fs::write(
        src.join("d07").join("e13").join("f.txt"),
        b"a 47-byte change, journaled while it was down.\n",
    )
    .expect("write");
    d.wait_for("one journaled snapshot", Duration::from_secs(60), |s| {
        dest(s, "only")["journal_snapshots"] == 1
    });

    // Back, with puts slowed down so that the replay can be watched.
    let before = pack_reads(&proxy);
    proxy.set_schedule(Schedule {
        delay: Some(Duration::from_millis(1500)),
        methods: vec!["PUT"],
        ..Schedule::clean()
    });
    let s = d.wait_for(
        "the replay, as status shows it",
        Duration::from_secs(60),
        |s| dest(s, "only")["state"] == "replaying",
    );
    assert_eq!(dest(&s, "only")["journal_snapshots"], 1, "{s}");
    proxy.set_schedule(Schedule::clean());
    let unslowed = Instant::now();
    let s = d.wait_for("replay and catch-up", Duration::from_secs(60), |s| {
        let o = dest(s, "only");
        dest_settled(o) && o["journal_snapshots"] == 0
    });
    eprintln!(
        "{dirs} directories: caught up {:?} after the puts were no longer slowed",
        unslowed.elapsed()
    );
    let reads = pack_reads(&proxy) - before;
    assert!(
        reads < 20,
        "the replay read {reads} packs back for a 2,000-directory tree:\n{}",
        d.log()
    );
    let log = d.log();
    assert!(
        log.contains("catching up: replaying 1 journaled snapshot(s)"),
        "{log}"
    );
    assert!(log.contains("replayed journaled snapshot 1 of 1"), "{log}");
    assert!(log.contains("replayed 1 journaled snapshot(s)"), "{log}");
    d.terminate();
    // Status names the replayed snapshot, which is the bucket's newest.
    let newest = newest_snapshot(&env, &repo);
    assert_eq!(
        dest(&s, "only")["last_snapshot"]["id"].as_str(),
        Some(newest.as_str()),
        "{s}"
    );
    env.restore_latest_from_and_compare(&repo, &src, "latest");
}

/// A destination that is down is probed cheaply while full attempts back off (up to
/// 30 s apart): when it comes back just after a failure, catch-up starts within
/// seconds, not at the next full attempt.
#[test]
fn a_destination_that_comes_back_is_caught_up_within_seconds_whatever_the_backoff() {
    let mut env = Env::new();
    env.env = aws_env();
    let src = env.path("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    std::fs::write(src.join("doc.txt"), b"state 0").expect("write");
    let (_server, proxy, repo, config) = one_proxied_destination(&env, &src, "only");
    let mut d = Daemon::start_logging_to(&env, &config, &env.path("daemon.log"));
    d.wait_for("the first snapshot", Duration::from_secs(60), |s| {
        dest_settled(dest(s, "only"))
    });
    journal_while_down(&mut d, &proxy, &src, "only", b"state 1, journaled", 1);
    // Four failures in a row: the next full attempt is 30 s away.
    d.wait_for("the fourth failure", Duration::from_secs(120), |s| {
        dest(s, "only")["consecutive_failures"].as_u64() >= Some(4)
    });
    proxy.set_schedule(Schedule::clean());
    let back = Instant::now();
    d.wait_for("replay and catch-up", Duration::from_secs(60), |s| {
        let o = dest(s, "only");
        dest_settled(o) && o["journal_snapshots"] == 0
    });
    let took = back.elapsed();
    let log = d.log();
    d.terminate();
    assert!(
        took < Duration::from_secs(18),
        "caught up {took:?} after the destination came back:\n{log}"
    );
    assert!(log.contains("the destination answers again"), "{log}");
    let (_, doc) = doc_of_snapshot(&env, &repo, &src, 1);
    assert_eq!(doc, b"state 1, journaled");
}
