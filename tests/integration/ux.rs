//! What a user sees: `diff` lists exactly what changed, every reporting command's `--json`
//! parses as JSON lines, single files and folders come back to stdout, a terminal gets a
//! progress bar and a summary, and completions and man pages are generated. All against a
//! real S3 server over HTTP.

use crate::support;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use support::{Env, Kind, describe, json_lines, pseudo_random, restored, snapshot_ids};

/// A tree with a spread of entry kinds, then a second state with one change of each kind.
fn two_states(src: &Path, env: &Env) -> (String, String) {
    fs::create_dir_all(src.join("docs/old")).expect("mkdir");
    fs::create_dir_all(src.join("photos")).expect("mkdir");
    fs::write(src.join("docs/a.txt"), "alpha").expect("write");
    fs::write(src.join("docs/b.txt"), "bravo").expect("write");
    fs::write(src.join("docs/touched.txt"), "same content").expect("write");
    fs::write(src.join("docs/old/1.txt"), "one").expect("write");
    fs::write(src.join("docs/old/2.txt"), "two").expect("write");
    fs::write(src.join("photos/big.jpg"), pseudo_random(3 << 20, 1)).expect("write");
    fs::write(src.join("becomes-dir"), "file").expect("write");
    std::os::unix::fs::symlink("docs/a.txt", src.join("link")).expect("symlink");
    let src_s = src.to_str().expect("utf8");
    env.ok(&["backup", src_s]);

    fs::write(src.join("docs/a.txt"), "alpha, edited").expect("modify");
    fs::remove_file(src.join("docs/b.txt")).expect("remove");
    fs::remove_dir_all(src.join("docs/old")).expect("remove dir");
    fs::write(src.join("docs/new.txt"), "new").expect("add");
    fs::rename(src.join("photos/big.jpg"), src.join("photos/renamed.jpg")).expect("rename");
    let t = filetime::FileTime::from_unix_time(1_600_000_000, 0);
    filetime::set_file_mtime(src.join("docs/touched.txt"), t).expect("touch");
    fs::remove_file(src.join("becomes-dir")).expect("rm");
    fs::create_dir(src.join("becomes-dir")).expect("mkdir");
    fs::remove_file(src.join("link")).expect("rm link");
    std::os::unix::fs::symlink("docs/new.txt", src.join("link")).expect("relink");
    env.ok(&["backup", src_s]);
    let ids = snapshot_ids(env);
    (ids[0].clone(), ids[1].clone())
}

#[test]
fn diff_lists_exactly_the_paths_that_changed() {
    let env = Env::init_on(Kind::S3);
    let src = env.path("src");
    let (a, b) = two_states(&src, &env);
    let out = env.ok(&["diff", &a, &b, "--json"]);
    let lines = json_lines(&out).expect("json lines");
    let s = src.to_str().expect("utf8");
    let got: BTreeSet<(String, String)> = lines
        .iter()
        .filter(|l| l["message_type"] == "change")
        .map(|l| {
            (
                l["change"].as_str().expect("change").to_string(),
                l["path"].as_str().expect("path").replacen(s, "", 1),
            )
        })
        .collect();
    let want: BTreeSet<(String, String)> = [
        ("modified", "/docs/a.txt"),
        ("removed", "/docs/b.txt"),
        ("removed", "/docs/old/"),
        ("removed", "/docs/old/1.txt"),
        ("removed", "/docs/old/2.txt"),
        ("added", "/docs/new.txt"),
        ("removed", "/photos/big.jpg"),
        ("added", "/photos/renamed.jpg"),
        ("type_changed", "/becomes-dir/"),
        ("modified", "/link"),
    ]
    .iter()
    .map(|(c, p)| (c.to_string(), p.to_string()))
    .collect();
    assert_eq!(got, want, "{out}");
    let summary = lines.last().expect("summary");
    assert_eq!(summary["message_type"], "summary");
    assert_eq!(summary["added"], 2);
    assert_eq!(summary["removed"], 5);
    assert_eq!(summary["modified"], 3);
    assert_eq!(summary["added_bytes"], 3 + (3 << 20));
    // The touched file is a metadata-only change: listed only when asked for.
    let with_meta = env.ok(&["diff", &a, &b, "--metadata"]);
    assert!(
        with_meta.contains(&format!("U    {s}/docs/touched.txt")),
        "{with_meta}"
    );
    let plain = env.ok(&["diff", &a, &b]);
    assert!(plain.contains(&format!("M    {s}/docs/a.txt")), "{plain}");
    assert!(!plain.contains("touched.txt"), "{plain}");
    // No change between a snapshot and itself.
    let same = env.ok(&["diff", &b, "latest", "--json"]);
    let same = json_lines(&same).expect("json");
    assert_eq!(same.len(), 1, "{same:?}");
}

#[test]
fn every_reporting_command_speaks_json_lines() {
    let env = Env::init_on(Kind::S3);
    let src = env.path("src");
    let (a, _) = two_states(&src, &env);
    let target = env.path("restored");
    let t = target.to_str().expect("utf8");
    let s = src.to_str().expect("utf8");
    let a_txt = format!("latest:{s}/docs/a.txt");
    let commands: Vec<Vec<&str>> = vec![
        vec!["backup", s],
        vec!["snapshots"],
        vec!["ls", "latest"],
        vec!["restore", "latest", "--target", t, "--verify"],
        vec!["check", "--read-data"],
        vec!["stats"],
        vec!["find", "*.txt"],
        vec!["diff", &a, "latest"],
        vec!["key", "list"],
        vec!["forget", "--keep-last", "2"],
        vec!["prune", "--dry-run"],
    ];
    for args in commands {
        let mut full = args.clone();
        full.push("--json");
        let out = env.run(&full);
        assert!(out.status.success(), "{args:?}: {}", describe(&out));
        let text = String::from_utf8_lossy(&out.stdout);
        let lines = json_lines(&text).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        assert!(!lines.is_empty(), "{args:?} printed nothing");
    }
    // Backup and restore end with a summary line with the promised fields.
    let (_, sum) = env.backup_json(&[&src], &[]);
    assert_eq!(sum["message_type"], "summary");
    for key in [
        "files_new",
        "files_changed",
        "files_unmodified",
        "data_added",
        "data_added_packed",
        "total_duration",
    ] {
        assert!(sum.get(key).is_some(), "backup summary lacks {key}: {sum}");
    }
    let out = env.ok(&["restore", &a_txt, "--target", &format!("{t}-2"), "--json"]);
    let last = json_lines(&out).expect("json").pop().expect("line");
    assert_eq!(last["message_type"], "summary");
    assert_eq!(last["files_restored"], 1);
}

/// A directory nested 1,900 levels deep (near the 4 KiB path limit) restores as a tar to
/// stdout: the read-ahead walks the snapshot recursively on a thread of its own, and a
/// thread's default 2 MiB stack overflowed at about 2,000 levels.
#[test]
fn a_directory_nested_near_the_path_limit_restores_as_a_tar() {
    let env = Env::init_on(Kind::S3);
    let src = env.path("src");
    let depth = 1900;
    let mut deep = src.clone();
    for _ in 0..depth {
        deep.push("a");
    }
    fs::create_dir_all(&deep).expect("mkdir deep");
    fs::write(deep.join("f"), "bottom").expect("write");
    let s = src.to_str().expect("utf8");
    env.ok(&["backup", s]);
    let out = env.run(&["restore", &format!("latest:{s}"), "--target", "-"]);
    assert!(out.status.success(), "{}", describe(&out));
    let mut archive = tar::Archive::new(out.stdout.as_slice());
    let (mut entries, mut bottom) = (0, String::new());
    for entry in archive.entries().expect("tar") {
        let mut entry = entry.expect("tar entry");
        entries += 1;
        if entry.path().expect("path").ends_with("a/f") {
            std::io::Read::read_to_string(&mut entry, &mut bottom).expect("read");
        }
    }
    assert_eq!(entries, depth + 2, "src, {depth} directories and the file");
    assert_eq!(bottom, "bottom");
}

#[test]
fn single_files_and_folders_restore_to_stdout_or_a_directory() {
    let env = Env::init_on(Kind::S3);
    let src = env.path("src");
    fs::create_dir_all(src.join("dir/sub")).expect("mkdir");
    let big = pseudo_random(5 << 20, 7);
    fs::write(src.join("dir/big.bin"), &big).expect("write");
    fs::write(src.join("dir/sub/small.txt"), "small").expect("write");
    let s = src.to_str().expect("utf8");
    env.ok(&["backup", s]);

    let out = env.run(&[
        "restore",
        &format!("latest:{s}/dir/big.bin"),
        "--target",
        "-",
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(out.stdout == big, "stdout differs from the file");

    let out = env.run(&["restore", &format!("latest:{s}/dir"), "--target", "-"]);
    assert!(out.status.success(), "{}", describe(&out));
    let mut archive = tar::Archive::new(out.stdout.as_slice());
    let mut names = BTreeSet::new();
    for entry in archive.entries().expect("tar") {
        let mut entry = entry.expect("entry");
        let name = entry.path().expect("path").to_string_lossy().into_owned();
        if name == "dir/big.bin" {
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut data).expect("read");
            assert!(data == big, "tar content differs");
        }
        names.insert(name);
    }
    let want: BTreeSet<String> = ["dir", "dir/big.bin", "dir/sub", "dir/sub/small.txt"]
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(names, want);

    // A folder lands directly in the target; a file inside the target.
    let t1 = env.path("t1");
    env.ok(&[
        "restore",
        &format!("latest:{s}/dir/sub"),
        "--target",
        t1.to_str().expect("utf8"),
        "--verify",
    ]);
    assert_eq!(
        fs::read_to_string(t1.join("small.txt")).expect("read"),
        "small"
    );
    let t2 = env.path("t2");
    env.ok(&[
        "restore",
        &format!("latest:{s}/dir/big.bin"),
        "--target",
        t2.to_str().expect("utf8"),
    ]);
    assert!(fs::read(t2.join("big.bin")).expect("read") == big);
    assert_eq!(fs::read_dir(&t2).expect("ls").count(), 1);

    // Mistakes get a message that says what to do.
    let out = env.run(&["restore", &format!("latest:{s}/nope"), "--target", "-"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is not in snapshot") && err.contains("cairn ls"),
        "{err}"
    );
    let out = env.run(&["restore", "latest", "--target", "-"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("SNAPSHOT:PATH"),
        "{}",
        describe(&out)
    );
    // Full restore with verify: the whole tree equal.
    let t3 = env.path("t3");
    env.ok(&[
        "restore",
        "latest",
        "--target",
        t3.to_str().expect("utf8"),
        "--verify",
    ]);
    support::assert_same_tree(&src, &restored(&t3, &src));
}

/// Under a pseudo-terminal (`script`), a backup draws a progress bar and prints the
/// summary; `--quiet` draws nothing and leaves only the snapshot line.
#[test]
fn a_terminal_gets_progress_and_a_summary() {
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        panic!("`script` (util-linux) is needed for the terminal test");
    }
    let env = Env::init_on(Kind::S3);
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    for i in 0..40 {
        fs::write(src.join(format!("f{i}")), pseudo_random(1 << 20, i)).expect("write");
    }
    let run_in_pty = |extra: &str| {
        let mut cmd = env.cmd(&[]);
        let program = format!(
            "{} backup {extra} {}",
            env!("CARGO_BIN_EXE_cairn"),
            src.display()
        );
        cmd = {
            let mut c = std::process::Command::new("script");
            c.args(["-qefc", &program, "/dev/null"]);
            for (k, v) in cmd.get_envs() {
                match v {
                    Some(v) => c.env(k, v),
                    None => c.env_remove(k),
                };
            }
            c.env("TERM", "xterm").stdin(std::process::Stdio::null());
            c
        };
        let out = cmd.output().expect("script");
        assert!(out.status.success(), "{}", describe(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let shown = run_in_pty("");
    assert!(shown.contains("backup ["), "no progress bar: {shown}");
    assert!(shown.contains("files"), "{shown}");
    assert!(
        shown.contains("Files:") && shown.contains("Added:"),
        "{shown}"
    );
    assert!(
        shown.contains("snapshot ") && shown.contains(" saved"),
        "{shown}"
    );
    fs::write(src.join("f0"), "changed").expect("write");
    let quiet = run_in_pty("--quiet");
    assert!(!quiet.contains("backup ["), "{quiet}");
    assert!(quiet.contains(" saved"), "{quiet}");
}

#[test]
fn completions_and_man_pages_come_from_the_command_definitions() {
    let env = Env::new();
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef cairn"),
        ("fish", "complete -c cairn"),
    ] {
        let out = env.ok(&["completions", shell]);
        assert!(out.contains(marker), "{shell}: {out}");
        assert!(out.contains("restore") && out.contains("diff"), "{shell}");
    }
    let dir = env.path("man");
    env.ok(&["man", dir.to_str().expect("utf8")]);
    for page in [
        "cairn.1",
        "cairn-restore.1",
        "cairn-key-add.1",
        "cairn-diff.1",
    ] {
        let text = fs::read_to_string(dir.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.contains(".TH"), "{page}");
    }
    let restore = fs::read_to_string(dir.join("cairn-restore.1")).expect("page");
    assert!(restore.contains("verify"), "{restore}");
}

/// Mistakes a user makes, as a set: each message names what is wrong and says what to do.
#[test]
fn every_mistake_gets_a_message_that_says_what_to_do() {
    let env = Env::init_on(Kind::S3);
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    fs::write(src.join("f"), "x").expect("write");
    let s = src.to_str().expect("utf8");
    env.ok(&["backup", s]);
    let nonempty = env.path("nonempty");
    fs::create_dir_all(&nonempty).expect("mkdir");
    fs::write(nonempty.join("x"), "x").expect("write");
    let wrong_pass = env.path("wrong-pass");
    fs::write(&wrong_pass, "not it\n").expect("write");
    fs::set_permissions(
        &wrong_pass,
        <fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600),
    )
    .expect("chmod");
    let missing = format!("{}-missing", env.repo);
    let cases: Vec<(Vec<&str>, &[&str])> = vec![
        (
            vec!["snapshots", "--repo", &missing],
            &["no cairn repository", "cairn init"],
        ),
        (
            vec![
                "snapshots",
                "--password-file",
                wrong_pass.to_str().expect("utf8"),
            ],
            &["wrong passphrase", "first line"],
        ),
        (
            vec!["ls", "deadbeef"],
            &["no snapshot matches", "cairn snapshots"],
        ),
        (
            vec!["diff", "latest~5", "latest"],
            &["latest~5", "holds 1 snapshot"],
        ),
        (
            vec!["restore", "latest~x", "--target", "/tmp/x"],
            &["latest~1"],
        ),
        (
            vec!["backup", "--time", "yesterday", s],
            &["RFC 3339", "2026-01-31T14:00:00Z"],
        ),
        (vec!["backup", "--exclude", "a[", s], &["a[", "invalid"]),
        (vec!["find", "a["], &["a[", "glob"]),
        (
            vec![
                "restore",
                "latest",
                "--target",
                nonempty.to_str().expect("utf8"),
            ],
            &["not empty", "--overwrite"],
        ),
        (
            vec![
                "restore",
                "latest",
                "--target",
                "/tmp/y",
                "--include",
                "/no/such",
            ],
            &["/no/such", "cairn ls"],
        ),
        (vec!["check", "--read-data-subset", "ten"], &["ten", "10%"]),
        (vec!["check", "--repair"], &["--fallback-repo"]),
        (
            vec!["restore", "latest", "--target", "-"],
            &["SNAPSHOT:PATH"],
        ),
    ];
    for (args, needles) in cases {
        let out = env.run(&args);
        assert!(
            !out.status.success(),
            "{args:?} succeeded: {}",
            describe(&out)
        );
        let err = String::from_utf8_lossy(&out.stderr);
        for n in needles {
            assert!(err.contains(n), "{args:?}: {n:?} not in: {err}");
        }
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

/// Run `cairn args`, read a little of its stdout and close it, as `| head -1` does.
fn read_a_little_then_close(env: &Env, args: &[&str]) -> std::process::Output {
    use std::io::Read;
    let mut child = env
        .cmd(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn cairn");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut first = [0u8; 100];
    let n = stdout.read(&mut first).expect("read stdout");
    assert!(n > 0, "cairn {args:?} wrote nothing");
    drop(stdout);
    child.wait_with_output().expect("wait")
}

#[test]
fn a_closed_pipe_ends_listings_and_dumps_quietly() {
    // Every listing is far larger than a pipe's buffer (64 KiB), so the command is still
    // writing when the reader goes away.
    let env = Env::init();
    let src = env.path("src");
    let long = "a-directory-name-long-enough-to-fill-a-pipe-quickly".repeat(2);
    let mut dirs = Vec::new();
    for i in 0..1500 {
        let d = src.join(format!("{long}-{i:04}"));
        fs::create_dir_all(&d).expect("mkdir");
        fs::write(d.join("file.txt"), format!("{i}")).expect("write");
        dirs.push(d.to_str().expect("utf8").to_string());
    }
    fs::write(src.join("big"), pseudo_random(2 << 20, 5)).expect("write");
    let empty = env.path("empty");
    fs::create_dir_all(&empty).expect("mkdir");
    let first = env.ok(&["backup", empty.to_str().expect("utf8")]);
    let first = first
        .split_whitespace()
        .nth(1)
        .expect("snapshot id")
        .to_string();
    // A snapshot of many paths: one line of `snapshots` longer than the pipe holds.
    let mut many = vec!["backup"];
    many.extend(dirs.iter().map(String::as_str));
    env.ok(&many);
    let src_s = src.to_str().expect("utf8");
    env.ok(&["backup", src_s]);
    let big = format!("latest:{src_s}/big");
    for args in [
        vec!["ls", "latest"],
        vec!["ls", "--long", "latest"],
        vec!["snapshots"],
        vec!["diff", &first, "latest"],
        vec!["find", "*"],
        vec!["restore", &big, "--target", "-"],
    ] {
        let out = read_a_little_then_close(&env, &args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "cairn {args:?}: {}",
            describe(&out)
        );
        assert!(
            out.stderr.is_empty(),
            "cairn {args:?} said something on a closed pipe: {}",
            describe(&out)
        );
    }
}
