//! The daemon's destinations when something is wrong with them: damaged packs the scrub
//! finds, a disk that did not mount, a forgotten snapshot, a stalled server, a creation
//! cut short, one repository under two names. The real binary on a configuration file,
//! as in `daemon.rs`.

use crate::support;

use crate::alerts::receiver;

use std::path::PathBuf;
use std::time::{Duration, Instant};
use support::daemon::{Daemon, backup_now, fill, last_id, primary_config, settled};
use support::fault_proxy::Schedule;
use support::{Env, Kind, describe, pseudo_random, walk_files};

/// The daemon reads its destination back slice by slice: over one scrub period every
/// pack is verified, and a flipped byte in a stored pack is reported by name in
/// `cairn status` (which then exits 1).
#[test]
fn scrubbing_reads_every_pack_back_and_names_a_damaged_one() {
    let env = Env::with(Kind::S3);
    env.ok(&["init", "--pack-size", "1"]);
    let src = env.path("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    for i in 0..6u64 {
        std::fs::write(src.join(format!("f{i}")), pseudo_random(1_500_000, i + 40)).expect("write");
    }
    let hook = receiver::Receiver::start();
    let config = primary_config(
        &env,
        &src,
        &format!(
            "scrub_period = \"4s\"\nscrub_interval = \"1s\"\n\n[[notify]]\nwebhook = \"{}\"\nevents = [\"scrub_damage\"]\n",
            hook.url("/hook")
        ),
    );
    let mut d = Daemon::start(&env, &config);
    d.wait_for("the first snapshot", Duration::from_secs(60), |s| {
        last_id(s).is_some()
    });
    let data = env.objects_dir().join("data");
    let mut packs = Vec::new();
    for dir in std::fs::read_dir(&data).expect("data") {
        for f in std::fs::read_dir(dir.expect("dir").path()).expect("ls") {
            let p = f.expect("pack").path();
            if p.is_file() {
                packs.push(p);
            }
        }
    }
    assert!(packs.len() >= 3, "{} packs", packs.len());
    let n = packs.len() as u64;
    let scrub = |s: &serde_json::Value| s["destinations"][0]["scrub"].clone();
    d.wait_for("a whole scrub cycle", Duration::from_secs(60), |s| {
        scrub(s)["packs_read_total"].as_u64() >= Some(n) && scrub(s)["problems"] == 0
    });
    let text = d.cli(&["status"]);
    assert!(text.status.success(), "{}", describe(&text));
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("no problems"),
        "{}",
        describe(&text)
    );

    let victim = &packs[packs.len() / 2];
    let mut bytes = std::fs::read(victim).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(victim, bytes).expect("write");
    let name = victim
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let s = d.wait_for(
        "the scrub to find the damage",
        Duration::from_secs(60),
        |s| scrub(s)["problems"].as_u64() > Some(0),
    );
    let messages = scrub(&s)["problem_messages"].to_string();
    assert!(messages.contains(&name), "{messages}");
    let text = d.cli(&["status"]);
    assert_eq!(text.status.code(), Some(1), "{}", describe(&text));
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("PROBLEM"),
        "{}",
        describe(&text)
    );
    assert!(d.log().contains("scrub found"), "{}", d.log());
    // One alert names the damaged pack and the command that repairs it, however many
    // slices find it again.
    let got = hook.wait_for("scrub_damage", "/hook", Duration::from_secs(30), |g| {
        !g.is_empty()
    });
    let v = got[0].json();
    assert_eq!(v["event"], "scrub_damage", "{v}");
    let message = v["message"].as_str().unwrap_or_default();
    assert!(message.contains(&name), "{message}");
    assert!(
        message.contains(&format!(
            "cairn check --config {} --destination primary --read-data --repair",
            config.display()
        )),
        "{message}"
    );
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(hook.accepted("/hook").len(), 1, "{:?}", hook.requests());
    d.terminate();
}

#[test]
fn a_destination_whose_disk_did_not_mount_is_never_created_again() {
    let env = Env::with(Kind::Local);
    let src = env.path("src");
    fill(&src);
    let config = primary_config(&env, &src, "");
    let mut d = Daemon::start(&env, &config);
    let s = d.wait_for("the first snapshot", Duration::from_secs(60), settled);
    // Creating a repository is said in the log and in the status.
    assert!(d.log().contains("created a new repository"), "{}", d.log());
    let note = s["destinations"][0]["notice"].as_str().unwrap_or_default();
    assert!(note.contains("created a new repository"), "{s}");
    d.terminate();

    // The disk does not mount: its mount point is an empty folder.
    let repo = PathBuf::from(&env.repo);
    let away = env.path("disk");
    std::fs::rename(&repo, &away).expect("unmount");
    std::fs::create_dir(&repo).expect("mount point");
    let mut d = Daemon::start(&env, &config);
    d.wait_for("the daemon to answer", Duration::from_secs(30), |_| true);
    std::fs::write(
        src.join("while-away.txt"),
        b"written while the disk was away",
    )
    .expect("write");
    let (ok, results) = backup_now(&d);
    assert!(!ok, "backup --now must fail: {results}\n{}", d.log());
    let error = results[0]["error"].as_str().unwrap_or_default().to_string();
    assert!(error.contains("unreachable"), "{results}");
    assert!(
        !d.log().contains("created a new repository"),
        "a reached destination is never created again:\n{}",
        d.log()
    );
    assert_eq!(
        std::fs::read_dir(&repo).expect("read").count(),
        0,
        "nothing is written into the empty mount point"
    );
    let s = d.status().expect("status");
    assert!(
        s["destinations"][0]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("unreachable")),
        "{s}"
    );
    d.terminate();

    // The disk is back: the daemon carries on in the same repository.
    std::fs::remove_dir(&repo).expect("unmount point");
    std::fs::rename(&away, &repo).expect("mount");
    let mut d = Daemon::start(&env, &config);
    d.wait_for("the daemon to answer", Duration::from_secs(30), |_| true);
    let (ok, results) = backup_now(&d);
    assert!(ok, "{results}\n{}", d.log());
    assert!(!d.log().contains("created a new repository"), "{}", d.log());
    env.restore_latest_and_compare(&src, "restored");
}

#[test]
fn backup_now_never_answers_with_a_forgotten_snapshot() {
    let env = Env::with(Kind::Local);
    let src = env.path("src");
    fill(&src);
    let config = primary_config(&env, &src, "");
    let mut d = Daemon::start(&env, &config);
    d.wait_for("the first snapshot", Duration::from_secs(60), settled);
    let (ok, results) = backup_now(&d);
    assert!(ok, "{results}");
    let latest = results[0]["snapshots"][0]
        .as_str()
        .expect("a snapshot id")
        .to_string();
    env.ok(&["forget", &latest]);
    // Nothing changed, but the snapshot that held it is gone: a new one must be saved.
    let (ok, results) = backup_now(&d);
    assert!(ok, "{results}\n{}", d.log());
    let answered = results[0]["snapshots"][0]
        .as_str()
        .expect("a snapshot id")
        .to_string();
    assert_ne!(answered, latest, "answered with the forgotten snapshot");
    let listed = env.ok(&["snapshots", "--json"]);
    assert!(
        listed.contains(&answered),
        "{answered} is not stored: {listed}"
    );
    env.restore_latest_and_compare(&src, "restored");
}

#[test]
fn a_stalled_destination_shows_in_status_and_holds_up_neither_reload_nor_shutdown() {
    let env = Env::with(Kind::S3Proxied);
    let src = env.path("src");
    fill(&src);
    let config = primary_config(&env, &src, "");
    let mut d = Daemon::start(&env, &config);
    d.wait_for("the first snapshot", Duration::from_secs(60), settled);

    // The server stops answering, without closing the connections (SIGSTOP, a dead
    // NAT entry): every request waits for its timeout (5 s here), ten times.
    env.proxy.as_ref().expect("proxy").set_schedule(Schedule {
        stall: 1000,
        stall_for: Duration::from_secs(600),
        ..Schedule::clean()
    });
    std::fs::write(src.join("docs/new.txt"), b"while the server hangs").expect("write");
    let started = Instant::now();
    let s = d.wait_for("the stall to show", Duration::from_secs(40), |s| {
        s["destinations"][0]["state"] == "stalled"
    });
    assert!(
        s["destinations"][0]["stalled_seconds"].as_u64() >= Some(5),
        "{s}"
    );
    assert!(started.elapsed() < Duration::from_secs(20), "{s}");
    let text = String::from_utf8_lossy(&d.cli(&["status"]).stdout).into_owned();
    assert!(text.contains("stalled:"), "{text}");

    // A reload does not wait for the hung request.
    d.signal(libc::SIGHUP);
    let t = Instant::now();
    while !d.log().contains("configuration reloaded") {
        assert!(
            t.elapsed() < Duration::from_secs(25),
            "the reload waited for the stalled destination:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    d.wait_for(
        "an answer after the reload",
        Duration::from_secs(10),
        |_| true,
    );
    // Nor does shutdown.
    let took = d.terminate();
    assert!(took < Duration::from_secs(20), "SIGTERM took {took:?}");
}

#[test]
fn a_repository_creation_cut_short_is_finished_on_the_next_try() {
    let env = Env::with(Kind::Local);
    // A creation killed between its key and its config (written last): the key alone.
    env.ok(&["init"]);
    let repo = PathBuf::from(&env.repo);
    std::fs::remove_file(repo.join("config")).expect("lose the config");
    let key = walk_files(&repo.join("keys"));
    assert_eq!(key.len(), 1);

    // With another passphrase it is not finished (nor taken over): the error says why.
    let other = env.path("other-passphrase");
    std::fs::write(&other, "another passphrase\n").expect("write");
    std::fs::set_permissions(&other, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    let out = env
        .cmd(&["init"])
        .env("CAIRN_PASSWORD_FILE", &other)
        .output()
        .expect("init");
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("holds a key object but no config"),
        "{}",
        describe(&out)
    );

    // The daemon, with the passphrase that made the key, finishes it and backs up.
    let src = env.path("src");
    fill(&src);
    let config = primary_config(&env, &src, "");
    let mut d = Daemon::start(&env, &config);
    d.wait_for("the first snapshot", Duration::from_secs(60), settled);
    assert!(d.log().contains("cut short"), "{}", d.log());
    d.terminate();
    assert_eq!(
        walk_files(&repo.join("keys")),
        key,
        "finished on the key it had"
    );
    env.restore_latest_and_compare(&src, "restored");
}

#[test]
fn the_same_repository_under_two_names_is_refused_for_one_of_them() {
    let env = Env::with(Kind::Local);
    env.ok(&["init"]);
    let alias = env.path("alias");
    std::os::unix::fs::symlink(&env.repo, &alias).expect("link");
    let src = env.path("src");
    fill(&src);
    let config = primary_config(
        &env,
        &src,
        &format!(
            "\n[[destination]]\nname = \"again\"\nrepo = \"{}\"\n",
            alias.display()
        ),
    );
    let mut d = Daemon::start(&env, &config);
    let s = d.wait_for(
        "one destination refused, the other backing up",
        Duration::from_secs(60),
        |s| {
            let ds = s["destinations"].as_array().cloned().unwrap_or_default();
            let refused = ds.iter().filter(|d| {
                d["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("is the same repository as destination"))
            });
            let working = ds.iter().filter(|d| d["last_snapshot"]["id"].is_string());
            refused.count() == 1 && working.count() == 1
        },
    );
    d.terminate();
    assert_eq!(support::snapshot_ids(&env).len(), 1, "backed up once: {s}");
}
