//! What a person reads after a command: counts in English ("1 file", not "1 files"),
//! times in UTC that say so, and a backup summary that counts the files removed since
//! the parent snapshot, in its text and its JSON.

use crate::support;

use std::fs;
use support::{Env, describe};

#[test]
fn the_backup_summary_counts_removed_files_in_english() {
    let env = Env::init();
    let src = env.path("src");
    fs::create_dir_all(src.join("d")).expect("mkdir");
    for f in ["a", "b", "d/c"] {
        fs::write(src.join(f), f).expect("write");
    }
    let s = src.to_str().expect("utf8");
    env.ok(&["backup", s]);

    fs::remove_file(src.join("a")).expect("rm");
    let out = env.run(&["backup", s]);
    assert!(out.status.success(), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("removed 1 file ("), "{err}");
    assert!(err.contains("Total:   2 files,"), "{err}");

    fs::remove_dir_all(src.join("d")).expect("rm");
    let out = env.run(&["backup", s]);
    let err = String::from_utf8_lossy(&out.stderr);
    // One file left: singular.
    assert!(err.contains("Total:   1 file,"), "{err}");
    assert!(err.contains("removed 1 file ("), "{err}");

    fs::write(src.join("new"), "n").expect("write");
    let (_, sum) = env.backup_json(&[&src], &[]);
    assert_eq!(sum["files_removed"], 0, "{sum}");
    fs::remove_file(src.join("new")).expect("rm");
    fs::remove_file(src.join("b")).expect("rm");
    let (_, sum) = env.backup_json(&[&src], &[]);
    assert_eq!(sum["files_removed"], 2, "{sum}");
}

#[test]
fn snapshot_times_are_utc_and_say_so() {
    let env = Env::init();
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    fs::write(src.join("f"), "x").expect("write");
    let s = src.to_str().expect("utf8");
    // Recorded with an offset of +02:00: shown converted, in UTC.
    env.ok(&["backup", "--time", "2026-01-31T16:00:00+02:00", s]);
    let table = env.ok(&["snapshots"]);
    assert!(table.contains("2026-01-31 14:00:00 UTC"), "{table}");
    assert!(table.ends_with("\n1 snapshot\n"), "{table}");
    let stats = env.ok(&["stats"]);
    assert!(stats.contains("2026-01-31 14:00:00 UTC"), "{stats}");
    let found = env.ok(&["find", "f"]);
    assert!(found.contains("of 2026-01-31 14:00:00 UTC"), "{found}");
    assert!(found.contains("1 match in 1 of 1 snapshot"), "{found}");
    let long = env.ok(&["ls", "latest", s, "-l"]);
    assert!(long.lines().all(|l| l.contains(" UTC ")), "{long}");
}
