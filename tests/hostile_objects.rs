//! Hostile objects: index entries, pack headers, lengths, counts, compressed frames and
//! duplicated ids an attacker with the repository keys could craft, placed into a real
//! repository on an s3s-fs server (see `hostile.rs` for the attacker and the limits).
//! Each must end in a clear error, or a warning where skipping is right, never in a
//! panic, a hang or an allocation of gigabytes.

#[path = "integration/support/mod.rs"]
mod support;

use cairn::backend::{FileType, Handle};
use cairn::crypto::Purpose;
use cairn::format::index::{BlobKind, IndexFile, IndexPack, PackedBlob};
use cairn::hash::Id;
use cairn::pack::SealedBlob;
use std::fs;
use std::time::{Duration, Instant};
use support::describe;
use support::fixtures::{file, snapshot, tree};
use support::hostile::Hostile;

#[test]
fn absurd_lengths_and_counts_end_in_errors() {
    let h = Hostile::new();
    let payload = b"five!".as_slice();
    let data = h.id(payload);

    // A file claiming 2^63 bytes: restore writes what the content holds and says so.
    let mut huge = file(b"huge", payload, data);
    huge.size = 1 << 63;
    let snap = h.plant(&tree(vec![huge.clone()]), &[payload], &[]);
    let (out, target) = h.restore(&snap, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("restored 5 bytes but the snapshot records 9223372036854775808"),
        "{}",
        describe(&out)
    );
    assert_eq!(fs::metadata(target.join("huge")).expect("huge").len(), 5);
    h.assert_contained(&target);
    // The same as a sparse file must not extend the file to 2^63 either.
    huge.sparse = true;
    let snap = h.plant(&tree(vec![huge]), &[payload], &[]);
    let (out, target) = h.restore(&snap, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert_eq!(fs::metadata(target.join("huge")).expect("huge").len(), 5);

    // A content list of a million ids, none stored: restore stops at the first, quickly.
    let missing = h.id(b"never stored");
    let mut million = file(b"million", payload, data);
    million.content = vec![missing; 1_000_000];
    let root = tree(vec![million]);
    let snap = h.plant(&root, &[], &[]);
    let started = Instant::now();
    let (out, target) = h.restore(&snap, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("missing from the repository index"),
        "{}",
        describe(&out)
    );
    h.assert_contained(&target);
    let out = h.fails_with(&["check"], &["is referenced but in no index", "/million"]);
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("... and"),
        "one file with a million bad ids is listed once: {}",
        describe(&out)
    );
    assert!(
        h.last_peak_mib() < 200,
        "check peaked at {} MiB",
        h.last_peak_mib()
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "a million ids took {:?}",
        started.elapsed()
    );
}

#[test]
fn impossible_index_entries_and_pack_headers_are_refused() {
    let h = Hostile::new();
    let payload = b"indexed where no pack can hold it".as_slice();
    let sealed = h.seal(BlobKind::Data, payload);
    let good = h.put_pack(vec![sealed]);
    let entry = good.blobs[0].clone();
    let root = tree(vec![file(b"f", payload, entry.id)]);
    let tree_pack = h.put_pack(vec![h.seal(BlobKind::Tree, &root)]);

    for (label, bad, needle) in [
        (
            "offset near 2^64",
            PackedBlob {
                offset: u64::MAX - 10,
                ..entry.clone()
            },
            "end past 2^64",
        ),
        (
            "sealed length 2^32 - 1",
            PackedBlob {
                length: u32::MAX,
                ..entry.clone()
            },
            "exceeds the largest possible blob",
        ),
        (
            "raw length 2^32 - 1",
            PackedBlob {
                raw_length: u32::MAX,
                ..entry.clone()
            },
            "declared size 4294967295 exceeds the limit",
        ),
    ] {
        // A repository of its own per case, so that no other index entry wins.
        let h2 = Hostile::new();
        let pack = h2.put_pack(vec![h2.seal(BlobKind::Data, payload)]);
        let trees = h2.put_pack(vec![h2.seal(BlobKind::Tree, &root)]);
        h2.index(vec![
            IndexPack {
                id: pack.id,
                blobs: vec![bad],
            },
            trees,
        ]);
        let snap = h2.snapshot(h2.id(&root));
        let (out, target) = h2.restore(&snap, &[]);
        assert_eq!(out.status.code(), Some(1), "{label}: {}", describe(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(needle),
            "{label}: {}",
            describe(&out)
        );
        h2.assert_contained(&target);
        h2.fails_with(&["check", "--read-data"], &[]);
    }

    // The S3 backend refuses such a range itself (it used to overflow computing it).
    let far = h.rt.block_on(h.repo.backend().get_range(
        &Handle::new(FileType::Pack, good.id.to_hex()),
        u64::MAX - 10,
        100,
    ));
    let why = far.expect_err("a range past 2^64 was read").to_string();
    assert!(why.contains("ends past 2^64"), "{why}");

    // A pack whose trailer claims a 2^32 - 1 byte header (and so 2^32 entries' worth).
    let mut bytes = vec![0u8; 200];
    bytes.extend_from_slice(&u32::MAX.to_le_bytes());
    let liar = Id::of_stored(&bytes);
    h.rt.block_on(
        h.repo
            .backend()
            .put(&Handle::new(FileType::Pack, liar.to_hex()), bytes.into()),
    )
    .expect("put");
    h.index(vec![
        good,
        tree_pack,
        IndexPack {
            id: cairn::hash::PackId(liar),
            blobs: vec![PackedBlob {
                offset: 0,
                length: 100,
                ..entry.clone()
            }],
        },
    ]);
    h.snapshot(h.id(&root));
    h.fails_with(
        &["check"],
        &[
            &liar.to_hex()[..12],
            "header length 4294967295 is impossible",
        ],
    );
}

/// A zstd frame that records no content size and holds `mib` MiB of zeros: a few KiB.
fn unsized_bomb(mib: usize) -> Vec<u8> {
    let mut e = zstd::stream::write::Encoder::new(Vec::new(), 3).expect("encoder");
    e.include_contentsize(false).expect("param");
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..mib {
        std::io::Write::write_all(&mut e, &zeros).expect("compress");
    }
    e.finish().expect("finish")
}

/// The start of a zstd frame that declares `size` bytes of content (the rest of the
/// frame need not exist: a reader must refuse it from the header alone).
fn declaring_bomb(size: u64) -> Vec<u8> {
    let mut e = zstd::stream::write::Encoder::new(Vec::new(), 3).expect("encoder");
    e.include_contentsize(true).expect("param");
    e.set_pledged_src_size(Some(size)).expect("pledge");
    std::io::Write::write_all(&mut e, &vec![0u8; 1 << 16]).expect("compress");
    std::io::Write::flush(&mut e).expect("flush");
    e.get_ref().clone()
}

#[test]
fn decompression_bombs_are_refused_by_their_size_limits() {
    let h = Hostile::new();
    // 1 GiB of zeros in one zstd frame that records no size: about 40 KiB stored.
    let bomb = unsized_bomb(1024);
    assert!(bomb.len() < 1 << 20, "bomb is {} bytes", bomb.len());
    // A frame that declares 1 GiB.
    let declared = declaring_bomb(1 << 30);

    // As a data blob whose index entry says 13 bytes, then the largest size allowed.
    let honest = b"hello, cairn\n".as_slice();
    let id = h.id(honest);
    for (label, payload, raw_length, needle) in [
        (
            "unsized",
            &bomb,
            13,
            "decompresses to more than the 13-byte limit",
        ),
        ("declared", &declared, 13, "declares 1073741824 bytes"),
        (
            "unsized at the 128 MiB limit",
            &bomb,
            cairn::pack::MAX_BLOB_LEN,
            "decompresses to more than the 134217728-byte limit",
        ),
    ] {
        let h2 = Hostile::new();
        let blob = SealedBlob {
            id,
            kind: BlobKind::Data,
            raw_length,
            compressed: true,
            bytes: h2.repo.keys().seal(Purpose::Blob, payload).expect("seal"),
        };
        let root = tree(vec![file(b"bomb", honest, id)]);
        let pack = h2.put_pack(vec![blob, h2.seal(BlobKind::Tree, &root)]);
        h2.index(vec![pack]);
        let snap = h2.snapshot(h2.id(&root));
        let (out, target) = h2.restore(&snap, &[]);
        assert_eq!(out.status.code(), Some(1), "{label}: {}", describe(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(needle),
            "{label}: {}",
            describe(&out)
        );
        h2.assert_contained(&target);
        assert!(
            h2.last_peak_mib() < 400,
            "{label}: restore peaked at {} MiB",
            h2.last_peak_mib()
        );
    }

    // As a snapshot object and as an index object (16 MiB and 1 GiB limits).
    let snap_id = h.put_object(FileType::Snapshot, Purpose::Snapshot, &bomb);
    h.fails_with(
        &["snapshots"],
        &[
            &snap_id.to_hex()[..12],
            "decompresses to more than the 16777216-byte limit",
        ],
    );
    assert!(
        h.last_peak_mib() < 200,
        "peaked at {} MiB",
        h.last_peak_mib()
    );
    // As an index object that declares 4 GiB (the limit is 1 GiB).
    let h3 = Hostile::new();
    let index_id = h3.put_object(FileType::Index, Purpose::Index, &declaring_bomb(4 << 30));
    let legit = snapshot(h3.id(b"{}"));
    h3.rt
        .block_on(h3.repo.save_snapshot(&legit))
        .expect("snapshot");
    h3.fails_with(
        &["restore", "latest", "--target", "/nonexistent/t"],
        &[
            &index_id.to_hex()[..12],
            "declares 4294967296 bytes, more than the 1073741824-byte limit",
        ],
    );
    assert!(
        h3.last_peak_mib() < 200,
        "peaked at {} MiB",
        h3.last_peak_mib()
    );
}

#[test]
fn duplicated_ids_in_lists_are_harmless() {
    let h = Hostile::new();
    let payload = b"stored twice, listed thrice".as_slice();
    let data = h.id(payload);
    // A file whose content list names one blob three times is that blob three times.
    let mut thrice = file(b"thrice", payload, data);
    thrice.content = vec![data; 3];
    thrice.size = 3 * payload.len() as u64;
    let root = tree(vec![thrice]);
    let pack = h.put_pack(vec![
        h.seal(BlobKind::Data, payload),
        h.seal(BlobKind::Tree, &root),
    ]);
    // The index lists the pack twice and each blob twice inside it; a second index object
    // repeats it all; a deletion record lists it again, twice.
    let mut doubled = pack.clone();
    doubled.blobs.extend(pack.blobs.clone());
    h.index(vec![doubled.clone(), doubled.clone()]);
    h.index(vec![doubled.clone()]);
    let record = cairn::format::deletion::DeletionFile {
        version: 1,
        created: "2030-01-01T00:00:00Z".into(),
        packs: vec![doubled.clone(), doubled.clone()],
        dropped: vec![doubled.clone()],
    };
    h.put_object(
        FileType::Deletion,
        Purpose::Deletion,
        &zstd::bulk::compress(&record.to_plain(), 3).expect("compress"),
    );
    // A snapshot with duplicated paths and tags, and a parent that does not exist.
    let mut snap = snapshot(h.id(&root));
    snap.paths = vec!["/x".into(), "/x".into()];
    snap.tags = vec!["t".into(), "t".into()];
    snap.parent = Some(cairn::hash::SnapshotId(Id([7; 32])));
    let snap =
        h.rt.block_on(h.repo.save_snapshot(&snap))
            .expect("snapshot")
            .to_hex();
    let (out, target) = h.restore(&snap, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(
        fs::read(target.join("thrice")).expect("thrice"),
        payload.repeat(3)
    );
    h.assert_contained(&target);
    // Harmless means check finds nothing wrong either.
    let out = h.run(&["check", "--read-data"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let listing = h.run(&["snapshots"]);
    assert_eq!(listing.status.code(), Some(0), "{}", describe(&listing));
    assert!(
        String::from_utf8_lossy(&listing.stdout).contains(&snap[..8]),
        "{}",
        describe(&listing)
    );
    // An index object that is not an index this cairn reads is named and skipped: the
    // restore of everything else goes on, and the exit code (3) says something was.
    let junk = IndexFile {
        version: 2,
        packs: vec![],
    };
    let junk_id = h.put_object(
        FileType::Index,
        Purpose::Index,
        &zstd::bulk::compress(&junk.to_plain(), 3).expect("compress"),
    );
    let (out, target) = h.restore(&snap, &[]);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&junk_id.to_hex()[..12]) && err.contains("unsupported index version 2"),
        "{}",
        describe(&out)
    );
    assert_eq!(
        fs::read(target.join("thrice")).expect("thrice"),
        payload.repeat(3)
    );
}

#[test]
fn prune_keeps_the_intact_copy_of_a_blob_stored_twice() {
    // What a `check --repair` beside a prune can leave: a used blob indexed in two packs,
    // the first of them damaged. A prune keeps one copy; it must be the intact one.
    let h = Hostile::new();
    let payload = b"the only copy that matters".repeat(100);
    let data = h.id(&payload);
    let root = tree(vec![file(b"precious.txt", &payload, data)]);
    let damaged = h.put_pack(vec![h.seal(BlobKind::Data, &payload)]);
    let intact = h.put_pack(vec![h.seal(BlobKind::Data, &payload)]);
    let trees = h.put_pack(vec![h.seal(BlobKind::Tree, &root)]);
    // One index object, the damaged pack first: its location is the one readers and
    // prune take first.
    h.index(vec![damaged.clone(), intact.clone(), trees]);
    let snap = h.snapshot(h.id(&root));
    let entry = &damaged.blobs[0];
    let hex = damaged.id.0.to_hex();
    let path = h.env.objects_dir().join("data").join(&hex[..2]).join(&hex);
    let mut bytes = fs::read(&path).expect("read pack");
    bytes[entry.offset as usize + 30] ^= 0x55;
    fs::write(&path, bytes).expect("damage pack");
    for _ in 0..2 {
        let out = h.run(&["prune", "--grace", "0s"]);
        assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    }
    let (out, target) = h.restore(&snap, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(
        fs::read(target.join("precious.txt")).expect("read"),
        payload
    );
    let out = h.run(&["check", "--read-data"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
}
