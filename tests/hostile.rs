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

mod support;

use cairn::backend::{Backend, BackendOptions, FileType, Handle};
use cairn::crypto::Purpose;
use cairn::format::index::{BlobKind, IndexFile, IndexPack, PackedBlob};
use cairn::format::name::ByteName;
use cairn::format::snapshot::Snapshot;
use cairn::format::tree::{Node, NodeKind, Tree};
use cairn::hash::{BlobId, Id};
use cairn::pack::{PackBuilder, SealedBlob, seal_blob};
use cairn::repo::Repository;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::s3::{ACCESS_KEY, SECRET_KEY};
use support::{Env, Kind, describe};

/// Longest any single `cairn` run may take before the test calls it a hang.
const RUN_LIMIT: Duration = Duration::from_secs(40);

/// A repository on a real S3 server, opened in-process with its keys.
struct Hostile {
    env: Env,
    rt: tokio::runtime::Runtime,
    repo: Repository,
    restores: std::cell::Cell<u32>,
    last_peak_kib: std::cell::Cell<i64>,
}

impl Hostile {
    fn new() -> Self {
        let env = Env::init_on(Kind::S3);
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let mut opts = BackendOptions {
            access_key_id: Some(ACCESS_KEY.into()),
            secret_access_key: Some(SECRET_KEY.into()),
            region: Some("us-east-1".into()),
            ..Default::default()
        };
        opts.apply(&env.options).expect("options");
        let backend: Arc<dyn Backend> = rt
            .block_on(cairn::backend::open(&env.repo, &opts))
            .expect("backend");
        let repo = rt
            .block_on(Repository::open(backend, b"test passphrase"))
            .expect("open");
        fs::create_dir_all(env.path("outside")).expect("mkdir outside");
        Hostile {
            env,
            rt,
            repo,
            restores: std::cell::Cell::new(0),
            last_peak_kib: std::cell::Cell::new(0),
        }
    }

    fn id(&self, plain: &[u8]) -> BlobId {
        self.repo.keys().blob_id(plain)
    }

    fn seal(&self, kind: BlobKind, plain: &[u8]) -> SealedBlob {
        let keys = self.repo.keys();
        seal_blob(keys, keys.blob_id(plain), kind, plain).expect("seal")
    }

    /// Store a pack of already sealed blobs; returns its index entries (not yet indexed).
    fn put_pack(&self, blobs: Vec<SealedBlob>) -> IndexPack {
        let mut pack = PackBuilder::default();
        for b in blobs {
            pack.add(b);
        }
        let done = pack
            .finish(self.repo.keys(), self.repo.config().version)
            .expect("finish");
        self.rt
            .block_on(
                self.repo
                    .backend()
                    .put(&Handle::new(FileType::Pack, done.id.to_hex()), done.bytes),
            )
            .expect("put pack");
        done.index
    }

    fn index(&self, packs: Vec<IndexPack>) {
        self.rt
            .block_on(self.repo.save_index(packs))
            .expect("index");
    }

    /// Seal compressed, as cairn stores metadata, and put under its content name.
    fn put_object(&self, kind: FileType, purpose: Purpose, payload: &[u8]) -> Id {
        let sealed = self.repo.keys().seal(purpose, payload).expect("seal");
        let id = Id::of_stored(&sealed);
        self.rt
            .block_on(
                self.repo
                    .backend()
                    .put(&Handle::new(kind, id.to_hex()), sealed.into()),
            )
            .expect("put object");
        id
    }

    fn snapshot(&self, tree: BlobId) -> String {
        self.rt
            .block_on(self.repo.save_snapshot(&snapshot(tree)))
            .expect("snapshot")
            .to_hex()
    }

    /// A snapshot whose root tree has the given plaintext (bypassing every check, as an
    /// attacker would), with `data` blobs and extra `trees` stored and indexed beside it.
    fn plant(&self, root: &[u8], data: &[&[u8]], trees: &[&[u8]]) -> String {
        let mut blobs: Vec<SealedBlob> =
            data.iter().map(|d| self.seal(BlobKind::Data, d)).collect();
        blobs.extend(trees.iter().map(|t| self.seal(BlobKind::Tree, t)));
        blobs.push(self.seal(BlobKind::Tree, root));
        let pack = self.put_pack(blobs);
        self.index(vec![pack]);
        self.snapshot(self.id(root))
    }

    /// Run `cairn` with a time limit; a run past it is killed and fails the test. The
    /// run's peak resident memory is kept in `last_peak_kib`.
    #[expect(
        clippy::zombie_processes,
        reason = "the child is reaped with wait4, which also reports its peak memory"
    )]
    fn run(&self, args: &[&str]) -> Output {
        use std::io::Read;
        use std::os::unix::process::ExitStatusExt;
        let mut child = self
            .env
            .cmd(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn cairn");
        let pid = child.id() as i32;
        let drain = |mut r: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut v = Vec::new();
                let _ = r.read_to_end(&mut v);
                v
            })
        };
        let out = drain(Box::new(child.stdout.take().expect("stdout")));
        let err = drain(Box::new(child.stderr.take().expect("stderr")));
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut status = 0;
            // SAFETY: wait4 writes only into the two locals passed by pointer.
            let (status, usage) = unsafe {
                let mut usage: libc::rusage = std::mem::zeroed();
                libc::wait4(pid, &mut status, 0, &mut usage);
                (status, usage)
            };
            let _ = tx.send((status, usage.ru_maxrss));
        });
        match rx.recv_timeout(RUN_LIMIT) {
            Ok((status, peak)) => {
                self.last_peak_kib.set(peak);
                Output {
                    status: std::process::ExitStatus::from_raw(status),
                    stdout: out.join().expect("stdout reader"),
                    stderr: err.join().expect("stderr reader"),
                }
            }
            Err(_) => {
                // SAFETY: kill has no memory-safety preconditions; pid is our own child.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                panic!("cairn {args:?} hung for more than {RUN_LIMIT:?}");
            }
        }
    }

    /// Peak resident memory of the last run, in MiB.
    fn last_peak_mib(&self) -> i64 {
        self.last_peak_kib.get() / 1024
    }

    /// Run and insist on a failure whose stderr or stdout holds every one of `needles`.
    fn fails_with(&self, args: &[&str], needles: &[&str]) -> Output {
        let out = self.run(args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            matches!(out.status.code(), Some(c) if c != 0),
            "cairn {args:?} should fail (a signal means a crash): {}",
            describe(&out)
        );
        assert!(
            !text.contains("panicked"),
            "cairn {args:?} panicked: {}",
            describe(&out)
        );
        for n in needles {
            assert!(
                text.contains(n),
                "cairn {args:?}: expected {n:?} in the output: {}",
                describe(&out)
            );
        }
        out
    }

    /// A fresh restore target `rN/target`, so that anything written beside it shows.
    fn target(&self) -> PathBuf {
        let n = self.restores.get();
        self.restores.set(n + 1);
        self.env.path(&format!("r{n}/target"))
    }

    /// Restore `snap` into a fresh target; returns the output and the target.
    fn restore(&self, snap: &str, extra: &[&str]) -> (Output, PathBuf) {
        let target = self.target();
        let mut args = vec!["restore", snap, "--target", target.to_str().expect("utf8")];
        args.extend_from_slice(extra);
        let out = self.run(&args);
        assert!(
            out.status.code().is_some()
                && !String::from_utf8_lossy(&out.stderr).contains("panicked"),
            "restore crashed: {}",
            describe(&out)
        );
        (out, target)
    }

    /// Nothing was written beside the target or into the shared `outside` folder.
    fn assert_contained(&self, target: &Path) {
        let parent = target.parent().expect("parent");
        let beside: Vec<_> = fs::read_dir(parent)
            .expect("list parent")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(
            beside,
            vec![std::ffi::OsString::from("target")],
            "something was written next to {}",
            target.display()
        );
        let outside: Vec<_> = fs::read_dir(self.env.path("outside"))
            .expect("list outside")
            .collect();
        assert!(outside.is_empty(), "a restore wrote into outside/");
        for stray in ["escaped", "abs", "x"] {
            assert!(!self.env.path(stray).exists(), "{stray} was created");
        }
    }
}

fn snapshot(tree: BlobId) -> Snapshot {
    Snapshot {
        time: "2030-01-01T00:00:00Z".into(),
        parent: None,
        tree,
        paths: vec!["/x".into()],
        hostname: "attacker".into(),
        username: "attacker".into(),
        uid: 0,
        gid: 0,
        tags: vec![],
        program_version: "evil".into(),
        summary: None,
    }
}

fn node(name: &[u8], kind: NodeKind) -> Node {
    Node {
        mode: 0o755,
        ..Node::bare(ByteName(name.to_vec()), kind)
    }
}

fn file(name: &[u8], content: &[u8], id: BlobId) -> Node {
    let mut n = node(name, NodeKind::File);
    n.mode = 0o644;
    n.size = content.len() as u64;
    n.content = vec![id];
    n
}

fn dir(name: &[u8], subtree: BlobId) -> Node {
    let mut n = node(name, NodeKind::Dir);
    n.subtree = Some(subtree);
    n
}

fn tree(nodes: Vec<Node>) -> Vec<u8> {
    Tree { nodes }.to_plain()
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
