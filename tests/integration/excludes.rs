//! restic's exclude options (`--exclude-file`, `--iexclude`, `--iexclude-file`,
//! `--exclude-larger-than`, `--exclude-caches`, `--exclude-if-present`) and path lists
//! (`--files-from`, `--files-from-verbatim`, `--files-from-raw`) on the real binary: what
//! the snapshot holds, exactly, as `cairn ls` and a restore show it; that a second backup
//! finds nothing changed; that bad lists and pattern files stop the backup before anything
//! is stored; and the daemon's `[[source]]` keys, for a file created while it watches.

use crate::support;

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use support::daemon::{Daemon, last_id, primary_config, settled};
use support::{Env, Kind, describe, pseudo_random, snapshot_ids};

/// The paths of the latest snapshot below `src`, relative to it (of repository `repo`
/// when given).
fn stored_below(env: &Env, src: &Path, repo: Option<&Path>) -> BTreeSet<String> {
    // JSON lines: a name may hold a newline.
    let mut args = vec!["ls", "latest", "--json"];
    if let Some(r) = repo {
        args.extend(["--repo", r.to_str().expect("utf8")]);
    }
    support::json_lines(&env.ok(&args))
        .expect("json lines")
        .iter()
        .filter_map(|v| {
            let p = Path::new(v["path"].as_str()?).strip_prefix(src).ok()?;
            Some(p.to_string_lossy().into_owned())
        })
        .filter(|p| !p.is_empty())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn write(path: &Path, data: impl AsRef<[u8]>) {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).expect("mkdir");
    }
    fs::write(path, data).expect("write");
}

const SIGNATURE: &str = "Signature: 8a477f597d28d172789f06886806bc55";

/// A tree with something for every exclude option.
fn exclude_tree(src: &Path) {
    write(&src.join("big.bin"), pseudo_random(3 << 20, 7));
    write(&src.join("small.txt"), "small");
    write(&src.join("notes.tmp"), "scratch");
    write(&src.join("secret.key"), "named through $EXCLUDED_NAME");
    write(&src.join("build/out.o"), "object");
    write(&src.join("build/keep.c"), "int main;");
    write(
        &src.join("cache/CACHEDIR.TAG"),
        format!("{SIGNATURE}\n# a cache directory tag\n"),
    );
    write(&src.join("cache/blob"), "cached");
    write(&src.join("cache/sub/deeper"), "cached too");
    write(
        &src.join("fake-cache/CACHEDIR.TAG"),
        "Signature: not the right one\n",
    );
    write(&src.join("fake-cache/data"), "kept");
    write(&src.join("marked/.nobackup"), "");
    write(&src.join("marked/data"), "left out");
    write(&src.join("Photos/IMG_1.JPG"), "upper");
    write(&src.join("Photos/img_2.jpg"), "lower");
    write(&src.join("Photos/clip.Mov"), "movie");
    write(&src.join("Photos/keep.png"), "png");
}

#[test]
fn every_exclude_option_leaves_out_exactly_what_it_names() {
    let env = Env::init_on(Kind::Local);
    let src = env.path("src");
    exclude_tree(&src);
    let exclude_file = env.path("excludes.txt");
    write(
        &exclude_file,
        "# build output\n\n   *.o   \n*.tmp\n\t# an indented comment\n${EXCLUDED_NAME}\n",
    );
    let iexclude_file = env.path("iexcludes.txt");
    write(&iexclude_file, "*.MOV\n");
    let args = [
        "backup",
        "--json",
        "--exclude-file",
        exclude_file.to_str().expect("utf8"),
        "--iexclude",
        "*.jpg",
        "--iexclude-file",
        iexclude_file.to_str().expect("utf8"),
        "--exclude-larger-than",
        "1M",
        "--exclude-caches",
        "--exclude-if-present",
        ".nobackup",
        src.to_str().expect("utf8"),
    ];
    let backup = || {
        let out = env
            .cmd(&args)
            .env("EXCLUDED_NAME", "secret.key")
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let summary = support::json_lines(&text)
            .expect("json lines")
            .pop()
            .expect("summary");
        (summary, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (first, stderr) = backup();
    let want = set(&[
        "small.txt",
        "build",
        "build/keep.c",
        "cache",
        "cache/CACHEDIR.TAG",
        "fake-cache",
        "fake-cache/CACHEDIR.TAG",
        "fake-cache/data",
        "marked",
        "marked/.nobackup",
        "Photos",
        "Photos/keep.png",
    ]);
    assert_eq!(stored_below(&env, &src, None), want);
    // The wrong signature is said (as restic warns), and is no warning of the backup.
    assert!(stderr.contains("fake-cache/CACHEDIR.TAG"), "{stderr}");
    assert_eq!(first["warnings"], serde_json::json!([]), "{first}");
    // Only what is stored is counted: small.txt, keep.c, the two tags, data, .nobackup
    // and keep.png.
    assert_eq!(first["files_new"], 7, "{first}");
    assert_eq!(first["total_files_processed"], 7, "{first}");
    // The 3 MiB file and the cache's content were never read.
    assert!(
        first["data_read"].as_u64().unwrap_or(u64::MAX) < 4096,
        "{first}"
    );

    // The same again finds nothing new, changed or removed.
    let (second, _) = backup();
    for field in ["files_new", "files_changed", "files_removed", "data_read"] {
        assert_eq!(second[field], 0, "{field}: {second}");
    }
    assert_eq!(second["files_unmodified"], 7, "{second}");

    // A restore holds exactly those files, with their content.
    let target = env.path("restored");
    env.ok(&[
        "restore",
        "latest",
        "--target",
        target.to_str().expect("utf8"),
    ]);
    let root = support::restored(&target, &src);
    let mut files: Vec<String> = support::walk_files(&root)
        .iter()
        .map(|p| p.strip_prefix(&root).expect("below").display().to_string())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "Photos/keep.png",
            "build/keep.c",
            "cache/CACHEDIR.TAG",
            "fake-cache/CACHEDIR.TAG",
            "fake-cache/data",
            "marked/.nobackup",
            "small.txt"
        ]
    );
    assert_eq!(
        fs::read_to_string(root.join("fake-cache/data")).expect("read"),
        "kept"
    );
}

#[test]
fn files_from_lists_add_to_the_paths_given() {
    let env = Env::init_on(Kind::Local);
    let src = env.path("src");
    for f in [
        "a1/x",
        "a2/y",
        "b/z",
        "c.txt",
        "# not a comment",
        "  spaced  ",
        "new\nline",
        "arg.txt",
        "huge.bin",
    ] {
        write(&src.join(f), f);
    }
    write(&src.join("huge.bin"), pseudo_random(2 << 20, 3));
    let s = |rel: &str| src.join(rel).to_string_lossy().into_owned();
    let list = env.path("list.txt");
    write(
        &list,
        format!(
            "# what to back up\n\n  {}  \n{}\n{}\n",
            s("a*"),
            s("c.txt"),
            s("nothing-*")
        ),
    );
    let verbatim = env.path("verbatim.txt");
    write(
        &verbatim,
        format!("{}\n\n{}\n", s("# not a comment"), s("  spaced  ")),
    );
    let raw = format!("{}\0{}\0", s("new\nline"), s("huge.bin"));
    let mut child = env
        .cmd(&[
            "backup",
            "--files-from",
            list.to_str().expect("utf8"),
            "--files-from-verbatim",
            verbatim.to_str().expect("utf8"),
            "--files-from-raw",
            "-",
            "--exclude-larger-than",
            "1M",
            &s("arg.txt"),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(raw.as_bytes())
        .expect("write list");
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    // A pattern that matches nothing is said, and skipped, as restic does.
    let stderr = support::stderr(&out);
    assert!(
        stderr.contains("line 5") && stderr.contains("nothing-*"),
        "{stderr}"
    );
    // Listed paths are excluded like any other: huge.bin is over the limit.
    assert_eq!(
        stored_below(&env, &src, None),
        set(&[
            "a1",
            "a1/x",
            "a2",
            "a2/y",
            "c.txt",
            "# not a comment",
            "  spaced  ",
            "new\nline",
            "arg.txt"
        ])
    );
    let snaps = env.ok(&["snapshots", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&snaps).expect("json");
    assert_eq!(v[0]["paths"].as_array().map(Vec::len), Some(8), "{v}");
}

#[test]
fn bad_lists_sizes_and_pattern_files_stop_the_backup_before_anything_is_stored() {
    let env = Env::init_on(Kind::Local);
    let src = env.path("src");
    write(&src.join("f"), "data");
    write(&src.join("big"), vec![0u8; 4096]);
    let src_s = src.to_str().expect("utf8");
    let missing = env.path("missing.txt");
    let missing_s = missing.to_str().expect("utf8");
    let bad = env.path("bad.txt");
    write(&bad, "# fine\nbro[ken\n");
    let bad_s = bad.to_str().expect("utf8");
    let unset = env.path("unset.txt");
    write(&unset, "$CAIRN_TEST_SURELY_UNSET/x\n");
    let unset_s = unset.to_str().expect("utf8");
    let empty = env.path("empty.txt");
    write(&empty, "# nothing here\n\n");
    let empty_s = empty.to_str().expect("utf8");
    let big = src.join("big");
    let cases: &[(&[&str], i32, &[&str])] = &[
        (
            &["--exclude-file", missing_s, src_s],
            1,
            &["cannot read the exclude file", "missing.txt"],
        ),
        (
            &["--iexclude-file", bad_s, src_s],
            1,
            &["bad.txt, line 2", "bro[ken"],
        ),
        (
            &["--exclude-file", unset_s, src_s],
            1,
            &["unset.txt, line 1", "$CAIRN_TEST_SURELY_UNSET is not set"],
        ),
        (&["--exclude", "a[", src_s], 1, &["\"a[\" is invalid"]),
        (
            &["--files-from", missing_s],
            1,
            &["cannot read the --files-from list", "missing.txt"],
        ),
        (&["--files-from", empty_s], 1, &["nothing to back up"]),
        (
            &["--exclude-larger-than", "1MB", src_s],
            2,
            &["\"1MB\" is not a size", "500k"],
        ),
        (
            &["--exclude-if-present", ":x", src_s],
            2,
            &["names no file"],
        ),
        (
            &["--exclude-larger-than", "1k", big.to_str().expect("utf8")],
            1,
            &["every path given is excluded"],
        ),
        (
            &["--stdin", "--exclude-caches"],
            2,
            &["cannot be used with"],
        ),
    ];
    for (args, code, needles) in cases {
        let mut all = vec!["backup"];
        all.extend_from_slice(args);
        let out = env
            .cmd(&all)
            .env_remove("CAIRN_TEST_SURELY_UNSET")
            .output()
            .expect("run");
        assert_eq!(
            out.status.code(),
            Some(*code),
            "{args:?}: {}",
            describe(&out)
        );
        let stderr = support::stderr(&out);
        for n in *needles {
            assert!(stderr.contains(n), "{args:?}: no {n:?} in {stderr}");
        }
    }
    assert!(snapshot_ids(&env).is_empty(), "a snapshot was written");
}

#[test]
fn the_daemons_source_leaves_out_large_files_and_caches_also_when_created_later() {
    let env = Env::with(Kind::Local);
    let src = env.path("src");
    write(&src.join("docs/report.txt"), "numbers");
    write(&src.join("photos/large.raw"), pseudo_random(3 << 20, 1));
    write(&src.join("photos/small.raw"), pseudo_random(200_000, 2));
    write(&src.join("cache/CACHEDIR.TAG"), SIGNATURE);
    write(&src.join("cache/blob"), "cached");
    let config = primary_config(&env, &src, "");
    let text = fs::read_to_string(&config).expect("read").replace(
        &format!("paths = [\"{}\"]", src.display()),
        &format!(
            "paths = [\"{}\"]\nexclude_larger_than = \"1M\"\nexclude_caches = true",
            src.display()
        ),
    );
    fs::write(&config, text).expect("write");
    let mut d = Daemon::start(&env, &config);
    let s = d.wait_for("the first snapshot", Duration::from_secs(60), settled);
    let first = last_id(&s).expect("id");
    let repo = Path::new(&env.repo);
    let want = |extra: &[&str]| {
        let mut w = set(&[
            "docs",
            "docs/report.txt",
            "photos",
            "photos/small.raw",
            "cache",
            "cache/CACHEDIR.TAG",
        ]);
        w.extend(extra.iter().map(|e| e.to_string()));
        w
    };
    assert_eq!(stored_below(&env, &src, Some(repo)), want(&[]));

    // Files created while it watches: the small one is stored, the large one and the
    // one in the cache are not.
    write(&src.join("docs/new-large.bin"), pseudo_random(2 << 20, 3));
    write(&src.join("cache/new-blob"), "cached later");
    write(&src.join("docs/new-small.txt"), "small");
    d.wait_for(
        "a snapshot with the new small file",
        Duration::from_secs(60),
        |s| {
            settled(s)
                && last_id(s).as_deref() != Some(first.as_str())
                && stored_below(&env, &src, Some(repo)).contains("docs/new-small.txt")
        },
    );
    d.terminate();
    assert_eq!(
        stored_below(&env, &src, Some(repo)),
        want(&["docs/new-small.txt"])
    );
}
