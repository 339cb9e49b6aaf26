//! The daemon, run as a user would: the real binary on a configuration file, watching a
//! real directory, writing to real S3 servers on loopback (through the fault proxy where
//! a test needs to stall or fail uploads). Each test ends by restoring and comparing.
//! This file holds the daemon's life cycle: start, changes, reload, stop, and the
//! mistakes it names; `daemon_sources.rs` and `daemon_destinations.rs` hold what goes
//! wrong at either end.

use crate::support;

use std::io::Write;
use std::time::{Duration, Instant};
use support::daemon::{
    Daemon, config_with_metrics, fill, last_id, metrics, primary_config, settled,
};
use support::fault_proxy::Schedule;
use support::{Env, Kind, pseudo_random, walk_files};

#[test]
fn daemon_keeps_an_s3_bucket_current_through_every_kind_of_change() {
    let env = Env::with(Kind::S3);
    let src = env.path("src");
    fill(&src);
    let (config, port) = config_with_metrics(&env, &src);
    let mut d = Daemon::start(&env, &config);
    // First start: the repository is created and a first snapshot taken.
    let s = d.wait_for("the first snapshot", Duration::from_secs(60), settled);
    let first = last_id(&s).expect("id");
    assert!(d.log().contains("created a new repository"), "{}", d.log());
    env.restore_latest_and_compare(&src, "restore1");

    // Create, modify, rename and delete, then time how long until a snapshot holds it.
    let t = Instant::now();
    std::fs::write(src.join("docs/new.txt"), b"created").expect("create");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(src.join("docs/report.txt"))
        .expect("open");
    f.write_all(b"and a correction\n").expect("append");
    drop(f);
    std::fs::rename(src.join("docs/deep"), src.join("docs/moved")).expect("rename dir");
    std::fs::rename(src.join("photos/b.raw"), src.join("photos/c.raw")).expect("rename file");
    std::fs::remove_file(src.join("photos/a.raw")).expect("delete");
    std::fs::create_dir_all(src.join("new/dir")).expect("mkdir");
    std::fs::write(src.join("new/dir/file.bin"), pseudo_random(200_000, 3)).expect("write");
    let s = d.wait_for(
        "a snapshot with the changes",
        Duration::from_secs(30),
        |s| settled(s) && last_id(s).as_deref() != Some(first.as_str()),
    );
    eprintln!("change to durable snapshot: {:?}", t.elapsed());
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert_eq!(s["state"], "idle");
    assert_eq!(s["watching"], true);
    env.restore_latest_and_compare(&src, "restore2");

    // The metrics endpoint tells the same story.
    let body = metrics(port);
    assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
    assert!(body.contains("cairn_uploads_total{destination=\"primary\",result=\"ok\"}"));
    let ts_line = body
        .lines()
        .find(|l| l.starts_with("cairn_last_success_timestamp_seconds{destination=\"primary\"}"))
        .expect("timestamp metric");
    assert_ne!(ts_line.rsplit(' ').next(), Some("0"), "{ts_line}");

    // `backup --now` answers with the snapshot that holds the current state.
    std::fs::write(src.join("now.txt"), b"right now").expect("write");
    let out = d.cli(&["backup", "--now", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(results[0]["destination"], "primary");
    assert!(results[0]["error"].is_null(), "{results}");
    env.restore_latest_and_compare(&src, "restore3");

    // Human status names the destination and its last snapshot.
    let out = d.cli(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("primary (s3:http://127.0.0.1:"), "{text}");
    assert!(text.contains("last snapshot:"), "{text}");
    let took = d.terminate();
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[test]
fn sigterm_mid_upload_commits_nothing_and_the_restart_finishes_the_job() {
    let env = Env::with(Kind::S3Proxied);
    let src = env.path("src");
    fill(&src);
    std::fs::write(src.join("big.bin"), pseudo_random(40 << 20, 9)).expect("write");
    let config = primary_config(&env, &src, "");
    // Pack uploads hang; everything else (creating the repository) goes through.
    let proxy = env.proxy.as_ref().expect("proxy");
    proxy.set_schedule(Schedule {
        stall: 1000,
        stall_for: Duration::from_secs(60),
        methods: vec!["PUT"],
        target_contains: Some("/data/"),
        ..Schedule::clean()
    });
    let mut d = Daemon::start(&env, &config);
    d.wait_for("pack uploads under way", Duration::from_secs(60), |s| {
        s["destinations"][0]["pending_objects"]
            .as_u64()
            .unwrap_or(0)
            > 0
    });
    let took = d.terminate();
    assert!(took < Duration::from_secs(10), "stop took {took:?}");
    assert!(
        d.log().contains("snapshot stopped for shutdown"),
        "{}",
        d.log()
    );
    // Nothing was committed.
    let listed = env.ok(&["snapshots", "--json"]);
    assert_eq!(listed.trim(), "[]", "{listed}");

    proxy.set_schedule(Schedule::clean());
    let mut d = Daemon::start(&env, &config);
    d.wait_for(
        "the snapshot after restart",
        Duration::from_secs(90),
        settled,
    );
    d.terminate();
    env.restore_latest_and_compare(&src, "restored");
}

#[test]
fn a_deleted_state_directory_is_rebuilt_without_uploading_data_again() {
    let env = Env::with(Kind::S3);
    let src = env.path("src");
    fill(&src);
    let config = primary_config(&env, &src, "");
    let mut d = Daemon::start(&env, &config);
    d.wait_for("the first snapshot", Duration::from_secs(60), settled);
    d.terminate();
    let packs = |env: &Env| -> usize { walk_files(&env.objects_dir().join("data")).len() };
    let before = packs(&env);
    let cache = env.path("state/cache");
    assert!(!walk_files(&cache).is_empty(), "the cache was filled");
    std::fs::remove_dir_all(env.path("state")).expect("delete state");

    // A small change, so the restart has something to store.
    std::fs::write(src.join("docs/after-restart.txt"), b"small").expect("write");
    let mut d = Daemon::start(&env, &config);
    let s = d.wait_for(
        "a snapshot after the restart",
        Duration::from_secs(60),
        |s| settled(s) && s["destinations"][0]["snapshots"] == 1,
    );
    d.terminate();
    let after = packs(&env);
    // One data pack and one tree pack at most: the 4 MiB of photos were not sent again.
    assert!(after - before <= 2, "{before} -> {after} packs; {s}");
    assert!(
        s["destinations"][0]["bytes_uploaded"]
            .as_u64()
            .unwrap_or(u64::MAX)
            < 100_000,
        "{s}"
    );
    assert!(!walk_files(&cache).is_empty(), "the cache was rebuilt");
    env.restore_latest_and_compare(&src, "restored");
}

#[test]
fn sighup_reloads_a_good_configuration_and_keeps_running_on_a_bad_one() {
    let env = Env::with(Kind::S3);
    let src = env.path("src");
    fill(&src);
    let config = primary_config(&env, &src, "");
    let good = std::fs::read_to_string(&config).expect("read");
    let mut d = Daemon::start(&env, &config);
    d.socket = Some(env.path("state/cairn.sock"));
    let s = d.wait_for("the first snapshot", Duration::from_secs(60), settled);
    let first = last_id(&s).expect("id");

    std::fs::write(&config, good.replace("quiet_period", "quiet_perod")).expect("break");
    d.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(500));
    d.wait_for(
        "status after a refused reload",
        Duration::from_secs(10),
        settled,
    );
    assert!(
        d.log().contains("configuration not reloaded") && d.log().contains("quiet_perod"),
        "{}",
        d.log()
    );

    // A good configuration with an exclude takes effect.
    let with_exclude = good.replace(
        &format!("paths = [\"{}\"]", src.display()),
        &format!("paths = [\"{}\"]\nexclude = [\"*.skip\"]", src.display()),
    );
    std::fs::write(&config, with_exclude).expect("fix");
    d.signal(libc::SIGHUP);
    d.wait_for("reload", Duration::from_secs(10), |_| true);
    std::thread::sleep(Duration::from_millis(500));
    assert!(d.log().contains("configuration reloaded"), "{}", d.log());
    std::fs::write(src.join("keep.txt"), b"keep").expect("write");
    std::fs::write(src.join("drop.skip"), b"drop").expect("write");
    // The reload itself may start a snapshot before the files are written: wait for
    // one that has them.
    d.wait_for(
        "a snapshot under the new configuration",
        Duration::from_secs(30),
        |s| {
            settled(s)
                && last_id(s).as_deref() != Some(first.as_str())
                && env.ok(&["ls", "latest"]).contains("keep.txt")
        },
    );
    d.terminate();
    let listing = env.ok(&["ls", "latest"]);
    assert!(listing.contains("keep.txt"), "{listing}");
    assert!(!listing.contains("drop.skip"), "{listing}");
}

#[test]
fn configuration_mistakes_are_named_with_their_line_and_fix() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    let config = primary_config(&env, &src, "");
    let good = std::fs::read_to_string(&config).expect("read");

    std::fs::write(&config, good.replace("min_interval", "min_intervall")).expect("write");
    let out = env.run(&["daemon", "--config", config.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "line 14: unknown key `schedule.min_intervall`: did you mean `schedule.min_interval`?"
        ),
        "{err}"
    );
    let out = env.run(&[
        "config",
        "check",
        "--config",
        config.to_str().expect("utf8"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 14"));

    // A passphrase file others can read is refused, with the chmod that fixes it.
    std::fs::write(&config, &good).expect("write");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&env.password_file, std::fs::Permissions::from_mode(0o644))
        .expect("chmod");
    let out = env.run(&[
        "config",
        "check",
        "--config",
        config.to_str().expect("utf8"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("chmod 600 {}", env.password_file.display())),
        "{err}"
    );
    std::fs::set_permissions(&env.password_file, std::fs::Permissions::from_mode(0o600))
        .expect("chmod");
    let out = env.run(&[
        "config",
        "check",
        "--config",
        config.to_str().expect("utf8"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("is valid"));

    // The daemon refuses to start without a readable passphrase, saying which file.
    let moved = env.path("passphrase.moved");
    std::fs::rename(&env.password_file, &moved).expect("mv");
    let out = env.run(&["daemon", "--config", config.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("password_file {}", env.password_file.display())),
        "{err}"
    );
    assert!(
        err.contains("create it with the secret on its first line"),
        "{err}"
    );
    std::fs::rename(&moved, &env.password_file).expect("mv back");

    // Talking to a daemon that is not running says what to do.
    let out = env.run(&["status", "--config", config.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no cairn daemon is listening"));
}

#[test]
fn the_shipped_example_configuration_runs_as_is() {
    // The example with only its system paths moved into a scratch area: it must pass
    // `config check` and back up its source with no other set-up.
    let env = Env::new();
    let root = env.path("root");
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/cairn.toml"))
            .expect("example");
    let moved = example
        .replace(
            "\"/var/lib/cairn\"",
            &format!("\"{}/var/lib/cairn\"", root.display()),
        )
        .replace(
            "\"/etc/cairn/passphrase\"",
            &format!("\"{}\"", env.password_file.display()),
        )
        .replace("\"/srv/data", &format!("\"{}/srv/data", root.display()))
        .replace(
            "\"/var/backups/cairn\"",
            &format!("\"{}/var/backups/cairn\"", root.display()),
        )
        .replace(
            "\"/var/cache/cairn\"",
            &format!("\"{}/var/cache/cairn\"", root.display()),
        )
        .replace(
            "\"/run/cairn/control.sock\"",
            &format!("\"{}/run/cairn.sock\"", root.display()),
        )
        .replace("quiet_period = \"2s\"", "quiet_period = \"200ms\"");
    for line in moved.lines().filter(|l| !l.trim_start().starts_with('#')) {
        assert!(
            !line.contains("\"/var")
                && !line.contains("\"/srv")
                && !line.contains("\"/run")
                && !line.contains("\"/etc"),
            "{line}"
        );
    }
    let config = env.path("cairn.toml");
    std::fs::write(&config, moved).expect("write");
    // The local destination's parent, as on any Debian system (`config check` reports a
    // missing one).
    std::fs::create_dir_all(root.join("var/backups")).expect("mkdir");
    let data = root.join("srv/data");
    fill(&data);
    std::fs::create_dir_all(data.join("cache")).expect("mkdir");
    std::fs::write(data.join("cache/junk"), b"excluded").expect("write");
    let out = env.run(&[
        "config",
        "check",
        "--config",
        config.to_str().expect("utf8"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut d = Daemon::start(&env, &config);
    d.wait_for("the first snapshot", Duration::from_secs(60), settled);
    d.terminate();
    let repo = root.join("var/backups/cairn");
    let listing = env.ok(&["ls", "latest", "--repo", repo.to_str().expect("utf8")]);
    assert!(listing.contains("report.txt"), "{listing}");
    assert!(!listing.contains("junk"), "{listing}");
}

#[test]
fn state_and_repository_inside_the_source_do_not_loop() {
    // A careless layout: the state directory and a local repository inside the watched
    // folder. The daemon must leave them out and settle instead of snapshotting its own
    // writes forever.
    let env = Env::with(Kind::S3);
    let src = env.path("src");
    fill(&src);
    let text = std::fs::read_to_string(primary_config(&env, &src, ""))
        .expect("read")
        .replace(
            &format!("state_dir = \"{}\"", env.path("state").display()),
            &format!("state_dir = \"{}\"", src.join(".cairn-state").display()),
        );
    let config = env.path("inside.toml");
    std::fs::write(&config, text).expect("write");
    let mut d = Daemon::start(&env, &config);
    d.wait_for("the first snapshot", Duration::from_secs(60), settled);
    std::thread::sleep(Duration::from_secs(2));
    let s = d.wait_for("quiet", Duration::from_secs(10), settled);
    assert_eq!(s["destinations"][0]["snapshots"], 1, "{s}");
    d.terminate();
    let listing = env.ok(&["ls", "latest"]);
    assert!(!listing.contains(".cairn-state"), "{listing}");
}

#[test]
fn systemd_hears_ready_status_and_watchdog() {
    // Stand in for systemd: a datagram socket in NOTIFY_SOCKET, and a watchdog asked for.
    let env = Env::with(Kind::S3);
    let src = env.path("src");
    fill(&src);
    let sock_path = env.path("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).expect("bind");
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let config = primary_config(&env, &src, "");
    let mut env2 = Env {
        env: env.env.clone(),
        ..Env::with(Kind::Local)
    };
    env2.env
        .push(("NOTIFY_SOCKET", sock_path.to_string_lossy().into_owned()));
    env2.env.push(("WATCHDOG_USEC", "400000".into()));
    let mut d = Daemon::start(&env2, &config);
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    let t = Instant::now();
    while !(seen.contains("READY=1")
        && seen.contains("WATCHDOG=1")
        && seen.contains("STATUS=idle; primary: idle, last snapshot"))
    {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "heard only: {seen}\n{}",
            d.log()
        );
        if let Ok(n) = sock.recv(&mut buf) {
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            seen.push('\n');
        }
    }
    d.terminate();
    // Stopping is announced too.
    let mut tail = String::new();
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    while let Ok(n) = sock.recv(&mut buf) {
        tail.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(tail.contains("STOPPING=1"), "{tail}");
}

#[test]
fn a_second_daemon_on_the_same_state_directory_is_refused() {
    let env = Env::with(Kind::Local);
    let src = env.path("src");
    fill(&src);
    let config = primary_config(&env, &src, "");
    let mut first = Daemon::start(&env, &config);
    first.wait_for("the first snapshot", Duration::from_secs(60), settled);
    // A copy of the configuration with its own control socket, same state directory.
    let text = std::fs::read_to_string(&config).expect("config");
    let socket = env.path("second.sock");
    let second_config = env.path("second.toml");
    std::fs::write(
        &second_config,
        format!("{text}\n[control]\nsocket = \"{}\"\n", socket.display()),
    )
    .expect("write");
    let mut second = Daemon::start(&env, &second_config);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = second.exited() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "a second daemon on the same state directory kept running:\n{}",
            second.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success(), "{}", second.log());
    assert!(
        second.log().contains("another cairn daemon") && second.log().contains("state directory"),
        "{}",
        second.log()
    );
    // The first one is untouched.
    first.wait_for(
        "the first daemon to answer",
        Duration::from_secs(10),
        settled,
    );
    first.terminate();
}
