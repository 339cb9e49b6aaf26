//! Reading secrets (passphrases, S3 secret keys) from files: the first line only, held in
//! memory that is wiped on drop, and refused outright when group or others could read the
//! file, since a backup is only as private as its passphrase.

use crate::error::{Error, Result};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use zeroize::Zeroizing;

/// The first line of the secret file `path` (without `\n`/`\r\n`). `what` names the
/// file's role in messages ("password file", "secret_access_key_file"). Fails, naming
/// the fix, when the file is missing, empty, or may be read by group or others.
pub fn read_secret_file(path: &Path, what: &str) -> Result<Zeroizing<Vec<u8>>> {
    let meta = std::fs::metadata(path).map_err(|e| {
        Error::InvalidInput(format!(
            "cannot read {what} {}: {e}: create it with the secret on its first line, readable only by this user (chmod 600)",
            path.display()
        ))
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::InvalidInput(format!(
            "{what} {} may be read by other users (mode {mode:03o}): run `chmod 600 {}`",
            path.display(),
            path.display()
        )));
    }
    let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| {
        Error::InvalidInput(format!(
            "cannot read {what} {}: {e}: check that this user may read it",
            path.display()
        ))
    })?);
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
