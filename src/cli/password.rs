//! Where passphrases come from: `--password-file`, `CAIRN_PASSWORD_FILE`, `CAIRN_PASSWORD`,
//! then a prompt on a terminal, in that order (restic's order, with cairn's names).

use anyhow::{Context, Result, bail};
use std::io::IsTerminal;
use std::path::Path;
use zeroize::Zeroizing;

/// A passphrase held in memory that is wiped on drop.
pub type Passphrase = Zeroizing<Vec<u8>>;

/// Read a passphrase file: the first line, without its line ending; refused if group or
/// others may read it.
pub fn read_file(path: &Path) -> Result<Passphrase> {
    Ok(cairn::secret::read_secret_file(path, "password file")?)
}

/// The repository passphrase from the first source that is set.
pub fn resolve(file_flag: Option<&Path>) -> Result<Passphrase> {
    if let Some(f) = file_flag {
        return read_file(f);
    }
    if let Some(f) = std::env::var_os("CAIRN_PASSWORD_FILE").filter(|v| !v.is_empty()) {
        return read_file(Path::new(&f));
    }
    if let Some(p) = std::env::var_os("CAIRN_PASSWORD").filter(|v| !v.is_empty()) {
        use std::os::unix::ffi::OsStringExt;
        return Ok(Zeroizing::new(p.into_vec()));
    }
    prompt("enter passphrase for repository: ")
}

/// Ask on the terminal; fails with the list of alternatives when there is none.
pub fn prompt(message: &str) -> Result<Passphrase> {
    if !std::io::stdin().is_terminal() {
        bail!(
            "no passphrase given and no terminal to ask on: use --password-file, CAIRN_PASSWORD_FILE or CAIRN_PASSWORD"
        );
    }
    let p = rpassword::prompt_password(message).context("reading the passphrase")?;
    Ok(Zeroizing::new(p.into_bytes()))
}

/// A new passphrase: from `--new-password-file`, or asked twice on the terminal.
pub fn resolve_new(file_flag: Option<&Path>) -> Result<Passphrase> {
    if let Some(f) = file_flag {
        return read_file(f);
    }
    let a = prompt("enter new passphrase: ")?;
    let b = prompt("enter new passphrase again: ")?;
    if a != b {
        bail!("the two passphrases differ: nothing was changed");
    }
    if a.is_empty() {
        bail!("the passphrase is empty: nothing was changed");
    }
    Ok(a)
}
