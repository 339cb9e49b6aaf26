//! `cairn completions` and `cairn man`: shell completion scripts and man pages generated
//! from the clap definitions, so they cannot drift from the program.

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

fn write_one(cmd: &clap::Command, name: &str, dir: &Path) -> Result<()> {
    let page = clap_mangen::Man::new(cmd.clone().name(name.to_string()));
    let mut buf = Vec::new();
    page.render(&mut buf).context("rendering a man page")?;
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
