//! Where a destination's passphrase comes from, and reading it from there. Kept with the
//! configuration that names the source, so the daemon's start-up check, the workers and
//! the scrubber read a passphrase the same way.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::time::Duration;
use zeroize::Zeroizing;

/// Longest a daemon's password command may run: it has nobody to answer a prompt, and a
/// command that hangs must not hold a worker (or the start) for good.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the repository passphrase comes from. It is `Hash` and `Eq` so it can itself be
/// the identity of a passphrase group: destinations with the same source share keys.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PasswordSource {
    /// First line of a file.
    File(PathBuf),
    /// A systemd credential (`LoadCredential=NAME:...`), read from
    /// `$CREDENTIALS_DIRECTORY/NAME`.
    Credential(String),
    /// The first line a program prints (`password_command`, an argument vector like a
    /// source's `command`), run whenever the passphrase is needed.
    Command(Vec<String>),
    /// `CAIRN_PASSWORD_FILE`, `CAIRN_PASSWORD_COMMAND` or `CAIRN_PASSWORD` in the
    /// daemon's environment.
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
                        "password_credential = {name:?} but no systemd credentials are available (CREDENTIALS_DIRECTORY is unset): add `LoadCredential={name}:/etc/cairn/passphrase` to the unit, or use password_file or password_command"
                    ))
                })?;
                crate::secret::read_secret_file(&Path::new(&dir).join(name), "systemd credential")
            }
            PasswordSource::Command(argv) => {
                crate::password_command::run("password_command", argv, Some(COMMAND_TIMEOUT))
            }
            PasswordSource::Environment => {
                if let Some(f) = std::env::var_os("CAIRN_PASSWORD_FILE").filter(|v| !v.is_empty()) {
                    return crate::secret::read_secret_file(Path::new(&f), "CAIRN_PASSWORD_FILE");
                }
                if let Some(c) =
                    std::env::var_os("CAIRN_PASSWORD_COMMAND").filter(|v| !v.is_empty())
                {
                    let what = "CAIRN_PASSWORD_COMMAND";
                    let line = c.to_str().ok_or_else(|| {
                        Error::InvalidInput(format!("{what} is not UTF-8 text: write it in UTF-8"))
                    })?;
                    let argv = crate::password_command::split(what, line)?;
                    return crate::password_command::run(what, &argv, Some(COMMAND_TIMEOUT));
                }
                if let Some(p) = std::env::var_os("CAIRN_PASSWORD").filter(|v| !v.is_empty()) {
                    use std::os::unix::ffi::OsStringExt;
                    return Ok(Zeroizing::new(p.into_vec()));
                }
                Err(Error::InvalidInput(
                    "no passphrase configured: set password_file (or password_credential, or password_command) in the configuration, or CAIRN_PASSWORD_FILE in the daemon's environment".into(),
                ))
            }
        }
    }
}
