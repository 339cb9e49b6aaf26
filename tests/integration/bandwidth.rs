//! Bandwidth limits, timed on a real repository: `--limit-download` (restic's flag, in
//! KiB/s) and `-o download-limit` pace a restore and `check --read-data`, and
//! `--limit-upload` a backup. Only lower bounds are asserted, with margins: a loaded
//! machine can make anything slower, but no amount of load makes a paced transfer faster.

use crate::support;

use std::fs;
use std::time::{Duration, Instant};
use support::{Env, describe, pseudo_random};

/// 4 MiB that does not compress, and a repository holding it.
fn four_mib() -> (Env, std::path::PathBuf) {
    let env = Env::init();
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    fs::write(src.join("big"), pseudo_random(4 << 20, 11)).expect("write");
    env.ok(&["backup", src.to_str().expect("utf8")]);
    (env, src)
}

/// Run `args`, insisting on success; how long it took.
fn timed(env: &Env, args: &[&str]) -> Duration {
    let t = Instant::now();
    let out = env.run(args);
    assert!(out.status.success(), "{args:?}: {}", describe(&out));
    t.elapsed()
}

#[test]
fn limit_download_paces_a_restore_and_a_read_of_all_data() {
    let (env, src) = four_mib();
    let target = |name: &str| env.path(name).to_str().expect("utf8").to_string();
    let free = timed(&env, &["restore", "latest", "--target", &target("free")]);
    // 4 MiB at 1024 KiB/s: at least 4 s of reads, whatever else the restore does.
    let paced = timed(
        &env,
        &[
            "restore",
            "latest",
            "--target",
            &target("paced"),
            "--limit-download",
            "1024",
        ],
    );
    assert!(
        paced >= Duration::from_millis(3500),
        "a 4 MiB restore at 1024 KiB/s took {paced:?} (unlimited: {free:?})"
    );
    support::assert_same_tree(&src, &support::restored(&env.path("paced"), &src));
    let paced = timed(&env, &["check", "--read-data", "-o", "download-limit=2MiB"]);
    assert!(
        paced >= Duration::from_millis(1700),
        "reading 4 MiB at 2 MiB/s took {paced:?}"
    );
}

#[test]
fn limit_upload_paces_a_backup() {
    let env = Env::init();
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    fs::write(src.join("big"), pseudo_random(3 << 20, 12)).expect("write");
    // 3 MiB at 1024 KiB/s: what follows the pack (its index, the snapshot) waits 3 s.
    let paced = timed(
        &env,
        &[
            "backup",
            src.to_str().expect("utf8"),
            "--limit-upload",
            "1024",
        ],
    );
    assert!(
        paced >= Duration::from_millis(2500),
        "a 3 MiB backup at 1024 KiB/s took {paced:?}"
    );
}
