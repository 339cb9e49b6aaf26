//! Where passphrases come from: `--password-file` or `--password-command` (not both),
//! then `CAIRN_PASSWORD_FILE`, `CAIRN_PASSWORD_COMMAND`, `CAIRN_PASSWORD`, then a prompt
//! on a terminal, in that order (restic's order, with cairn's names).

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

/// The passphrase printed by the command line `line` of the setting `what` (a flag or a
/// variable's name, for messages): split into words as a shell would and run without
/// one. The user is at hand, so it may take as long as a PIN entry takes.
pub fn run_command(what: &str, line: &str) -> Result<Passphrase> {
    let argv = cairn::password_command::split(what, line)?;
    Ok(cairn::password_command::run(what, &argv, None)?)
}

/// Whether a passphrase source other than the prompt is set: the flags, or one of the
/// variables.
pub fn has_source(file_flag: Option<&Path>, command_flag: Option<&str>) -> bool {
    file_flag.is_some()
        || command_flag.is_some()
        || [
            "CAIRN_PASSWORD_FILE",
            "CAIRN_PASSWORD_COMMAND",
            "CAIRN_PASSWORD",
        ]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|v| !v.is_empty()))
}

/// The repository passphrase from the first source that is set.
pub fn resolve(file_flag: Option<&Path>, command_flag: Option<&str>) -> Result<Passphrase> {
    if let Some(p) = flags(
        "--password-file",
        file_flag,
        "--password-command",
        command_flag,
    )? {
        return Ok(p);
    }
    if let Some(f) = std::env::var_os("CAIRN_PASSWORD_FILE").filter(|v| !v.is_empty()) {
        return read_file(Path::new(&f));
    }
    if let Some(c) = std::env::var_os("CAIRN_PASSWORD_COMMAND").filter(|v| !v.is_empty()) {
        let Some(line) = c.to_str() else {
            bail!("CAIRN_PASSWORD_COMMAND is not UTF-8 text: write the command in UTF-8");
        };
        return run_command("CAIRN_PASSWORD_COMMAND", line);
    }
    if let Some(p) = std::env::var_os("CAIRN_PASSWORD").filter(|v| !v.is_empty()) {
        use std::os::unix::ffi::OsStringExt;
        return Ok(Zeroizing::new(p.into_vec()));
    }
    prompt("enter passphrase for repository: ")
}

/// A second repository's passphrase (`init --from-repo`, `copy --from-repo`), from
/// `--from-password-file` or `--from-password-command`; `None` when neither is given,
/// so the caller picks its default. Both at once is refused.
pub fn resolve_second(
    file_flag: Option<&Path>,
    command_flag: Option<&str>,
) -> Result<Option<Passphrase>> {
    flags(
        "--from-password-file",
        file_flag,
        "--from-password-command",
        command_flag,
    )
}

/// The passphrase of a file flag or a command flag, whichever is given; `None` when
/// neither is.
fn flags(
    file_name: &str,
    file: Option<&Path>,
    command_name: &str,
    command: Option<&str>,
) -> Result<Option<Passphrase>> {
    match (file, command) {
        (Some(_), Some(_)) => {
            bail!("{file_name} and {command_name} both name the passphrase: give one of them")
        }
        (Some(f), None) => read_file(f).map(Some),
        (None, Some(c)) => run_command(command_name, c).map(Some),
        (None, None) => Ok(None),
    }
}

/// Ask on the terminal; fails with the list of alternatives when there is none.
pub fn prompt(message: &str) -> Result<Passphrase> {
    if !std::io::stdin().is_terminal() {
        bail!(
            "no passphrase given and no terminal to ask on: use --password-file, --password-command, CAIRN_PASSWORD_FILE, CAIRN_PASSWORD_COMMAND or CAIRN_PASSWORD"
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
