//! Databases backed up the way their users do it: a real PostgreSQL under pgbench's load
//! dumped with `pg_dump` through `backup --stdin-from-command` and through a daemon
//! command source running as the `postgres` user, each dump restored with `pg_restore`
//! into a new database and checked complete and consistent; SQLite through `.dump` and
//! through `.backup` in a before hook; and a daemon whose dump or hook fails, which saves
//! nothing and says why in status, log and metrics.

use crate::support;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use support::daemon::{Daemon, QUICK_SCHEDULE, backup_now, last_id, metrics};
use support::postgres::Postgres;
use support::{Env, describe, is_root, snapshot_ids};

/// `pg_dump` of database `db` of `pg` in custom format without its own compression (so
/// that unchanged data deduplicates), as an argument vector.
fn pg_dump(pg: &Postgres, db: &str) -> Vec<String> {
    let mut argv = vec![pg.bin("pg_dump").to_string_lossy().into_owned()];
    argv.extend(pg.conn_args());
    argv.extend(["-Fc", "-Z0", db].map(String::from));
    argv
}

/// The summary line of a `backup --json`.
fn summary(out: &std::process::Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", describe(out));
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().expect("summary")).expect("summary json")
}

#[test]
fn postgres_under_load_dumped_from_the_command_line_restores_consistent() {
    let Some(pg) = Postgres::start() else { return };
    let env = Env::init();
    pg.createdb("app");
    pg.pgbench_init("app", 2);
    let mut load = pg.pgbench_load("app", 4, 6);
    std::thread::sleep(Duration::from_secs(1));
    let mut args = vec![
        "backup".to_string(),
        "--json".into(),
        "--stdin-from-command".into(),
        "--stdin-filename".into(),
        "app.dump".into(),
        "--".into(),
    ];
    args.extend(pg_dump(&pg, "app"));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let first = summary(&env.run(&refs));
    assert!(load.wait().expect("pgbench").success(), "pgbench failed");

    let target = env.path("restored");
    env.ok(&[
        "restore",
        "latest",
        "--target",
        target.to_str().expect("utf8"),
    ]);
    let history = pg.restore_and_check(&target.join("app.dump"), "restored", 2);
    println!("restored dump taken under load: {history} history rows, consistent");

    // With the load over, two dumps in a row hold the same data: the second adds almost
    // nothing: one chunk (4 MiB at most), around the dump's header, which holds its time.
    summary(&env.run(&refs));
    let again = summary(&env.run(&refs));
    let (total, added) = (
        again["total_bytes_processed"].as_u64().expect("total"),
        again["data_added"].as_u64().expect("added"),
    );
    println!(
        "dumps of {total} bytes: the first added {}, an unchanged one {added}",
        first["data_added"]
    );
    assert!(total > 10 << 20, "the dump is only {total} bytes");
    assert!(
        added <= (4 << 20) + (64 << 10),
        "an unchanged database's dump added {added} of {total} bytes: more than one chunk"
    );
}

/// A daemon configuration: state in the scratch area, the Env's repository as
/// destination `primary`, and `sources` as written.
fn daemon_config(env: &Env, sources: &str, extra: &str) -> std::path::PathBuf {
    let config = env.path("cairn.toml");
    fs::write(
        &config,
        format!(
            "state_dir = \"{}\"\npassword_file = \"{}\"\n\n{sources}\n\n[[destination]]\nname = \"primary\"\nrepo = \"{}\"\n\n[schedule]\n{QUICK_SCHEDULE}\n{extra}",
            env.path("state").display(),
            env.password_file.display(),
            env.repo,
        ),
    )
    .expect("write config");
    config
}

/// A TOML array of strings.
fn toml_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", quoted.join(", "))
}

#[test]
fn a_daemon_command_source_dumps_postgres_as_the_postgres_user_with_hooks() {
    if !is_root() {
        eprintln!("skipped: running a command as another user needs root");
        return;
    }
    let Some(pg) = Postgres::start() else { return };
    let env = Env::init();
    pg.createdb("app");
    pg.pgbench_init("app", 1);
    let hooks = env.path("hooks.log");
    // The dump says who it runs as on its error output, which goes to the log.
    let mut command = vec![
        "sh".to_string(),
        "-c".into(),
        "echo \"dump runs as $(id -un) in $PWD\" >&2; exec \"$@\"".into(),
        "sh".into(),
    ];
    command.extend(pg_dump(&pg, "app"));
    let hook = |name: &str| {
        toml_list(&[
            "sh".into(),
            "-c".into(),
            format!(
                "echo \"{name} $CAIRN_SOURCE $CAIRN_DESTINATION $CAIRN_SNAPSHOT_ID\" >> {}",
                hooks.display()
            ),
        ])
    };
    let source = format!(
        "[[source]]\ncommand = {}\nfilename = \"db/app.dump\"\nevery = \"1h\"\nuser = \"postgres\"\nbefore = {}\nafter = {}\n",
        toml_list(&command),
        hook("before"),
        hook("after"),
    );
    let config = daemon_config(&env, &source, "");
    let check = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["config", "check", "--offline", "--config"])
        .arg(&config)
        .output()
        .expect("config check");
    assert!(check.status.success(), "{}", describe(&check));
    assert!(
        String::from_utf8_lossy(&check.stdout).contains("as user postgres, every 1h"),
        "{}",
        describe(&check)
    );

    let mut d = Daemon::start(&env, &config);
    // A command source runs when the daemon starts.
    let first = d.wait_for("the first dump", Duration::from_secs(60), |s| {
        last_id(s).is_some()
    });
    let first = last_id(&first).expect("id");
    // Then on request, while pgbench writes.
    let mut load = pg.pgbench_load("app", 4, 5);
    std::thread::sleep(Duration::from_secs(1));
    let (ok, result) = backup_now(&d);
    assert!(ok, "{result}\n{}", d.log());
    assert!(load.wait().expect("pgbench").success());
    let ids = snapshot_ids(&env);
    assert_eq!(ids.len(), 2, "{ids:?}");
    let second = ids.last().expect("second").clone();
    assert!(
        result.to_string().contains(&second) && result.to_string().contains("/db/app.dump"),
        "{result}"
    );
    let log = d.log();
    assert!(log.contains("dump runs as postgres in "), "{log}");

    let target = env.path("restored");
    env.restore_from(&env.repo, &second, &target);
    let history = pg.restore_and_check(&target.join("db/app.dump"), "restored", 1);
    println!("the daemon's dump under load restored consistent ({history} history rows)");
    assert_eq!(
        fs::read_to_string(&hooks).expect("hook log"),
        format!(
            "before /db/app.dump primary \nafter /db/app.dump primary {first}\nbefore /db/app.dump primary \nafter /db/app.dump primary {second}\n"
        )
    );
}

#[test]
fn a_daemon_whose_dump_or_before_hook_fails_saves_nothing_and_says_why() {
    let env = Env::init();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let marker = env.path("before-ran");
    let runs = env.path("runs");
    let source = format!(
        "[[source]]\ncommand = [\"sh\", \"-c\", \"echo run >> {}; echo partial; echo 'pg_dump: error: connection to server failed: No such file or directory' >&2; exit 1\"]\nfilename = \"app.dump\"\nevery = \"1h\"\n\n[[source]]\ncommand = [\"echo\", \"data\"]\nfilename = \"other.dump\"\nbefore = [\"sh\", \"-c\", \"touch {}; echo 'database is locked' >&2; exit 2\"]\n",
        runs.display(),
        marker.display()
    );
    let config = daemon_config(
        &env,
        &source,
        &format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    let mut d = Daemon::start(&env, &config);
    let s = d.wait_for("the failures", Duration::from_secs(30), |s| {
        s["destinations"][0]["failed_snapshots"].as_u64() >= Some(1)
    });
    let err = s["destinations"][0]["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        err.contains("source /app.dump: command `sh -c")
            && err.contains("exited with status 1, so nothing was saved")
            && err.contains("pg_dump: error: connection to server failed"),
        "{err}"
    );
    assert!(marker.exists(), "the before hook did not run");
    let log = d.log();
    assert!(
        log.contains("source /other.dump: before hook `sh -c")
            && log.contains("exited with status 2")
            && log.contains("database is locked")
            && log.contains("no snapshot was made"),
        "{log}"
    );
    let text = metrics(port);
    let failed: u64 = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("cairn_snapshots_total{destination=\"primary\",result=\"error\"} ")
        })
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(failed >= 1, "{text}");
    assert!(
        snapshot_ids(&env).is_empty(),
        "a failed source saved a snapshot"
    );
    // A failing dump runs again on a backoff of its own (30 s first), not every few
    // seconds with the destination's retries.
    std::thread::sleep(Duration::from_secs(8));
    let count = || {
        fs::read_to_string(&runs)
            .unwrap_or_default()
            .lines()
            .count()
    };
    assert_eq!(
        count(),
        1,
        "the failing dump ran again within seconds\n{}",
        d.log()
    );
    assert!(d.log().contains("(runs again in 30s)"), "{}", d.log());
    // `backup --now` runs them again and reports the failure.
    let out = d.cli(&["backup", "--now"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(describe(&out).contains("FAILED"), "{}", describe(&out));
    assert_eq!(count(), 2);
    assert!(snapshot_ids(&env).is_empty());
}

#[test]
fn stopping_the_daemon_ends_a_dump_that_hangs_and_runs_the_after_hook() {
    let env = Env::init();
    let after = env.path("after-ran");
    // A dump that writes a little, then waits for a lock forever, its child too.
    let source = format!(
        "[[source]]\ncommand = [\"sh\", \"-c\", \"echo header; sleep 171 & sleep 172\"]\nfilename = \"app.dump\"\nafter = [\"sh\", \"-c\", \"sleep 1; echo $CAIRN_ERROR > {}\"]\n",
        after.display()
    );
    let config = daemon_config(&env, &source, "");
    let mut d = Daemon::start(&env, &config);
    let alive = |pattern: &str| {
        Command::new("pgrep")
            .args(["-f", pattern])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let start = std::time::Instant::now();
    while !alive("sleep 172") {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the dump never started\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let took = d.terminate();
    assert!(
        took < Duration::from_secs(10),
        "the daemon took {took:?} to stop\n{}",
        d.log()
    );
    assert!(
        !alive("sleep 171") && !alive("sleep 172"),
        "the dump outlived the daemon"
    );
    let said = fs::read_to_string(&after).expect("the after hook ran at shutdown");
    assert!(said.contains("stopped before completion"), "{said}");
    assert!(snapshot_ids(&env).is_empty());
}

/// Run sqlite3 on `db` with `sql`, insisting it succeeds; its output.
fn sqlite(db: &Path, sql: &str) -> String {
    let out = Command::new("sqlite3")
        .arg(db)
        .arg(sql)
        .output()
        .expect("run sqlite3 (install the sqlite3 package)");
    assert!(out.status.success(), "sqlite3 {sql}: {}", describe(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn sqlite_by_dump_command_and_by_backup_hook_restores_complete() {
    if Command::new("sqlite3").arg("-version").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but sqlite3 is missing"
        );
        eprintln!("skipped: sqlite3 not installed");
        return;
    }
    let env = Env::init();
    let db = env.path("app.db");
    sqlite(
        &db,
        "PRAGMA journal_mode=WAL; CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); \
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 20000) \
         INSERT INTO t(v) SELECT printf('row %d', i) FROM n;",
    );
    // `.dump` as the command: SQL text.
    let out = env.run(&[
        "backup",
        "--stdin-from-command",
        "--stdin-filename",
        "app.sql",
        "--",
        "sqlite3",
        db.to_str().expect("utf8"),
        ".dump",
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    let target = env.path("r1");
    env.ok(&[
        "restore",
        "latest",
        "--target",
        target.to_str().expect("utf8"),
    ]);
    let sql = fs::read_to_string(target.join("app.sql")).expect("dump");
    let fresh = env.path("fresh.db");
    let load = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "sqlite3 {} < {}",
            fresh.display(),
            target.join("app.sql").display()
        ))
        .output()
        .expect("load");
    assert!(load.status.success(), "{}", describe(&load));
    assert!(sql.contains("CREATE TABLE t"));
    assert_eq!(
        sqlite(&fresh, "SELECT count(*), max(v) FROM t"),
        "20000|row 9999"
    );

    // `.backup` in a before hook, and the copy's folder backed up.
    let copies = env.path("copies");
    fs::create_dir_all(&copies).expect("mkdir");
    let copy = copies.join("app.db");
    let before = format!("sqlite3 {} \".backup {}\"", db.display(), copy.display());
    let out = env.run(&[
        "backup",
        "--before",
        &before,
        copies.to_str().expect("utf8"),
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    let target = env.path("r2");
    env.ok(&[
        "restore",
        "latest",
        "--target",
        target.to_str().expect("utf8"),
    ]);
    let restored = support::restored(&target, &copies).join("app.db");
    assert_eq!(sqlite(&restored, "PRAGMA integrity_check"), "ok");
    assert_eq!(sqlite(&restored, "SELECT count(*) FROM t"), "20000");
}
