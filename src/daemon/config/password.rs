//! Where a destination's passphrase comes from, and reading it from there. Kept with the
//! configuration that names the source, so the daemon's start-up check, the workers and
//! the scrubber read a passphrase the same way.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// Where the repository passphrase comes from. It is `Hash` and `Eq` so it can itself be
/// the identity of a passphrase group: destinations with the same source share keys.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PasswordSource {
    /// First line of a file.
    File(PathBuf),
    /// A systemd credential (`LoadCredential=NAME:...`), read from
    /// `$CREDENTIALS_DIRECTORY/NAME`.
    Credential(String),
    /// `CAIRN_PASSWORD_FILE` or `CAIRN_PASSWORD` in the daemon's environment.
    Environment,
}

impl PasswordSource {
    /// Read the passphrase now. Read at every (re)connection rather than kept, so a
    /// rotated passphrase file takes effect without a restart and the secret lives in
    /// memory only while a repository is opened.
    pub fn read(&self) -> Result<Zeroizing<Vec<u8>>> {
        match self {
            PasswordSource::File(p) => crate::secret::read_secret_file(p, "password_file"),
            PasswordSource::Credential(name) => {
                let dir = std::env::var_os("CREDENTIALS_DIRECTORY").ok_or_else(|| {
                    Error::InvalidInput(format!(
                        "password_credential = {name:?} but no systemd credentials are available (CREDENTIALS_DIRECTORY is unset): add `LoadCredential={name}:/etc/cairn/passphrase` to the unit, or use password_file"
                    ))
                })?;
                crate::secret::read_secret_file(&Path::new(&dir).join(name), "systemd credential")
            }
            PasswordSource::Environment => {
                if let Some(f) = std::env::var_os("CAIRN_PASSWORD_FILE").filter(|v| !v.is_empty()) {
                    return crate::secret::read_secret_file(Path::new(&f), "CAIRN_PASSWORD_FILE");
                }
                if let Some(p) = std::env::var_os("CAIRN_PASSWORD").filter(|v| !v.is_empty()) {
                    use std::os::unix::ffi::OsStringExt;
                    return Ok(Zeroizing::new(p.into_vec()));
                }
                Err(Error::InvalidInput(
                    "no passphrase configured: set password_file (or password_credential) in the configuration, or CAIRN_PASSWORD_FILE in the daemon's environment".into(),
                ))
            }
        }
    }
}
