//! Power cuts, not only `kill -9`: the page cache survives a kill, so a kill never tests
//! the order of fsyncs. Here the real binary runs under an `LD_PRELOAD` shim
//! (`tests/integration/support/powercut.c`) that keeps the image of the repository that would survive
//! a power cut at each moment (only what was fsynced: file contents at their last fsync,
//! directory entries at their directory's last fsync). Each run is killed at a random
//! moment, the repository is replaced by that image (the machine "reboots"), and every
//! snapshot reported saved before the cut must restore exactly, and the next runs go on.

use crate::support;

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use support::{Env, copy_dir, describe, pseudo_random, restored};

/// The shim, built once per test binary with the system C compiler, into a folder of
/// its own (not CARGO_TARGET_TMPDIR: a test there needs its folder left unchanged).
fn shim() -> &'static Path {
    static SHIM: OnceLock<PathBuf> = OnceLock::new();
    SHIM.get_or_init(|| {
        let dir = tempfile::tempdir().expect("shim folder").keep();
        let out = dir.join("powercut.so");
        let src =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/integration/support/powercut.c");
        let status = Command::new("cc")
            .args([
                "-shared",
                "-fPIC",
                "-O2",
                "-Wall",
                "-Wno-format-truncation",
                "-o",
            ])
            .arg(&out)
            .arg(&src)
            .arg("-ldl")
            .arg("-lpthread")
            .status()
            .expect("run cc (the C compiler builds the power-cut shim)");
        assert!(status.success(), "building the power-cut shim failed");
        out
    })
}

/// A local repository whose durable image is kept by the shim.
struct Machine {
    env: Env,
    image: PathBuf,
    store: PathBuf,
    /// Snapshots reported saved, with the file contents they hold.
    saved: BTreeMap<String, Manifest>,
    cuts: u32,
    /// Snapshots reported saved, forgotten ones included.
    saved_total: u32,
    rng: u64,
}

impl Machine {
    fn new(seed: u64) -> Self {
        let env = Env::new();
        env.ok(&["init", "--pack-size", "1"]);
        let image = env.path("image");
        let store = env.path("store");
        fs::create_dir_all(&store).expect("mkdir");
        // What init wrote is durable (it fsyncs every object): the image starts as it.
        copy_dir(Path::new(&env.repo), &image);
        Machine {
            env,
            image,
            store,
            saved: BTreeMap::new(),
            cuts: 0,
            saved_total: 0,
            rng: seed,
        }
    }

    fn next(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    /// Run `args` under the shim and cut the power after `after` (or let it finish);
    /// returns its stdout and whether it ran to its end.
    fn run_until(&mut self, args: &[&str], after: Duration) -> (String, bool) {
        let mut cmd = self.env.cmd(args);
        cmd.env("LD_PRELOAD", shim())
            .env("POWERCUT_ROOT", &self.env.repo)
            .env("POWERCUT_IMAGE", &self.image)
            .env("POWERCUT_STORE", &self.store)
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().expect("spawn");
        let start = Instant::now();
        let finished = loop {
            if child.try_wait().expect("wait").is_some() {
                break true;
            }
            if start.elapsed() >= after {
                let _ = child.kill();
                let _ = child.wait();
                self.cuts += 1;
                break false;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let mut out = String::new();
        if let Some(mut s) = child.stdout.take() {
            let _ = s.read_to_string(&mut out);
        }
        // The machine comes back up with what the disk kept (fresh files, so the kept
        // contents of the last run's files are of no use any more).
        let repo = PathBuf::from(&self.env.repo);
        fs::remove_dir_all(&repo).expect("remove");
        copy_dir(&self.image, &repo);
        fs::remove_dir_all(&self.store).expect("remove");
        fs::create_dir_all(&self.store).expect("mkdir");
        (out, finished)
    }

    /// A backup of `src`, cut at a random moment within `window`; a snapshot it
    /// reported saved is remembered with what it holds. The window adapts so that about
    /// half the runs are cut whatever the machine's load: shorter after a run that
    /// finished, longer after one that was cut.
    fn backup(&mut self, src: &Path, window: &mut Duration) {
        let after = Duration::from_millis(self.next() % (window.as_millis() as u64).max(1));
        let (out, finished) = self.run_until(&["backup", src.to_str().expect("utf8")], after);
        *window = if finished {
            (*window * 3 / 4).max(Duration::from_millis(20))
        } else {
            *window * 5 / 4
        };
        if let Some(id) = out
            .lines()
            .find_map(|l| l.strip_prefix("snapshot ")?.strip_suffix(" saved"))
        {
            self.saved.insert(id.to_string(), manifest(src));
            self.saved_total += 1;
        }
    }

    /// Every snapshot reported saved (and not forgotten) restores exactly.
    fn verify(&self, src: &Path) {
        let listed = self.env.ok(&["snapshots", "--json"]);
        for (id, want) in &self.saved {
            assert!(
                listed.contains(id.as_str()),
                "snapshot {id} was reported saved but is gone after the power cut ({} cuts)",
                self.cuts
            );
            let target = self.env.path(&format!("r-{}-{}", &id[..8], self.cuts));
            let out = self
                .env
                .run(&["restore", id, "--target", target.to_str().expect("utf8")]);
            assert!(
                out.status.success(),
                "snapshot {id}, reported saved, does not restore after a power cut: {}",
                describe(&out)
            );
            assert!(
                manifest(&restored(&target, src)) == *want,
                "snapshot {id} restores, but not to what it held when it was saved"
            );
            let _ = fs::remove_dir_all(&target);
        }
    }
}

/// Each file's path below the tree and the hash of its content.
type Manifest = BTreeMap<PathBuf, blake3::Hash>;

fn manifest(root: &Path) -> Manifest {
    support::walk_files(root)
        .into_iter()
        .map(|p| {
            let hash = blake3::hash(&fs::read(&p).expect("read"));
            (p.strip_prefix(root).expect("below").to_path_buf(), hash)
        })
        .collect()
}

fn change(src: &Path, round: u64) {
    fs::write(
        src.join(format!("new-{round}.bin")),
        pseudo_random(700_000, 100 + round),
    )
    .expect("write");
    fs::write(
        src.join("edited.txt"),
        format!("round {round}\n").repeat(1000),
    )
    .expect("write");
}

#[test]
fn every_snapshot_reported_saved_survives_a_power_cut_in_backup_and_prune() {
    let seed = std::env::var("CAIRN_POWERCUT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x9e37_79b9_7f4a_7c15u64);
    eprintln!("power-cut seed {seed} (set CAIRN_POWERCUT_SEED to replay)");
    let mut m = Machine::new(seed);
    let src = m.env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    for i in 0..6 {
        fs::write(src.join(format!("base-{i}.bin")), pseudo_random(600_000, i)).expect("write");
    }
    // Backups cut anywhere: an uncut run of the same size sets where the cuts start.
    m.backup(&src, &mut Duration::from_secs(600));
    assert!(!m.saved.is_empty(), "the uncut backup saved nothing");
    change(&src, 100);
    let t = Instant::now();
    m.backup(&src, &mut Duration::from_secs(600));
    let mut window = t.elapsed().max(Duration::from_millis(50)) * 3 / 2;
    for round in 0..12 {
        change(&src, round);
        m.backup(&src, &mut window);
        m.verify(&src);
    }
    assert!(
        m.cuts >= 5,
        "too few runs were cut ({}): the test proved little",
        m.cuts
    );
    // Prune cut anywhere: what is kept still restores.
    let keep: Vec<String> = m.saved.keys().rev().take(2).cloned().collect();
    let mut args = vec!["forget"];
    let forget: Vec<String> = m
        .saved
        .keys()
        .filter(|k| !keep.contains(k))
        .cloned()
        .collect();
    args.extend(forget.iter().map(String::as_str));
    if !forget.is_empty() {
        let (_, finished) = m.run_until(&args, Duration::from_secs(600));
        assert!(finished, "the uncut forget did not finish");
        for id in &forget {
            m.saved.remove(id);
        }
    }
    let t = Instant::now();
    let (_, finished) = m.run_until(&["prune", "--grace", "0s"], Duration::from_secs(600));
    assert!(finished, "the uncut prune did not finish");
    let prune_time = t.elapsed().max(Duration::from_millis(100));
    m.verify(&src);
    for round in 12..18 {
        change(&src, round);
        m.backup(&src, &mut window);
        let cut = Duration::from_millis(m.next() % (prune_time.as_millis() as u64 * 2));
        m.run_until(&["prune", "--grace", "0s", "--max-unused", "1%"], cut);
        m.verify(&src);
    }
    // After all the cuts, the repository is sound.
    let out = m.env.run(&["check", "--read-data"]);
    assert!(out.status.success(), "{}", describe(&out));
    eprintln!(
        "{} power cuts, {} snapshots saved in all, {} kept and verified",
        m.cuts,
        m.saved_total,
        m.saved.len()
    );
    assert!(
        m.saved_total >= 4,
        "too few backups ran to their end ({}): the cuts fall too early",
        m.saved_total
    );
}

/// A daemon run under the power-cut shim, its state directory the watched disk.
struct CutDaemon {
    child: std::process::Child,
}

impl CutDaemon {
    fn start(
        env: &Env,
        config: &Path,
        state: &Path,
        image: &Path,
        store: &Path,
        log: &Path,
    ) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cairn"));
        cmd.args(["daemon", "--config"])
            .arg(config)
            .env(
                "CAIRN_LOG",
                "info,aws_config=error,aws_smithy_runtime=error",
            )
            .env("LD_PRELOAD", shim())
            .env("POWERCUT_ROOT", state)
            .env("POWERCUT_IMAGE", image)
            .env("POWERCUT_STORE", store)
            .env_remove("CAIRN_PASSWORD")
            .env_remove("CAIRN_PASSWORD_FILE")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(log).expect("log"));
        for (k, v) in &env.env {
            cmd.env(k, v);
        }
        CutDaemon {
            child: cmd.spawn().expect("start daemon"),
        }
    }

    /// Power off: the process dies at once, and the disk keeps only what was synced.
    fn cut(mut self, state: &Path, image: &Path, store: &Path) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        fs::remove_dir_all(state).expect("remove state");
        copy_dir(image, state);
        fs::remove_dir_all(store).expect("remove store");
        fs::create_dir_all(store).expect("mkdir store");
    }
}

impl Drop for CutDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn status(env: &Env, config: &Path) -> Option<serde_json::Value> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cairn"));
    cmd.args(["status", "--json", "--config"]).arg(config);
    for (k, v) in &env.env {
        cmd.env(k, v);
    }
    serde_json::from_slice(&cmd.output().ok()?.stdout).ok()
}

fn wait_for(
    env: &Env,
    config: &Path,
    log: &Path,
    what: &str,
    cond: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let start = Instant::now();
    loop {
        if let Some(s) = status(env, config)
            && cond(&s["destinations"][0])
        {
            return s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "timed out waiting for {what}: {:?}\n{}",
            status(env, config),
            fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn journaled_snapshots_survive_power_cuts_while_journaling_and_replaying() {
    use support::fault_proxy::{FaultProxy, Schedule};
    use support::s3::{S3Server, aws_env};
    let mut env = Env::new();
    env.env = aws_env();
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    fs::write(src.join("base.bin"), pseudo_random(1 << 20, 5)).expect("write");
    fs::write(src.join("doc.txt"), b"state 0").expect("write");
    let server = S3Server::start(&["backups"]);
    let proxy = FaultProxy::start(server.port, Schedule::clean());
    let repo = format!("s3:{}/backups/host1", proxy.endpoint());
    let (state, image, store) = (env.path("state"), env.path("image"), env.path("store"));
    for d in [&state, &image, &store] {
        fs::create_dir_all(d).expect("mkdir");
    }
    let config = env.path("cairn.toml");
    fs::write(
        &config,
        format!(
            "state_dir = \"{}\"\npassword_file = \"{}\"\n\n[[source]]\npaths = [\"{}\"]\n\n[[destination]]\nname = \"only\"\nrepo = \"{repo}\"\noptions = {{ \"s3.retry-delay\" = \"20ms\", \"s3.retries\" = \"2\", \"s3.timeout\" = \"2s\" }}\n\n[schedule]\nquiet_period = \"300ms\"\nmin_interval = \"0s\"\n",
            state.display(),
            env.password_file.display(),
            src.display()
        ),
    )
    .expect("config");
    let log = |n: u32| env.path(&format!("daemon{n}.log"));
    let settled = |d: &serde_json::Value| {
        !d["last_snapshot"].is_null()
            && d["state"] == "idle"
            && d["pending_changes"] == 0
            && d["last_error"].is_null()
            && d["journal_snapshots"] == 0
    };
    let d = CutDaemon::start(&env, &config, &state, &image, &store, &log(1));
    wait_for(&env, &config, &log(1), "the first snapshot", settled);

    // Down: two states are journaled; then the power fails.
    proxy.set_schedule(Schedule {
        reset: 1000,
        ..Schedule::clean()
    });
    fs::write(src.join("doc.txt"), b"state 1, while the bucket is down").expect("write");
    wait_for(&env, &config, &log(1), "one journaled snapshot", |d| {
        d["journal_snapshots"] == 1
    });
    fs::write(src.join("doc.txt"), b"state 2, still down").expect("write");
    fs::write(src.join("new.bin"), pseudo_random(300_000, 6)).expect("write");
    wait_for(&env, &config, &log(1), "two journaled snapshots", |d| {
        d["journal_snapshots"] == 2
    });
    d.cut(&state, &image, &store);

    // Back up after the cut, still down: both journaled snapshots are still there.
    let d = CutDaemon::start(&env, &config, &state, &image, &store, &log(2));
    let s = wait_for(&env, &config, &log(2), "the journal after the cut", |d| {
        !d["journal_snapshots"].is_null()
    });
    assert_eq!(
        s["destinations"][0]["journal_snapshots"], 2,
        "a journaled snapshot was lost in the power cut: {s}"
    );
    // The bucket is back, and the power fails again during the replay.
    proxy.set_schedule(Schedule::clean());
    let seed = 0x51ed_270b_u64 ^ u64::from(std::process::id());
    std::thread::sleep(Duration::from_millis(seed % 1500));
    d.cut(&state, &image, &store);

    // The replay finishes after the second cut, and every state reached the bucket.
    let d = CutDaemon::start(&env, &config, &state, &image, &store, &log(3));
    wait_for(&env, &config, &log(3), "replay and catch-up", settled);
    drop(d);
    let listed: serde_json::Value =
        serde_json::from_str(&env.ok(&["snapshots", "--json", "--repo", &repo])).expect("json");
    let mut docs = Vec::new();
    for snap in listed.as_array().expect("array") {
        let id = snap["id"].as_str().expect("id");
        let target = env.path(&format!("r-{}", &id[..8]));
        env.ok(&[
            "restore",
            id,
            "--repo",
            &repo,
            "--target",
            target.to_str().expect("utf8"),
        ]);
        docs.push(fs::read(restored(&target, &src).join("doc.txt")).expect("doc"));
    }
    for state in [
        &b"state 1, while the bucket is down"[..],
        b"state 2, still down",
    ] {
        assert!(
            docs.iter().any(|d| d == state),
            "the journaled state {:?} never reached the bucket",
            String::from_utf8_lossy(state)
        );
    }
    let out = env.run(&["check", "--read-data", "--repo", &repo]);
    assert!(out.status.success(), "{}", describe(&out));
}
