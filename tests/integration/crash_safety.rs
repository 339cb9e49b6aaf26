//! A backup killed or failing at any moment leaves the repository as it was (plus
//! unreferenced packs), every earlier snapshot restorable, and the next run completes.

use crate::support;

use std::fs;
use std::time::Duration;
use support::{Env, describe, pseudo_random, restored};

fn snapshot_count(env: &Env) -> usize {
    let v: serde_json::Value =
        serde_json::from_str(&env.ok(&["snapshots", "--json"])).expect("json");
    v.as_array().expect("array").len()
}

#[test]
fn backup_killed_midway_leaves_repository_usable() {
    let env = Env::new();
    env.ok(&["init", "--pack-size", "1"]);
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    fs::write(src.join("first"), "first version").expect("write");
    env.ok(&["backup", src.to_str().expect("utf8")]);

    for i in 0..24u64 {
        fs::write(src.join(format!("big{i}")), pseudo_random(8 << 20, i + 7)).expect("write");
    }
    // Kill at several points of the run; each time the repository must stay consistent.
    let mut killed = 0;
    for delay_ms in [150u64, 400, 900] {
        let mut child = env
            .cmd(&["backup", src.to_str().expect("utf8")])
            .spawn()
            .expect("spawn");
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let status = child.wait().expect("wait");
        if status.success() {
            // Finished before the kill: still a valid outcome, nothing more to prove here.
            continue;
        }
        killed += 1;
        let target = env.path(&format!("t{delay_ms}"));
        let id = serde_json::from_str::<serde_json::Value>(&env.ok(&["snapshots", "--json"]))
            .expect("json")[0]["id"]
            .as_str()
            .expect("id")
            .to_string();
        env.ok(&["restore", &id, "--target", target.to_str().expect("utf8")]);
        assert_eq!(
            fs::read(restored(&target, &src).join("first")).expect("read"),
            b"first version"
        );
    }
    assert!(
        killed > 0,
        "every backup finished before its kill: the test proved nothing (make the data larger)"
    );
    // The next run completes and its snapshot is whole.
    env.ok(&["backup", src.to_str().expect("utf8")]);
    env.restore_latest_and_compare(&src, "final");
}

#[test]
fn failing_storage_write_fails_backup_without_a_snapshot() {
    let env = Env::init();
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    fs::write(src.join("f"), pseudo_random(3 << 20, 1)).expect("write");
    let before = snapshot_count(&env);
    // Make every pack write fail: `data` becomes a plain file.
    let data = std::path::Path::new(&env.repo).join("data");
    let _ = fs::remove_dir_all(&data);
    fs::write(&data, "in the way").expect("write");
    let out = env.run(&["backup", src.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("data/"),
        "error should name the object: {}",
        describe(&out)
    );
    assert_eq!(
        snapshot_count(&env),
        before,
        "no snapshot may point at unwritten packs"
    );

    fs::remove_file(&data).expect("rm");
    env.ok(&["backup", src.to_str().expect("utf8")]);
    env.restore_latest_and_compare(&src, "t");
}
