//! What `--help`, the man pages and completions offer: `--repo` with every location form
//! the parser takes, `-o` with every option key, cairn(1) with its ENVIRONMENT and EXIT
//! STATUS, and the repository options only on the verbs that open a repository. The old
//! form with them before the verb still works where it did, and is refused with the reason
//! where it means nothing.

use crate::support;

use cairn::backend::options::{LOCATION_FORMS, OPTION_KEYS};
use cairn::error::EXIT_CODES;
use std::fs;
use support::{Env, describe};

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The verbs that open a repository, and so offer `--repo`, `--password-file` and `-o`.
const REPOSITORY_VERBS: &[&[&str]] = &[
    &["init"],
    &["backup"],
    &["snapshots"],
    &["ls"],
    &["restore"],
    &["check"],
    &["forget"],
    &["prune"],
    &["key", "add"],
    &["compression"],
    &["diff"],
    &["find"],
    &["stats"],
];

#[test]
fn repo_help_shows_every_location_form_and_o_help_every_option_key() {
    let env = Env::new();
    for verb in REPOSITORY_VERBS {
        let mut args = verb.to_vec();
        args.push("--help");
        let help = env.ok(&args);
        for (form, _) in LOCATION_FORMS {
            assert!(help.contains(form), "{verb:?} --help lacks {form}:\n{help}");
        }
        for (key, _, _) in OPTION_KEYS {
            assert!(
                help.contains(key),
                "{verb:?} --help lacks -o {key}:\n{help}"
            );
        }
        assert!(help.contains("--password-file"), "{verb:?}:\n{help}");
    }
    // The forms a user looks for, spelled out.
    let help = env.ok(&["snapshots", "--help"]);
    for form in [
        "s3:https://HOST",
        "s3:http://HOST",
        "s3://BUCKET",
        "local:PATH",
    ] {
        assert!(help.contains(form), "{form}:\n{help}");
    }
}

#[test]
fn verbs_without_a_repository_offer_no_repository_options() {
    let env = Env::new();
    for verb in [
        &["status"][..],
        &["daemon"],
        &["config", "check"],
        &["completions"],
        &["man"],
    ] {
        let mut args = verb.to_vec();
        args.push("--help");
        let help = env.ok(&args);
        for flag in ["--repo", "--option", "-o,", "-r,"] {
            assert!(!help.contains(flag), "{verb:?} offers {flag}:\n{help}");
        }
    }
    let status = env.ok(&["status", "--help"]);
    assert!(!status.contains("--password-file"), "{status}");
    assert!(
        status.contains("--json") && status.contains("--socket"),
        "{status}"
    );
    // The daemon and its check take a passphrase file (the unit passes it).
    for verb in [&["daemon"][..], &["config", "check"]] {
        let mut args = verb.to_vec();
        args.push("--help");
        assert!(env.ok(&args).contains("--password-file"), "{verb:?}");
    }
    // Completions follow: bash completes `status` without them, `snapshots` with them.
    let bash = env.ok(&["completions", "bash"]);
    let opts_of = |case: &str| -> String {
        let at = bash
            .find(&format!("\n        {case})\n"))
            .unwrap_or_else(|| panic!("no {case} in the bash completion"));
        let rest = &bash[at..];
        let opts = rest.find("opts=\"").expect("opts");
        let line = &rest[opts..];
        line[..line.find('\n').unwrap_or(line.len())].to_string()
    };
    let status = opts_of("cairn__subcmd__status");
    assert!(
        !status.contains("--repo") && !status.contains("--option"),
        "{status}"
    );
    let snapshots = opts_of("cairn__subcmd__snapshots");
    assert!(
        snapshots.contains("--repo") && snapshots.contains("--option"),
        "{snapshots}"
    );
    // The hidden form before the verb is not offered at the top either.
    let top = opts_of("cairn");
    assert!(!top.contains("--repo"), "{top}");
}

#[test]
fn cairn_1_has_environment_and_every_exit_status() {
    let env = Env::new();
    let dir = env.path("man");
    env.ok(&["man", dir.to_str().expect("utf8")]);
    let page = fs::read_to_string(dir.join("cairn.1")).expect("cairn.1");
    let section = |name: &str| -> String {
        let at = page
            .find(&format!(".SH {name}\n"))
            .unwrap_or_else(|| panic!("no {name} section:\n{page}"));
        let body = &page[at + 1..];
        let end = body.find("\n.SH ").map_or(body.len(), |e| e + 1);
        body[..end].to_string()
    };
    let environment = section("ENVIRONMENT");
    for var in [
        "CAIRN_REPOSITORY",
        "CAIRN_PASSWORD_FILE",
        "CAIRN_PASSWORD_COMMAND",
        "CAIRN_PASSWORD",
        "CAIRN_CACHE_DIR",
        "CAIRN_LOG",
        "XDG_DATA_HOME",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_PROFILE",
        "AWS_REGION",
        "AWS_ENDPOINT_URL_S3",
        "AWS_ENDPOINT_URL",
        "CREDENTIALS_DIRECTORY",
    ] {
        assert!(
            environment.contains(var),
            "ENVIRONMENT lacks {var}:\n{environment}"
        );
    }
    let exit = section("\"EXIT STATUS\"");
    for (code, _) in EXIT_CODES {
        assert!(
            exit.contains(&format!("\\fB{code}\\fR")),
            "EXIT STATUS lacks {code}:\n{exit}"
        );
    }
    // The codes a user meets, by number.
    for code in [0, 1, 2, 3, 10, 12] {
        assert!(EXIT_CODES.iter().any(|(c, _)| *c == code), "{code}");
    }
    // The subcommands' pages follow the verbs: status offers no repository.
    let status = fs::read_to_string(dir.join("cairn-status.1")).expect("cairn-status.1");
    assert!(!status.contains("\\-\\-repo"), "{status}");
    assert!(!status.contains("\\-\\-option"), "{status}");
    let snapshots = fs::read_to_string(dir.join("cairn-snapshots.1")).expect("page");
    assert!(snapshots.contains("s3://BUCKET"), "{snapshots}");
}

#[test]
fn a_repository_option_where_it_means_nothing_is_refused_with_the_reason() {
    let env = Env::new();
    for (args, says) in [
        (
            &["daemon", "--repo", "x"][..],
            "--repo means nothing to `cairn daemon`",
        ),
        (
            &["status", "-o", "s3.region=x"],
            "-o means nothing to `cairn status`",
        ),
        (
            &["config", "check", "--repo=x"],
            "--repo means nothing to `cairn config`",
        ),
        (&["--repo", "x", "daemon"], "--repo given before `daemon`"),
        (&["-o", "s3.region=x", "status"], "-o given before `status`"),
        (
            &["--password-file", "/p", "config", "check"],
            "--password-file given before `config`",
        ),
    ] {
        let out = env.run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", describe(&out));
        let err = stderr(&out);
        assert!(err.contains(says), "{args:?}: {err}");
        let fix = ["--config FILE", "--socket PATH"];
        assert!(fix.iter().any(|f| err.contains(f)), "{args:?}: {err}");
    }
}

#[test]
fn repository_options_before_the_verb_still_work() {
    let env = Env::init();
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    fs::write(src.join("f"), "x").expect("write");
    env.ok(&["backup", src.to_str().expect("utf8")]);
    // A second, empty repository named before the verb beats CAIRN_REPOSITORY.
    let other = env.path("other").to_string_lossy().into_owned();
    env.ok(&["init", "--repo", &other]);
    let listed = |out: String| -> usize {
        serde_json::from_str::<serde_json::Value>(&out)
            .expect("json")
            .as_array()
            .map_or(0, Vec::len)
    };
    assert_eq!(listed(env.ok(&["snapshots", "--json"])), 1);
    assert_eq!(
        listed(env.ok(&["--repo", &other, "snapshots", "--json"])),
        0
    );
    assert_eq!(listed(env.ok(&["-r", &other, "snapshots", "--json"])), 0);
    // `-o` before the verb is read: a bad key is named.
    let out = env.run(&["-o", "s3.regoin=x", "snapshots"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("unknown option \"s3.regoin\""),
        "{}",
        describe(&out)
    );
    let pass = env.password_file.to_str().expect("utf8");
    let out = env.run(&["--password-file", pass, "key", "list"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(!stdout(&out).is_empty());
}
