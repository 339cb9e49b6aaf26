//! Reading secrets (passphrases, S3 secret keys) from files: the first line only, held in
//! memory that is wiped on drop, and refused outright when group or others could read the
//! file, since a backup is only as private as its passphrase.

use crate::error::{Error, Result};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use zeroize::Zeroizing;

/// A secret string (an S3 secret access key): wiped from memory on drop, and shown as
/// `"<redacted>"` by `Debug`, so that logging a configuration never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(Zeroizing<String>);

impl SecretString {
    /// Wrap a secret.
    pub fn new(s: String) -> Self {
        SecretString(Zeroizing::new(s))
    }

    /// The secret itself, for the one place that must hand it on (the S3 client).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<&str> for SecretString {
    fn from(s: &str) -> Self {
        SecretString::new(s.to_string())
    }
}

impl std::fmt::Debug for SecretString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

/// Largest secret file read: a passphrase or key is a line, not a document.
const MAX_SECRET_FILE: u64 = 64 * 1024;

/// The first line of the secret file `path` (without `\n`/`\r\n`). `what` names the
/// file's role in messages ("password file", "secret_access_key_file"). Fails, naming
/// the fix, when the file is missing, empty, a directory (a common slip: the folder
/// named instead of the file in it), not a regular file (a symbolic link is not
/// followed), or may be read by group or others. The checks are made on the open
/// descriptor, so the file cannot be swapped between the check and the read.
pub fn read_secret_file(path: &Path, what: &str) -> Result<Zeroizing<Vec<u8>>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let cannot = |e: std::io::Error| {
        Error::InvalidInput(format!(
            "cannot read {what} {}: {e}: create it with the secret on its first line, readable only by this user (chmod 600)",
            path.display()
        ))
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                Error::InvalidInput(format!(
                    "{what} {} is a symbolic link: point the setting at the file itself (symbolic links are not followed for secrets)",
                    path.display()
                ))
            } else {
                cannot(e)
            }
        })?;
    let meta = file.metadata().map_err(cannot)?;
    if meta.is_dir() {
        return Err(Error::InvalidInput(format!(
            "{what} {} is a directory: name the file inside it that holds the secret (its first line), e.g. {}",
            path.display(),
            path.join("passphrase").display()
        )));
    }
    if !meta.is_file() {
        return Err(Error::InvalidInput(format!(
            "{what} {} is not a regular file: put the secret in a plain file (chmod 600)",
            path.display()
        )));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::InvalidInput(format!(
            "{what} {} may be read by other users (mode {mode:03o}): run `chmod 600 {}`",
            path.display(),
            path.display()
        )));
    }
    let mut bytes = Zeroizing::new(Vec::new());
    file.take(MAX_SECRET_FILE)
        .read_to_end(&mut bytes)
        .map_err(|e| {
            Error::InvalidInput(format!(
                "cannot read {what} {}: {e}: check that this user may read it",
                path.display()
            ))
        })?;
    let end = bytes
        .iter()
        .position(|b| *b == b'\n')
        .unwrap_or(bytes.len());
    let mut line = Zeroizing::new(bytes[..end].to_vec());
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    if line.is_empty() {
        return Err(Error::InvalidInput(format!(
            "{what} {} is empty: put the secret on its first line",
            path.display()
        )));
    }
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_and_fifos_are_refused_and_secrets_do_not_print() {
        let dir = tempfile::tempdir().expect("tempdir");
        let real = dir.path().join("real");
        std::fs::write(&real, "pw\n").expect("write");
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).expect("symlink");
        let e = read_secret_file(&link, "password file").expect_err("link");
        assert!(e.to_string().contains("symbolic link"), "{e}");
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().expect("utf8")).expect("path");
        // SAFETY: mkfifo reads a NUL-terminated path that lives across the call.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = read_secret_file(&fifo, "password file").expect_err("fifo");
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let e = read_secret_file(dir.path(), "password_file").expect_err("directory");
        assert!(
            e.to_string().contains(&format!(
                "password_file {} is a directory: name the file inside it",
                dir.path().display()
            )),
            "{e}"
        );
        let s = SecretString::new("wJalrXUtnFEMI".into());
        assert!(!format!("{s:?}").contains("wJalr"));
        assert_eq!(s.expose(), "wJalrXUtnFEMI");
    }

    #[test]
    fn first_line_only_and_private_files_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("s");
        std::fs::write(&p, "secret one\r\nsecond line\n").expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(
            read_secret_file(&p, "password file")
                .expect("read")
                .as_slice(),
            b"secret one"
        );
        for mode in [0o640, 0o604, 0o660] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
            let e = read_secret_file(&p, "password file").expect_err("refused");
            assert!(e.to_string().contains("chmod 600"), "{e}");
        }
        std::fs::write(dir.path().join("empty"), "\n").expect("write");
        std::fs::set_permissions(
            dir.path().join("empty"),
            std::fs::Permissions::from_mode(0o600),
        )
        .expect("chmod");
        let e = read_secret_file(&dir.path().join("empty"), "password file").expect_err("empty");
        assert!(e.to_string().contains("first line"), "{e}");
        let e = read_secret_file(&dir.path().join("missing"), "password file").expect_err("gone");
        assert!(e.to_string().contains("missing"), "{e}");
    }
}
