//! Choosing how blobs are compressed: `backup --compression` and `CAIRN_COMPRESSION`, a
//! repository default set by `init --compression` or `cairn compression` (format version
//! 3), a daemon destination's `compression`, and each snapshot's ratio in `stats`. Every
//! test runs the real binary on real repositories and reads back what they store.

use crate::support;

use std::path::Path;
use std::time::Duration;
use support::daemon::{Daemon, QUICK_SCHEDULE, destination_table, settled, write_config};
use support::{Env, describe, json_lines, stderr};

/// Text that compresses well but not trivially: words from a small vocabulary in a
/// fixed pseudo-random order, with numbers among them, so higher levels find more.
fn prose(len: usize, seed: u32) -> Vec<u8> {
    const WORDS: [&str; 16] = [
        "cairn ", "stores ", "blobs ", "in ", "packs ", "sealed ", "with ", "keys ", "and ",
        "the ", "index ", "says ", "where ", "each ", "one ", "lies ",
    ];
    let mut x: u32 = 0x9e37_79b9 ^ seed;
    let mut out = Vec::with_capacity(len + 16);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        out.extend_from_slice(WORDS[(x % 16) as usize].as_bytes());
        if x.is_multiple_of(7) {
            out.extend_from_slice(format!("{} ", x % 1000).as_bytes());
        }
    }
    out.truncate(len);
    out
}

/// A folder of text files, `len` bytes in all, different for each `seed`.
fn text_folder(dir: &Path, len: usize, seed: u32) {
    std::fs::create_dir_all(dir.join("sub")).expect("mkdir");
    std::fs::write(dir.join("a.txt"), prose(len / 2, seed)).expect("write");
    std::fs::write(dir.join("sub/b.txt"), prose(len - len / 2, seed + 1)).expect("write");
}

/// Bytes of every pack the repository holds.
fn pack_bytes(env: &Env) -> u64 {
    support::walk_files(&env.objects_dir().join("data"))
        .iter()
        .map(|p| std::fs::metadata(p).expect("pack").len())
        .sum()
}

/// The repository's stored `config`, as JSON.
fn config(env: &Env) -> serde_json::Value {
    let text = std::fs::read(env.objects_dir().join("config")).expect("config");
    serde_json::from_slice(&text).expect("config JSON")
}

/// `stats --json`'s summary.
fn stats(env: &Env) -> serde_json::Value {
    let out = env.ok(&["stats", "--json"]);
    json_lines(&out)
        .expect("JSON lines")
        .pop()
        .expect("a summary")
}

/// Snapshot `i`'s compression ratio (oldest first) in `stats --json`.
fn ratio(stats: &serde_json::Value, i: usize) -> f64 {
    stats["per_snapshot"][i]["compression_ratio"]
        .as_f64()
        .unwrap_or_else(|| panic!("no compression_ratio: {stats}"))
}

const RAW: usize = 1_500_000;

/// The same text backed up with `off` takes its raw size and more (sealing), with `max`
/// a fraction of it; both restore byte for byte, and `stats` gives each snapshot its
/// ratio: exactly 1 for `off`, well over 2 for `max`.
#[test]
fn off_stores_text_at_its_size_and_max_much_smaller_and_both_restore() {
    let off = Env::init();
    let max = Env::init();
    let src = off.path("src");
    text_folder(&src, RAW, 1);
    off.ok(&[
        "backup",
        "--compression",
        "off",
        src.to_str().expect("utf8"),
    ]);
    max.ok(&[
        "backup",
        "--compression",
        "max",
        src.to_str().expect("utf8"),
    ]);
    let (off_bytes, max_bytes) = (pack_bytes(&off), pack_bytes(&max));
    assert!(
        off_bytes >= RAW as u64 && off_bytes < RAW as u64 + 20_000,
        "off stored {off_bytes} bytes of {RAW}"
    );
    assert!(
        max_bytes * 3 < RAW as u64,
        "max stored {max_bytes} bytes of {RAW}"
    );
    off.restore_latest_and_compare(&src, "restored-off");
    max.restore_latest_and_compare(&src, "restored-max");

    let (s_off, s_max) = (stats(&off), stats(&max));
    assert_eq!(ratio(&s_off, 0), 1.0, "{s_off}");
    assert!(ratio(&s_max, 0) > 2.0, "{s_max}");
    for s in [&s_off, &s_max] {
        let p = &s["per_snapshot"][0];
        let plain = p["referenced_bytes"].as_u64().expect("referenced_bytes");
        let stored = p["referenced_stored_bytes"]
            .as_u64()
            .expect("referenced_stored_bytes");
        assert!(plain >= RAW as u64 && stored > 0, "{s}");
        assert!(p["referenced_blobs"].as_u64() > Some(2), "{s}");
    }
    let human = max.ok(&["stats"]);
    assert!(human.contains("ratio "), "{human}");
}

/// `init --compression max` records the default (config version 3, under its MAC, as a
/// number); a plain backup then stores less than one into an `auto` repository (still
/// version 2), and `CAIRN_COMPRESSION` and `--compression` overrule the default, the
/// flag first.
#[test]
fn a_repository_default_from_init_is_used_by_plain_backups_and_can_be_overruled() {
    let with_default = Env::new();
    let out = with_default.ok(&["init", "--compression", "max"]);
    assert!(out.contains("max (zstd level 19)"), "{out}");
    let auto = Env::init();
    let c = config(&with_default);
    assert_eq!(
        (c["version"].as_u64(), c["compression"].as_u64()),
        (Some(3), Some(19)),
        "{c}"
    );
    let c = config(&auto);
    assert_eq!(c["version"].as_u64(), Some(2), "{c}");
    assert!(c.get("compression").is_none(), "{c}");

    let src = auto.path("src");
    text_folder(&src, RAW, 7);
    let path = src.to_str().expect("utf8");
    auto.ok(&["backup", path]);
    with_default.ok(&["backup", path]);
    let (auto_bytes, max_bytes) = (pack_bytes(&auto), pack_bytes(&with_default));
    assert!(
        max_bytes < auto_bytes * 95 / 100,
        "the default max stored {max_bytes} bytes, auto {auto_bytes}"
    );
    with_default.restore_latest_and_compare(&src, "restored");

    // The variable overrules the default; the flag overrules both.
    let second = with_default.path("second");
    text_folder(&second, 300_000, 20);
    let out = with_default
        .cmd(&["backup", second.to_str().expect("utf8")])
        .env("CAIRN_COMPRESSION", "off")
        .output()
        .expect("backup");
    assert!(out.status.success(), "{}", describe(&out));
    let third = with_default.path("third");
    text_folder(&third, 300_000, 30);
    let out = with_default
        .cmd(&[
            "backup",
            "--compression",
            "fastest",
            third.to_str().expect("utf8"),
        ])
        .env("CAIRN_COMPRESSION", "off")
        .output()
        .expect("backup");
    assert!(out.status.success(), "{}", describe(&out));
    let s = stats(&with_default);
    assert!(ratio(&s, 0) > 2.0, "{s}");
    assert_eq!(ratio(&s, 1), 1.0, "{s}");
    assert!(ratio(&s, 2) > 2.0, "{s}");
    assert_eq!(s["compression_default"].as_u64(), Some(19), "{s}");
}

/// `cairn compression` shows the default, sets it (version 3) and removes it with
/// `auto` (version 2 again, the config as it was); a bad mode, from the flag or the
/// variable, is refused with the forms that are accepted, and nothing is written.
#[test]
fn the_default_is_shown_set_and_removed_and_bad_modes_are_refused() {
    let env = Env::init();
    let before = std::fs::read(env.objects_dir().join("config")).expect("config");
    let shown = env.ok(&["compression"]);
    assert!(shown.contains("records no compression default"), "{shown}");
    let set = env.ok(&["compression", "max", "--json"]);
    let v = json_lines(&set).expect("JSON").pop().expect("a line");
    assert_eq!(v["compression_default"].as_u64(), Some(19), "{v}");
    assert_eq!(v["version"].as_u64(), Some(3), "{v}");
    assert_eq!(v["changed"], true, "{v}");
    assert_eq!(config(&env)["compression"].as_u64(), Some(19));
    let off = env.ok(&["compression", "off"]);
    assert!(off.contains("changed: backups to"), "{off}");
    assert_eq!(config(&env)["compression"], "off");
    let unset = env.ok(&["compression", "auto"]);
    assert!(unset.contains("records no compression default"), "{unset}");
    assert_eq!(
        std::fs::read(env.objects_dir().join("config")).expect("config"),
        before
    );

    let src = env.path("src");
    text_folder(&src, 10_000, 3);
    let accepted = "auto, off, fastest, better, max, or a zstd level from 1 to 22";
    for args in [
        vec!["compression", "maximum"],
        vec!["init", "--compression", "0"],
        vec!["backup", "--compression", "23", src.to_str().expect("utf8")],
    ] {
        let out = env.run(&args);
        assert!(!out.status.success(), "{args:?}: {}", describe(&out));
        assert!(
            stderr(&out).contains(accepted),
            "{args:?}: {}",
            describe(&out)
        );
    }
    let out = env
        .cmd(&["backup", src.to_str().expect("utf8")])
        .env("CAIRN_COMPRESSION", "smallest")
        .output()
        .expect("backup");
    assert!(!out.status.success(), "{}", describe(&out));
    let err = stderr(&out);
    assert!(
        err.contains("\"smallest\"") && err.contains(accepted),
        "{err}"
    );
    assert!(support::snapshot_ids(&env).is_empty());
    assert_eq!(
        std::fs::read(env.objects_dir().join("config")).expect("config"),
        before
    );
}

/// A daemon destination with `compression = "off"` stores its snapshots uncompressed,
/// whatever auto would do; the repository it creates records no default.
#[test]
fn a_daemon_destination_compresses_as_its_configuration_says() {
    let env = Env::new();
    let src = env.path("src");
    text_folder(&src, 400_000, 11);
    let table = format!(
        "{}\ncompression = \"off\"",
        destination_table("primary", &env.repo, &env.options)
    );
    let config = write_config(&env, &src, &table, QUICK_SCHEDULE);
    let mut d = Daemon::start(&env, &config);
    d.wait_for("the first snapshot", Duration::from_secs(60), settled);
    d.terminate();
    let s = stats(&env);
    assert_eq!(ratio(&s, 0), 1.0, "{s}\n{}", d.log());
    assert!(pack_bytes(&env) >= 400_000, "{s}");
    assert_eq!(self::config(&env)["version"].as_u64(), Some(2));
    env.restore_latest_and_compare(&src, "restored");
}
