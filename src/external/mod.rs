//! Other programs cairn runs for a backup: a command whose output is stored (a database
//! dump), and hooks before and after a snapshot. Nothing here goes through a shell: a
//! command is an argument vector, run as configured (another user, its own process
//! group, a time limit), and its error output reaches the log.

pub mod hook;
pub mod process;
pub mod stream_command;
pub mod user;

pub use hook::{DEFAULT_HOOK_TIMEOUT, Hooks, Outcome};
pub use process::{LineSink, Spec, shown};
pub use stream_command::StreamCommand;
pub use user::{RunAs, lookup};

/// Where a program named in a configuration would be found: itself when it has a `/`,
/// else the first executable file of that name in `PATH`. `None`: not found.
pub fn find_program(program: &str) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &std::path::Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let p = std::path::PathBuf::from(program);
        return executable(&p).then_some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| executable(p))
}
