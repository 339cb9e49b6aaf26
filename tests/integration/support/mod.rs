//! Shared fixtures for the integration tests: a repository in a temporary place, a way to
//! run the real `cairn` binary against it, and a tree comparison that checks what
//! `diff -r --no-dereference` checks plus modes, mtimes, xattrs, hard links and holes.
//! Beside them: S3 servers (`s3`) and the fault proxy (`fault_proxy`), the daemon
//! harness (`daemon`), hand-made stored objects (`fixtures`) and the hostile-repository
//! harness (`hostile`).
//!
//! Each test file is a crate of its own that uses only part of this, hence the
//! `allow(dead_code)` below rather than one on every item.

#![allow(dead_code)]

pub mod daemon;
pub mod fault_proxy;
pub mod fixtures;
pub mod hostile;
pub mod postgres;
pub mod s3;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Which storage a test's repository lives on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A local directory.
    Local,
    /// A bucket on an in-process s3s-fs server, over HTTP.
    S3,
    /// The same, behind the fault-injecting proxy (clean schedule until a test changes it).
    S3Proxied,
    /// A bucket on an in-process s3s-fs server over HTTPS, its test CA given to cairn with
    /// `s3.ca-bundle`.
    S3Tls,
}

/// A scratch area with a repository location and a password file.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub repo: String,
    pub password_file: PathBuf,
    /// Extra `-o` options and environment for every command.
    pub options: Vec<String>,
    pub env: Vec<(&'static str, String)>,
    /// The proxy, for tests that inject faults (declared before the server: dropped first).
    pub proxy: Option<fault_proxy::FaultProxy>,
    pub server: Option<s3::S3Server>,
}

impl Env {
    /// A new scratch area with a local repository, not yet initialised.
    pub fn new() -> Self {
        Env::with(Kind::Local)
    }

    /// A new scratch area on the given storage, not yet initialised.
    pub fn with(kind: Kind) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let password_file = dir.path().join("passphrase");
        fs::write(&password_file, "test passphrase\n").expect("write password");
        fs::set_permissions(&password_file, fs::Permissions::from_mode(0o600)).expect("chmod");
        let mut env = Env {
            repo: dir.path().join("repo").to_string_lossy().into_owned(),
            dir,
            password_file,
            options: Vec::new(),
            env: Vec::new(),
            proxy: None,
            server: None,
        };
        if kind != Kind::Local {
            let server = if kind == Kind::S3Tls {
                s3::S3Server::start_tls(&["backups"])
            } else {
                s3::S3Server::start(&["backups"])
            };
            let endpoint = if kind == Kind::S3Proxied {
                let proxy =
                    fault_proxy::FaultProxy::start(server.port, fault_proxy::Schedule::clean());
                let e = proxy.endpoint();
                env.proxy = Some(proxy);
                e
            } else {
                server.endpoint()
            };
            env.repo = format!("s3:{endpoint}/backups/host1");
            env.env = s3::aws_env();
            // Fast retries keep fault tests short; the policy is the same.
            env.options = vec![
                "s3.retry-delay=20ms".into(),
                "s3.retries=10".into(),
                "s3.timeout=5s".into(),
            ];
            if let Some(pem) = &server.ca_pem {
                let ca = env.path("test-ca.pem");
                fs::write(&ca, pem).expect("write CA bundle");
                env.options
                    .push(format!("s3.ca-bundle={}", ca.to_string_lossy()));
            }
            env.server = Some(server);
        }
        env
    }

    /// A new scratch area with an initialised local repository.
    pub fn init() -> Self {
        Env::init_on(Kind::Local)
    }

    /// A new scratch area with an initialised repository on the given storage.
    pub fn init_on(kind: Kind) -> Self {
        let env = Env::with(kind);
        env.ok(&["init"]);
        env
    }

    /// The folder holding the repository's objects: the local repository, or the bucket
    /// prefix inside the S3 server's root, for tests that damage objects directly.
    pub fn objects_dir(&self) -> PathBuf {
        match &self.server {
            Some(s) => s.root().join("backups/host1"),
            None => PathBuf::from(&self.repo),
        }
    }

    /// A path inside the scratch area.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The command with repository and passphrase set.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cairn"));
        // The metadata cache in the scratch area, not the user's ~/.cache (a test may
        // still set its own through `env`).
        c.env("CAIRN_CACHE_DIR", self.path("cli-cache"));
        for o in &self.options {
            c.arg("-o").arg(o);
        }
        for (k, v) in &self.env {
            if v.is_empty() {
                c.env_remove(k);
            } else {
                c.env(k, v);
            }
        }
        c.args(args)
            .env("CAIRN_REPOSITORY", &self.repo)
            .env("CAIRN_PASSWORD_FILE", &self.password_file)
            .env_remove("CAIRN_PASSWORD")
            .env_remove("CAIRN_PASSWORD_COMMAND")
            .env_remove("CAIRN_LOG")
            .env_remove("RUST_LOG")
            .stdin(std::process::Stdio::null());
        c
    }

    /// Run and return the output, whatever the exit code.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run cairn")
    }

    /// Run with `pre` (options such as `-o s3.part-size=5MiB`) before `args`, whatever the
    /// exit code.
    pub fn run_with(&self, pre: &[&str], args: &[&str]) -> Output {
        let all: Vec<&str> = pre.iter().chain(args).copied().collect();
        self.run(&all)
    }

    /// Run and insist on success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "cairn {args:?} failed with {:?}\nstdout: {}\nstderr: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Restore `latest` into the new folder `name` and insist it equals `src`; returns
    /// the target.
    pub fn restore_latest_and_compare(&self, src: &Path, name: &str) -> PathBuf {
        let target = self.path(name);
        self.ok(&[
            "restore",
            "latest",
            "--target",
            target.to_str().expect("utf8"),
        ]);
        assert_same_tree(src, &restored(&target, src));
        target
    }

    /// Restore `snapshot` of the repository `repo` (another than the Env's, such as one
    /// of a daemon's destinations) into `target`, insisting it succeeds.
    pub fn restore_from(&self, repo: &str, snapshot: &str, target: &Path) {
        let out = self
            .cmd(&[
                "restore",
                snapshot,
                "--target",
                target.to_str().expect("utf8"),
                "--repo",
                repo,
            ])
            .output()
            .expect("restore");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Restore `latest` of the repository `repo` (another than the Env's) into the new
    /// folder `name` and insist it equals `src`.
    pub fn restore_latest_from_and_compare(&self, repo: &str, src: &Path, name: &str) {
        let target = self.path(name);
        self.restore_from(repo, "latest", &target);
        assert_same_tree(src, &restored(&target, src));
    }

    /// Back up `paths` with `--json` and return the summary.
    pub fn backup_json(&self, paths: &[&Path], extra: &[&str]) -> (Option<i32>, serde_json::Value) {
        let mut args: Vec<String> = vec!["backup".into(), "--json".into()];
        args.extend(extra.iter().map(|s| s.to_string()));
        args.extend(paths.iter().map(|p| p.to_string_lossy().into_owned()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self.run(&refs);
        let stdout = String::from_utf8_lossy(&out.stdout);
        // JSON lines: `status` lines while it runs, then the summary.
        let lines = json_lines(&stdout).unwrap_or_else(|e| {
            panic!(
                "backup output is not JSON lines ({e}): {stdout}\nstderr: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        let v = lines.last().cloned().unwrap_or_default();
        (out.status.code(), v)
    }
}

/// Ids of the repository's snapshots, oldest first.
pub fn snapshot_ids(env: &Env) -> Vec<String> {
    let v: serde_json::Value =
        serde_json::from_str(&env.ok(&["snapshots", "--json"])).expect("json");
    v.as_array()
        .expect("array")
        .iter()
        .map(|s| s["id"].as_str().expect("id").to_string())
        .collect()
}

/// Parse output as JSON lines (every non-empty line one JSON value).
pub fn json_lines(text: &str) -> Result<Vec<serde_json::Value>, String> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(|e| format!("{e} in line {l:?}")))
        .collect()
}

/// Exit code, stdout and stderr of an output, for assertions.
pub fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Where a snapshot of the absolute path `src` lands under a restore target.
pub fn restored(target: &Path, src: &Path) -> PathBuf {
    target.join(src.strip_prefix("/").expect("absolute source"))
}

fn xattrs(p: &Path) -> Vec<(std::ffi::OsString, Vec<u8>)> {
    let mut out: Vec<_> = xattr::list(p)
        .map(|names| {
            names
                .filter_map(|n| xattr::get(p, &n).ok().flatten().map(|v| (n, v)))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Assert that `b` is a faithful copy of `a`: same entries, types, contents, symlink
/// targets, permission bits, mtimes (not for directories' own atime), xattrs, the same
/// hard-link grouping, and files that were sparse are still sparse.
pub fn assert_same_tree(a: &Path, b: &Path) {
    let mut links_a: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let mut links_b: HashMap<(u64, u64), PathBuf> = HashMap::new();
    compare(a, b, Path::new(""), &mut links_a, &mut links_b);
}

fn compare(
    a: &Path,
    b: &Path,
    rel: &Path,
    links_a: &mut HashMap<(u64, u64), PathBuf>,
    links_b: &mut HashMap<(u64, u64), PathBuf>,
) {
    let ma = fs::symlink_metadata(a).unwrap_or_else(|e| panic!("{}: {e}", a.display()));
    let mb = fs::symlink_metadata(b)
        .unwrap_or_else(|e| panic!("missing in restore: {} ({e})", rel.display()));
    assert_eq!(
        ma.file_type(),
        mb.file_type(),
        "type differs at {}",
        rel.display()
    );
    if !ma.file_type().is_symlink() {
        assert_eq!(
            ma.mode() & 0o7777,
            mb.mode() & 0o7777,
            "mode differs at {}",
            rel.display()
        );
    }
    assert_eq!(
        (ma.mtime(), ma.mtime_nsec()),
        (mb.mtime(), mb.mtime_nsec()),
        "mtime differs at {}",
        rel.display()
    );
    if ma.uid() != mb.uid() || ma.gid() != mb.gid() {
        // Ownership is restored only when running as root.
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            panic!("owner differs at {}", rel.display());
        }
    }
    assert_eq!(xattrs(a), xattrs(b), "xattrs differ at {}", rel.display());
    let ft = ma.file_type();
    if ft.is_symlink() {
        assert_eq!(
            fs::read_link(a).expect("readlink"),
            fs::read_link(b).expect("readlink"),
            "symlink target differs at {}",
            rel.display()
        );
    } else if ft.is_file() {
        if ma.nlink() > 1 {
            let ka = (ma.dev(), ma.ino());
            let kb = (mb.dev(), mb.ino());
            let first_a = links_a
                .entry(ka)
                .or_insert_with(|| rel.to_path_buf())
                .clone();
            let first_b = links_b
                .entry(kb)
                .or_insert_with(|| rel.to_path_buf())
                .clone();
            assert_eq!(
                first_a,
                first_b,
                "hard-link grouping differs at {}",
                rel.display()
            );
        }
        assert_eq!(ma.len(), mb.len(), "size differs at {}", rel.display());
        assert!(files_equal(a, b), "content differs at {}", rel.display());
        if ma.blocks() * 512 < ma.len() {
            assert!(
                mb.blocks() * 512 < mb.len(),
                "{} was sparse but was restored dense",
                rel.display()
            );
        }
    } else if ft.is_char_device() || ft.is_block_device() {
        assert_eq!(
            ma.rdev(),
            mb.rdev(),
            "device number differs at {}",
            rel.display()
        );
    } else if ft.is_dir() {
        let names = |p: &Path| {
            let mut v: Vec<_> = fs::read_dir(p)
                .expect("read_dir")
                .map(|e| e.expect("entry").file_name())
                .collect();
            v.sort();
            v
        };
        let (na, nb) = (names(a), names(b));
        assert_eq!(na, nb, "entries differ in {}", rel.display());
        for n in na {
            compare(&a.join(&n), &b.join(&n), &rel.join(&n), links_a, links_b);
        }
    }
}

fn files_equal(a: &Path, b: &Path) -> bool {
    use std::io::Read;
    let (mut fa, mut fb) = (
        fs::File::open(a).expect("open a"),
        fs::File::open(b).expect("open b"),
    );
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = read_full(&mut fa, &mut ba);
        let m = read_full(&mut fb, &mut bb);
        if n != m || ba[..n] != bb[..m] {
            return false;
        }
        if n == 0 {
            return true;
        }
    }
    fn read_full(f: &mut fs::File, buf: &mut [u8]) -> usize {
        let mut got = 0;
        while got < buf.len() {
            match f.read(&mut buf[got..]).expect("read") {
                0 => break,
                n => got += n,
            }
        }
        got
    }
}

/// Every file below `dir`, at any depth (none if it cannot be read).
pub fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk_files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Copy a folder tree: folders and regular files (anything else, such as a socket, is
/// left out).
pub fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("mkdir");
    for e in fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        let dest = to.join(e.file_name());
        let ty = e.file_type().expect("type");
        if ty.is_dir() {
            copy_dir(&e.path(), &dest);
        } else if ty.is_file() {
            fs::copy(e.path(), &dest).expect("copy");
        }
    }
}

/// A command's standard error as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Deterministic pseudo-random bytes (xorshift64), cheap enough for hundreds of MiB.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Whether this process runs as root (some checks only hold there).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// An OsStr from raw bytes, for non-UTF-8 names.
pub fn os(bytes: &[u8]) -> &OsStr {
    use std::os::unix::ffi::OsStrExt;
    OsStr::from_bytes(bytes)
}
