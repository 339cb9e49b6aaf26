//! How many requests each command makes of S3, counted at the fault proxy: a restore
//! of one file fetches only its blobs, trees come a pack range at a time for backup,
//! prune, check and the listings, a deep path is found without a request per folder,
//! and a pack that gives no answer is left alone. Each count stands for minutes against
//! a remote server, where every request waits for a round trip.

use crate::support;

use std::fs;
use std::sync::atomic::Ordering;
use support::fault_proxy::Schedule;
use support::s3::S3Server;
use support::{Env, Kind, assert_same_tree, describe, pseudo_random, restored, walk_files};

#[test]
fn restore_of_one_file_fetches_only_its_blobs() {
    let env = Env::with(Kind::S3Proxied);
    env.ok(&["init", "--pack-size", "64"]);
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    fs::write(src.join("large"), pseudo_random(24 << 20, 8)).expect("write");
    fs::write(src.join("small"), "just this").expect("write");
    env.ok(&["backup", src.to_str().expect("utf8")]);
    let proxy = env.proxy.as_ref().expect("proxy");
    let before = proxy.stats.response_bytes.load(Ordering::Relaxed);
    let target = env.path("t");
    let small = src.join("small");
    env.ok(&[
        "restore",
        "latest",
        "--target",
        target.to_str().expect("utf8"),
        "--include",
        small.to_str().expect("utf8"),
    ]);
    let fetched = proxy.stats.response_bytes.load(Ordering::Relaxed) - before;
    assert_eq!(
        fs::read(restored(&target, &small)).expect("read"),
        b"just this"
    );
    assert!(
        fetched < 2 << 20,
        "restoring 9 bytes fetched {fetched} bytes"
    );
}

/// Identical directories share one tree, which the restore walk asks for once per
/// directory: it must come from the read-ahead cache, not one more ranged read each time
/// (the benchmark corpus once cost 344 extra reads of 1.8 MB each this way).
#[test]
fn restore_reads_a_tree_shared_by_many_directories_once() {
    let env = Env::with(Kind::S3Proxied);
    env.ok(&["init"]);
    let src = env.path("src");
    for i in 0..300 {
        fs::create_dir_all(src.join(format!("empty-{i:03}"))).expect("mkdir");
        fs::create_dir_all(src.join(format!("full-{i:03}"))).expect("mkdir");
        fs::write(src.join(format!("full-{i:03}/f")), format!("file {i}")).expect("write");
    }
    env.ok(&["backup", src.to_str().expect("utf8")]);
    let proxy = env.proxy.as_ref().expect("proxy");
    let before = proxy.stats.requests.load(Ordering::Relaxed);
    env.restore_latest_and_compare(&src, "t");
    let requests = proxy.stats.requests.load(Ordering::Relaxed) - before;
    assert!(
        requests < 60,
        "restoring 600 directories took {requests} requests"
    );
}

/// An incremental backup on a machine without the local cache (a new machine continuing a
/// restored one's backups, or a lost cache) reads its parent's trees from the bucket.
/// Read one request per directory, that took a 51,000-file backup with no changes 115 s
/// instead of 1 s against a local server (every small GET waits for a delayed ACK, as it
/// waits for the round trip to a remote one); neighbouring trees come a pack range at a
/// time. Nothing is uploaded again, and the new snapshot restores.
#[test]
fn a_backup_without_its_cache_reads_the_parents_trees_a_range_at_a_time() {
    let mut env = Env::with(Kind::S3Proxied);
    env.ok(&["init"]);
    let src = env.path("src");
    write_nested(&src, "file");
    env.ok(&["backup", src.to_str().expect("utf8")]);
    env.env.push((
        "CAIRN_CACHE_DIR",
        env.path("new-cache").to_string_lossy().into_owned(),
    ));
    let proxy = env.proxy.as_ref().expect("proxy");
    let (gets, puts) = (
        || proxy.stats.requests.load(Ordering::Relaxed),
        || proxy.stats.puts.load(Ordering::Relaxed),
    );
    let (before, puts_before) = (gets(), puts());
    let (code, summary) = env.backup_json(&[src.as_path()], &[]);
    assert_eq!(code, Some(0), "{summary}");
    let requests = gets() - before;
    assert!(
        requests < 40,
        "a backup of 331 unchanged directories without its cache took {requests} requests"
    );
    // Every file carried over from the parent, none read; only the trees of the folders
    // above `src` (whose times changed) are new, and go up with the index and snapshot.
    assert_eq!(summary["files_unmodified"], 300, "{summary}");
    assert_eq!(summary["data_blobs"], 0, "{summary}");
    assert!(
        puts() - puts_before <= 3,
        "{} uploads",
        puts() - puts_before
    );
    env.restore_latest_and_compare(&src, "t");
}

/// 300 files, one per folder, in 30 folders of 10: 331 directories, so 331 trees.
fn write_nested(src: &std::path::Path, text: &str) {
    for i in 0..300 {
        let dir = src.join(format!("d{:02}/e{i:03}", i % 30));
        fs::create_dir_all(&dir).expect("mkdir");
        fs::write(dir.join("f"), format!("{text} {i}")).expect("write");
    }
}

/// Prune (to know what is used), check, ls, find, diff, a directory restored as a tar
/// archive and `restore --verify` read every tree of a snapshot or of all; one GET per tree made that minutes for a large repository (a round trip, or a
/// delayed ACK, each). Trees come a pack range at a time, and what is used is still found:
/// the prune deletes nothing the snapshots need, and they restore.
#[test]
fn prune_check_and_listings_read_the_trees_a_range_at_a_time() {
    let env = Env::with(Kind::S3Proxied);
    env.ok(&["init"]);
    let src = env.path("src");
    write_nested(&src, "file");
    // Larger than a window of the tar's read-ahead, twice: the second copy's blobs are
    // read again for a later window.
    fs::create_dir_all(src.join("big")).expect("mkdir");
    let big = pseudo_random(20 << 20, 5);
    fs::write(src.join("big/a.bin"), &big).expect("write");
    fs::write(src.join("big/b.bin"), &big).expect("write");
    env.ok(&["backup", src.to_str().expect("utf8")]);
    // Every file changes, so every tree differs and `diff` reads them all, twice over.
    write_nested(&src, "changed");
    env.ok(&["backup", src.to_str().expect("utf8")]);
    let proxy = env.proxy.as_ref().expect("proxy");
    let before = proxy.stats.requests.load(Ordering::Relaxed);
    env.ok(&["prune"]);
    let requests = proxy.stats.requests.load(Ordering::Relaxed) - before;
    assert!(
        requests < 60,
        "a prune of 2 snapshots of 331 directories each took {requests} requests"
    );
    // `check`, `ls`, `find`, `diff`, a tar to stdout and `restore --verify` walk the same
    // trees the same way.
    let ids = support::snapshot_ids(&env);
    let (first, second) = (ids[0].as_str(), ids[1].as_str());
    let listed = env.ok(&["ls", "latest"]);
    assert!(listed.contains("e299"), "{listed}");
    let as_tar = format!("latest:{}", src.to_string_lossy());
    let verified = env.path("verified");
    let verified = verified.to_str().expect("utf8");
    for args in [
        vec!["check"],
        vec!["ls", "latest"],
        vec!["find", "e1*"],
        vec!["diff", first, second],
        vec!["restore", &as_tar, "--target", "-"],
        vec!["restore", "latest", "--target", verified, "--verify"],
    ] {
        let before = proxy.stats.requests.load(Ordering::Relaxed);
        let out = env.run(&args);
        assert!(out.status.success(), "{args:?}: {}", describe(&out));
        let requests = proxy.stats.requests.load(Ordering::Relaxed) - before;
        // A tar to stdout reads its files' content a window ahead, in merged ranges
        // (one request per file before: 314 for these 300).
        assert!(requests < 60, "{args:?} took {requests} requests");
        // Each pack header comes from one read of the pack's tail (it took a stat, the
        // length and the header before: 28 requests here, 18 now).
        if args == ["check"] {
            assert!(requests <= 22, "check took {requests} requests");
        }
        if args[0] == "diff" {
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(text.contains("d00/e000/f"), "{text}");
        }
        if args[0] == "restore" && args[3] == "-" {
            let unpacked = env.path("unpacked");
            tar::Archive::new(out.stdout.as_slice())
                .unpack(&unpacked)
                .expect("unpack the tar");
            // Contents and names; a tar keeps whole seconds only, so times differ.
            let root = unpacked.join(src.file_name().expect("name"));
            let files = walk_files(&src);
            assert_eq!(walk_files(&root).len(), files.len(), "files in the tar");
            for f in files {
                let rel = f.strip_prefix(&src).expect("inside");
                let got = fs::read(root.join(rel)).expect("in the tar");
                assert!(
                    got == fs::read(&f).expect("read"),
                    "{} differs",
                    rel.display()
                );
            }
        }
    }
    // One large file to stdout comes a window at a time as well: 24 requests here, most
    // of them finding the path (snapshots, index, the trees along it); 33 when each blob
    // came with a request of its own.
    let before = proxy.stats.requests.load(Ordering::Relaxed);
    let one = format!("latest:{}", src.join("big/a.bin").to_string_lossy());
    let out = env.run(&["restore", &one, "--target", "-"]);
    assert!(out.status.success(), "{}", describe(&out));
    let requests = proxy.stats.requests.load(Ordering::Relaxed) - before;
    assert!(
        requests <= 28,
        "one 20 MiB file to stdout took {requests} requests"
    );
    assert!(out.stdout == big, "the file to stdout differs");
    env.ok(&["check", "--read-data"]);
    env.restore_latest_and_compare(&src, "t");
}

/// `cairn backup` lists and reads the snapshots once, while it loads the index, to find
/// its parent; a backup that has none (new paths) does not look again.
#[test]
fn a_backup_lists_the_snapshots_once_parent_or_not() {
    let env = Env::with(Kind::S3Proxied);
    env.ok(&["init"]);
    let server = env.server.as_ref().expect("server");
    for name in ["a", "b", "a"] {
        let src = env.path(name);
        fs::create_dir_all(&src).expect("mkdir");
        fs::write(src.join("file"), name).expect("write");
        let from = server.seen().len();
        env.ok(&["backup", src.to_str().expect("utf8")]);
        let listings = server.seen()[from..]
            .iter()
            .filter(|r| r.method == "GET" && r.target.contains("list-type=2"))
            .filter(|r| r.target.contains("snapshots%2F"))
            .count();
        assert_eq!(
            listings, 1,
            "a backup of {name} listed snapshots {listings} times"
        );
    }
    // The third run found the first as its parent and kept its unchanged file.
    let out = env.ok(&["backup", "--json", env.path("a").to_str().expect("utf8")]);
    assert!(out.contains("\"files_unmodified\":1"), "{out}");
}

/// A file deep in a snapshot is found through its trees read with their neighbours: a
/// directory's tree is stored right after the trees below it, so the 40 trees on the way
/// come in a read or two, where each was a request of its own (about 50 requests here).
/// The same for `--include`, whose walk then finds those trees already read.
#[test]
fn a_deep_path_is_found_without_a_request_per_directory() {
    let env = Env::with(Kind::S3Proxied);
    env.ok(&["init"]);
    let src = env.path("src");
    let mut deep = src.clone();
    for i in 0..40 {
        deep.push(format!("level{i:02}"));
        // Siblings at every level, each with a file of its own so that their trees
        // differ and lie between the path's.
        let other = deep.with_file_name(format!("other{i:02}"));
        fs::create_dir_all(&other).expect("mkdir");
        fs::write(other.join("sibling.txt"), format!("sibling {i}")).expect("write");
        fs::create_dir_all(&deep).expect("mkdir");
    }
    let file = deep.join("file.txt");
    fs::write(&file, b"found at the bottom\n").expect("write");
    env.ok(&["backup", src.to_str().expect("utf8")]);
    let proxy = env.proxy.as_ref().expect("proxy");
    let count = |args: &[&str]| -> (std::process::Output, u64) {
        let before = proxy.stats.requests.load(Ordering::Relaxed);
        let out = env.run(args);
        assert!(out.status.success(), "{args:?}: {}", describe(&out));
        (out, proxy.stats.requests.load(Ordering::Relaxed) - before)
    };
    let spec = format!("latest:{}", file.to_string_lossy());
    let (out, requests) = count(&["restore", &spec, "--target", "-"]);
    assert_eq!(out.stdout, b"found at the bottom\n");
    assert!(
        requests <= 15,
        "a file 40 directories deep took {requests} requests"
    );
    let target = env.path("t");
    let (_, requests) = count(&[
        "restore",
        "latest",
        "--include",
        file.to_str().expect("utf8"),
        "--target",
        target.to_str().expect("utf8"),
    ]);
    assert!(
        requests <= 15,
        "restoring a file 40 directories deep took {requests} requests"
    );
    let restored = target.join(file.strip_prefix("/").expect("absolute"));
    assert_eq!(
        fs::read(restored).expect("restored"),
        b"found at the bottom\n"
    );
}

/// A pack of the primary that gives no answer (every read of it reset, retries spent) is
/// asked once more, for its first blob, and then left alone by the rest of the restore
/// instead of being asked again blob by blob, each time with the whole retry budget: with
/// a copy, its blobs come from the copy; without one, its files fail at once, named, and
/// the files of the other pack, which answers, are restored. Before, the pack was asked
/// for 66 times in each case (three attempts for the range and for each of 21 blobs);
/// now 6.
#[test]
fn a_restore_leaves_a_pack_that_gives_no_answer_alone() {
    let env = Env::with(Kind::S3Proxied);
    // 1 MiB packs: the 2 MB of data below lands in at least two.
    env.ok(&["init", "--pack-size", "1"]);
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    for i in 0..40u64 {
        fs::write(
            src.join(format!("f{i:02}")),
            pseudo_random(50_000, 701 + 2 * i),
        )
        .expect("write");
    }
    let src_arg = src.to_str().expect("utf8");
    env.ok(&["backup", src_arg]);
    let copy_server = S3Server::start(&["copy"]);
    let copy = format!("s3:{}/copy/host1", copy_server.endpoint());
    env.ok(&["init", "--repo", &copy, "--from-repo", &env.repo]);
    env.ok(&["backup", "--repo", &copy, src_arg]);

    // The largest pack holds data; the trees are in a small pack of their own.
    let mut packs = walk_files(&env.objects_dir().join("data"));
    packs.sort_by_key(|p| fs::metadata(p).map(|m| m.len()).unwrap_or(0));
    let sizes: Vec<u64> = packs
        .iter()
        .map(|p| fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .collect();
    assert!(
        packs.len() >= 3,
        "two data packs and a tree pack: {sizes:?}"
    );
    let data_pack = packs.last().expect("a data pack");
    let name = data_pack.file_name().expect("name").to_string_lossy();
    let name: &'static str = Box::leak(name.into_owned().into_boxed_str());
    let proxy = env.proxy.as_ref().expect("proxy");
    proxy.set_schedule(Schedule {
        reset: 1000,
        methods: vec!["GET"],
        target_contains: Some(name),
        ..Schedule::clean()
    });
    let reads = || proxy.stats.faults.load(Ordering::SeqCst);
    let restore = |extra: &[&str]| {
        let mut args = vec!["-o", "s3.retries=3", "restore"];
        args.extend_from_slice(extra);
        env.run(&args)
    };

    let target = env.path("from-copy");
    let before = reads();
    let out = restore(&[
        "latest",
        "--target",
        target.to_str().expect("utf8"),
        "--fallback-repo",
        &copy,
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        err.contains("could not be read: ")
            && err.contains("blob(s) were read from another copy instead"),
        "{err}"
    );
    assert!(!err.contains("check --repair"), "nothing to repair: {err}");
    assert_same_tree(&src, &restored(&target, &src));
    let asked = reads() - before;
    assert!(
        (1..=12).contains(&asked),
        "the pack was asked for {asked} times"
    );

    // The same as a tar on stdout, which reads content ahead of the healing reader.
    let before = reads();
    let folder = format!("latest:{src_arg}");
    let out = restore(&[&folder, "--target", "-", "--fallback-repo", &copy]);
    assert!(out.status.success(), "{}", describe(&out));
    let unpacked = env.path("from-copy-tar");
    tar::Archive::new(out.stdout.as_slice())
        .unpack(&unpacked)
        .expect("unpack the tar");
    for i in 0..40 {
        let name = format!("f{i:02}");
        assert!(
            fs::read(src.join(&name)).ok() == fs::read(unpacked.join("src").join(&name)).ok(),
            "{name} differs in the tar"
        );
    }
    let asked = reads() - before;
    assert!(
        (1..=12).contains(&asked),
        "the tar asked for the pack {asked} times"
    );

    // No copy: the pack's files fail at once, the other pack's are restored.
    let target = env.path("alone");
    let before = reads();
    let out = restore(&["latest", "--target", target.to_str().expect("utf8")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(err.contains("not asked again"), "{err}");
    let failed: Vec<String> = (0..40)
        .map(|i| format!("f{i:02}"))
        .filter(|name| err.contains(&format!("/{name}: ")))
        .collect();
    assert!(
        !failed.is_empty() && failed.len() < 40,
        "{} of 40 files failed: {err}",
        failed.len()
    );
    assert!(
        err.contains(&format!("{} entries could not be restored", failed.len())),
        "{err}"
    );
    let back = restored(&target, &src);
    for i in 0..40 {
        let name = format!("f{i:02}");
        if !failed.contains(&name) {
            assert!(
                fs::read(src.join(&name)).ok() == fs::read(back.join(&name)).ok(),
                "{name} was not restored from the pack that answers"
            );
        }
    }
    let asked = reads() - before;
    assert!(
        (1..=12).contains(&asked),
        "the pack was asked for {asked} times"
    );
}
