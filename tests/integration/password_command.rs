//! Passphrases printed by a program: `--password-command`, `CAIRN_PASSWORD_COMMAND`,
//! `init --from-password-command` and the daemon's `password_command`, with real
//! programs (small shell scripts in the test's scratch area), in their order among the
//! other sources, and refused with the command named when it fails or prints nothing.

use crate::support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;
use support::daemon::{Daemon, primary_config, settled};
use support::{Env, describe, stderr};

/// Write an executable script `name` (in a folder with a space in its name, so the
/// command line must be quoted as for a shell) with `body` after `#!/bin/sh`.
fn script(env: &Env, name: &str, body: &str) -> PathBuf {
    let dir = env.path("pass words");
    fs::create_dir_all(&dir).expect("mkdir");
    let p = dir.join(name);
    fs::write(&p, format!("#!/bin/sh\n{body}\n")).expect("write script");
    fs::set_permissions(&p, fs::Permissions::from_mode(0o700)).expect("chmod");
    p
}

/// The command line that runs `script` with an argument, quoted as for a shell.
fn line(script: &Path) -> String {
    format!("'{}' show backup/cairn", script.display())
}

/// The script that prints the Env's passphrase, and fails if cairn passed its own
/// password command on (a script running cairn would call itself again).
fn good(env: &Env) -> PathBuf {
    script(
        env,
        "pw",
        "[ -z \"$CAIRN_PASSWORD_COMMAND\" ] || exit 9\n[ \"$1 $2\" = \"show backup/cairn\" ] || exit 8\necho 'test passphrase'\necho 'a second line is not the passphrase'",
    )
}

/// Run cairn with the Env's repository but without its password file.
fn run(env: &Env, args: &[&str], vars: &[(&str, &str)]) -> Output {
    let mut c = env.cmd(args);
    c.env_remove("CAIRN_PASSWORD_FILE")
        .env_remove("CAIRN_PASSWORD_COMMAND");
    for (k, v) in vars {
        c.env(k, v);
    }
    c.output().expect("run cairn")
}

#[test]
fn a_password_command_or_its_variable_opens_the_repository() {
    let env = Env::new();
    let cmd = line(&good(&env));
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    fs::write(src.join("a.txt"), b"hello").expect("write");
    let src = src.to_str().expect("utf8");
    for (args, vars) in [
        (vec!["init", "--password-command", &cmd], vec![]),
        (vec!["backup", src, "--password-command", &cmd], vec![]),
        (
            vec!["snapshots"],
            vec![("CAIRN_PASSWORD_COMMAND", cmd.as_str())],
        ),
        // The command comes before CAIRN_PASSWORD.
        (
            vec!["snapshots"],
            vec![
                ("CAIRN_PASSWORD_COMMAND", cmd.as_str()),
                ("CAIRN_PASSWORD", "wrong words"),
            ],
        ),
    ] {
        let out = run(&env, &args, &vars);
        assert!(out.status.success(), "{args:?}: {}", describe(&out));
    }
    // The passphrase it printed is its first line: the password file opens it too.
    assert!(
        env.ok(&["snapshots"]).contains(src),
        "{}",
        env.ok(&["snapshots"])
    );
    // The flag wins over the variables, CAIRN_PASSWORD_FILE over CAIRN_PASSWORD_COMMAND.
    let failing = script(&env, "fail", "exit 5");
    let out = env
        .cmd(&["snapshots", "--password-command", &line(&failing)])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        stderr(&out).contains("exited with status 5"),
        "{}",
        describe(&out)
    );
    let out = run(
        &env,
        &["snapshots"],
        &[
            (
                "CAIRN_PASSWORD_FILE",
                env.path("absent").to_str().expect("utf8"),
            ),
            ("CAIRN_PASSWORD_COMMAND", cmd.as_str()),
        ],
    );
    assert!(
        stderr(&out).contains("cannot read password file"),
        "{}",
        describe(&out)
    );
    // Both flags at once is a usage error.
    let pw = env.password_file.to_str().expect("utf8");
    let out = run(
        &env,
        &[
            "snapshots",
            "--password-file",
            pw,
            "--password-command",
            &cmd,
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        stderr(&out).contains("--password-command"),
        "{}",
        describe(&out)
    );
}

#[test]
fn a_password_command_that_fails_or_prints_nothing_is_refused_by_name() {
    let env = Env::init();
    let exit3 = script(&env, "exit3", "echo 'vault is locked' >&2\nexit 3");
    let out = run(
        &env,
        &["snapshots", "--password-command", &line(&exit3)],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "--password-command `'{}' show backup/cairn` exited with status 3",
            exit3.display()
        )),
        "{err}"
    );
    // Its error output reaches the user.
    assert!(err.contains("vault is locked"), "{err}");
    let silent = script(&env, "silent", "exit 0");
    let out = run(
        &env,
        &["snapshots"],
        &[("CAIRN_PASSWORD_COMMAND", &line(&silent))],
    );
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        stderr(&out).contains("CAIRN_PASSWORD_COMMAND")
            && stderr(&out).contains("printed no passphrase"),
        "{}",
        describe(&out)
    );
    let out = run(
        &env,
        &["snapshots", "--password-command", "cairn-no-such-program x"],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        stderr(&out).contains("`cairn-no-such-program` was not found"),
        "{}",
        describe(&out)
    );
    let out = run(
        &env,
        &["snapshots", "--password-command", "pass 'open"],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        stderr(&out).contains("quote is not closed"),
        "{}",
        describe(&out)
    );
}

#[test]
fn init_from_repo_takes_the_other_repositorys_passphrase_from_a_command() {
    let env = Env::init();
    let cmd = line(&good(&env));
    let second = env.path("second");
    let other_pass = env.path("other-pass");
    fs::write(&other_pass, "other words\n").expect("write");
    fs::set_permissions(&other_pass, fs::Permissions::from_mode(0o600)).expect("chmod");
    let init = |extra: &[&str]| {
        let mut args = vec![
            "init",
            "--repo",
            second.to_str().expect("utf8"),
            "--password-file",
            other_pass.to_str().expect("utf8"),
            "--from-repo",
            &env.repo,
        ];
        args.extend(extra);
        env.run(&args)
    };
    // Without it, the new repository's own passphrase is tried on the first, and fails.
    let out = init(&[]);
    assert!(!out.status.success(), "{}", describe(&out));
    let out = init(&["--from-password-command", &cmd]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("shares keys"),
        "{}",
        describe(&out)
    );
    let pw = env.password_file.to_str().expect("utf8");
    let out = init(&["--from-password-command", &cmd, "--from-password-file", pw]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
}

#[test]
fn a_daemon_with_a_password_command_makes_snapshots() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    fs::write(src.join("a.txt"), b"through the daemon").expect("write");
    let pw = good(&env);
    let config = primary_config(&env, &src, "");
    let text = fs::read_to_string(&config).expect("read config");
    let file_line = format!("password_file = \"{}\"", env.password_file.display());
    assert!(text.contains(&file_line), "{text}");
    let command = format!(
        "password_command = [\"{}\", \"show\", \"backup/cairn\"]",
        pw.display()
    );
    // Two sources at once is a problem with its line.
    fs::write(
        &config,
        text.replace(&file_line, &format!("{file_line}\n{command}")),
    )
    .expect("write");
    let out = env.run(&[
        "config",
        "check",
        "--offline",
        "--config",
        config.to_str().expect("utf8"),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        stderr(&out).contains("line 2: `password_file` and `password_command` are set"),
        "{}",
        describe(&out)
    );
    fs::write(&config, text.replace(&file_line, &command)).expect("write");
    let out = env.run(&[
        "config",
        "check",
        "--offline",
        "--config",
        config.to_str().expect("utf8"),
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    let mut d = Daemon::start(&env, &config);
    d.wait_for("a snapshot", Duration::from_secs(60), settled);
    d.terminate();
    // The repository it made opens with the passphrase the command printed.
    assert!(env.ok(&["snapshots"]).contains(src.to_str().expect("utf8")));
    // A command that fails stops the start, naming it.
    let failing = script(&env, "fail", "exit 4");
    let command = format!("password_command = [\"{}\"]", failing.display());
    fs::write(&config, text.replace(&file_line, &command)).expect("write");
    let out = env.run(&[
        "config",
        "check",
        "--offline",
        "--config",
        config.to_str().expect("utf8"),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        stderr(&out).contains(&format!(
            "password_command `'{}'` exited with status 4",
            failing.display()
        )),
        "{}",
        describe(&out)
    );
}
