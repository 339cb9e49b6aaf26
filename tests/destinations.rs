//! Several destinations: each is a complete repository on its own, one that is down never
//! holds back the others, and one that comes back catches up without uploading again
//! what it already holds. Two real S3 servers on loopback; the far one behind the fault
//! proxy, which takes it down and brings it back.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use support::fault_proxy::{FaultProxy, Schedule};
use support::s3::{S3Server, aws_env};
use support::{Env, Kind, assert_same_tree, pseudo_random, restored, walk_files};

struct Daemon {
    child: Child,
    config: PathBuf,
    log: PathBuf,
}

impl Daemon {
    fn start(config: &Path, log: &Path) -> Daemon {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cairn"));
        cmd.args(["daemon", "--config"])
            .arg(config)
            .env(
                "CAIRN_LOG",
                "info,aws_config=error,aws_smithy_runtime=error,aws_runtime=error",
            )
            .env_remove("CAIRN_PASSWORD")
            .env_remove("CAIRN_PASSWORD_FILE")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).expect("log"));
        for (k, v) in aws_env() {
            if v.is_empty() {
                cmd.env_remove(k);
            } else {
                cmd.env(k, v);
            }
        }
        Daemon {
            child: cmd.spawn().expect("daemon"),
            config: config.to_path_buf(),
            log: log.to_path_buf(),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn status(&self) -> Option<serde_json::Value> {
        let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
            .args(["status", "--json", "--config"])
            .arg(&self.config)
            .output()
            .ok()?;
        serde_json::from_slice(&out.stdout).ok()
    }

    fn wait_for(
        &mut self,
        what: &str,
        limit: Duration,
        cond: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let t = Instant::now();
        loop {
            if let Some(s) = self.status()
                && cond(&s)
            {
                return s;
            }
            if let Ok(Some(e)) = self.child.try_wait() {
                panic!("daemon exited ({e}) waiting for {what}\n{}", self.log());
            }
            assert!(
                t.elapsed() < limit,
                "timed out waiting for {what}: {:?}\n{}",
                self.status(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn terminate(mut self) {
        // SAFETY: kill has no memory preconditions; the pid is our live child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "{status}\n{}", self.log());
    }
}

/// The daemon configuration of these tests: one source, the given `[[destination]]`
/// tables, and `[schedule]` lines.
fn write_config(env: &Env, src: &Path, destinations: &str, schedule: &str) -> PathBuf {
    let config = env.path("cairn.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"{state}\"\npassword_file = \"{pw}\"\n\n[[source]]\npaths = [\"{src}\"]\n\n{destinations}\n\n[schedule]\n{schedule}",
            state = env.path("state").display(),
            pw = env.password_file.display(),
            src = src.display(),
        ),
    )
    .expect("config");
    config
}

fn dest<'a>(s: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    s["destinations"]
        .as_array()
        .and_then(|a| a.iter().find(|d| d["name"] == name))
        .expect("destination in status")
}

fn settled(d: &serde_json::Value) -> bool {
    !d["last_snapshot"].is_null()
        && d["state"] == "idle"
        && d["pending_changes"] == 0
        && d["last_error"].is_null()
}

/// Restore `latest` from `repo` and compare with `src`.
fn restore_from(env: &Env, repo: &str, src: &Path, name: &str) {
    let target = env.path(name);
    let out = env
        .cmd(&[
            "restore",
            "latest",
            "--target",
            target.to_str().expect("utf8"),
            "--repo",
            repo,
        ])
        .output()
        .expect("restore");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_same_tree(src, &restored(&target, src));
}

#[test]
fn a_destination_that_is_down_holds_nobody_back_and_catches_up_without_reuploading() {
    let mut env = Env::new();
    env.env = aws_env();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("photos")).expect("mkdir");
    std::fs::write(src.join("photos/big.raw"), pseudo_random(6 << 20, 7)).expect("write");
    std::fs::write(src.join("notes.txt"), b"first").expect("write");
    let lan = S3Server::start(&["backups"]);
    let far = S3Server::start(&["offsite"]);
    let proxy = FaultProxy::start(far.port, Schedule::clean());
    let lan_repo = format!("s3:{}/backups/host1", lan.endpoint());
    let far_repo = format!("s3:{}/offsite/host1", proxy.endpoint());
    let opts =
        r#"options = { "s3.retry-delay" = "20ms", "s3.retries" = "3", "s3.timeout" = "3s" }"#;
    let config = write_config(
        &env,
        &src,
        &format!(
            "[[destination]]\nname = \"lan\"\nrepo = \"{lan_repo}\"\n{opts}\n\n[[destination]]\nname = \"far\"\nrepo = \"{far_repo}\"\n{opts}"
        ),
        "quiet_period = \"300ms\"\nmin_interval = \"0s\"\n",
    );
    let mut d = Daemon::start(&config, &env.path("daemon.log"));
    let s = d.wait_for("both destinations", Duration::from_secs(60), |s| {
        settled(dest(s, "lan")) && settled(dest(s, "far"))
    });
    assert!(
        d.log().contains("on the keys of another destination"),
        "{}",
        d.log()
    );
    let far_first = dest(&s, "far")["last_snapshot"]["id"].clone();

    // The far destination goes down: every connection is reset.
    proxy.set_schedule(Schedule {
        reset: 1000,
        ..Schedule::clean()
    });
    std::fs::write(src.join("notes.txt"), b"second, while far is down").expect("write");
    let s = d.wait_for(
        "a lan snapshot while far is down",
        Duration::from_secs(30),
        |s| {
            settled(dest(s, "lan"))
                && dest(s, "lan")["snapshots"].as_u64() >= Some(2)
                && !dest(s, "far")["last_error"].is_null()
        },
    );
    let lan_second = dest(&s, "lan")["last_snapshot"]["id"].clone();
    std::fs::write(src.join("more.txt"), b"third").expect("write");
    let s = d.wait_for("another lan snapshot", Duration::from_secs(30), |s| {
        settled(dest(s, "lan")) && dest(s, "lan")["last_snapshot"]["id"] != lan_second
    });
    let far_status = dest(&s, "far");
    assert!(
        far_status["lag_snapshots"].as_u64() >= Some(2),
        "{far_status}"
    );
    assert!(far_status["lag_seconds"].as_u64().is_some(), "{far_status}");
    assert!(far_status["lag_bytes"].as_u64() > Some(0), "{far_status}");

    // Back up: it catches up within a minute, sending only what is new.
    let puts_before = proxy.stats.puts.load(Ordering::Relaxed);
    let t = Instant::now();
    proxy.set_schedule(Schedule::clean());
    d.wait_for("far catching up", Duration::from_secs(60), |s| {
        let f = dest(s, "far");
        settled(f) && f["last_snapshot"]["id"] != far_first && f["lag_snapshots"] == 0
    });
    eprintln!("caught up in {:?}", t.elapsed());
    let puts = proxy.stats.puts.load(Ordering::Relaxed) - puts_before;
    // A data pack, a tree pack, an index and a snapshot, with room for a retry: the
    // 6 MiB photo (already there) is not sent again.
    assert!(puts <= 8, "{puts} PUTs to catch up");
    d.terminate();

    restore_from(&env, &lan_repo, &src, "from-lan");
    restore_from(&env, &far_repo, &src, "from-far");

    // Damage the lan copy: flip a byte in the pack of the 6 MiB photo, which both
    // copies hold (the far one may lack the lan's intermediate states, so damage there
    // would be beyond repair, rightly). Alone the lan copy no longer restores; paired
    // with the far copy it does, and says what it healed.
    let mut packs = walk_files(&lan.root().join("backups/host1/data"));
    packs.sort_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0));
    let biggest = packs.pop().expect("a data pack");
    let mut bytes = std::fs::read(&biggest).expect("read pack");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&biggest, bytes).expect("corrupt");
    let target = env.path("damaged-alone");
    let out = env
        .cmd(&[
            "restore",
            "latest",
            "--target",
            target.to_str().expect("utf8"),
            "--repo",
            &lan_repo,
        ])
        .output()
        .expect("restore");
    assert!(
        !out.status.success(),
        "a damaged copy alone must not restore cleanly"
    );
    let target = env.path("healed");
    let out = env
        .cmd(&[
            "restore",
            "latest",
            "--target",
            target.to_str().expect("utf8"),
            "--repo",
            &lan_repo,
            "--fallback-repo",
            &far_repo,
        ])
        .output()
        .expect("restore");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("blob(s) were read from another copy instead"),
        "{err}"
    );
    assert!(err.contains(&format!("from {far_repo}")), "{err}");
    assert_same_tree(&src, &restored(&target, &src));

    // The same, naming the daemon's destinations instead of repositories.
    let target = env.path("healed-by-name");
    let out = env
        .cmd(&[
            "restore",
            "latest",
            "--target",
            target.to_str().expect("utf8"),
            "--destination",
            "lan",
            "--config",
            config.to_str().expect("utf8"),
        ])
        .output()
        .expect("restore");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("blob(s) were read from another copy instead"),
        "{err}"
    );
    assert_same_tree(&src, &restored(&target, &src));

    // A tar to stdout, which reads content a window ahead: alone, it stops at the
    // damaged blob and says so; with the far copy it heals and the photo comes out whole.
    let photos = format!("latest:{}/photos", src.display());
    let dump = |extra: &[&str]| {
        let mut args = vec![
            "restore",
            photos.as_str(),
            "--target",
            "-",
            "--repo",
            &lan_repo,
        ];
        args.extend_from_slice(extra);
        env.cmd(&args).output().expect("restore to stdout")
    };
    let out = dump(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a damaged blob went into the tar");
    assert!(err.contains("is damaged"), "{err}");
    let out = dump(&["--fallback-repo", &far_repo]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let mut archive = tar::Archive::new(out.stdout.as_slice());
    let mut photo = Vec::new();
    for entry in archive.entries().expect("tar") {
        let mut entry = entry.expect("tar entry");
        if entry.path().expect("path").ends_with("big.raw") {
            std::io::Read::read_to_end(&mut entry, &mut photo).expect("read entry");
        }
    }
    assert!(
        photo == pseudo_random(6 << 20, 7),
        "the healed photo differs"
    );

    // check names the damage and the files it hits; --repair writes the good copies
    // back from the pair, after which both copies pass a full read-back.
    let check = |repo: &str, extra: &[&str]| {
        let mut args = vec!["check", "--read-data", "--repo", repo];
        args.extend_from_slice(extra);
        env.cmd(&args).output().expect("check")
    };
    let out = check(&lan_repo, &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("is damaged") || text.contains("is missing"),
        "{text}"
    );
    assert!(
        text.contains("files and directories that cannot be restored intact"),
        "{text}"
    );
    assert!(
        text.contains(&format!("{}/photos/big.raw", src.display())),
        "{text}"
    );
    let out = check(&lan_repo, &["--repair", "--fallback-repo", &far_repo]);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for repo in [&lan_repo, &far_repo] {
        let out = check(repo, &[]);
        assert!(
            out.status.success(),
            "{repo}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    restore_from(&env, &lan_repo, &src, "after-repair");
}

#[test]
fn two_hosts_back_up_into_one_bucket_at_the_same_time() {
    let env = Env::init_on(Kind::S3);
    let a = env.path("host-a");
    let b = env.path("host-b");
    for (dir, seed) in [(&a, 1), (&b, 2)] {
        std::fs::create_dir_all(dir.join("sub")).expect("mkdir");
        std::fs::write(dir.join("shared.bin"), pseudo_random(3 << 20, 99)).expect("write");
        std::fs::write(dir.join("sub/own.bin"), pseudo_random(2 << 20, seed)).expect("write");
    }
    let spawn = |dir: &Path, host: &str| {
        env.cmd(&["backup", "--host", host, dir.to_str().expect("utf8")])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("backup")
    };
    let (pa, pb) = (spawn(&a, "a"), spawn(&b, "b"));
    for p in [pa, pb] {
        let out = p.wait_with_output().expect("wait");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let listed: serde_json::Value =
        serde_json::from_str(&env.ok(&["snapshots", "--json"])).expect("json");
    assert_eq!(listed.as_array().map(Vec::len), Some(2));
    for (dir, host) in [(&a, "a"), (&b, "b")] {
        let id = listed
            .as_array()
            .and_then(|l| l.iter().find(|s| s["hostname"] == host))
            .and_then(|s| s["id"].as_str())
            .expect("snapshot")
            .to_string();
        let target = env.path(&format!("restore-{host}"));
        env.ok(&["restore", &id, "--target", target.to_str().expect("utf8")]);
        assert_same_tree(dir, &restored(&target, dir));
    }
}

#[test]
fn snapshots_taken_while_the_only_destination_is_down_are_journaled_and_replayed_in_order() {
    let mut env = Env::new();
    env.env = aws_env();
    let src = env.path("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    std::fs::write(src.join("base.bin"), pseudo_random(2 << 20, 5)).expect("write");
    std::fs::write(src.join("doc.txt"), b"state 0").expect("write");
    let server = S3Server::start(&["backups"]);
    let proxy = FaultProxy::start(server.port, Schedule::clean());
    let repo = format!("s3:{}/backups/host1", proxy.endpoint());
    let config = write_config(
        &env,
        &src,
        &format!(
            "[[destination]]\nname = \"only\"\nrepo = \"{repo}\"\noptions = {{ \"s3.retry-delay\" = \"20ms\", \"s3.retries\" = \"2\", \"s3.timeout\" = \"2s\" }}"
        ),
        "quiet_period = \"300ms\"\nmin_interval = \"0s\"\n",
    );
    let mut d = Daemon::start(&config, &env.path("daemon.log"));
    d.wait_for("the first snapshot", Duration::from_secs(60), |s| {
        settled(dest(s, "only"))
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
    let mut d = Daemon::start(&config, &env.path("daemon2.log"));
    std::thread::sleep(Duration::from_secs(2));
    let s = d.wait_for("status after restart", Duration::from_secs(30), |_| true);
    assert_eq!(dest(&s, "only")["journal_snapshots"], 2, "{s}");

    // Back: the journal is replayed (oldest first), then the current state follows.
    proxy.set_schedule(Schedule::clean());
    d.wait_for("replay and catch-up", Duration::from_secs(90), |s| {
        let o = dest(s, "only");
        settled(o) && o["journal_snapshots"] == 0
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
    restore_from(&env, &repo, &src, "latest");
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
    let out = env
        .cmd(&[
            "restore",
            id,
            "--target",
            target.to_str().expect("utf8"),
            "--repo",
            repo,
        ])
        .output()
        .expect("restore");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
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
    format!(
        "[[destination]]\nname = \"{name}\"\nrepo = \"{repo}\"\noptions = {{ \"s3.retry-delay\" = \"20ms\", \"s3.retries\" = \"2\", \"s3.timeout\" = \"2s\" }}"
    )
}

/// Snapshots soon after a change, as often as wanted.
const QUICK_SCHEDULE: &str = "quiet_period = \"300ms\"\nmin_interval = \"0s\"\n";

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
    let mut d = Daemon::start(&config, &env.path("daemon.log"));
    d.wait_for("the first snapshot", Duration::from_secs(60), |s| {
        settled(dest(s, "only"))
    });
    journal_while_down(&mut d, &proxy, &src, "only", b"state 1, journaled", 1);
    // Half back: everything answers but reads of packs (what the replay reads to see
    // that the journaled snapshot's data is all there) are refused.
    let refused = proxy.faults();
    proxy.set_schedule(Schedule {
        reset: 1000,
        methods: vec!["GET"],
        target_contains: Some("/data/"),
        ..Schedule::clean()
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while proxy.faults() < refused + 3 {
        assert!(
            Instant::now() < deadline,
            "no replay read a pack:\n{}",
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
        settled(o) && o["journal_snapshots"] == 0
    });
    assert!(
        d.log().contains("replayed 1 journaled snapshot(s)"),
        "{}",
        d.log()
    );
    d.terminate();
    restore_from(&env, &repo, &src, "latest");
}

#[test]
fn a_destination_renamed_while_its_journal_waits_replays_it_under_the_new_name() {
    let mut env = Env::new();
    env.env = aws_env();
    let src = env.path("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    std::fs::write(src.join("doc.txt"), b"state 0").expect("write");
    let (_server, proxy, repo, config) = one_proxied_destination(&env, &src, "old");
    let mut d = Daemon::start(&config, &env.path("daemon.log"));
    d.wait_for("the first snapshot", Duration::from_secs(60), |s| {
        settled(dest(s, "old"))
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
    let mut d = Daemon::start(&config, &env.path("daemon2.log"));
    d.wait_for("replay and catch-up", Duration::from_secs(90), |s| {
        let o = dest(s, "new");
        settled(o) && o["journal_snapshots"] == 0
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

#[test]
fn repair_without_a_good_copy_changes_nothing() {
    let env = Env::init_on(Kind::S3);
    let src = env.path("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    std::fs::write(src.join("a.bin"), pseudo_random(1 << 20, 3)).expect("write");
    env.ok(&["backup", src.to_str().expect("utf8")]);
    // An empty copy on the same keys.
    let empty = env.repo.replace("/host1", "/empty");
    env.ok(&["init", "--repo", &empty, "--from-repo", &env.repo]);
    let mut packs = walk_files(&env.objects_dir().join("data"));
    packs.sort_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0));
    let biggest = packs.pop().expect("pack");
    let mut bytes = std::fs::read(&biggest).expect("read");
    bytes[100] ^= 1;
    std::fs::write(&biggest, bytes).expect("write");
    let index_before = walk_files(&env.objects_dir().join("index")).len();
    let out = env
        .cmd(&[
            "check",
            "--read-data",
            "--repair",
            "--fallback-repo",
            &empty,
        ])
        .output()
        .expect("check");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("is damaged"), "{text}");
    assert!(
        !text.contains("in no index"),
        "the damaged entry must stay indexed: {text}"
    );
    assert_eq!(
        walk_files(&env.objects_dir().join("index")).len(),
        index_before
    );
    // And without any copy, --repair refuses up front.
    let out = env.cmd(&["check", "--repair"]).output().expect("check");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--repair needs copies"));
}

#[test]
fn each_destination_applies_its_own_retention() {
    let mut env = Env::new();
    env.env = aws_env();
    let src = env.path("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    std::fs::write(src.join("f.txt"), b"0").expect("write");
    let lan = S3Server::start(&["backups"]);
    let far = S3Server::start(&["offsite"]);
    let lan_repo = format!("s3:{}/backups/h", lan.endpoint());
    let far_repo = format!("s3:{}/offsite/h", far.endpoint());
    let config = write_config(
        &env,
        &src,
        &format!(
            "[[destination]]\nname = \"lan\"\nrepo = \"{lan_repo}\"\n[destination.retention]\nkeep_last = 2\nprune = true\n\n[[destination]]\nname = \"far\"\nrepo = \"{far_repo}\""
        ),
        "quiet_period = \"200ms\"\nmin_interval = \"0s\"\nretention_interval = \"0s\"\n",
    );
    let mut d = Daemon::start(&config, &env.path("daemon.log"));
    d.wait_for("first snapshots", Duration::from_secs(60), |s| {
        settled(dest(s, "lan")) && settled(dest(s, "far"))
    });
    for i in 1..=4 {
        std::fs::write(src.join("f.txt"), format!("{i}")).expect("write");
        d.wait_for("the next snapshots", Duration::from_secs(30), |s| {
            dest(s, "lan")["snapshots"].as_u64() > Some(i)
                && dest(s, "far")["snapshots"].as_u64() > Some(i)
                && settled(dest(s, "lan"))
                && settled(dest(s, "far"))
        });
    }
    d.terminate();
    let count = |repo: &str| {
        let out = env
            .cmd(&["snapshots", "--json", "--repo", repo])
            .output()
            .expect("list");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        v.as_array().map(Vec::len).unwrap_or(0)
    };
    assert_eq!(count(&lan_repo), 2, "{}", d_log(&env));
    assert_eq!(count(&far_repo), 5);
    assert!(d_log(&env).contains("prune: "), "{}", d_log(&env));
    assert!(!d_log(&env).contains("prune failed"), "{}", d_log(&env));
    restore_from(&env, &lan_repo, &src, "from-lan");
}

fn d_log(env: &Env) -> String {
    std::fs::read_to_string(env.path("daemon.log")).unwrap_or_default()
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
        &format!(
            "[[destination]]\nname = \"far\"\nrepo = \"{far_repo}\"\noptions = {{ \"s3.retry-delay\" = \"20ms\", \"s3.retries\" = \"4\", \"s3.timeout\" = \"3s\" }}"
        ),
        "quiet_period = \"300ms\"\nmin_interval = \"0s\"\n",
    );
    let mut d = Daemon::start(&config, &env.path("daemon.log"));
    d.wait_for("the first snapshot", Duration::from_secs(60), |s| {
        settled(dest(s, "far"))
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
            && settled(dest(&s, "far"))
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
    restore_from(&env, &far_repo, &src, "after-storm");
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
