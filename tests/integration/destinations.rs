//! Several destinations: each is a complete repository on its own, one that is down never
//! holds back the others, and one that comes back catches up without uploading again
//! what it already holds. Two real S3 servers on loopback; the far one behind the fault
//! proxy, which takes it down and brings it back. What the daemon journals while its only
//! destination is down is in `destinations_journal.rs`.

use crate::support;

use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use support::daemon::{
    Daemon, QUICK_SCHEDULE, dest, dest_settled, destination_table, write_config,
};
use support::fault_proxy::{FaultProxy, Schedule};
use support::s3::{S3Server, aws_env};
use support::{Env, Kind, assert_same_tree, pseudo_random, restored, walk_files};

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
    let opts = ["s3.retry-delay=20ms", "s3.retries=3", "s3.timeout=3s"];
    let config = write_config(
        &env,
        &src,
        &format!(
            "{}\n\n{}",
            destination_table("lan", &lan_repo, &opts),
            destination_table("far", &far_repo, &opts)
        ),
        QUICK_SCHEDULE,
    );
    let mut d = Daemon::start_logging_to(&env, &config, &env.path("daemon.log"));
    let s = d.wait_for("both destinations", Duration::from_secs(60), |s| {
        dest_settled(dest(s, "lan")) && dest_settled(dest(s, "far"))
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
            dest_settled(dest(s, "lan"))
                && dest(s, "lan")["snapshots"].as_u64() >= Some(2)
                && !dest(s, "far")["last_error"].is_null()
        },
    );
    let lan_second = dest(&s, "lan")["last_snapshot"]["id"].clone();
    std::fs::write(src.join("more.txt"), b"third").expect("write");
    let s = d.wait_for("another lan snapshot", Duration::from_secs(30), |s| {
        dest_settled(dest(s, "lan")) && dest(s, "lan")["last_snapshot"]["id"] != lan_second
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
        dest_settled(f) && f["last_snapshot"]["id"] != far_first && f["lag_snapshots"] == 0
    });
    eprintln!("caught up in {:?}", t.elapsed());
    let puts = proxy.stats.puts.load(Ordering::Relaxed) - puts_before;
    // A data pack, a tree pack, an index and a snapshot, with room for a retry: the
    // 6 MiB photo (already there) is not sent again.
    assert!(puts <= 8, "{puts} PUTs to catch up");
    d.terminate();

    env.restore_latest_from_and_compare(&lan_repo, &src, "from-lan");
    env.restore_latest_from_and_compare(&far_repo, &src, "from-far");

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
    env.restore_latest_from_and_compare(&lan_repo, &src, "after-repair");
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
    let mut d = Daemon::start_logging_to(&env, &config, &env.path("daemon.log"));
    d.wait_for("first snapshots", Duration::from_secs(60), |s| {
        dest_settled(dest(s, "lan")) && dest_settled(dest(s, "far"))
    });
    for i in 1..=4 {
        std::fs::write(src.join("f.txt"), format!("{i}")).expect("write");
        d.wait_for("the next snapshots", Duration::from_secs(30), |s| {
            dest(s, "lan")["snapshots"].as_u64() > Some(i)
                && dest(s, "far")["snapshots"].as_u64() > Some(i)
                && dest_settled(dest(s, "lan"))
                && dest_settled(dest(s, "far"))
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
    env.restore_latest_from_and_compare(&lan_repo, &src, "from-lan");
}

fn d_log(env: &Env) -> String {
    std::fs::read_to_string(env.path("daemon.log")).unwrap_or_default()
}
