//! What goes to S3 at once, and in what order: readers list snapshots before index
//! objects before deletion records even when they overlap, snapshots and index objects
//! are read several at a time, and `--upload-concurrency` is how many packs go up at
//! once. Timed with delays injected at the fault proxy.

use crate::support;

use std::fs;
use std::sync::atomic::Ordering;
use std::time::Duration;
use support::fault_proxy::Schedule;
use support::{Env, Kind, pseudo_random};

/// Readers list snapshots before index objects, and index objects before deletion
/// records (docs/FORMAT.md, section 15): a backup stores its index objects before its
/// snapshot, and a prune its deletion record before it deletes the index objects it
/// replaces, so only in that order does the index cover every snapshot listed. Reading
/// snapshots and index at the same time must keep it: with the earlier listing slowed
/// down, the later one still reaches the server after it.
#[test]
fn readers_list_snapshots_then_index_objects_then_deletion_records() {
    let env = Env::with(Kind::S3Proxied);
    env.ok(&["init"]);
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    fs::write(src.join("file"), b"listed in order\n").expect("write");
    env.ok(&["backup", src.to_str().expect("utf8")]);
    let id = support::snapshot_ids(&env).remove(0);
    let (proxy, server) = (
        env.proxy.as_ref().expect("proxy"),
        env.server.as_ref().expect("server"),
    );
    let spec = format!("latest:{}", src.join("file").to_string_lossy());
    let mut runs = 0;
    for args in [
        vec!["restore", "latest", "--target"],
        vec!["restore", &spec, "--target", "-"],
        vec!["ls", "latest"],
        vec!["diff", &id, "latest"],
        vec!["find", "fil*"],
        vec!["stats"],
    ] {
        for (slow, later) in [("snapshots%2F", "index%2F"), ("index%2F", "deletions%2F")] {
            runs += 1;
            let target = env.path(&format!("t{runs}"));
            let mut args = args.clone();
            if args.last() == Some(&"--target") {
                args.push(target.to_str().expect("utf8"));
            }
            proxy.set_schedule(Schedule {
                delay: Some(Duration::from_millis(300)),
                methods: vec!["GET"],
                target_contains: Some(slow),
                ..Schedule::clean()
            });
            let from = server.seen().len();
            env.ok(&args);
            let lists: Vec<String> = server.seen()[from..]
                .iter()
                .filter(|r| r.method == "GET" && r.target.contains("list-type=2"))
                .map(|r| r.target.clone())
                .collect();
            let at = |what: &str| lists.iter().position(|t| t.contains(what));
            assert!(
                matches!((at(slow), at(later)), (Some(a), Some(b)) if a < b),
                "{args:?} listed out of order: {lists:?}"
            );
        }
    }
    proxy.set_schedule(Schedule::clean());
}

#[test]
fn snapshots_and_index_objects_are_read_several_at_once() {
    let env = Env::with(Kind::S3Proxied);
    env.ok(&["init"]);
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    for i in 0..12 {
        fs::write(src.join(format!("f{i}")), format!("version {i}")).expect("write");
        env.ok(&["backup", src.to_str().expect("utf8")]);
    }
    let proxy = env.proxy.as_ref().expect("proxy");
    // Each read of these objects takes 150 ms: read one after another, they never overlap.
    // `check` and `prune` read them, and check the packs' headers, the same way. Up to
    // eight snapshots and eight (small) index objects go at once; the unit tests of
    // `repo::read_ahead` check the byte bound that keeps large index objects fewer.
    for (kind, args, at_least) in [
        ("/snapshots/", &["snapshots"][..], 6),
        ("/index/", &["ls", "latest"][..], 6),
        ("/snapshots/", &["check"][..], 6),
        ("/index/", &["check"][..], 6),
        ("/data/", &["check"][..], 6),
        ("/snapshots/", &["prune", "--dry-run"][..], 6),
        ("/index/", &["prune", "--dry-run"][..], 6),
    ] {
        proxy.set_schedule(Schedule {
            delay: Some(Duration::from_millis(150)),
            methods: vec!["GET"],
            target_contains: Some(kind),
            ..Schedule::clean()
        });
        proxy.stats.max_in_flight.store(0, Ordering::SeqCst);
        env.ok(args);
        let most = proxy.stats.max_in_flight.load(Ordering::SeqCst);
        assert!(
            most >= at_least,
            "{args:?} reading 12 objects under {kind} had at most {most} requests in flight"
        );
    }
}

/// `backup --upload-concurrency N` is how many packs go up at once: with every pack upload
/// slowed down, more than two overlap when four are asked for (four, unless sealing
/// falls behind on a loaded machine) and exactly two by default. Zero is refused by
/// name, before anything is read or written.
#[test]
fn upload_concurrency_sets_how_many_packs_go_up_at_once() {
    let env = Env::with(Kind::S3Proxied);
    env.ok(&["init", "--pack-size", "1"]);
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    let proxy = env.proxy.as_ref().expect("proxy");
    proxy.set_schedule(Schedule {
        delay: Some(Duration::from_millis(500)),
        methods: vec!["PUT"],
        target_contains: Some("/data/"),
        ..Schedule::clean()
    });
    let src_arg = src.to_str().expect("utf8");
    for (i, flag) in [None, Some("4")].into_iter().enumerate() {
        // New content each time: about ten packs of 1 MiB to upload.
        fs::write(
            src.join(format!("f{i}")),
            pseudo_random(10 << 20, 40 + 10 * i as u64),
        )
        .expect("write");
        proxy.stats.max_in_flight.store(0, Ordering::SeqCst);
        match flag {
            Some(n) => env.ok(&["backup", "--upload-concurrency", n, src_arg]),
            None => env.ok(&["backup", src_arg]),
        };
        let most = proxy.stats.max_in_flight.load(Ordering::SeqCst);
        match flag {
            Some(_) => assert!(
                (3..=4).contains(&most),
                "--upload-concurrency 4 had {most} uploads in flight"
            ),
            None => assert_eq!(most, 2, "the default had {most} uploads in flight"),
        }
    }
    let before = env.ok(&["snapshots"]);
    let out = env.run(&["backup", "--upload-concurrency", "0", src_arg]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--upload-concurrency"), "{err}");
    assert_eq!(
        env.ok(&["snapshots"]),
        before,
        "a refused backup wrote a snapshot"
    );
    env.restore_latest_and_compare(&src, "restored");
}
