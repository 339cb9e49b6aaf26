//! restic's everyday verbs, tried as a restic user would: `copy` to a second bucket on
//! the same keys (identical objects; a second run sends nothing; a run cut short sends
//! only what it had not stored) and to one on other keys (the same tree restores);
//! `tag`; `rewrite` away a file and prune it.

use crate::support::{self, Env, Kind, pseudo_random};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// A small tree with text, a few MiB of incompressible data and a secret.
fn corpus(env: &Env) -> PathBuf {
    let src = env.path("src");
    fs::create_dir_all(src.join("docs/deep")).expect("mkdir");
    fs::write(src.join("docs/notes.txt"), "notes\n".repeat(500)).expect("write");
    fs::write(src.join("docs/deep/big.bin"), pseudo_random(3 << 20, 7)).expect("write");
    fs::write(src.join("secret.txt"), "hunter2\n").expect("write");
    src
}

/// Every content object of a repository (packs, index objects, snapshots) by path,
/// with its bytes: what a replica must hold identically.
fn content_objects(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for kind in ["data", "index", "snapshots"] {
        for f in support::walk_files(&root.join(kind)) {
            let rel = f
                .strip_prefix(root)
                .expect("inside")
                .to_string_lossy()
                .into_owned();
            if !rel.rsplit('/').next().unwrap_or_default().starts_with('.') {
                out.insert(rel, fs::read(&f).expect("read"));
            }
        }
    }
    out
}

/// PUT requests the server received so far for objects of `kind` (`data`, `index`, ...).
fn puts(env: &Env, kind: &str) -> usize {
    let server = env.server.as_ref().expect("an S3 env");
    server
        .seen()
        .iter()
        .filter(|r| r.method == "PUT" && r.target.contains(&format!("/{kind}/")))
        .count()
}

/// How many entries the list `key` of a summary has.
fn count(summary: &serde_json::Value, key: &str) -> Option<usize> {
    summary[key].as_array().map(Vec::len)
}

fn json_summary(out: &str) -> serde_json::Value {
    let lines = support::json_lines(out).expect("JSON lines");
    lines.last().cloned().expect("a summary line")
}

#[test]
fn a_copy_to_a_bucket_on_the_same_keys_is_identical_and_a_second_run_sends_nothing() {
    let src_env = Env::init();
    let src = corpus(&src_env);
    let s = src.to_str().expect("utf8");
    src_env.ok(&["backup", s, "--tag", "first"]);
    fs::write(src.join("docs/more.txt"), pseudo_random(1 << 20, 9)).expect("write");
    src_env.ok(&["backup", s]);

    let dst = Env::with(Kind::S3);
    dst.ok(&["init", "--from-repo", &src_env.repo]);
    // The older snapshot first, then everything: only what the target lacks goes.
    let first =
        json_summary(&dst.ok(&["copy", "--from-repo", &src_env.repo, "--json", "latest~1"]));
    assert_eq!(first["same_keys"], true, "{first}");
    assert_eq!(count(&first, "snapshots_copied"), Some(1), "{first}");
    let data_puts = puts(&dst, "data");
    let all = json_summary(&dst.ok(&["copy", "--from-repo", &src_env.repo, "--json"]));
    assert_eq!(count(&all, "snapshots_copied"), Some(1), "{all}");
    assert_eq!(count(&all, "snapshots_already_there"), Some(1), "{all}");
    assert!(
        puts(&dst, "data") - data_puts <= 2,
        "the second snapshot added one data pack and one tree pack, yet {} packs were sent",
        puts(&dst, "data") - data_puts
    );
    // The replica holds the very objects of its source.
    let there = content_objects(&dst.objects_dir());
    let here = content_objects(Path::new(&src_env.repo));
    assert_eq!(
        there.keys().collect::<Vec<_>>(),
        here.keys().collect::<Vec<_>>(),
        "the replica's objects are not the source's"
    );
    assert!(
        there == here,
        "an object's bytes differ between source and replica"
    );
    // A second run sends nothing at all.
    let before = dst
        .server
        .as_ref()
        .expect("s3")
        .seen()
        .iter()
        .filter(|r| r.method == "PUT")
        .count();
    let again = json_summary(&dst.ok(&["copy", "--from-repo", &src_env.repo, "--json"]));
    assert_eq!(count(&again, "snapshots_copied"), Some(0), "{again}");
    assert_eq!(again["bytes_sent"], 0, "{again}");
    let after = dst
        .server
        .as_ref()
        .expect("s3")
        .seen()
        .iter()
        .filter(|r| r.method == "PUT")
        .count();
    assert_eq!(after, before, "a second copy uploaded something");
    dst.restore_latest_and_compare(&src, "restored");
    dst.ok(&["check", "--read-data"]);
}

#[test]
fn copying_the_latest_snapshot_first_and_then_all_leaves_nothing_of_the_older_behind() {
    // The older snapshot holds a folder the newer one lacks; the newer one shares the
    // older one's tree pack. Copying the newer one must not make the target take the
    // older one's trees for whole.
    // Packs of 1 MiB: the newer snapshot's data (a.txt) shares a pack with only part of
    // the older one's big.bin.
    let src_env = Env::new();
    src_env.ok(&["init", "--pack-size", "1"]);
    let src = src_env.path("src");
    fs::create_dir_all(src.join("keep")).expect("mkdir");
    fs::create_dir_all(src.join("old")).expect("mkdir");
    fs::write(src.join("keep/a.txt"), "kept\n").expect("write");
    fs::write(src.join("old/big.bin"), pseudo_random(6 << 20, 11)).expect("write");
    let s = src.to_str().expect("utf8");
    src_env.ok(&["backup", s]);
    let older = src_env.path("older");
    support::copy_dir(&src, &older);
    fs::remove_dir_all(src.join("old")).expect("rm");
    src_env.ok(&["backup", s]);

    let dst = Env::with(Kind::S3);
    dst.ok(&["init", "--from-repo", &src_env.repo]);
    dst.ok(&["copy", "--from-repo", &src_env.repo, "latest"]);
    dst.ok(&["copy", "--from-repo", &src_env.repo]);
    assert_eq!(support::snapshot_ids(&dst).len(), 2);
    dst.ok(&["check", "--read-data"]);
    let target = dst.path("restored-older");
    dst.restore_from(&dst.repo, "latest~1", &target);
    let back = support::restored(&target, &src);
    for f in ["old/big.bin", "keep/a.txt"] {
        assert!(
            fs::read(back.join(f)).ok() == fs::read(older.join(f)).ok(),
            "{f} of the older snapshot did not come back from the copy"
        );
    }
}

#[test]
fn a_copy_cut_short_after_its_packs_sends_no_pack_again() {
    let src_env = Env::init();
    let src = corpus(&src_env);
    src_env.ok(&["backup", src.to_str().expect("utf8")]);
    let dst = Env::with(Kind::S3);
    dst.ok(&["init", "--from-repo", &src_env.repo]);
    dst.ok(&["copy", "--from-repo", &src_env.repo]);
    // What a copy killed after its packs leaves: packs, but no index object naming
    // them and no snapshot.
    for kind in ["index", "snapshots"] {
        fs::remove_dir_all(dst.objects_dir().join(kind)).expect("remove");
    }
    assert!(support::snapshot_ids(&dst).is_empty());
    let packs = puts(&dst, "data");
    let out = json_summary(&dst.ok(&["copy", "--from-repo", &src_env.repo, "--json"]));
    assert_eq!(count(&out, "snapshots_copied"), Some(1), "{out}");
    assert_eq!(
        puts(&dst, "data"),
        packs,
        "packs already in the target were sent again: {out}"
    );
    assert!(out["packs_found"].as_u64().unwrap_or(0) >= 2, "{out}");
    assert_eq!(
        content_objects(&dst.objects_dir()),
        content_objects(Path::new(&src_env.repo)),
        "the resumed replica is not identical"
    );
    dst.restore_latest_and_compare(&src, "restored");
}

#[test]
fn a_copy_between_buckets_on_other_keys_restores_the_same_tree() {
    let src_env = Env::init_on(Kind::S3);
    let src = corpus(&src_env);
    src_env.ok(&["backup", src.to_str().expect("utf8"), "--tag", "t1"]);
    let dst = Env::with(Kind::S3);
    fs::write(&dst.password_file, "another passphrase\n").expect("write");
    dst.ok(&["init"]);
    let from_pass = src_env.password_file.to_str().expect("utf8");
    let copy = [
        "copy",
        "--from-repo",
        &src_env.repo,
        "--from-password-file",
        from_pass,
        "--json",
    ];
    let out = json_summary(&dst.ok(&copy));
    assert_eq!(out["same_keys"], false, "{out}");
    let copied = out["snapshots_copied"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(copied.len(), 1, "{out}");
    let target = dst.path("restored");
    dst.restore_from(&dst.repo, "latest", &target);
    support::assert_same_tree(&src, &support::restored(&target, &src));
    let listed = support::json_lines(&dst.ok(&["snapshots", "--json"])).expect("json");
    let snap = listed[0]
        .as_array()
        .and_then(|a| a.first())
        .cloned()
        .unwrap_or_default();
    assert_eq!(snap["original"], copied[0]["from"], "{snap}");
    assert_eq!(snap["tags"], serde_json::json!(["t1"]), "{snap}");
    // Again, the source's passphrase from a command this time: nothing is copied,
    // nothing is sent.
    let before = puts(&dst, "data") + puts(&dst, "snapshots") + puts(&dst, "index");
    let command = format!("cat {from_pass}");
    let again = json_summary(&dst.ok(&[
        "copy",
        "--from-repo",
        &src_env.repo,
        "--from-password-command",
        &command,
        "--json",
    ]));
    assert_eq!(count(&again, "snapshots_copied"), Some(0), "{again}");
    assert_eq!(
        puts(&dst, "data") + puts(&dst, "snapshots") + puts(&dst, "index"),
        before
    );
    // A secret rewritten away in the source: the rewritten snapshot is a new one for the
    // target too (its time, host, paths and tags are the old one's).
    src_env.ok(&["rewrite", "--exclude", "secret.txt", "--forget"]);
    let after = json_summary(&dst.ok(&copy));
    assert_eq!(count(&after, "snapshots_copied"), Some(1), "{after}");
    // Same time as the copy of the original: restore the new copy by its id.
    let new_copy = after["snapshots_copied"][0]["to"]
        .as_str()
        .expect("id")
        .to_string();
    let target = dst.path("rewritten");
    dst.restore_from(&dst.repo, &new_copy, &target);
    let back = support::restored(&target, &src);
    assert!(back.join("docs/notes.txt").exists());
    assert!(
        !back.join("secret.txt").exists(),
        "the copy still holds the secret"
    );
    dst.ok(&["check", "--read-data"]);
}

#[test]
fn tag_gives_a_new_id_keeps_the_time_and_removes_the_old_snapshot() {
    let env = Env::init();
    let src = corpus(&env);
    env.ok(&["backup", src.to_str().expect("utf8"), "--tag", "daily"]);
    let before = support::snapshot_ids(&env);
    let list = |env: &Env| {
        support::json_lines(&env.ok(&["snapshots", "--json"])).expect("json")[0]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let old = list(&env)[0].clone();
    env.ok(&["tag", "--add", "keep,audit", "latest"]);
    let after = list(&env);
    assert_eq!(
        after.len(),
        1,
        "the old snapshot was not removed: {after:?}"
    );
    let new = &after[0];
    assert_ne!(new["id"], old["id"]);
    assert_eq!(new["time"], old["time"]);
    assert_eq!(new["tree"], old["tree"]);
    assert_eq!(new["original"], serde_json::json!(before[0]));
    assert_eq!(new["tags"], serde_json::json!(["daily", "keep", "audit"]));
    env.ok(&["tag", "--remove", "daily", "--tag", "keep"]);
    env.ok(&["tag", "--set", "x"]);
    let last = list(&env);
    assert_eq!(last[0]["tags"], serde_json::json!(["x"]));
    assert_eq!(
        last[0]["original"],
        serde_json::json!(before[0]),
        "the first id is kept"
    );
    // `--host` narrows what `latest` means, as in restic.
    env.ok(&[
        "backup",
        src.to_str().expect("utf8"),
        "--host",
        "other",
        "--time",
        "2020-01-01T00:00:00Z",
    ]);
    env.ok(&["tag", "--host", "other", "--add", "theirs", "latest"]);
    let both = list(&env);
    let theirs: Vec<_> = both
        .iter()
        .filter(|s| s["tags"] == serde_json::json!(["theirs"]))
        .collect();
    assert_eq!(theirs.len(), 1, "{both:?}");
    assert_eq!(theirs[0]["hostname"], "other");
    env.ok(&["forget", theirs[0]["id"].as_str().expect("id")]);
    // Nothing to change: nothing is written.
    let out = env.ok(&["tag", "--add", "x"]);
    assert!(out.contains("0 snapshots changed"), "{out}");
    assert_eq!(list(&env)[0]["id"], last[0]["id"]);
}

#[test]
fn rewrite_removes_a_file_and_a_prune_frees_its_space() {
    let env = Env::init();
    let src = corpus(&env);
    env.ok(&["backup", src.to_str().expect("utf8")]);
    let stored = || -> u64 {
        support::walk_files(&Path::new(&env.repo).join("data"))
            .iter()
            .map(|f| fs::metadata(f).map(|m| m.len()).unwrap_or(0))
            .sum()
    };
    let full = stored();
    // A dry run lists and changes nothing.
    let ids = support::snapshot_ids(&env);
    let dry = env.ok(&[
        "rewrite",
        "--exclude",
        "big.bin",
        "--exclude",
        "/**/secret.txt",
        "--dry-run",
    ]);
    assert!(
        dry.contains("big.bin") && dry.contains("secret.txt"),
        "{dry}"
    );
    assert_eq!(support::snapshot_ids(&env), ids);
    // The same patterns as a restic user keeps them: a file, and any case.
    let patterns = env.path("excludes.txt");
    fs::write(&patterns, "# never backed up\n/**/secret.txt\n").expect("write");
    let out = env.ok(&[
        "rewrite",
        "--iexclude",
        "BIG.BIN",
        "--exclude-file",
        patterns.to_str().expect("utf8"),
        "--forget",
    ]);
    assert!(out.contains("1 snapshot rewritten"), "{out}");
    let now = support::snapshot_ids(&env);
    assert_eq!(now.len(), 1);
    assert_ne!(now, ids, "the original is still there");
    let target = env.path("restored");
    env.restore_from(&env.repo, "latest", &target);
    let back = support::restored(&target, &src);
    assert!(back.join("docs/notes.txt").exists());
    assert!(
        !back.join("docs/deep/big.bin").exists(),
        "big.bin is still in the snapshot"
    );
    assert!(
        !back.join("secret.txt").exists(),
        "secret.txt is still in the snapshot"
    );
    env.ok(&["prune", "--grace", "0s"]);
    env.ok(&["prune", "--grace", "0s"]);
    let after = stored();
    assert!(
        after + (3 << 20) - (256 << 10) <= full,
        "prune freed {} bytes of {full}; big.bin alone is 3 MiB",
        full - after
    );
    env.ok(&["check", "--read-data"]);
    // Nothing left to match: nothing is rewritten.
    let again = env.ok(&["rewrite", "--exclude", "big.bin"]);
    assert!(again.contains("0 snapshots rewritten"), "{again}");
}
