//! A snapshot reported saved restores, whatever a bucket writer or a missing disk did:
//! an old index object put back, a destination whose disk did not mount, junk objects
//! among the snapshots and index objects. Each test plays the attack or accident with
//! the real binary and then restores.

#[path = "integration/support/mod.rs"]
mod support;

use std::fs;
use std::path::Path;
use support::{Env, Kind, assert_same_tree, copy_dir, describe, pseudo_random, restored, stderr};

/// Restore `latest` into `name` where some objects are skipped: the restore ends with
/// exit code 3 (it named them) and the tree equals `src`.
fn restore_latest_past_skipped_objects(env: &Env, src: &Path, name: &str) {
    let target = env.path(name);
    let out = env.run(&[
        "restore",
        "latest",
        "--target",
        target.to_str().expect("utf8"),
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    assert_same_tree(src, &restored(&target, src));
}

#[test]
fn a_resurrected_index_object_does_not_make_a_later_backup_unrestorable() {
    for kind in [Kind::Local, Kind::S3] {
        let env = Env::init_on(kind);
        let src = env.path("src");
        fs::create_dir_all(&src).expect("mkdir");
        fs::write(src.join("letter.txt"), pseudo_random(40_000, 7)).expect("write");
        let first = env.ok(&["backup", src.to_str().expect("utf8")]);
        let id = first
            .split_whitespace()
            .nth(1)
            .expect("snapshot id")
            .to_string();
        // Keep a copy of the index as it was, then forget and prune the data away.
        let saved = env.path("saved-index");
        copy_dir(&env.objects_dir().join("index"), &saved);
        env.ok(&["forget", &id]);
        env.ok(&["prune", "--grace", "0s"]);
        env.ok(&["prune", "--grace", "0s"]);
        // Put the old index objects back (an undelete in a versioned bucket does this).
        copy_dir(&saved, &env.objects_dir().join("index"));
        let out = env.run(&["backup", src.to_str().expect("utf8")]);
        assert!(out.status.success(), "{}", describe(&out));
        // "saved" must mean restorable.
        env.restore_latest_and_compare(&src, &format!("restored-{kind:?}"));
        assert!(
            stderr(&out).contains("are not in data/"),
            "the dropped index entries are reported: {}",
            describe(&out)
        );
    }
}

#[test]
fn the_local_backend_creates_no_content_folders_under_a_root_without_config() {
    use cairn::backend::{Backend, FileType, Handle, local::LocalBackend};
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let backend = LocalBackend::new(dir.path());
    for kind in [
        FileType::Pack,
        FileType::Index,
        FileType::Snapshot,
        FileType::Deletion,
    ] {
        let h = Handle::new(kind, "ab".repeat(32));
        let err = rt
            .block_on(backend.put(&h, bytes::Bytes::from_static(b"x")))
            .expect_err("refused");
        assert!(err.to_string().contains("is the disk"), "{err}");
        assert!(err.is_retryable(), "the disk may come back: {err}");
    }
    assert_eq!(fs::read_dir(dir.path()).expect("read").count(), 0);
    // The journal's folder is not a repository and is written all the same.
    let journal = LocalBackend::without_config(dir.path());
    rt.block_on(journal.put(
        &Handle::new(FileType::Pack, "ab".repeat(32)),
        bytes::Bytes::from_static(b"x"),
    ))
    .expect("journal write");
}

#[test]
fn one_junk_object_among_snapshots_or_index_objects_is_skipped_with_exit_code_3() {
    let env = Env::init_on(Kind::S3);
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    fs::write(src.join("a.bin"), pseudo_random(300_000, 1)).expect("write");
    env.ok(&["backup", src.to_str().expect("utf8")]);
    let objects = env.objects_dir();
    let junk = pseudo_random(100, 99);
    let junk_snapshot = format!("snapshots/{}", "f".repeat(64));
    let junk_index = format!("index/{}", "e".repeat(64));
    fs::write(objects.join(&junk_snapshot), &junk).expect("plant snapshot");
    fs::write(objects.join(&junk_index), &junk).expect("plant index");

    fs::write(src.join("b.bin"), pseudo_random(200_000, 2)).expect("write");
    let out = env.run(&["backup", src.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    assert!(stderr(&out).contains(&junk_snapshot), "{}", describe(&out));
    assert!(stderr(&out).contains(&junk_index), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("saved"),
        "{}",
        describe(&out)
    );

    let out = env.run(&["snapshots", "--json"]);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(list.as_array().expect("array").len(), 2, "{list}");

    restore_latest_past_skipped_objects(&env, &src, "restored");
}

/// Bytes allocated on disk for a file.
fn allocated(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(p).expect("stat").blocks() * 512
}

#[test]
fn a_sparse_file_restores_with_its_holes_not_its_chunks() {
    use std::os::unix::fs::FileExt;
    let env = Env::init();
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    let f = fs::File::create(src.join("disk.img")).expect("create");
    f.set_len(64 << 20).expect("extend");
    f.write_all_at(b"boot sector", 10 << 20).expect("write");
    f.write_all_at(b"superblock", 40 << 20).expect("write");
    drop(f);
    let source_alloc = allocated(&src.join("disk.img"));
    env.ok(&["backup", src.to_str().expect("utf8")]);
    let target = env.restore_latest_and_compare(&src, "restored");
    let restored_alloc = allocated(&restored(&target, &src).join("disk.img"));
    // Two written pages (plus file system metadata): not the chunks around them.
    assert!(
        restored_alloc <= source_alloc.max(8192) + 64 * 1024,
        "restored with {restored_alloc} bytes allocated, the source has {source_alloc}"
    );
}

#[test]
fn a_read_only_file_with_extended_attributes_restores_for_a_normal_user() {
    use std::os::unix::fs::{PermissionsExt, chown};
    let env = Env::init();
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    let file = src.join("frozen.txt");
    fs::write(&file, b"do not touch").expect("write");
    if xattr::set(&file, "user.origin", b"scanner").is_err() {
        eprintln!("skipped: this file system takes no user.* attributes");
        return;
    }
    fs::set_permissions(&file, fs::Permissions::from_mode(0o444)).expect("chmod");
    env.ok(&["backup", src.to_str().expect("utf8")]);
    // Restore as an ordinary user when the test runs as root (as CI does): root may set
    // attributes on a read-only file, which would hide the ordering.
    let target = env.path("restored");
    let mut cmd = env.cmd(&[
        "restore",
        "latest",
        "--target",
        target.to_str().expect("utf8"),
    ]);
    if support::is_root() {
        let (uid, gid) = (65534, 65534);
        fs::set_permissions(env.dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
        let out_dir = env.path("out");
        fs::create_dir(&out_dir).expect("mkdir");
        chown(&out_dir, Some(uid), Some(gid)).expect("chown");
        let pw = env.path("nobody-passphrase");
        fs::copy(&env.password_file, &pw).expect("copy");
        chown(&pw, Some(uid), Some(gid)).expect("chown");
        let target = out_dir.join("t");
        cmd = env.cmd(&[
            "restore",
            "latest",
            "--target",
            target.to_str().expect("utf8"),
        ]);
        cmd.env("CAIRN_PASSWORD_FILE", &pw)
            .env("CAIRN_CACHE_DIR", out_dir.join("cache"));
        std::os::unix::process::CommandExt::uid(&mut cmd, uid);
        std::os::unix::process::CommandExt::gid(&mut cmd, gid);
        let out = cmd.output().expect("run");
        assert!(out.status.success(), "{}", describe(&out));
        let got = restored(&target, &src).join("frozen.txt");
        assert_eq!(
            xattr::get(&got, "user.origin").expect("xattr").as_deref(),
            Some(&b"scanner"[..])
        );
        assert_eq!(
            fs::metadata(&got).expect("stat").permissions().mode() & 0o777,
            0o444
        );
        return;
    }
    let out = cmd.output().expect("run");
    assert!(out.status.success(), "{}", describe(&out));
    let got = restored(&target, &src).join("frozen.txt");
    assert_eq!(
        xattr::get(&got, "user.origin").expect("xattr").as_deref(),
        Some(&b"scanner"[..])
    );
}

/// Run a command to its end; its exit code and peak resident memory in MiB.
#[expect(
    clippy::zombie_processes,
    reason = "the child is reaped with wait4, which also reports its peak memory"
)]
fn run_measured(mut cmd: std::process::Command) -> (Option<i32>, i64, String) {
    let child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id() as i32;
    let mut stderr = child.stderr.expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    });
    let mut status = 0;
    // SAFETY: wait4 writes only into the two locals passed by pointer; pid is our child.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::wait4(pid, &mut status, 0, &mut usage);
        usage
    };
    let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    (code, usage.ru_maxrss / 1024, reader.join().expect("stderr"))
}

#[test]
fn planted_costly_keys_neither_swell_nor_stall_unlocking() {
    let env = Env::init();
    let keys = Path::new(&env.repo).join("keys");
    let good = fs::read_dir(&keys)
        .expect("keys")
        .flatten()
        .next()
        .expect("a key")
        .path();
    let mut planted = Vec::new();
    for salt_byte in 0..3u8 {
        let mut key: serde_json::Value =
            serde_json::from_slice(&fs::read(&good).expect("read")).expect("json");
        // Within the caps, each costs 1 GiB and four passes to try.
        key["kdf"]["memory_kib"] = serde_json::json!(1024 * 1024);
        key["kdf"]["iterations"] = serde_json::json!(4);
        key["created"] = serde_json::json!(format!("2026-01-0{}T00:00:00Z", salt_byte + 1));
        let bytes = serde_json::to_vec(&key).expect("json");
        let name = blake3::hash(&bytes).to_hex().to_string();
        fs::write(keys.join(&name), &bytes).expect("write");
        planted.push(name);
    }
    // A fresh machine (nothing remembered): the cheapest key, the real one, goes first.
    let (code, peak, err) = run_measured(env.cmd(&["snapshots"]));
    assert_eq!(code, Some(0), "{err}");
    assert!(
        peak < 512,
        "unlocking peaked at {peak} MiB: a planted key was tried first"
    );
    // A wrong passphrase tries keys cheapest first within a budget, then names the rest.
    let wrong = env.path("wrong");
    fs::write(&wrong, "nope").expect("write");
    fs::set_permissions(&wrong, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    let mut cmd = env.cmd(&["snapshots"]);
    cmd.env("CAIRN_PASSWORD_FILE", &wrong);
    let started = std::time::Instant::now();
    let (code, _, err) = run_measured(cmd);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("were not tried"), "{err}");
    assert!(
        planted.iter().filter(|n| err.contains(n.as_str())).count() >= 2,
        "the untried keys are named: {err}"
    );
    eprintln!(
        "wrong passphrase with planted keys: {:?}",
        started.elapsed()
    );
}

#[test]
fn a_link_or_a_fifo_planted_among_snapshots_or_index_objects_is_skipped_too() {
    let env = Env::init();
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    fs::write(src.join("a.txt"), b"first").expect("write");
    env.ok(&["backup", src.to_str().expect("utf8")]);
    let objects = env.objects_dir();
    let link = format!("snapshots/{}", "d".repeat(64));
    std::os::unix::fs::symlink("/dev/zero", objects.join(&link)).expect("symlink");
    let fifo = format!("index/{}", "c".repeat(64));
    let c = std::ffi::CString::new(objects.join(&fifo).to_str().expect("utf8")).expect("path");
    // SAFETY: mkfifo reads a NUL-terminated path that lives across the call.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    fs::write(src.join("b.txt"), b"second").expect("write");
    let out = env.run(&["backup", src.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    assert!(
        stderr(&out).contains(&link) && stderr(&out).contains(&fifo),
        "{}",
        describe(&out)
    );
    restore_latest_past_skipped_objects(&env, &src, "restored-after-junk");
}

#[test]
fn a_prune_with_a_resurrected_index_object_keeps_the_live_copy() {
    // Whether the old index object is listed before the live one depends on their names
    // (content hashes); a few rounds make it all but certain that one lists it first.
    for round in 0..4u64 {
        let env = Env::init();
        let src = env.path("src");
        fs::create_dir_all(&src).expect("mkdir");
        fs::write(src.join("letter.txt"), pseudo_random(50_000, 20 + round)).expect("write");
        let out = env.ok(&["backup", src.to_str().expect("utf8")]);
        let id = out.split_whitespace().nth(1).expect("id").to_string();
        let saved = env.path("saved-index");
        copy_dir(&env.objects_dir().join("index"), &saved);
        env.ok(&["forget", &id]);
        env.ok(&["prune", "--grace", "0s"]);
        env.ok(&["prune", "--grace", "0s"]);
        // The same data again, in a new pack; then the old index object comes back.
        env.ok(&["backup", src.to_str().expect("utf8")]);
        copy_dir(&saved, &env.objects_dir().join("index"));
        env.ok(&["prune", "--grace", "0s"]);
        env.ok(&["prune", "--grace", "0s"]);
        let check = env.run(&["check", "--read-data"]);
        assert!(
            check.status.success(),
            "round {round}: {}",
            describe(&check)
        );
        env.restore_latest_and_compare(&src, &format!("restored-{round}"));
    }
}

/// Run with a time limit: a run past it is killed and fails the test (a hang is the bug).
fn run_within(mut cmd: std::process::Command, limit: std::time::Duration) -> std::process::Output {
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let start = std::time::Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the command ran for more than {limit:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

#[test]
fn objects_that_are_links_to_devices_or_too_large_are_refused_before_they_are_read() {
    let env = Env::init();
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    fs::write(src.join("a.txt"), b"kept").expect("write");
    env.ok(&["backup", src.to_str().expect("utf8")]);
    let objects = env.objects_dir();
    // A snapshot object far larger than any snapshot: skipped as damaged, unread.
    let big = format!("snapshots/{}", "b".repeat(64));
    let f = fs::File::create(objects.join(&big)).expect("create");
    f.set_len(4 << 30).expect("extend");
    drop(f);
    let out = run_within(env.cmd(&["snapshots"]), std::time::Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    assert!(stderr(&out).contains(&big), "{}", describe(&out));
    fs::remove_file(objects.join(&big)).expect("remove");
    // `config` swapped for a link to /dev/zero: refused at once, before any passphrase.
    fs::remove_file(objects.join("config")).expect("remove");
    std::os::unix::fs::symlink("/dev/zero", objects.join("config")).expect("symlink");
    let out = run_within(env.cmd(&["snapshots"]), std::time::Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        stderr(&out).contains("config") && stderr(&out).contains("symbolic link"),
        "{}",
        describe(&out)
    );
}
