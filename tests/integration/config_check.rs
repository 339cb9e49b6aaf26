//! `cairn config check` checks what it can: every mistake of a file in one run, then
//! every destination contacted (real s3s-fs servers, a closed port, a wrong secret), with
//! a fix for each failure; a good configuration passes and leaves nothing behind;
//! `--offline` contacts nothing. (s3s-fs accepts any region, so a wrong region is the
//! fault proxy answering as S3 does for one.)

use crate::support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use support::Env;
use support::fault_proxy::{FaultProxy, Schedule};
use support::s3::{ACCESS_KEY, S3Server, SECRET_KEY, aws_env};

/// Run `cairn config check` on `config` with `extra` arguments: (exit code, stdout,
/// stderr).
fn check(env: &Env, config: &Path, extra: &[&str]) -> (Option<i32>, String, String) {
    let mut args = vec![
        "config",
        "check",
        "--config",
        config.to_str().expect("utf8"),
    ];
    args.extend_from_slice(extra);
    let out = env.run(&args);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A scratch area whose `cairn` runs get the test servers' credentials.
fn scratch() -> Env {
    let mut env = Env::new();
    env.env = aws_env();
    env
}

/// The head of a configuration: state, passphrase, one existing source.
fn head(env: &Env, password_file: &Path) -> String {
    let src = env.path("src");
    std::fs::create_dir_all(&src).expect("src");
    format!(
        "state_dir = {:?}\npassword_file = {:?}\n\n[[source]]\npaths = [{:?}]\n\n[schedule]\nquiet_period = \"1s\"\n\n",
        env.path("state"),
        password_file,
        src
    )
}

/// An S3 destination table on `endpoint` with fast retries.
fn s3_destination(name: &str, endpoint: &str, bucket_path: &str, extra: &str) -> String {
    format!(
        "[[destination]]\nname = {name:?}\nrepo = \"s3:{endpoint}/{bucket_path}\"\noptions = {{ \"s3.region\" = \"us-east-1\", \"s3.retry-delay\" = \"10ms\" }}\n{extra}\n"
    )
}

/// A port on 127.0.0.1 that nothing listens on.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// A private file holding `text`, as secrets must be.
fn secret_file(env: &Env, name: &str, text: &str) -> PathBuf {
    let p = env.path(name);
    std::fs::write(&p, format!("{text}\n")).expect("write secret");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    p
}

/// Every file under `dir` whose name says it is a config-check probe.
fn probes_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if e
                .file_name()
                .to_string_lossy()
                .contains("cairn-config-check")
            {
                found.push(p);
            }
        }
    }
    found
}

#[test]
fn every_mistake_of_a_file_is_reported_in_one_run() {
    let env = scratch();
    let server = S3Server::start(&["backups"]);
    let wrong = secret_file(&env, "wrong.secret", "not-the-secret");
    // The passphrase setting names a folder, not the file in it.
    let passphrase_dir = env.path("passphrases");
    std::fs::create_dir(&passphrase_dir).expect("dir");
    let mut text = head(&env, &passphrase_dir);
    text = text.replace("quiet_period = \"1s\"", "quiet_perod = \"1s\"");
    text.push_str(&format!(
        "[[destination]]\nname = \"typed\"\nrepo = {:?}\n[destination.retention]\nkeep_last = \"20\"\nprune = \"yes\"\n\n",
        env.path("typed-repo")
    ));
    text.push_str("[[destination]]\nname = \"no-repo\"\n\n");
    text.push_str(&format!(
        "[[destination]]\nname = \"unmounted\"\nrepo = {:?}\n\n",
        env.path("not-mounted/cairn")
    ));
    text.push_str(&s3_destination(
        "wrong-secret",
        &server.endpoint(),
        "backups/host1",
        &format!("access_key_id = {ACCESS_KEY:?}\nsecret_access_key_file = {wrong:?}"),
    ));
    let config = env.path("cairn.toml");
    std::fs::write(&config, text).expect("config");

    let (code, _, err) = check(&env, &config, &[]);
    assert_eq!(code, Some(1), "{err}");
    for want in [
        "unknown key `schedule.quiet_perod`: did you mean `schedule.quiet_period`?",
        "destination.retention.keep_last is a number: write keep_last = 20",
        "destination.retention.prune is true or false",
        "[[destination]] has no `repo`",
        &format!(
            "password_file {} is a directory: name the file inside it",
            passphrase_dir.display()
        ),
        &format!(
            "destination \"unmounted\": {} cannot be created: its parent folder {} does not exist",
            env.path("not-mounted/cairn").display(),
            env.path("not-mounted").display()
        ),
        &format!(
            "mkdir -p -m 700 {}",
            env.path("not-mounted/cairn").display()
        ),
        &format!("ReadWritePaths={}", env.path("not-mounted/cairn").display()),
        "destination \"wrong-secret\": cannot list its keys",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
    assert!(
        err.contains("credentials") || err.contains("secret"),
        "the wrong secret is not named:\n{err}"
    );
}

#[test]
fn each_failing_destination_is_reported_with_its_fix() {
    let env = scratch();
    let server = S3Server::start(&["backups"]);
    let wrong = secret_file(&env, "wrong.secret", "not-the-secret");
    let closed = closed_port();
    let mut text = head(&env, &env.password_file);
    text.push_str(&s3_destination(
        "wrong-secret",
        &server.endpoint(),
        "backups/a",
        &format!("access_key_id = {ACCESS_KEY:?}\nsecret_access_key_file = {wrong:?}"),
    ));
    text.push_str(&s3_destination(
        "closed",
        &format!("http://127.0.0.1:{closed}"),
        "backups/b",
        "",
    ));
    text.push_str(&s3_destination(
        "no-bucket",
        &server.endpoint(),
        "no-such-bucket/c",
        "",
    ));
    text.push_str(&s3_destination("fine", &server.endpoint(), "backups/d", ""));
    // A server that says the bucket is in another region, and one whose key may list
    // and read but not write (the put probe finds it).
    let mut region = Schedule::clean();
    region.respond = Some(("400 Bad Request", "AuthorizationHeaderMalformed"));
    let region_proxy = FaultProxy::start(server.port, region);
    text.push_str(&s3_destination(
        "wrong-region",
        &region_proxy.endpoint(),
        "backups/e",
        "",
    ));
    let mut read_only = Schedule::clean();
    read_only.methods = vec!["PUT"];
    read_only.respond = Some(("403 Forbidden", "AccessDenied"));
    let read_only_proxy = FaultProxy::start(server.port, read_only);
    text.push_str(&s3_destination(
        "read-only",
        &read_only_proxy.endpoint(),
        "backups/f",
        "",
    ));
    let config = env.path("cairn.toml");
    std::fs::write(&config, text).expect("config");

    let (code, _, err) = check(&env, &config, &[]);
    assert_eq!(code, Some(1), "{err}");
    let line_of = |dest: &str| -> String {
        err.lines()
            .find(|l| l.contains(&format!("destination \"{dest}\":")))
            .unwrap_or_default()
            .to_string()
    };
    let wrong_secret = line_of("wrong-secret");
    assert!(
        wrong_secret.contains("credentials") || wrong_secret.contains("secret"),
        "{err}"
    );
    let refused = line_of("closed");
    assert!(refused.contains(&closed.to_string()), "{err}");
    assert!(line_of("no-bucket").contains("no-such-bucket"), "{err}");
    assert!(line_of("wrong-region").contains("region"), "{err}");
    assert!(
        line_of("read-only").contains("cannot write objects"),
        "{err}"
    );
    assert!(line_of("fine").is_empty(), "{err}");
    assert!(err.contains("(5 problems)"), "{err}");
    assert!(probes_under(server.root()).is_empty());
}

#[test]
fn a_good_configuration_passes_against_real_servers_and_leaves_no_probe() {
    let env = scratch();
    let server = S3Server::start(&["backups"]);
    let other = S3Server::start(&["offsite"]);
    // One destination already holds a repository the daemon's state remembers; the
    // others are new.
    let existing = format!("s3:{}/backups/existing", server.endpoint());
    let init = env
        .cmd(&["init", "--repo", &existing])
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .output()
        .expect("init");
    assert!(init.status.success(), "{init:?}");
    let mut text = head(&env, &env.password_file);
    text.push_str(&s3_destination(
        "existing",
        &server.endpoint(),
        "backups/existing",
        "[destination.retention]\nkeep_daily = 7\nkeep_within = \"2d\"\nprune = true",
    ));
    text.push_str(&s3_destination(
        "offsite",
        &other.endpoint(),
        "offsite/host1",
        "[destination.retention]\nkeep_last = 3",
    ));
    text.push_str(&format!(
        "[[destination]]\nname = \"disk\"\nrepo = {:?}\n",
        env.path("disk/cairn")
    ));
    std::fs::create_dir(env.path("disk")).expect("the disk's mount point");
    let config = env.path("cairn.toml");
    std::fs::write(&config, &text).expect("config");

    let (code, out, err) = check(&env, &config, &[]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.contains("is valid"), "{out}");
    assert!(
        out.contains("retention: keep_daily = 7, keep_within = 2d")
            && out.contains("prune: after retention"),
        "{out}"
    );
    assert!(
        out.contains("retention: keep_last = 3") && out.contains("prune: off"),
        "{out}"
    );
    assert!(out.contains("retention: none"), "{out}");
    assert!(out.contains("opened with its passphrase"), "{out}");
    assert!(out.contains("no repository yet"), "{out}");
    assert!(
        out.contains(&format!(
            "ReadWritePaths={}",
            env.path("disk/cairn").display()
        )),
        "{out}"
    );
    // The probes were written and read (the servers saw PUT and DELETE) and are gone.
    for s in [&server, &other] {
        let seen = s.seen();
        assert!(seen.iter().any(|r| r.method == "PUT"), "{seen:?}");
        assert!(seen.iter().any(|r| r.method == "DELETE"), "{seen:?}");
        assert!(
            probes_under(s.root()).is_empty(),
            "{:?}",
            probes_under(s.root())
        );
    }
    // Nothing was created: the new destinations are still empty.
    assert!(!other.root().join("offsite/host1/config").exists());
    assert!(!env.path("disk/cairn").exists());

    // The daemon's state remembering another repository there is a problem.
    let record = env.path("state/destinations/existing.repository");
    std::fs::create_dir_all(record.parent().expect("parent")).expect("mkdir");
    std::fs::write(&record, format!("{}\n", "ab".repeat(32))).expect("record");
    let (code, _, err) = check(&env, &config, &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "remembers repository {} there: a different disk or bucket",
            "ab".repeat(32)
        )),
        "{err}"
    );
}

#[test]
fn offline_contacts_no_destination() {
    let env = scratch();
    let server = S3Server::start(&["backups"]);
    let wrong = secret_file(&env, "wrong.secret", "not-the-secret");
    let mut text = head(&env, &env.password_file);
    text.push_str(&s3_destination(
        "lan",
        &server.endpoint(),
        "backups/host1",
        &format!("access_key_id = {ACCESS_KEY:?}\nsecret_access_key_file = {wrong:?}"),
    ));
    text.push_str(&format!(
        "[[destination]]\nname = \"unmounted\"\nrepo = {:?}\n",
        env.path("not-mounted/cairn")
    ));
    let config = env.path("cairn.toml");
    std::fs::write(&config, text).expect("config");

    let (code, out, err) = check(&env, &config, &["--offline"]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(server.seen().is_empty(), "{:?}", server.seen());
    assert!(out.contains("not contacted (--offline)"), "{out}");
    // A missing local parent is only a warning offline: the disk may be mounted by then.
    assert!(
        err.contains("warning: destination \"unmounted\"") && err.contains("does not exist"),
        "{err}"
    );
    // Online, the wrong secret and the missing parent are problems.
    let (code, _, err) = check(&env, &config, &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(!server.seen().is_empty());
}

/// A probe object `config check` could not delete (a key that may put but not delete)
/// does not stop the repository from being created there: creation passes it over.
#[test]
fn a_probe_left_behind_does_not_stop_the_repository_from_being_created() {
    // On S3: the probe is written the way `config check` writes it.
    let env = support::Env::with(support::Kind::S3);
    let keys = env.objects_dir().join("keys");
    std::fs::create_dir_all(&keys).expect("mkdir");
    std::fs::write(
        keys.join(".cairn-config-check-0123456789abcdef"),
        b"written by cairn config check; safe to delete\n",
    )
    .expect("write");
    env.ok(&["init"]);
    env.ok(&["snapshots"]);
}

/// A local repository folder that is missing where the daemon reached a repository before
/// (a disk that did not mount) is a problem, as the daemon refuses to create one there;
/// never reached, it is only "not created yet".
#[test]
fn a_missing_repository_folder_the_daemon_reached_before_is_a_problem() {
    let env = scratch();
    let mut text = head(&env, &env.password_file);
    text.push_str(&format!(
        "[[destination]]\nname = \"disk\"\nrepo = {:?}\n",
        env.path("disk/cairn")
    ));
    std::fs::create_dir(env.path("disk")).expect("the disk's mount point");
    let config = env.path("cairn.toml");
    std::fs::write(&config, text).expect("config");

    let (code, out, err) = check(&env, &config, &[]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.contains("not created yet"), "{out}");

    let record = env.path("state/destinations/disk.repository");
    std::fs::create_dir_all(record.parent().expect("parent")).expect("mkdir");
    let id = "ab".repeat(32);
    std::fs::write(&record, format!("{id}\n")).expect("record");
    let (code, out, err) = check(&env, &config, &[]);
    assert_eq!(code, Some(1), "{out}\n{err}");
    assert!(
        err.contains(&format!("repository {id} was there before"))
            && err.contains(&record.display().to_string()),
        "{err}"
    );
    assert!(!out.contains("not created yet"), "{out}");
    assert!(!env.path("disk/cairn").exists());
}

#[test]
fn command_sources_and_hooks_are_judged_with_their_lines() {
    let env = scratch();
    let pw = secret_file(&env, "pw", "passphrase\n");
    let config = env.path("cairn.toml");
    let text = format!(
        "{}[[source]]\npaths = [\"/srv\"]\ncommand = [\"true\"]\n\n[[source]]\ncommand = [\"pg_dump_not_installed\", \"app\"]\nfilename = \"app.dump\"\nuser = \"no-such-user-here\"\nevery = \"soon\"\nbefore = []\nafter = [\"/nowhere/cleanup\"]\n\n[[source]]\ncommand = [\"true\"]\nexclude = [\"*.tmp\"]\n\n[[source]]\ntags = [\"x\"]\n\n[[destination]]\nname = \"local\"\nrepo = {:?}\n",
        head(&env, &pw),
        env.path("repo")
    );
    std::fs::write(&config, &text).expect("write");
    let (code, _, err) = check(&env, &config, &["--offline"]);
    assert_eq!(code, Some(1), "{err}");
    for (line, want) in [
        (12, "has both `paths` and `command`: keep one"),
        (
            15,
            "`command` runs \"pg_dump_not_installed\", but it is not found in PATH: install it, or write its full path",
        ),
        (
            17,
            "`user`: user \"no-such-user-here\" does not exist on this machine",
        ),
        (18, "`every` = \"soon\" is not a duration"),
        (19, "`before` is empty: write the program and its arguments"),
        (
            20,
            "`after` runs \"/nowhere/cleanup\", but there is no executable file there",
        ),
        (23, "a [[source]] with `command` needs `filename`"),
        (24, "`exclude` applies to `paths` only"),
        (26, "[[source]] has neither `paths` nor `command`"),
    ] {
        assert!(
            err.lines()
                .any(|l| l.contains(&format!("line {line}: ")) && l.contains(want)),
            "line {line}: {want:?} not reported:\n{err}\n{}",
            text.lines()
                .enumerate()
                .map(|(i, l)| format!("{:>3} {l}", i + 1))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}
