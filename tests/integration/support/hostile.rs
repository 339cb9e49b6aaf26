//! The hostile-repository harness: a real repository on an s3s-fs server, opened
//! in-process with its keys so that a test can seal and plant whatever an attacker with
//! those keys could, then run `cairn` on it with a time limit and a watch on its peak
//! memory. Used by `hostile.rs` and `hostile_objects.rs`.

use super::fixtures::snapshot;
use super::s3::backend_options;
use super::{Env, Kind, describe};
use cairn::backend::{Backend, FileType, Handle};
use cairn::compression::Compression;
use cairn::crypto::Purpose;
use cairn::format::index::{BlobKind, IndexPack};
use cairn::hash::{BlobId, Id};
use cairn::pack::{PackBuilder, SealedBlob, seal_blob};
use cairn::repo::Repository;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

/// Longest any single `cairn` run may take before the test calls it a hang: a guard, not
/// a speed test. A walk of the 100,000-level tree takes about 25 s alone on 2 cores and
/// went past 40 s with the rest of the suite beside it.
const RUN_LIMIT: Duration = Duration::from_secs(150);

/// A repository on a real S3 server, opened in-process with its keys.
pub struct Hostile {
    /// The scratch area and its repository, for the commands a test runs itself.
    pub env: Env,
    /// The runtime the in-process repository runs on, for reads and writes of its own.
    pub rt: tokio::runtime::Runtime,
    /// The repository, opened with its keys.
    pub repo: Repository,
    restores: std::cell::Cell<u32>,
    last_peak_kib: std::cell::Cell<i64>,
}

impl Hostile {
    /// A new initialised repository on its own S3 server, opened with its keys, and an
    /// empty `outside` folder that no restore may write into.
    pub fn new() -> Self {
        let env = Env::init_on(Kind::S3);
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let opts = backend_options(&env.options);
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

    /// The id the repository's keys give the blob `plain`, to point a node at it.
    pub fn id(&self, plain: &[u8]) -> BlobId {
        self.repo.keys().blob_id(plain)
    }

    /// `plain` sealed as a blob of `kind` under its honest id, ready for a pack.
    pub fn seal(&self, kind: BlobKind, plain: &[u8]) -> SealedBlob {
        let keys = self.repo.keys();
        seal_blob(keys, keys.blob_id(plain), kind, plain, Compression::AUTO).expect("seal")
    }

    /// Store a pack of already sealed blobs; returns its index entries (not yet indexed).
    pub fn put_pack(&self, blobs: Vec<SealedBlob>) -> IndexPack {
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

    /// Store an index object listing `packs`, so readers find what they hold.
    pub fn index(&self, packs: Vec<IndexPack>) {
        self.rt
            .block_on(self.repo.save_index(packs))
            .expect("index");
    }

    /// Seal compressed, as cairn stores metadata, and put under its content name.
    pub fn put_object(&self, kind: FileType, purpose: Purpose, payload: &[u8]) -> Id {
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

    /// Store an attacker's snapshot of the root tree `tree`; returns its id.
    pub fn snapshot(&self, tree: BlobId) -> String {
        self.rt
            .block_on(self.repo.save_snapshot(&snapshot(tree)))
            .expect("snapshot")
            .to_hex()
    }

    /// A snapshot whose root tree has the given plaintext (bypassing every check, as an
    /// attacker would), with `data` blobs and extra `trees` stored and indexed beside it.
    pub fn plant(&self, root: &[u8], data: &[&[u8]], trees: &[&[u8]]) -> String {
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
    pub fn run(&self, args: &[&str]) -> Output {
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
    pub fn last_peak_mib(&self) -> i64 {
        self.last_peak_kib.get() / 1024
    }

    /// Run and insist on a failure whose stderr or stdout holds every one of `needles`.
    pub fn fails_with(&self, args: &[&str], needles: &[&str]) -> Output {
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
    pub fn target(&self) -> PathBuf {
        let n = self.restores.get();
        self.restores.set(n + 1);
        self.env.path(&format!("r{n}/target"))
    }

    /// Restore `snap` into a fresh target; returns the output and the target.
    pub fn restore(&self, snap: &str, extra: &[&str]) -> (Output, PathBuf) {
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
    pub fn assert_contained(&self, target: &Path) {
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
