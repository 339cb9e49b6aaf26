//! Memory stays bounded by streaming: backing up and restoring a file several times larger
//! than the memory limit below must not raise the process's peak RSS past that limit.

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
