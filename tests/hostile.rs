//! Hostile repositories: objects an attacker with write access to the bucket (and, worse,
//! with the repository keys) could craft, placed into a real repository on an s3s-fs
//! server over HTTP. Every one must end in a clear error (or a warning where skipping is
//! right), never in a panic, a hang, an allocation of gigabytes, or a file written
//! outside the restore target.
//!
//! The crafted objects are sealed with the repository's own keys (opened in-process over
//! S3), because that is the strongest attacker: without the keys every crafted object
//! already fails authentication. Every `cairn` run has a time limit, so a hang fails the
//! test instead of blocking CI, and the test checks its children's peak memory.
//!
//! This file holds hostile trees (names, links, cycles, depth); `hostile_objects.rs`
//! holds hostile index entries, pack headers, lengths and compressed frames.

#[path = "integration/support/mod.rs"]
mod support;

use cairn::format::index::{BlobKind, IndexPack, PackedBlob};
use cairn::format::name::ByteName;
use cairn::format::tree::NodeKind;
use std::fs;
use support::describe;
use support::fixtures::{dir, file, node, tree};
use support::hostile::Hostile;

#[test]
fn entry_names_that_escape_the_target_fail_restore_ls_and_check() {
    let h = Hostile::new();
    let payload = b"must never land outside the target".as_slice();
    let data = h.id(payload);
    let mut snaps = Vec::new();
    for (label, name) in [
        ("dot-dot", b"..".as_slice()),
        ("dot", b".".as_slice()),
        ("relative climb", b"../../escaped".as_slice()),
        ("slash inside", b"a/b".as_slice()),
        ("absolute", b"/abs/escaped".as_slice()),
        ("NUL", b"x\0y".as_slice()),
        ("empty", b"".as_slice()),
    ] {
        let root = tree(vec![file(name, payload, data)]);
        snaps.push((label, h.plant(&root, &[payload], &[])));
    }
    // The same names in the hex form readers also accept ("../x", not UTF-8 padded).
    let hex_root = format!(
        r#"{{"nodes":[{{"name":{{"hex":"{}"}},"type":"file","mode":420,"mtime":0,"mtime_nsec":0,"ctime":0,"ctime_nsec":0,"uid":0,"gid":0,"size":{},"content":["{}"]}}]}}"#,
        hex::encode(b"../x\xff"),
        payload.len(),
        data.to_hex()
    );
    snaps.push((
        "hex-encoded climb",
        h.plant(hex_root.as_bytes(), &[payload], &[]),
    ));
    // A legal root whose subdirectory holds the bad name: the error names the path.
    let bad_sub = tree(vec![file(b"..", payload, data)]);
    let root = tree(vec![dir(b"sub", h.id(&bad_sub))]);
    snaps.push(("nested", h.plant(&root, &[payload], &[&bad_sub])));

    for (label, snap) in &snaps {
        let (out, target) = h.restore(snap, &[]);
        assert_ne!(out.status.code(), Some(0), "{label}: {}", describe(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("entry name"), "{label}: {err}");
        h.assert_contained(&target);
        h.fails_with(&["ls", snap], &["entry name"]);
    }
    h.fails_with(
        &["check"],
        &["entry name", "is a relative directory reference"],
    );
}

#[test]
fn a_symlink_out_of_the_target_is_never_written_through() {
    let h = Hostile::new();
    let outside = h.env.path("outside");
    let payload = b"through the link".as_slice();
    let data = h.id(payload);

    // One tree naming the same entry twice, a symlink and then a directory or a file:
    // refused as a whole, before anything is created.
    for second in [
        dir(b"a", h.id(&tree(vec![file(b"f", payload, data)]))),
        file(b"a", payload, data),
    ] {
        let mut link = node(b"a", NodeKind::Symlink);
        link.link_target = Some(ByteName(outside.as_os_str().as_encoded_bytes().to_vec()));
        let sub = tree(vec![file(b"f", payload, data)]);
        let root = tree(vec![link, second]);
        let snap = h.plant(&root, &[payload], &[&sub]);
        let (out, target) = h.restore(&snap, &[]);
        assert_ne!(out.status.code(), Some(0), "{}", describe(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("duplicated or out of order"),
            "{}",
            describe(&out)
        );
        h.assert_contained(&target);
    }

    // Two snapshots restored over each other: the first leaves symlinks to outside, the
    // second has a directory and a file under those names. `--overwrite` replaces the
    // links; it never follows them.
    let mut to_dir = node(b"d", NodeKind::Symlink);
    to_dir.link_target = Some(ByteName(outside.as_os_str().as_encoded_bytes().to_vec()));
    let mut to_file = node(b"f", NodeKind::Symlink);
    to_file.link_target = Some(ByteName(
        outside.join("f").as_os_str().as_encoded_bytes().to_vec(),
    ));
    let first = h.plant(&tree(vec![to_dir, to_file]), &[], &[]);
    let sub = tree(vec![file(b"inside", payload, data)]);
    let second = h.plant(
        &tree(vec![dir(b"d", h.id(&sub)), file(b"f", payload, data)]),
        &[payload],
        &[&sub],
    );
    let (out, target) = h.restore(&first, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        fs::symlink_metadata(target.join("d"))
            .expect("link")
            .is_symlink()
    );
    let out = h.run(&[
        "restore",
        &second,
        "--target",
        target.to_str().expect("utf8"),
        "--overwrite",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        fs::symlink_metadata(target.join("d"))
            .expect("dir")
            .is_dir()
    );
    assert_eq!(fs::read(target.join("d/inside")).expect("inside"), payload);
    assert!(
        fs::symlink_metadata(target.join("f"))
            .expect("file")
            .is_file()
    );
    h.assert_contained(&target);
}

#[test]
fn tree_cycles_are_refused_for_restore_ls_and_check() {
    // A tree's id is the keyed hash of its bytes, so a tree cannot name itself, directly
    // or through another tree: that would need a hash fixpoint. What an attacker can do
    // is make the index say that the id in a `subtree` field lives where an ancestor's
    // bytes are. Reading then yields the ancestor, whose hash is not the id asked for.
    let h = Hostile::new();
    let bogus_self = h.id(b"the id a cycle back to the root would need");
    let bogus_via = h.id(b"the id a cycle through a child would need");
    let child = tree(vec![dir(b"back", bogus_via)]);
    let root = tree(vec![dir(b"child", h.id(&child)), dir(b"self", bogus_self)]);
    let pack = h.put_pack(vec![
        h.seal(BlobKind::Tree, &root),
        h.seal(BlobKind::Tree, &child),
    ]);
    let at_root = pack
        .blobs
        .iter()
        .find(|b| b.id == h.id(&root))
        .expect("root entry")
        .clone();
    let mut packs = vec![pack.clone()];
    for cycle in [bogus_self, bogus_via] {
        packs.push(IndexPack {
            id: pack.id,
            blobs: vec![PackedBlob {
                id: cycle,
                ..at_root.clone()
            }],
        });
    }
    h.index(packs);
    let snap = h.snapshot(h.id(&root));
    let (out, target) = h.restore(&snap, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("content does not match its id")
            && err.contains("back")
            && err.contains("self"),
        "{err}"
    );
    h.assert_contained(&target);
    h.fails_with(&["ls", &snap], &["content does not match its id"]);
    // check finds it sooner: the pack's own header does not list those ids there.
    h.fails_with(
        &["check"],
        &["its header does not list blob", "/self", "/child/back"],
    );
}

/// A chain of `depth` directories named `d`, with one file at the bottom; returns the
/// root tree's plaintext and every tree below it.
fn deep_chain(h: &Hostile, depth: usize, bottom_file: &[u8]) -> (Vec<u8>, Vec<Vec<u8>>) {
    let content = h.id(bottom_file);
    let mut below = tree(vec![file(b"bottom.txt", bottom_file, content)]);
    let mut trees = Vec::with_capacity(depth);
    for _ in 0..depth {
        let up = tree(vec![dir(b"d", h.id(&below))]);
        trees.push(std::mem::replace(&mut below, up));
    }
    (below, trees)
}

#[test]
fn trees_100000_levels_deep_are_walked_without_exhausting_the_stack() {
    let h = Hostile::new();
    let depth = 100_000;
    let (root_a, trees_a) = deep_chain(&h, depth, b"first version");
    let (root_b, trees_b) = deep_chain(&h, depth, b"second version");
    let mut packs = Vec::new();
    for (root, trees, data) in [
        (&root_a, &trees_a, b"first version".as_slice()),
        (&root_b, &trees_b, b"second version".as_slice()),
    ] {
        let mut blobs = vec![h.seal(BlobKind::Data, data), h.seal(BlobKind::Tree, root)];
        blobs.extend(trees.iter().map(|t| h.seal(BlobKind::Tree, t)));
        packs.push(h.put_pack(blobs));
    }
    h.index(packs);
    let a = h.snapshot(h.id(&root_a));
    let b = h.snapshot(h.id(&root_b));

    let ok = |args: &[&str]| {
        let out = h.run(args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "cairn {args:?}: {}",
            describe(&out)
        );
        out
    };
    ok(&["check"]);
    let found = ok(&["find", "bottom.txt", "--json"]);
    let text = String::from_utf8_lossy(&found.stdout);
    assert_eq!(
        text.matches("bottom.txt").count(),
        2,
        "found in both snapshots"
    );
    let out = ok(&["diff", &a, &b]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.matches("bottom.txt").count(),
        1,
        "one change at the bottom"
    );
    // A restore meets the file system's path length limit long before the bottom: it
    // fails those entries by name, and neither crashes nor writes outside its target.
    let (out, target) = h.restore(&a, &[]);
    assert!(out.status.code().is_some(), "{}", describe(&out));
    h.assert_contained(&target);
}
