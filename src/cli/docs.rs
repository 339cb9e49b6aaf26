//! `cairn completions` and `cairn man`: shell completion scripts and man pages generated
//! from the clap definitions, so they cannot drift from the program. cairn(1) also gets
//! ENVIRONMENT (from [`ENVIRONMENT`]) and EXIT STATUS (from the exit codes' one table,
//! [`cairn::error::EXIT_CODES`]).

use super::stdout::{out, outln};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// `cairn completions` arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct CompletionsArgs {
    /// The shell.
    shell: clap_complete::Shell,
}

/// `cairn man` arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct ManArgs {
    /// Directory to write into (created if missing).
    dir: PathBuf,
}

/// `cairn completions SHELL`: the script on stdout, for the shell's completion directory.
/// `cmd` is the whole command line's definition, which only `main` holds. Generated into
/// memory first: clap_complete panics when its writer fails (a closed pipe).
pub(crate) fn completions(mut cmd: clap::Command, a: &CompletionsArgs) -> Result<i32> {
    let mut script = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, "cairn", &mut script);
    out!("{}", String::from_utf8_lossy(&script))?;
    Ok(0)
}

/// `cairn man DIR`: write `cairn.1` and `cairn-SUBCOMMAND.1` (nested:
/// `cairn-key-add.1`) into the directory, for packagers to install.
pub(crate) fn man(cmd: clap::Command, a: &ManArgs) -> Result<i32> {
    let dir = a.dir.as_path();
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating the man page directory {}", dir.display()))?;
    let cmd = cmd.version(env!("CARGO_PKG_VERSION"));
    write_one(&cmd, "cairn", dir)?;
    outln!("wrote man pages to {}", dir.display())?;
    Ok(0)
}

/// Every environment variable cairn reads, with what it sets; cairn(1) lists them.
pub(crate) const ENVIRONMENT: &[(&str, &str)] = &[
    (
        "CAIRN_REPOSITORY",
        "repository location when --repo is not given",
    ),
    (
        "CAIRN_PASSWORD_FILE",
        "file whose first line is the passphrase, when neither --password-file nor --password-command is given (the daemon reads it when its configuration names no passphrase)",
    ),
    (
        "CAIRN_PASSWORD_COMMAND",
        "command whose output's first line is the passphrase (split into words as a shell would, run without one), when neither --password-file nor --password-command is given and CAIRN_PASSWORD_FILE is unset (the daemon runs it when its configuration names no passphrase)",
    ),
    (
        "CAIRN_PASSWORD",
        "the passphrase itself, when none of the above is set",
    ),
    (
        "CAIRN_CACHE_DIR",
        "metadata cache of the command line (default $XDG_CACHE_HOME/cairn, else ~/.cache/cairn)",
    ),
    (
        "CAIRN_LOG",
        "log filter in tracing-subscriber EnvFilter syntax (e.g. info, or cairn=debug), in place of -v",
    ),
    ("RUST_LOG", "the same, read when CAIRN_LOG is unset"),
    (
        "XDG_CACHE_HOME, HOME",
        "where the cache goes when CAIRN_CACHE_DIR is unset",
    ),
    (
        "XDG_DATA_HOME",
        "where daemon --watch keeps its repository, configuration and passphrase (default ~/.local/share/cairn, or /var/lib/cairn as root)",
    ),
    (
        "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN",
        "S3 credentials; without them the AWS credential chain is asked (profile, SSO, web identity)",
    ),
    (
        "AWS_PROFILE, AWS_CONFIG_FILE, AWS_SHARED_CREDENTIALS_FILE",
        "the AWS shared-config profile and its files (default ~/.aws/config and ~/.aws/credentials); -o s3.profile overrides AWS_PROFILE",
    ),
    (
        "AWS_REGION, AWS_DEFAULT_REGION",
        "bucket region when -o s3.region is not given (else the profile, else us-east-1)",
    ),
    (
        "AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL",
        "S3 endpoint of s3://BUCKET locations (without them: AWS)",
    ),
    (
        "CREDENTIALS_DIRECTORY",
        "set by systemd: where a password_credential of the configuration is read",
    ),
    (
        "NOTIFY_SOCKET, JOURNAL_STREAM",
        "set by systemd: the daemon reports readiness and status, and logs to the journal with priorities",
    ),
    (
        "USER, LOGNAME",
        "the user name recorded in snapshots and keys",
    ),
];

/// The ENVIRONMENT and EXIT STATUS sections of cairn(1), as roff.
fn top_sections() -> String {
    use roff::{Roff, bold, roman};
    let mut r = Roff::new();
    r.control("SH", ["ENVIRONMENT"]);
    for (names, what) in ENVIRONMENT {
        r.control("TP", [])
            .text([bold(*names)])
            .text([roman(*what)]);
    }
    r.control("SH", ["EXIT STATUS"]);
    for (code, what) in cairn::error::EXIT_CODES {
        r.control("TP", [])
            .text([bold(code.to_string())])
            .text([roman(*what)]);
    }
    r.to_roff()
}

fn write_one(cmd: &clap::Command, name: &str, dir: &Path) -> Result<()> {
    let page = clap_mangen::Man::new(cmd.clone().name(name.to_string()));
    let mut buf = Vec::new();
    page.render(&mut buf).context("rendering a man page")?;
    if name == "cairn" {
        buf = with_top_sections(&buf);
    }
    let file = dir.join(format!("{name}.1"));
    std::fs::write(&file, buf).with_context(|| format!("writing {}", file.display()))?;
    for sub in cmd.get_subcommands() {
        if sub.get_name() == "help" {
            continue;
        }
        write_one(sub, &format!("{name}-{}", sub.get_name()), dir)?;
    }
    Ok(())
}

/// cairn(1) with ENVIRONMENT and EXIT STATUS before its VERSION section (at the end if it
/// has none).
fn with_top_sections(page: &[u8]) -> Vec<u8> {
    let page = String::from_utf8_lossy(page);
    let extra = top_sections();
    let out = match page.find("\n.SH VERSION") {
        Some(at) => format!("{}\n{}{}", &page[..at], extra, &page[at + 1..]),
        None => format!("{page}{extra}"),
    };
    out.into_bytes()
}
