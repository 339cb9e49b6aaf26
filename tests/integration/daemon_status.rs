//! `cairn status` tells the truth: the header and systemd's STATUS= line name the worst
//! destination state and the destinations in it, a reload keeps each surviving
//! destination's history, and `backup --now` says when nothing changed and the answer is
//! an existing snapshot. The real binary on a configuration file, with one destination
//! on a local disk and others on an S3 endpoint whose port is closed.

use crate::support;

use std::time::{Duration, Instant};
use support::daemon::{
    Daemon, QUICK_SCHEDULE, backup_now, dest, dest_settled, destination_table, primary_config,
    settled, write_config,
};
use support::s3::aws_env;
use support::{Env, describe, snapshot_ids};

/// Quick retries and short timeouts: a destination that is down fails in moments.
const QUICK_RETRIES: [&str; 3] = ["s3.retry-delay=20ms", "s3.retries=2", "s3.timeout=2s"];

/// An S3 location on a loopback port nothing listens on (bound, then let go).
fn closed_port_repo() -> String {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    format!("s3:http://127.0.0.1:{port}/backups/host1")
}

/// A scratch area with S3 credentials in the environment and a small source tree.
fn env_with_source() -> (Env, std::path::PathBuf) {
    let mut env = Env::new();
    env.env = aws_env();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("docs")).expect("mkdir");
    std::fs::write(src.join("docs/a.txt"), b"first words\n").expect("write");
    std::fs::write(src.join("b.txt"), b"second file\n").expect("write");
    (env, src)
}

/// The `[[destination]]` tables: `good` on the local repository, then `(name, repo)`
/// pairs with quick retries.
fn tables(env: &Env, others: &[(&str, &str)]) -> String {
    let mut t = vec![destination_table("good", &env.repo, &[] as &[&str])];
    for (name, repo) in others {
        t.push(destination_table(name, repo, &QUICK_RETRIES));
    }
    t.join("\n\n")
}

#[test]
fn status_names_the_worst_state_while_one_destination_retries_and_another_is_idle() {
    let (mut env, src) = env_with_source();
    let down = closed_port_repo();
    let config = write_config(
        &env,
        &src,
        &tables(&env, &[("down", &down)]),
        QUICK_SCHEDULE,
    );
    // Stand in for systemd, to hear the STATUS= line.
    let sock_path = env.path("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).expect("bind");
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    env.env
        .push(("NOTIFY_SOCKET", sock_path.to_string_lossy().into_owned()));
    let mut d = Daemon::start(&env, &config);
    let s = d.wait_for(
        "good settled and down failing",
        Duration::from_secs(60),
        |s| {
            dest_settled(dest(s, "good"))
                && dest(s, "down")["consecutive_failures"].as_u64() >= Some(1)
        },
    );
    assert_eq!(dest(&s, "good")["state"], "idle", "{s}");
    assert_eq!(dest(&s, "down")["state"], "retrying", "{s}");
    assert_eq!(s["state"], "retrying", "the worst state, not idle: {s}");
    assert_eq!(s["state_destinations"], serde_json::json!(["down"]), "{s}");

    let text = d.cli(&["status"]);
    assert_eq!(text.status.code(), Some(1), "{}", describe(&text));
    let out = String::from_utf8_lossy(&text.stdout).into_owned();
    let header = out.lines().next().unwrap_or_default();
    assert!(
        header.ends_with(": retrying (down)"),
        "header {header:?} in\n{out}"
    );

    // systemd hears the same summary, with every destination's state.
    let mut heard = String::new();
    let mut buf = [0u8; 4096];
    let t = Instant::now();
    let line = loop {
        if let Some(l) = heard.lines().rev().find(|l| {
            l.starts_with("STATUS=") && l.contains("good: idle") && l.contains("down: retrying")
        }) {
            break l.to_string();
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "heard only: {heard}\n{}",
            d.log()
        );
        if let Ok(n) = sock.recv(&mut buf) {
            heard.push_str(&String::from_utf8_lossy(&buf[..n]));
            heard.push('\n');
        }
    };
    assert!(
        line.starts_with("STATUS=retrying (down); good: idle, last snapshot"),
        "{line}"
    );
    assert!(line.contains("down: retrying (failing)"), "{line}");
    d.terminate();
}

#[test]
fn a_reload_keeps_the_history_of_unchanged_destinations_and_forgets_repointed_ones() {
    let (env, src) = env_with_source();
    let down = closed_port_repo();
    let moved = closed_port_repo();
    let config = write_config(
        &env,
        &src,
        &tables(&env, &[("down", &down), ("moved", &moved)]),
        QUICK_SCHEDULE,
    );
    let mut d = Daemon::start(&env, &config);
    // Two failures in a row take one retry delay (5 s).
    let before = d.wait_for("history to reload with", Duration::from_secs(60), |s| {
        dest_settled(dest(s, "good"))
            && dest(s, "down")["consecutive_failures"].as_u64() >= Some(2)
            && dest(s, "moved")["failed_snapshots"].as_u64() >= Some(1)
    });
    let good_id = dest(&before, "good")["last_snapshot"]["id"].clone();
    let good_snapshots = dest(&before, "good")["snapshots"].as_u64().expect("count");
    assert!(good_snapshots >= 1, "{before}");
    let down_failures = dest(&before, "down")["consecutive_failures"]
        .as_u64()
        .expect("failures");
    let down_failed = dest(&before, "down")["failed_snapshots"]
        .as_u64()
        .expect("failed");

    // `moved` is pointed at a local repository; the rest stays as it was.
    let elsewhere = env.path("elsewhere").to_string_lossy().into_owned();
    write_config(
        &env,
        &src,
        &tables(&env, &[("down", &down), ("moved", &elsewhere)]),
        QUICK_SCHEDULE,
    );
    d.signal(libc::SIGHUP);
    let t = Instant::now();
    while !d.log().contains("configuration reloaded") {
        assert!(t.elapsed() < Duration::from_secs(30), "{}", d.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let after = d.wait_for("status after the reload", Duration::from_secs(10), |_| true);
    let good = dest(&after, "good");
    assert_eq!(good["last_snapshot"]["id"], good_id, "{after}");
    assert_eq!(good["snapshots"].as_u64(), Some(good_snapshots), "{after}");
    let down_now = dest(&after, "down");
    assert!(
        down_now["consecutive_failures"].as_u64() >= Some(down_failures),
        "{after}"
    );
    assert!(
        down_now["failed_snapshots"].as_u64() >= Some(down_failed),
        "{after}"
    );
    assert!(
        down_now["last_error"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "{after}"
    );
    assert_eq!(after["state"], "retrying", "{after}");

    // The re-pointed destination starts fresh: none of the old location's failures.
    let s = d.wait_for("moved settled", Duration::from_secs(60), |s| {
        dest_settled(dest(s, "moved"))
    });
    let m = dest(&s, "moved");
    assert_eq!(m["failed_snapshots"], 0, "{s}");
    assert_eq!(m["consecutive_failures"], 0, "{s}");
    assert_eq!(m["repo"], elsewhere.as_str(), "{s}");
    d.terminate();
}

#[test]
fn backup_now_with_nothing_changed_names_the_existing_snapshot() {
    let env = Env::new();
    // A snapshot holds the metadata of its source's parent folders too: the source lives
    // where nothing else is created (not in /tmp, where other tests' folders come and
    // go), so that nothing really changes between the requests.
    let base = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("daemon_status");
    std::fs::create_dir_all(&base).expect("mkdir");
    let quiet = tempfile::tempdir_in(&base).expect("tempdir");
    let src = quiet.path().join("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    std::fs::write(src.join("a.txt"), b"unchanging\n").expect("write");
    let config = primary_config(&env, &src, "");
    let mut d = Daemon::start(&env, &config);
    d.wait_for("the first snapshot", Duration::from_secs(60), settled);

    let (ok, first) = backup_now(&d);
    assert!(ok, "{first}\n{}", d.log());
    let (ok, second) = backup_now(&d);
    assert!(ok, "{second}\n{}", d.log());
    let id = first[0]["snapshots"][0]
        .as_str()
        .expect("an id")
        .to_string();
    assert_eq!(second[0]["snapshots"][0], id.as_str(), "{first} {second}");
    let outcome = &second[0]["outcomes"][0];
    assert_eq!(outcome["id"], id.as_str(), "{second}");
    assert_eq!(outcome["unchanged"], true, "{second}");
    assert_eq!(
        outcome["paths"],
        serde_json::json!([src.to_string_lossy()]),
        "{second}"
    );
    assert_eq!(snapshot_ids(&env), vec![id.clone()], "no new snapshot");

    let text = d.cli(&["backup", "--now"]);
    assert!(text.status.success(), "{}", describe(&text));
    let said = String::from_utf8_lossy(&text.stdout).into_owned();
    assert_eq!(
        said.trim(),
        format!(
            "primary: nothing changed: the existing snapshot {id} holds {}",
            src.display()
        ),
        "{}",
        describe(&text)
    );

    // A change makes a new snapshot, and it is said to be new.
    std::fs::write(src.join("a.txt"), b"changed\n").expect("write");
    let text = d.cli(&["backup", "--now"]);
    assert!(text.status.success(), "{}", describe(&text));
    let said = String::from_utf8_lossy(&text.stdout).into_owned();
    let ids = snapshot_ids(&env);
    assert_eq!(ids.len(), 2, "{ids:?}");
    let new = ids.iter().find(|i| **i != id).expect("the new one");
    assert!(
        said.contains(&format!("primary: new snapshot {new} holds")),
        "{said}"
    );
    d.terminate();
}
