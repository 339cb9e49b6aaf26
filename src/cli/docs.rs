//! Man pages generated from the clap definitions, so they cannot drift from the program.

use anyhow::{Context, Result};
use std::path::Path;

/// Write `cairn.1` and `cairn-SUBCOMMAND.1` (nested: `cairn-key-add.1`) into `dir`.
pub fn write_man_pages(cmd: clap::Command, dir: &Path) -> Result<i32> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating the man page directory {}", dir.display()))?;
    let cmd = cmd.version(env!("CARGO_PKG_VERSION"));
    write_one(&cmd, "cairn", dir)?;
    println!("wrote man pages to {}", dir.display());
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
