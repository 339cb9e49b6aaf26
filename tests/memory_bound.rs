//! Memory stays bounded by streaming: backing up and restoring a file several times larger
//! than the memory limit below must not raise the process's peak RSS past that limit.

#[path = "integration/support/mod.rs"]
mod support;

use std::fs;
use std::io::Write;
use std::process::Command;
use support::{Env, pseudo_random};

/// Peak resident set size (KiB) of a finished child, from the kernel's accounting.
fn run_and_measure(mut cmd: Command) -> (i32, u64) {
    let child = cmd.spawn().expect("spawn");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain data that wait4 fills; pid is our own child, not yet reaped.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(rc, pid, "wait4 failed");
    std::mem::forget(child);
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    (code, usage.ru_maxrss as u64)
}

#[test]
fn large_file_backup_and_restore_stay_under_memory_bound() {
    const FILE_MIB: usize = 1024;
    const LIMIT_MIB: u64 = 200;
    let env = Env::init();
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    let mut f = fs::File::create(src.join("huge.bin")).expect("create");
    for i in 0..(FILE_MIB / 8) {
        // Alternate incompressible and compressible stretches.
        if i % 4 == 3 {
            f.write_all(&vec![b'a'; 8 << 20]).expect("write");
        } else {
            f.write_all(&pseudo_random(8 << 20, i as u64 + 1))
                .expect("write");
        }
    }
    drop(f);

    let (code, backup_kib) = run_and_measure(env.cmd(&["backup", src.to_str().expect("utf8")]));
    assert_eq!(code, 0, "backup failed");
    let target = env.path("target");
    let (code, restore_kib) = run_and_measure(env.cmd(&[
        "restore",
        "latest",
        "--target",
        target.to_str().expect("utf8"),
    ]));
    assert_eq!(code, 0, "restore failed");
    println!(
        "peak RSS for a {FILE_MIB} MiB file: backup {} MiB, restore {} MiB",
        backup_kib / 1024,
        restore_kib / 1024
    );
    assert!(
        backup_kib / 1024 < LIMIT_MIB,
        "backup peaked at {} MiB",
        backup_kib / 1024
    );
    assert!(
        restore_kib / 1024 < LIMIT_MIB,
        "restore peaked at {} MiB",
        restore_kib / 1024
    );
    let restored = support::restored(&target, &src).join("huge.bin");
    assert_eq!(
        fs::metadata(restored).expect("restored").len(),
        (FILE_MIB as u64) << 20
    );
}

#[test]
fn a_4_gib_stream_from_a_command_stays_under_the_memory_bound() {
    const LIMIT_MIB: u64 = 200;
    const BLOCKS: usize = 8;
    const ROUNDS: usize = 64;
    let env = Env::init();
    // 64 MiB of distinct data (eight 8 MiB blocks, a third of it compressible), written
    // out 64 times: 4 GiB through the chunker and hashing, the first 64 MiB sealed and
    // packed, the rest found stored already, as a dump of a mostly unchanged database.
    let dir = env.path("blocks");
    fs::create_dir_all(&dir).expect("mkdir");
    let mut names = Vec::new();
    for i in 0..BLOCKS {
        let name = format!("b{i}");
        let data = if i % 3 == 2 {
            vec![b'x'; 8 << 20]
        } else {
            pseudo_random(8 << 20, 100 + i as u64)
        };
        fs::write(dir.join(&name), data).expect("write block");
        names.push(name);
    }
    let script = format!(
        "cd {} && i=0; while [ $i -lt {ROUNDS} ]; do cat {}; i=$((i+1)); done",
        dir.display(),
        names.join(" ")
    );
    let (code, kib) = run_and_measure(env.cmd(&[
        "backup",
        "--stdin-from-command",
        "--stdin-filename",
        "big.dump",
        "--",
        "sh",
        "-c",
        &script,
    ]));
    assert_eq!(code, 0, "stream backup failed");
    println!("peak RSS for a 4 GiB stream: {} MiB", kib / 1024);
    assert!(
        kib / 1024 < LIMIT_MIB,
        "stream backup peaked at {} MiB",
        kib / 1024
    );
    let out = env.ok(&["snapshots", "--json"]);
    let list: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(
        list[0]["summary"]["total_bytes_processed"],
        (BLOCKS * ROUNDS * (8 << 20)) as u64,
        "the whole stream is in the snapshot"
    );
}
