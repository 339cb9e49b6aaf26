mod support;

use std::process::Command;
use std::time::{Duration, Instant};
use support::postgres::Postgres;

#[test]
fn dump_under_load_restores_consistently() {
    let t = Instant::now();
    let Some(pg) = Postgres::start() else { return };
    eprintln!(
        "start took {:?}, port {}, sock {}",
        t.elapsed(),
        pg.port(),
        pg.socket_dir().display()
    );
    pg.createdb("bench");
    pg.pgbench_init("bench", 1);
    let mut load = pg.pgbench_load("bench", 2, 3);
    std::thread::sleep(Duration::from_millis(1000));
    let dump = pg.socket_dir().parent().unwrap().join("bench.dump");
    let out = Command::new(pg.bin("pg_dump"))
        .args(pg.conn_args())
        .args(["-Fc", "-f"])
        .arg(&dump)
        .arg("bench")
        .output()
        .expect("pg_dump");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::set_permissions(&dump, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    assert!(load.wait().expect("wait pgbench").success());
    let before = pg.psql("bench", "select count(*) from pgbench_history");
    let rows = pg.restore_and_check(&dump, "restored", 1);
    eprintln!("history rows in dump {rows}, at end {before}");
    let t = Instant::now();
    drop(pg);
    eprintln!("stop took {:?}", t.elapsed());
}

#[test]
fn parallel_instances() {
    let hs: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(|| {
                let t = Instant::now();
                let pg = Postgres::start().expect("installed");
                assert_eq!(pg.psql("postgres", "select 1+1"), "2");
                let port = pg.port();
                drop(pg);
                eprintln!("start+stop {:?}", t.elapsed());
                port
            })
        })
        .collect();
    let mut ports: Vec<u16> = hs.into_iter().map(|h| h.join().unwrap()).collect();
    ports.sort();
    ports.dedup();
    assert_eq!(ports.len(), 4);
}
