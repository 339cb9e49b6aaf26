//! `cairn backup --stdin` and `--stdin-from-command`, and the hooks around a command line
//! backup: a stream becomes one private file dated at the snapshot; a command that fails
//! or dies saves nothing and cairn says how it ended; successive dumps deduplicate; hooks
//! run in order with their variables and are stopped at their time limit.

use crate::support;

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Stdio;
use std::time::{Duration, Instant};
use support::{Env, describe, pseudo_random, snapshot_ids};

/// Insist a run failed with exit status 1 and said each of `says` on standard error.
fn failed_saying(out: &std::process::Output, says: &[&str]) {
    assert_eq!(out.status.code(), Some(1), "{}", describe(out));
    let err = support::stderr(out);
    for text in says {
        assert!(err.contains(text), "{text:?} not said: {}", describe(out));
    }
}

/// The snapshots as `snapshots --json` lists them.
fn snapshots(env: &Env) -> Vec<serde_json::Value> {
    let out = env.ok(&["snapshots", "--json"]);
    serde_json::from_str::<Vec<serde_json::Value>>(&out).expect("snapshots json")
}

#[test]
fn stdin_is_stored_as_one_private_file_dated_at_the_snapshot() {
    let env = Env::init();
    let data = pseudo_random(3 << 20, 7);
    let mut child = env
        .cmd(&[
            "backup",
            "--stdin",
            "--stdin-filename",
            "db/app.dump",
            "--time",
            "2026-05-01T10:20:30Z",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start cairn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&data)
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "{}", describe(&out));

    let list = snapshots(&env);
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["paths"], serde_json::json!(["/db/app.dump"]));
    assert_eq!(list[0]["origin"], "stdin");
    let table = env.ok(&["snapshots"]);
    assert!(table.contains("/db/app.dump (from stdin)"), "{table}");

    let target = env.path("target");
    env.ok(&[
        "restore",
        "latest",
        "--target",
        target.to_str().expect("utf8"),
    ]);
    let file = target.join("db/app.dump");
    assert_eq!(fs::read(&file).expect("restored dump"), data);
    let meta = fs::metadata(&file).expect("meta");
    assert_eq!(
        meta.permissions().mode() & 0o7777,
        0o600,
        "the dump is private"
    );
    assert_eq!(meta.mtime(), 1_777_630_830, "mtime is the snapshot's time");
}

#[test]
fn stdin_from_a_terminal_or_with_paths_is_refused_with_the_fix() {
    let env = Env::init();
    let out = env.run(&["backup", "--stdin", "/etc/hostname"]);
    failed_saying(
        &out,
        &["--stdin stores standard input, so it takes no paths"],
    );
    let out = env.run(&[
        "backup",
        "--stdin-from-command",
        "--stdin-filename",
        "../x",
        "--",
        "true",
    ]);
    failed_saying(&out, &["--stdin-filename \"../x\""]);

    // Standard input a terminal (a pseudo-terminal from `script`): refused, with how to
    // pipe data in or let cairn run the program.
    let mut cmd = std::process::Command::new("script");
    let program = format!("{} backup --stdin", env!("CARGO_BIN_EXE_cairn"));
    cmd.args(["-qefc", &program, "/dev/null"]);
    for (k, v) in env.cmd(&[]).get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .expect("script (util-linux) is needed for the terminal case");
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("--stdin reads standard input, which is a terminal")
            && said.contains("--stdin-from-command"),
        "{said}"
    );
    assert!(snapshot_ids(&env).is_empty());
}

#[test]
fn a_command_never_sees_the_passphrase() {
    let env = Env::init();
    let pass = fs::read_to_string(&env.password_file).expect("passphrase");
    let out = env
        .cmd(&[
            "backup",
            "--stdin-from-command",
            "--stdin-filename",
            "env.txt",
            "--",
            "sh",
            "-c",
            "echo \"${CAIRN_PASSWORD:-unset} ${CAIRN_PASSWORD_FILE:-unset}\"",
        ])
        .env("CAIRN_PASSWORD", pass.trim())
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", describe(&out));
    let target = env.path("t");
    env.ok(&[
        "restore",
        "latest",
        "--target",
        target.to_str().expect("utf8"),
    ]);
    assert_eq!(
        fs::read_to_string(target.join("env.txt")).expect("stored"),
        "unset unset\n"
    );
}

#[test]
fn a_command_that_fails_saves_nothing_and_says_how_it_ended() {
    let env = Env::init();
    // Several MiB of output first: the failure comes after data was stored.
    let script = "head -c 6000000 /dev/urandom; echo 'pg_dump: error: connection to server failed' >&2; exit 7";
    let out = env.run(&[
        "backup",
        "--stdin-from-command",
        "--stdin-filename",
        "app.dump",
        "--",
        "sh",
        "-c",
        script,
    ]);
    failed_saying(
        &out,
        &[
            "exited with status 7, so nothing was saved",
            "pg_dump: error: connection to server failed",
        ],
    );
    assert!(
        snapshot_ids(&env).is_empty(),
        "a failed dump saved a snapshot"
    );

    // Killed mid-stream: the same.
    let out = env.run(&[
        "backup",
        "--stdin-from-command",
        "--",
        "sh",
        "-c",
        "head -c 2000000 /dev/urandom; kill -9 $$",
    ]);
    failed_saying(&out, &["was killed by signal 9"]);
    // Not installed at all.
    let out = env.run(&[
        "backup",
        "--stdin-from-command",
        "--",
        "no-such-dump-program",
    ]);
    failed_saying(&out, &["`no-such-dump-program` was not found"]);
    assert!(snapshot_ids(&env).is_empty());
    env.ok(&["check"]);
}

#[test]
fn a_second_dump_of_the_same_data_adds_almost_nothing() {
    let env = Env::init();
    let dump = env.path("dump.sql");
    fs::write(&dump, pseudo_random(24 << 20, 3)).expect("write");
    let backup = || {
        let out = env.run(&[
            "backup",
            "--json",
            "--stdin-from-command",
            "--stdin-filename",
            "app.sql",
            "--",
            "cat",
            dump.to_str().expect("utf8"),
        ]);
        assert!(out.status.success(), "{}", describe(&out));
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().last().expect("summary").to_string();
        serde_json::from_str::<serde_json::Value>(&line).expect("json")
    };
    let first = backup()["data_added"].as_u64().expect("added");
    // A row changed in the middle of the "database".
    let mut f = fs::OpenOptions::new()
        .write(true)
        .open(&dump)
        .expect("open");
    use std::io::{Seek, SeekFrom};
    f.seek(SeekFrom::Start(12 << 20)).expect("seek");
    f.write_all(b"UPDATE accounts SET balance = 42;")
        .expect("write");
    drop(f);
    let second = backup()["data_added"].as_u64().expect("added");
    println!("first dump added {first} bytes, the second {second}");
    assert!(first >= 24 << 20);
    assert!(
        second < first / 5,
        "the second dump added {second} of {first} bytes: no deduplication across dumps"
    );
    assert_eq!(snapshot_ids(&env).len(), 2);
}

/// Lines a hook script appended to `log`, as `name key=value...`.
fn hook_script(log: &std::path::Path, name: &str) -> String {
    format!(
        "sh -c 'echo \"{name} hook=$CAIRN_HOOK source=$CAIRN_SOURCE id=$CAIRN_SNAPSHOT_ID error=${{CAIRN_ERROR:+set}}\" >> {}'",
        log.display()
    )
}

#[test]
fn hooks_run_in_order_with_their_variables() {
    let env = Env::init();
    let log = env.path("hooks.log");
    let hooks = |fail_with: Option<&str>| -> Vec<String> {
        let mut a = vec![
            "backup".to_string(),
            "--before".into(),
            hook_script(&log, "before"),
            "--after".into(),
            hook_script(&log, "after"),
            "--on-failure".into(),
            hook_script(&log, "failure"),
            "--stdin-from-command".into(),
            "--stdin-filename".into(),
            "app.dump".into(),
            "--".into(),
            "sh".into(),
            "-c".into(),
        ];
        a.push(match fail_with {
            None => "echo rows".into(),
            Some(code) => format!("echo rows; exit {code}"),
        });
        a
    };
    let run = |args: Vec<String>| {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        env.run(&refs)
    };
    let out = run(hooks(None));
    assert!(out.status.success(), "{}", describe(&out));
    let id = snapshot_ids(&env).pop().expect("a snapshot");
    let text = fs::read_to_string(&log).expect("hook log");
    assert_eq!(
        text,
        format!(
            "before hook=before source=/app.dump id= error=\nafter hook=after source=/app.dump id={id} error=\n"
        )
    );

    fs::remove_file(&log).expect("rm");
    let out = run(hooks(Some("3")));
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let text = fs::read_to_string(&log).expect("hook log");
    assert_eq!(
        text,
        "before hook=before source=/app.dump id= error=\nafter hook=after source=/app.dump id= error=set\nfailure hook=on_failure source=/app.dump id= error=set\n",
        "after runs to clean up, then on_failure"
    );

    // A failing before hook: no snapshot, no after, on_failure told why.
    fs::remove_file(&log).expect("rm");
    let mut args = hooks(None);
    args[2] = "sh -c 'echo cannot lock >&2; exit 4'".into();
    let out = run(args);
    failed_saying(
        &out,
        &[
            "before hook `sh -c 'echo cannot lock >&2; exit 4'` exited with status 4",
            "no snapshot was made",
        ],
    );
    assert_eq!(
        fs::read_to_string(&log).expect("hook log"),
        "failure hook=on_failure source=/app.dump id= error=set\n"
    );
    assert_eq!(
        snapshot_ids(&env).len(),
        2 - 1,
        "only the first run saved a snapshot"
    );
}

#[test]
fn hooks_work_around_a_backup_of_paths_and_a_hanging_hook_is_stopped() {
    let env = Env::init();
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    let copy = src.join("copy.txt");
    // The before hook makes what is backed up (as a database's own backup command would).
    let before = format!("sh -c 'echo consistent > {}'", copy.display());
    let out = env.run(&["backup", "--before", &before, src.to_str().expect("utf8")]);
    assert!(out.status.success(), "{}", describe(&out));
    let target = env.path("t");
    env.ok(&[
        "restore",
        "latest",
        "--target",
        target.to_str().expect("utf8"),
    ]);
    let restored = support::restored(&target, &src).join("copy.txt");
    assert_eq!(fs::read_to_string(restored).expect("copy"), "consistent\n");

    let started = Instant::now();
    let out = env.run(&[
        "backup",
        "--before",
        "sleep 60",
        "--hook-timeout",
        "1s",
        src.to_str().expect("utf8"),
    ]);
    let took = started.elapsed();
    failed_saying(&out, &["did not finish within 1s and was stopped"]);
    assert!(
        took < Duration::from_secs(20),
        "the hung hook held cairn for {took:?}"
    );
    assert_eq!(snapshot_ids(&env).len(), 1);

    // A hook that leaves a job in the background holding its output does not hold the
    // backup; one whose child ignores SIGTERM is still stopped at its time limit.
    let started = Instant::now();
    let out = env.run(&[
        "backup",
        "--before",
        "sh -c 'sleep 30 &'",
        src.to_str().expect("utf8"),
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    let stubborn = "sh -c '(trap \"\" TERM; sleep 31) & wait'";
    let out = env.run(&[
        "backup",
        "--before",
        stubborn,
        "--hook-timeout",
        "1s",
        src.to_str().expect("utf8"),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(15),
        "background jobs held cairn for {took:?}"
    );
    assert_eq!(snapshot_ids(&env).len(), 2);
}
