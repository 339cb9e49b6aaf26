//! A real, throwaway PostgreSQL cluster for integration tests: started in a private
//! temporary folder on a free port, loaded with pgbench, and able to check that a restored
//! `pg_dump` is complete and consistent. PostgreSQL refuses to run as root, so as root the
//! server programs run as the `postgres` user through `runuser`; client programs connect
//! over the cluster's own Unix socket with trust authentication and run as we are.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// A running cluster, stopped and removed on drop.
pub struct Postgres {
    /// Owned by `postgres`, mode 0700; holds the data dir, socket dir and logs.
    dir: tempfile::TempDir,
    data: PathBuf,
    sock: PathBuf,
    port: u16,
    bin: PathBuf,
    /// Numbers the pgbench log files so that several loads do not share one.
    loads: AtomicU32,
}

/// The bin folder of the highest PostgreSQL under /usr/lib/postgresql (Debian's layout),
/// else the folder of an `initdb` on PATH (other distributions); None if neither exists.
fn find_bin() -> Option<PathBuf> {
    let version =
        |name: &str| -> Option<Vec<u32>> { name.split('.').map(|p| p.parse().ok()).collect() };
    fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((version(e.file_name().to_str()?)?, e.path().join("bin"))))
        .filter(|(_, bin)| bin.join("initdb").is_file())
        .max()
        .map(|(_, bin)| bin)
        .or_else(|| {
            let path = std::env::var_os("PATH")?;
            std::env::split_paths(&path).find(|d| d.join("initdb").is_file())
        })
}

/// Run a command to completion and return its stdout; panic naming `what` with its stderr
/// when it cannot start or fails, so a broken step says which one it was.
fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: could not run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

impl Postgres {
    /// Start a cluster that only this test uses (initdb with trust auth and no fsync, then
    /// pg_ctl start on a free port of 127.0.0.1 and a private socket folder, waiting until
    /// it accepts connections), so tests can dump a live database. None, after saying so,
    /// when PostgreSQL is not installed and CI is unset; under CI that is a failure.
    pub fn start() -> Option<Postgres> {
        let Some(bin) = find_bin() else {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set but PostgreSQL is missing: no initdb in /usr/lib/postgresql/*/bin \
                 or on PATH (install `postgresql` and `postgresql-contrib`)"
            );
            eprintln!("skipped: PostgreSQL not installed");
            return None;
        };
        // In /tmp rather than $TMPDIR: the `postgres` user must be able to reach it, and
        // the socket path must stay under the 107-byte limit of Unix socket names.
        let dir = tempfile::Builder::new()
            .prefix("cairn-pg-")
            .tempdir_in("/tmp")
            .expect("create the PostgreSQL temporary folder in /tmp");
        let (data, sock) = (dir.path().join("data"), dir.path().join("sock"));
        fs::create_dir(&sock).expect("create the PostgreSQL socket folder");
        let mut pg = Postgres {
            dir,
            data,
            sock,
            port: 0,
            bin,
            loads: AtomicU32::new(0),
        };
        if is_root() {
            run(
                Command::new("chown")
                    .arg("postgres:")
                    .args([pg.dir.path(), &pg.sock]),
                "chown postgres: of the cluster folder (is there a `postgres` user?)",
            );
        }
        run(
            pg.as_server("initdb")
                .args(["--auth=trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])
                .args(["--locale=C", "-D"])
                .arg(&pg.data),
            "initdb",
        );
        let conf = format!(
            "\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n",
            pg.sock.display()
        );
        fs::OpenOptions::new()
            .append(true)
            .open(pg.data.join("postgresql.conf"))
            .and_then(|mut f| f.write_all(conf.as_bytes()))
            .expect("append test settings to postgresql.conf");
        let log = pg.dir.path().join("server.log");
        // The free port may be taken between our probe and the server's bind (parallel
        // tests do the same): try a second port once.
        for attempt in 1..=2 {
            pg.port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("find a free TCP port on 127.0.0.1")
                .port();
            let out = pg
                .as_server("pg_ctl")
                .args(["start", "-w", "-t", "60", "-D"])
                .arg(&pg.data)
                .arg("-l")
                .arg(&log)
                .args(["-o", &format!("-p {}", pg.port)])
                .stdin(Stdio::null())
                .output()
                .expect("run pg_ctl start");
            if out.status.success() {
                return Some(pg);
            }
            let server_log = fs::read_to_string(&log).unwrap_or_default();
            if attempt == 2 || !server_log.contains("already in use") {
                panic!(
                    "pg_ctl start failed ({}) on port {}:\n{}{}\nserver log:\n{server_log}",
                    out.status,
                    pg.port,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        unreachable!("the loop above returns or panics")
    }

    /// A server program (initdb, pg_ctl) run as `postgres` when we are root, since
    /// PostgreSQL refuses root; from the temporary folder, which that user can enter.
    fn as_server(&self, name: &str) -> Command {
        let mut c = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(self.bin(name));
            c
        } else {
            Command::new(self.bin(name))
        };
        c.current_dir(self.dir.path());
        c
    }

    /// A client program with the connection arguments, ignoring the caller's PG settings.
    fn client(&self, name: &str) -> Command {
        let mut c = Command::new(self.bin(name));
        c.args(self.conn_args())
            .env_remove("PGSERVICE")
            .env_remove("PGOPTIONS")
            .env_remove("PGDATABASE");
        c
    }

    /// The TCP port the server listens on (127.0.0.1), for tests that connect over TCP.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The folder of the server's Unix socket, the `-h` of client programs.
    pub fn socket_dir(&self) -> &Path {
        &self.sock
    }

    /// Full path of a program (e.g. "pg_dump") of the same installation as the server, so
    /// a test never mixes client and server versions.
    pub fn bin(&self, name: &str) -> PathBuf {
        self.bin.join(name)
    }

    /// Arguments that connect a client program to this cluster as the postgres role:
    /// `-h socket_dir -p port -U postgres`.
    pub fn conn_args(&self) -> Vec<String> {
        let (h, p) = (self.sock.to_string_lossy(), self.port.to_string());
        ["-h", &h, "-p", &p, "-U", "postgres"]
            .map(String::from)
            .to_vec()
    }

    /// Run SQL in database `db` and return its unaligned, tuples-only output, trimmed, to
    /// set up or inspect a database; stops at the first error and panics with it.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let mut c = self.client("psql");
        c.args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", db, "-c"])
            .arg(sql);
        run(&mut c, &format!("psql {sql:?}")).trim().to_string()
    }

    /// Create an empty database `name`, for a test's data or a restore target.
    pub fn createdb(&self, name: &str) {
        run(self.client("createdb").arg(name), "createdb");
    }

    /// Fill `db` with pgbench's tables at `scale` (100,000 accounts per unit), the data
    /// whose invariants `restore_and_check` knows.
    pub fn pgbench_init(&self, db: &str, scale: u32) {
        let mut c = self.client("pgbench");
        c.args(["-i", "-q", "-s", &scale.to_string(), db]);
        run(&mut c, "pgbench -i");
    }

    /// Start pgbench's TPC-B-like writes in the background, so a dump runs against a
    /// database that changes under it; the test waits on the returned child. `-n`: no
    /// vacuum, so pgbench does not empty pgbench_history, which the checks rely on.
    /// Its output goes to a pgbench-load-N.log file in the temporary folder.
    pub fn pgbench_load(&self, db: &str, clients: u32, seconds: u32) -> Child {
        let n = self.loads.fetch_add(1, Ordering::Relaxed);
        let log = fs::File::create(self.dir.path().join(format!("pgbench-load-{n}.log")))
            .expect("create the pgbench log file");
        let err = log.try_clone().expect("clone the pgbench log file");
        let (c, t) = (clients.to_string(), seconds.to_string());
        self.client("pgbench")
            .args(["-n", "-c", &c, "-T", &t, db])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .expect("start pgbench")
    }

    /// Restore the custom-format dump `dump` into the new database `newdb` and check it
    /// is complete (row counts of pgbench at `scale`) and consistent (every balance total
    /// equals the history's total of deltas, true only of a snapshot taken at one
    /// instant). Panics with the numbers otherwise; returns the history rows, which show
    /// whether writes happened before the dump.
    pub fn restore_and_check(&self, dump: &Path, newdb: &str, scale: u32) -> u64 {
        self.createdb(newdb);
        let mut c = self.client("pg_restore");
        c.args(["--exit-on-error", "-d", newdb]).arg(dump);
        run(&mut c, &format!("pg_restore {}", dump.display()));
        let row = self.psql(
            newdb,
            "SELECT (SELECT count(*) FROM pgbench_accounts), \
                    (SELECT count(*) FROM pgbench_branches), \
                    (SELECT count(*) FROM pgbench_tellers), \
                    (SELECT count(*) FROM pgbench_history), \
                    (SELECT coalesce(sum(abalance), 0) FROM pgbench_accounts), \
                    (SELECT coalesce(sum(bbalance), 0) FROM pgbench_branches), \
                    (SELECT coalesce(sum(tbalance), 0) FROM pgbench_tellers), \
                    (SELECT coalesce(sum(delta), 0) FROM pgbench_history)",
        );
        let n: [i64; 8] = row
            .split('|')
            .map(str::parse)
            .collect::<Result<Vec<i64>, _>>()
            .ok()
            .and_then(|v| v.try_into().ok())
            .unwrap_or_else(|| panic!("psql gave {row:?}, not 8 numbers"));
        let [accounts, branches, tellers, history, a, b, t, d] = n;
        let s = i64::from(scale);
        assert!(
            [accounts, branches, tellers] == [100_000 * s, s, 10 * s] && a == b && b == t && t == d,
            "restored {newdb} is incomplete or inconsistent: {accounts} accounts, {branches} \
             branches, {tellers} tellers at scale {scale}; {history} history rows; sums \
             abalance {a}, bbalance {b}, tbalance {t}, delta {d}"
        );
        u64::try_from(history).expect("history row count is not negative")
    }
}

impl Drop for Postgres {
    /// Stop the server at once (the data is thrown away), then the folder goes with `dir`.
    fn drop(&mut self) {
        let stopped = self
            .as_server("pg_ctl")
            .args(["stop", "-m", "immediate", "-w", "-D"])
            .arg(&self.data)
            .stdin(Stdio::null())
            .output()
            .is_ok_and(|o| o.status.success());
        // Should pg_ctl fail, do not leave our postmaster running on a deleted folder.
        let pid = fs::read_to_string(self.data.join("postmaster.pid")).unwrap_or_default();
        if let (false, Some(Ok(pid))) = (stopped, pid.lines().next().map(str::parse::<i32>)) {
            // SAFETY: kill has no memory preconditions; the pid is our own postmaster's.
            unsafe { libc::kill(pid, libc::SIGQUIT) };
        }
    }
}
