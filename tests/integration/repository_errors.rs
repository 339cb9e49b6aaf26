//! Bad input gets a specific error that names the thing and the fix, with the documented
//! exit code, and nothing is written. Also key management.

use crate::support;

use std::fs;
use support::{Env, describe, stderr};

fn repo_files(env: &Env) -> Vec<String> {
    let mut v = Vec::new();
    fn walk(p: &std::path::Path, v: &mut Vec<String>) {
        if let Ok(rd) = fs::read_dir(p) {
            for e in rd.flatten() {
                v.push(e.path().to_string_lossy().into_owned());
                walk(&e.path(), v);
            }
        }
    }
    walk(std::path::Path::new(&env.repo), &mut v);
    v.sort();
    v
}

#[test]
fn missing_repository_exits_10_and_says_how_to_create_one() {
    let env = Env::new();
    let out = env.run(&["snapshots"]);
    assert_eq!(out.status.code(), Some(10), "{}", describe(&out));
    assert!(stderr(&out).contains("cairn init"), "{}", describe(&out));
    assert!(
        !std::path::Path::new(&env.repo).exists(),
        "a failed open must not create it"
    );
}

#[test]
fn wrong_passphrase_exits_12_and_writes_nothing() {
    let env = Env::init();
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    fs::write(src.join("f"), "x").expect("write");
    let before = repo_files(&env);
    let wrong = env.path("wrong");
    fs::write(&wrong, "not it\n").expect("write");
    fs::set_permissions(&wrong, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    let out = env
        .cmd(&["backup", src.to_str().expect("utf8")])
        .env("CAIRN_PASSWORD_FILE", &wrong)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(12), "{}", describe(&out));
    assert!(
        stderr(&out).contains("wrong passphrase"),
        "{}",
        describe(&out)
    );
    assert_eq!(before, repo_files(&env));
}

#[test]
fn password_sources_are_taken_in_order() {
    let env = Env::init();
    // CAIRN_PASSWORD works when no file is named.
    let out = env
        .cmd(&["snapshots"])
        .env_remove("CAIRN_PASSWORD_FILE")
        .env("CAIRN_PASSWORD", "test passphrase")
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", describe(&out));
    // --password-file wins over CAIRN_PASSWORD_FILE.
    let wrong = env.path("wrong");
    fs::write(&wrong, "nope").expect("write");
    fs::set_permissions(&wrong, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    let out = env.run(&[
        "snapshots",
        "--password-file",
        wrong.to_str().expect("utf8"),
    ]);
    assert_eq!(out.status.code(), Some(12), "{}", describe(&out));
    // No source and no terminal: a clear error, not a hang.
    let out = env
        .cmd(&["snapshots"])
        .env_remove("CAIRN_PASSWORD_FILE")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("--password-file"),
        "{}",
        describe(&out)
    );
    // An unreadable password file is named.
    let out = env.run(&["snapshots", "--password-file", "/nonexistent/pw"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("/nonexistent/pw"),
        "{}",
        describe(&out)
    );
}

#[test]
fn unsupported_version_and_foreign_config_are_refused_before_any_passphrase() {
    let env = Env::new();
    fs::create_dir_all(&env.repo).expect("mkdir");
    let config = std::path::Path::new(&env.repo).join("config");
    fs::write(&config, r#"{"format":"cairn-repository","version":7}"#).expect("write");
    let out = env
        .cmd(&["snapshots"])
        .env_remove("CAIRN_PASSWORD_FILE")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("version 7") && err.contains("versions 1 to 3"),
        "{err}"
    );

    fs::write(&config, b"\x00\x01restic-config").expect("write");
    let out = env.run(&["snapshots"]);
    assert!(
        stderr(&out).contains("not a cairn repository"),
        "{}",
        describe(&out)
    );
}

#[test]
fn init_refuses_an_existing_repository() {
    let env = Env::init();
    let before = repo_files(&env);
    let out = env.run(&["init"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("already holds"), "{}", describe(&out));
    assert_eq!(before, repo_files(&env));
}

#[test]
fn keys_can_be_added_changed_and_removed_without_touching_data() {
    let env = Env::init();
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    fs::write(src.join("f"), "data").expect("write");
    env.ok(&["backup", src.to_str().expect("utf8")]);

    let second = env.path("second");
    fs::write(&second, "second passphrase\n").expect("write");
    fs::set_permissions(&second, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    env.ok(&[
        "key",
        "add",
        "--new-password-file",
        second.to_str().expect("utf8"),
    ]);
    let list: serde_json::Value =
        serde_json::from_str(&env.ok(&["key", "list", "--json"])).expect("json");
    assert_eq!(list.as_array().expect("array").len(), 2);
    let first_id = list
        .as_array()
        .expect("array")
        .iter()
        .find(|k| k["current"] == true)
        .expect("current key")["id"]
        .as_str()
        .expect("id")
        .to_string();

    // The key in use cannot be removed.
    let out = env.run(&["key", "remove", &first_id[..10]]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("opened the repository with"),
        "{}",
        describe(&out)
    );

    // Opened with the second passphrase, the first key can go.
    let with_second = |args: &[&str]| {
        env.cmd(args)
            .env("CAIRN_PASSWORD_FILE", &second)
            .output()
            .expect("run")
    };
    let out = with_second(&["key", "remove", &first_id[..10]]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        env.run(&["snapshots"]).status.code(),
        Some(12),
        "old passphrase still works"
    );

    // passwd replaces the key in use; data stays readable.
    let third = env.path("third");
    fs::write(&third, "third passphrase\n").expect("write");
    fs::set_permissions(&third, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    let out = with_second(&[
        "key",
        "passwd",
        "--new-password-file",
        third.to_str().expect("utf8"),
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(with_second(&["snapshots"]).status.code(), Some(12));
    let target = env.path("t");
    let out = env
        .cmd(&[
            "restore",
            "latest",
            "--target",
            target.to_str().expect("utf8"),
        ])
        .env("CAIRN_PASSWORD_FILE", &third)
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        fs::read(support::restored(&target, &src).join("f")).expect("read"),
        b"data"
    );
}

#[test]
fn snapshot_selection_errors_are_specific() {
    let env = Env::init();
    let out = env.run(&["ls", "latest"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no snapshot matches"),
        "{}",
        describe(&out)
    );
    let out = env.run(&["ls", "not-hex"]);
    assert!(
        stderr(&out).contains("not a snapshot id"),
        "{}",
        describe(&out)
    );
}

#[test]
fn a_hostile_key_object_does_not_lock_out_the_good_ones() {
    let env = Env::init();
    let keys = std::path::Path::new(&env.repo).join("keys");
    let good = fs::read_dir(&keys)
        .expect("keys")
        .flatten()
        .next()
        .expect("a key")
        .path();
    let mut key: serde_json::Value =
        serde_json::from_slice(&fs::read(&good).expect("read")).expect("json");
    // Parameters that would make unlocking allocate 4 TiB if they were obeyed.
    key["kdf"]["memory_kib"] = serde_json::json!(u32::MAX);
    let bytes = serde_json::to_vec(&key).expect("json");
    let name = blake3::hash(&bytes).to_hex().to_string();
    // Sorted before the good key in any listing order that follows names.
    fs::write(keys.join(&name), &bytes).expect("write");
    let out = env.run(&["snapshots"]);
    assert!(out.status.success(), "{}", describe(&out));
    // With a wrong passphrase, the damaged key is named rather than hidden.
    let wrong = env.path("wrong");
    fs::write(&wrong, "nope").expect("write");
    fs::set_permissions(&wrong, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    let out = env
        .cmd(&["snapshots"])
        .env("CAIRN_PASSWORD_FILE", &wrong)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(stderr(&out).contains(&name), "{}", describe(&out));
}

/// `--repo backups` (relative, as a user types it) works from the folder it names: init,
/// backup and restore, with the repository created beside the command's working directory.
#[test]
fn a_relative_local_repository_path_works() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(src.join("d")).expect("mkdir");
    fs::write(src.join("d/f"), "relative").expect("write");
    let run = |args: &[&str]| {
        let out = env
            .cmd(args)
            .env("CAIRN_REPOSITORY", "backups")
            .current_dir(env.dir.path())
            .output()
            .expect("run cairn");
        assert!(out.status.success(), "{args:?}: {}", describe(&out));
    };
    run(&["init"]);
    assert!(env.path("backups/config").is_file(), "no config beside cwd");
    run(&["backup", src.to_str().expect("utf8")]);
    run(&["restore", "latest", "--target", "out"]);
    let back = support::restored(&env.path("out"), &src);
    assert_eq!(fs::read(back.join("d/f")).expect("read"), b"relative");
}
