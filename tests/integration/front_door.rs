//! The front door: `cairn daemon --watch DIR` with no configuration file backs DIR up to a
//! local repository in the user's data directory, with a generated passphrase kept beside
//! the configuration, and says loudly where both are and that the passphrase needs a copy.

use crate::support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::Env;

/// A quick-start daemon with its own data home; stopped (SIGTERM) when dropped.
struct QuickStart {
    child: Child,
}

impl QuickStart {
    fn start(env: &Env, cwd: &Path, dir: &str) -> Self {
        let child = quick_cmd(env, &["daemon", "--watch", dir])
            .current_dir(cwd)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(env.path("daemon.log")).expect("log"))
            .spawn()
            .expect("start the daemon");
        QuickStart { child }
    }

    fn stop(&mut self) {
        // SAFETY: kill with a pid of our own child has no memory-safety preconditions.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for QuickStart {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `cairn` with the scratch area as the only home: no configuration, no passphrase set.
fn quick_cmd(env: &Env, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cairn"));
    c.args(args)
        .env("HOME", env.path("home"))
        .env("XDG_DATA_HOME", env.path("data"))
        .env_remove("CAIRN_REPOSITORY")
        .env_remove("CAIRN_PASSWORD")
        .env_remove("CAIRN_PASSWORD_FILE")
        .env_remove("CAIRN_LOG")
        .env("CAIRN_CACHE_DIR", env.path("cli-cache"))
        .stdin(Stdio::null());
    c
}

/// Wait until the repository at `env` holds `n` snapshots.
fn wait_for_snapshots(env: &Env, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if Path::new(&env.repo).join("config").exists() && env.password_file.exists() {
            let ids = support::snapshot_ids(env);
            if ids.len() >= n {
                return ids;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no {n} snapshot(s) within 60 s; log:\n{}",
            std::fs::read_to_string(env.path("daemon.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn daemon_watch_without_a_configuration_backs_up_to_the_data_directory_and_says_where() {
    let mut env = Env::new();
    let home = env.path("home");
    let src = home.join("Documents");
    std::fs::create_dir_all(src.join("deep")).expect("mkdir");
    std::fs::write(src.join("notes.txt"), "my first file\n").expect("write");
    std::fs::write(
        src.join("deep/photo.raw"),
        support::pseudo_random(300_000, 7),
    )
    .expect("write");
    let data = env.path("data").join("cairn");
    // What the quick start promises, read through the normal commands.
    env.repo = data.join("repository").to_string_lossy().into_owned();
    env.password_file = data.join("passphrase");

    // A relative DIR is taken from the working directory.
    let mut daemon = QuickStart::start(&env, &home, "Documents");
    wait_for_snapshots(&env, 1);

    let mode = std::fs::metadata(&env.password_file)
        .expect("passphrase")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the passphrase is private");
    let passphrase = std::fs::read_to_string(&env.password_file).expect("read passphrase");
    assert!(
        passphrase.trim().len() >= 32,
        "a generated passphrase, not a weak one: {passphrase:?}"
    );
    assert!(
        data.join("cairn.toml").exists(),
        "the configuration beside it"
    );

    // `status` finds the quick start's daemon with no --config, and says where things are.
    let status = quick_cmd(&env, &["status"]).output().expect("status");
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.status.success(),
        "status: {}",
        support::describe(&status)
    );
    assert!(text.contains("KEEP A COPY OF THAT PASSPHRASE"), "{text}");
    assert!(
        text.contains(&env.password_file.display().to_string()) && text.contains(&env.repo),
        "{text}"
    );
    let log = std::fs::read_to_string(env.path("daemon.log")).expect("log");
    assert!(
        log.contains("KEEP A COPY OF THAT PASSPHRASE")
            && log.contains(&env.password_file.display().to_string()),
        "the log says it loudly too:\n{log}"
    );

    // A second quick start while this one runs is refused before it writes anything.
    let before = std::fs::read_to_string(data.join("cairn.toml")).expect("config");
    std::fs::create_dir_all(home.join("Other")).expect("mkdir");
    let second = quick_cmd(&env, &["daemon", "--watch", "Other"])
        .current_dir(&home)
        .output()
        .expect("run");
    assert!(!second.status.success());
    assert!(
        support::stderr(&second).contains("another cairn daemon"),
        "{}",
        support::describe(&second)
    );
    assert_eq!(
        std::fs::read_to_string(data.join("cairn.toml")).expect("config"),
        before,
        "the running quick start's configuration is left alone"
    );

    // A change is backed up continuously.
    std::fs::write(src.join("todo.txt"), "draft\n").expect("write");
    wait_for_snapshots(&env, 2);
    daemon.stop();
    env.restore_latest_and_compare(&src, "restored");

    // A second start keeps the passphrase and the repository it made.
    let mut again = QuickStart::start(&env, &home, &src.to_string_lossy());
    std::fs::write(src.join("later.txt"), "later\n").expect("write");
    wait_for_snapshots(&env, 3);
    again.stop();
    assert_eq!(
        std::fs::read_to_string(&env.password_file).expect("read passphrase"),
        passphrase,
        "the passphrase is generated once"
    );
    env.restore_latest_and_compare(&src, "restored-again");

    // Without its passphrase, the repository is not given a new one that cannot open it.
    std::fs::remove_file(&env.password_file).expect("remove passphrase");
    let out = quick_cmd(&env, &["daemon", "--watch", &src.to_string_lossy()])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = support::stderr(&out);
    assert!(
        err.contains("passphrase file") && err.contains("is gone"),
        "{err}"
    );
    assert!(!env.password_file.exists(), "no new passphrase was made");
}

#[test]
fn daemon_watch_of_a_missing_folder_is_refused_naming_it() {
    let env = Env::new();
    std::fs::create_dir_all(env.path("home")).expect("mkdir");
    let out = quick_cmd(&env, &["daemon", "--watch", "no-such-folder"])
        .current_dir(env.path("home"))
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = support::stderr(&out);
    assert!(
        err.contains("--watch no-such-folder") && err.contains("existing folder"),
        "{err}"
    );
    assert!(
        !env.path("data/cairn/passphrase").exists(),
        "nothing is generated for a refused start"
    );

    // --watch makes its own passphrase; another one given beside it would be misleading.
    std::fs::create_dir_all(env.path("home/Documents")).expect("mkdir");
    let out = quick_cmd(&env, &["daemon", "--watch", "Documents"])
        .arg("--password-file")
        .arg(&env.password_file)
        .current_dir(env.path("home"))
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(
        support::stderr(&out).contains("leave out --password-file"),
        "{}",
        support::describe(&out)
    );
    assert!(!env.path("data/cairn/passphrase").exists());
}
