//! Several hosts on one repository while retention runs: what another host removes
//! between a listing and a read is absent, not damage (the listing and the read are
//! interleaved on purpose: the fault proxy holds the reads back while the test removes
//! what was listed), and a file that never stops changing is still backed up.

use crate::support;

use std::fs;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use support::fault_proxy::Schedule;
use support::s3::S3Server;
use support::{Env, Kind, describe, snapshot_ids, stderr};

/// How long the proxy holds back each read of the kind under test: ample time for the
/// test to remove what the command listed before the read reaches the server (for
/// index objects, time for a whole prune on another host).
const HOLD: Duration = Duration::from_secs(2);
const HOLD_FOR_A_PRUNE: Duration = Duration::from_secs(6);

/// Hold back every GET whose request line contains `what` by `hold`.
fn hold_reads(env: &Env, what: &'static str, hold: Duration) {
    let mut s = Schedule::clean();
    s.methods = vec!["GET"];
    s.target_contains = Some(what);
    s.delay = Some(hold);
    env.proxy.as_ref().expect("proxy").set_schedule(s);
}

fn server(env: &Env) -> &S3Server {
    env.server.as_ref().expect("server")
}

/// Wait until the proxy has received (and holds back) a GET of `object`: the command
/// has listed it and is about to read it.
fn wait_for_held_read(env: &Env, from: usize, object: &str) {
    let proxy = env.proxy.as_ref().expect("proxy");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let asked = proxy
            .stats
            .received
            .lock()
            .map(|r| {
                r.iter()
                    .skip(from)
                    .any(|l| l.starts_with("GET ") && l.contains(object))
            })
            .unwrap_or(false);
        if asked {
            return;
        }
        assert!(Instant::now() < deadline, "nobody asked for {object}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// How many requests the proxy has received so far.
fn received(env: &Env) -> usize {
    let proxy = env.proxy.as_ref().expect("proxy");
    proxy.stats.received.lock().map(|r| r.len()).unwrap_or(0)
}

/// The command against the server itself, past the proxy (another host, not slowed).
fn direct(env: &Env, args: &[&str]) -> Command {
    let mut c = env.cmd(args);
    c.env(
        "CAIRN_REPOSITORY",
        format!("s3:{}/backups/host1", server(env).endpoint()),
    );
    c
}

fn finish(child: Child) -> Output {
    child.wait_with_output().expect("wait")
}

fn spawn(mut c: Command) -> Child {
    c.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn cairn")
}

fn source(env: &Env, name: &str, seed: u64) -> PathBuf {
    let src = env.path(name);
    fs::create_dir_all(src.join("sub")).expect("mkdir");
    fs::write(src.join("a.bin"), support::pseudo_random(300_000, seed)).expect("write");
    fs::write(src.join("sub/b.txt"), format!("file b of {name}\n")).expect("write");
    src
}

/// Whether the server saw a GET of `object` at or after position `from`.
fn read_after(env: &Env, from: usize, object: &str) -> bool {
    server(env)
        .seen()
        .iter()
        .skip(from)
        .any(|r| r.method == "GET" && r.target.contains(object))
}

#[test]
fn a_backup_whose_parent_is_forgotten_between_listing_and_read_picks_another() {
    let env = Env::init_on(Kind::S3Proxied);
    let src = source(&env, "src", 1);
    let s = src.to_str().expect("utf8");
    env.ok(&["backup", s]);
    fs::write(src.join("sub/b.txt"), "changed\n").expect("write");
    env.ok(&["backup", s]);
    let ids = snapshot_ids(&env);
    let (first, latest) = (ids[0].clone(), ids[1].clone());
    fs::write(src.join("sub/c.txt"), "new\n").expect("write");

    hold_reads(&env, "/snapshots/", HOLD);
    let mark = server(&env).seen().len();
    let held = received(&env);
    let child = spawn(env.cmd(&["backup", "--json", s]));
    wait_for_held_read(&env, held, &format!("snapshots/{}", latest));
    // A `forget` on another host, between the backup's listing and its reads.
    fs::remove_file(env.objects_dir().join("snapshots").join(&latest)).expect("forget");
    let out = finish(child);
    assert!(
        read_after(&env, mark, &format!("snapshots/{latest}")),
        "the backup never tried to read the removed snapshot: the interleaving did not happen"
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    env.proxy
        .as_ref()
        .expect("proxy")
        .set_schedule(Schedule::clean());

    let v: serde_json::Value =
        serde_json::from_str(&env.ok(&["snapshots", "--json"])).expect("json");
    let snaps = v.as_array().expect("array");
    assert_eq!(snaps.len(), 2, "{v}");
    assert_eq!(
        snaps[1]["parent"].as_str(),
        Some(first.as_str()),
        "the new snapshot's parent is the one that remains"
    );
    env.restore_latest_and_compare(&src, "restored");
    env.ok(&["check", "--read-data"]);
}

#[test]
fn a_prune_during_which_a_snapshot_is_forgotten_carries_on() {
    let env = Env::init_on(Kind::S3Proxied);
    let src = source(&env, "src", 2);
    let s = src.to_str().expect("utf8");
    for n in 0..3 {
        fs::write(
            src.join(format!("f{n}.bin")),
            support::pseudo_random(100_000, 10 + n),
        )
        .expect("write");
        env.ok(&["backup", s]);
    }
    let ids = snapshot_ids(&env);

    hold_reads(&env, "/snapshots/", HOLD);
    let mark = server(&env).seen().len();
    let held = received(&env);
    let child = spawn(env.cmd(&["prune", "--grace", "0s"]));
    wait_for_held_read(&env, held, &format!("snapshots/{}", ids[0]));
    fs::remove_file(env.objects_dir().join("snapshots").join(&ids[0])).expect("forget");
    let out = finish(child);
    assert!(
        read_after(&env, mark, &format!("snapshots/{}", ids[0])),
        "the prune never tried to read the removed snapshot: the interleaving did not happen"
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    env.proxy
        .as_ref()
        .expect("proxy")
        .set_schedule(Schedule::clean());
    // What the forgotten snapshot alone used goes in the next prunes; the rest stays.
    env.ok(&["prune", "--grace", "0s"]);
    env.ok(&["prune", "--grace", "0s"]);
    env.ok(&["check", "--read-data"]);
    env.restore_latest_and_compare(&src, "restored");
}

#[test]
fn a_check_during_which_a_snapshot_is_forgotten_reports_no_damage() {
    let env = Env::init_on(Kind::S3Proxied);
    let src = source(&env, "src", 5);
    let s = src.to_str().expect("utf8");
    env.ok(&["backup", s]);
    fs::write(src.join("sub/b.txt"), "changed\n").expect("write");
    env.ok(&["backup", s]);
    let first = snapshot_ids(&env)[0].clone();

    hold_reads(&env, "/snapshots/", HOLD);
    let mark = server(&env).seen().len();
    let held = received(&env);
    let child = spawn(env.cmd(&["check"]));
    wait_for_held_read(&env, held, &format!("snapshots/{}", first));
    fs::remove_file(env.objects_dir().join("snapshots").join(&first)).expect("forget");
    let out = finish(child);
    assert!(
        read_after(&env, mark, &format!("snapshots/{first}")),
        "the check never tried to read the removed snapshot: the interleaving did not happen"
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
}

/// The environment with a request timeout longer than [`HOLD_FOR_A_PRUNE`].
fn slow_reads_allowed(mut env: Env) -> Env {
    env.options.retain(|o| !o.starts_with("s3.timeout="));
    env.options.push("s3.timeout=30s".into());
    env
}

/// Two snapshots, the first forgotten: a prune then has index objects to replace.
fn repository_with_work_for_prune(env: &Env) -> PathBuf {
    let old = source(env, "old", 3);
    env.ok(&["backup", old.to_str().expect("utf8")]);
    let src = source(env, "src", 4);
    env.ok(&["backup", src.to_str().expect("utf8")]);
    let first = snapshot_ids(env)[0].clone();
    env.ok(&["forget", &first]);
    src
}

/// Run `args` through the proxy with index reads held back, and a prune on another host
/// (past the proxy) replacing the index objects it listed before it reads them; its
/// output, once it is known that it read an index object the other prune had deleted.
fn beside_a_prune_rewriting_the_index(env: &Env, args: &[&str]) -> Output {
    hold_reads(env, "/index/", HOLD_FOR_A_PRUNE);
    let mark = server(env).seen().len();
    let held = received(env);
    let child = spawn(env.cmd(args));
    wait_for_held_read(env, held, "/index/");
    let other = direct(env, &["prune", "--grace", "0s"])
        .output()
        .expect("prune");
    assert!(other.status.success(), "{}", describe(&other));
    let out = finish(child);
    env.proxy
        .as_ref()
        .expect("proxy")
        .set_schedule(Schedule::clean());
    // The proof that the read came after the replacement: an index object deleted by
    // the other prune and then asked for.
    let seen = server(env).seen();
    let path = |target: &str| target.split('?').next().unwrap_or_default().to_string();
    let interleaved = seen.iter().enumerate().skip(mark).any(|(i, r)| {
        r.method == "DELETE"
            && r.target.contains("/index/")
            && seen[i..]
                .iter()
                .any(|g| g.method == "GET" && path(&g.target) == path(&r.target))
    });
    assert!(
        interleaved,
        "no index object was read after the other prune deleted it: the interleaving did not happen"
    );
    out
}

#[test]
fn a_prune_whose_index_objects_another_prune_replaces_starts_its_survey_again() {
    let env = slow_reads_allowed(Env::init_on(Kind::S3Proxied));
    let src = repository_with_work_for_prune(&env);
    let out = beside_a_prune_rewriting_the_index(&env, &["prune", "--grace", "0s", "-v"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        stderr(&out).contains("lists the repository again"),
        "the prune should say it started again: {}",
        describe(&out)
    );
    env.ok(&["check", "--read-data"]);
    env.restore_latest_and_compare(&src, "restored");
}

#[test]
fn a_restore_while_a_prune_replaces_the_index_lists_it_again() {
    let env = slow_reads_allowed(Env::init_on(Kind::S3Proxied));
    let src = repository_with_work_for_prune(&env);
    let target = env.path("restored");
    let out = beside_a_prune_rewriting_the_index(
        &env,
        &[
            "restore",
            "latest",
            "--target",
            target.to_str().expect("utf8"),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    support::assert_same_tree(&src, &support::restored(&target, &src));
}

/// Runs `write` in a loop on another thread until the guard is dropped.
struct Writer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(mut write: impl FnMut() + Send + 'static) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                write();
            }
        });
        Writer {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The restored file `name` of `src` from the latest snapshot.
fn restore_one(env: &Env, src: &Path, name: &str, dir: &str) -> (Output, Vec<u8>) {
    let target = env.path(dir);
    let out = env.run(&[
        "restore",
        "latest",
        "--target",
        target.to_str().expect("utf8"),
    ]);
    let bytes = fs::read(support::restored(&target, src).join(name)).unwrap_or_default();
    (out, bytes)
}

#[test]
fn an_application_log_that_never_stops_growing_is_stored_as_it_was_when_reading_started() {
    let env = Env::init();
    let src = env.path("src");
    fs::create_dir(&src).expect("mkdir");
    fs::write(src.join("quiet.txt"), "still\n").expect("write");
    let log = src.join("app.log");
    // Some history first, then a line every millisecond: never still for the 20 ms a
    // consistent read waits for.
    let mut f = fs::File::create(&log).expect("create");
    for n in 0..20_000 {
        writeln!(f, "line {n:08} of the application's history").expect("write");
    }
    let mut n = 0u64;
    let writer = Writer::start(move || {
        n += 1;
        writeln!(f, "event {n:08}: something happened").expect("append");
        std::thread::sleep(Duration::from_millis(1));
    });
    let (code, summary) = env.backup_json(&[&src], &[]);
    drop(writer);
    assert_eq!(
        code,
        Some(0),
        "a log that only grew is stored clean: {summary}"
    );
    let (out, stored) = restore_one(&env, &src, "app.log", "restored");
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        !stderr(&out).contains("never stood still"),
        "a clean version is not flagged: {}",
        describe(&out)
    );
    let now = fs::read(&log).expect("read log");
    assert!(
        stored.len() > 20_000 * 40 && now.starts_with(&stored),
        "the stored log ({} bytes) is a prefix of the log ({} bytes) with its history",
        stored.len(),
        now.len()
    );
}

#[test]
fn a_large_log_that_grows_while_read_is_read_once_and_stored_as_its_prefix() {
    let env = Env::init();
    let src = env.path("src");
    fs::create_dir(&src).expect("mkdir");
    let log = src.join("big.log");
    let mut f = fs::File::create(&log).expect("create");
    for n in 0..800_000 {
        writeln!(f, "entry {n:08} of a large log that keeps on growing").expect("write");
    }
    // Still for 50 ms between lines (so a read starts at once), but reading 40 MB takes
    // longer than that: every whole read would meet growth.
    let writer = Writer::start(move || {
        std::thread::sleep(Duration::from_millis(50));
        writeln!(f, "another entry").expect("append");
    });
    let out = env.run(&["backup", "-v", src.to_str().expect("utf8")]);
    drop(writer);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        stderr(&out)
            .contains("grew while being read (1 attempt); stored as it was when reading started"),
        "one whole read, then only its prefix checked: {}",
        describe(&out)
    );
    let (_, stored) = restore_one(&env, &src, "big.log", "restored");
    let now = fs::read(&log).expect("read log");
    assert!(
        stored.len() >= 800_000 * 50 && now.starts_with(&stored),
        "the large log is stored as a prefix of itself ({} of {} bytes)",
        stored.len(),
        now.len()
    );
}

#[test]
fn a_file_changed_in_place_without_pause_is_stored_marked_and_named_on_restore() {
    let env = Env::init();
    let src = env.path("src");
    fs::create_dir(&src).expect("mkdir");
    let db = src.join("db.bin");
    fs::write(&db, support::pseudo_random(4 << 20, 7)).expect("write");
    let file = fs::OpenOptions::new().write(true).open(&db).expect("open");
    // A database that rewrites pages in place, all the time, never growing.
    let mut n = 0u64;
    let writer = Writer::start(move || {
        n += 1;
        let page = (n * 7919) % 1024;
        file.write_all_at(&n.to_le_bytes().repeat(512), page * 4096)
            .expect("write page");
    });
    let (code, summary) = env.backup_json(&[&src], &[]);
    drop(writer);
    assert_eq!(code, Some(3), "stored with a warning: {summary}");
    let warnings = summary["warnings"].as_array().expect("warnings");
    assert_eq!(warnings.len(), 1, "{summary}");
    assert_eq!(warnings[0]["stored"], true, "{summary}");
    assert!(
        warnings[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("may mix older and newer bytes")),
        "{summary}"
    );
    assert_eq!(summary["files_changing"], 1, "{summary}");
    let (out, stored) = restore_one(&env, &src, "db.bin", "restored");
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        stderr(&out).contains("never stood still") && stderr(&out).contains("db.bin"),
        "the restore names the file: {}",
        describe(&out)
    );
    assert_eq!(stored.len(), 4 << 20, "the whole file is stored");

    // Once it stands still, the next backup reads it again although its times did not
    // move since, and stores it clean.
    let (code, summary) = env.backup_json(&[&src], &[]);
    assert_eq!(code, Some(0), "{summary}");
    assert_eq!(summary["files_changed"], 1, "{summary}");
    let (out, stored) = restore_one(&env, &src, "db.bin", "restored-again");
    assert!(
        !stderr(&out).contains("never stood still"),
        "{}",
        describe(&out)
    );
    assert_eq!(stored, fs::read(&db).expect("read"));
}
