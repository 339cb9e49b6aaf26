//! Where passphrases come from: `--password-file`, `CAIRN_PASSWORD_FILE`, `CAIRN_PASSWORD`,
//! then a prompt on a terminal, in that order (restic's order, with cairn's names).

use anyhow::{Context, Result, bail};
use std::io::IsTerminal;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use zeroize::Zeroizing;

/// A passphrase held in memory that is wiped on drop.
pub type Passphrase = Zeroizing<Vec<u8>>;

/// Read a passphrase file: the first line, without its line ending.
pub fn read_file(path: &Path) -> Result<Passphrase> {
    let bytes = Zeroizing::new(std::fs::read(path).with_context(|| {
        format!(
            "cannot read password file {}: check that it exists and is readable by this user",
            path.display()
        )
    })?);
    if let Ok(m) = std::fs::metadata(path)
        && m.permissions().mode() & 0o077 != 0
    {
        eprintln!(
            "warning: password file {} is readable by other users: run `chmod 600 {}`",
            path.display(),
            path.display()
        );
    }
    let line_end = bytes
        .iter()
        .position(|b| *b == b'\n')
        .unwrap_or(bytes.len());
    let mut line = bytes[..line_end].to_vec();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    let line = Zeroizing::new(line);
    if line.is_empty() {
        bail!(
            "password file {} is empty: put the passphrase on its first line",
            path.display()
        );
    }
    Ok(line)
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
