//! One daemon per state directory. Two daemons sharing one would write the same
//! journals, destination records and caches at once, each believing it alone does; a
//! second one started by mistake (another unit, a copy of the configuration with its
//! own control socket) is refused at start with the reason, rather than accepted
//! without a word.

use crate::error::{Error, Result};
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The lock file's name in the state directory.
const LOCK_FILE: &str = "daemon.lock";

/// Held while a daemon runs on a state directory; released when dropped (or when the
/// process ends, however it ends: the kernel drops `flock` locks with the descriptor).
#[derive(Debug)]
pub struct StateLock {
    _file: File,
}

impl StateLock {
    /// Take the state directory `dir` (which exists), or say which daemon has it.
    pub fn acquire(dir: &Path) -> Result<Self> {
        let path = dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| Error::io("open the state lock", &path, e))?;
        // SAFETY: flock on a descriptor `file` keeps open; LOCK_NB makes it return at once.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                let holder = holder.trim();
                let who = if holder.is_empty() {
                    String::new()
                } else {
                    format!(" (process {holder})")
                };
                return Err(Error::InvalidInput(format!(
                    "another cairn daemon{who} is running on the state directory {}: stop it first, or give this one its own `state_dir`",
                    dir.display()
                )));
            }
            return Err(Error::io("lock the state directory", &path, err));
        }
        // Who holds it, for the message above (the lock itself is what counts).
        let _ = file.set_len(0);
        let _ = std::os::unix::fs::FileExt::write_at(
            &file,
            format!("{}\n", std::process::id()).as_bytes(),
            0,
        );
        Ok(StateLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = StateLock::acquire(dir.path()).expect("first");
        let second = StateLock::acquire(dir.path());
        let msg = second.expect_err("second").to_string();
        assert!(msg.contains("another cairn daemon"), "{msg}");
        assert!(msg.contains(&std::process::id().to_string()), "{msg}");
        drop(first);
        StateLock::acquire(dir.path()).expect("free again");
    }
}
