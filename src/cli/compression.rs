//! `cairn compression [MODE]`: show the repository's compression default, or set it
//! (`auto` removes it). Recording one makes the repository format version 3; removing
//! it makes it version 2 again, which older cairn reads.

use super::common::{self, RepoArgs};
use super::stdout::outln;
use anyhow::Result;
use cairn::compression::{Compression, CompressionMode};
use cairn::repo::Repository;
use tokio::runtime::Runtime;

/// `cairn compression` arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct CompressionArgs {
    /// Where the repository is and how to open it.
    #[command(flatten)]
    pub(crate) repo: super::RepoArgs,
    /// The new default: off, fastest, better, max, or a zstd level from 1 to 22; auto
    /// removes the default (backups then use auto). Without it, the default is shown.
    #[arg(value_name = "MODE", value_parser = super::backup_args::parse_compression)]
    mode: Option<CompressionMode>,
}

/// `cairn compression [MODE]`.
pub(crate) fn run(rt: &Runtime, args: &RepoArgs, a: &CompressionArgs, json: bool) -> Result<i32> {
    let repo = common::open(rt, args)?;
    let (repo, changed) = match a.mode {
        None => (repo, false),
        Some(mode) => {
            let was = repo.compression_default();
            let now = rt.block_on(repo.set_compression_default(mode.recorded()))?;
            let changed = now.compression_default() != was;
            (now, changed)
        }
    };
    if json {
        let v = serde_json::json!({
            "message_type": "compression",
            "repository": repo.backend().location(),
            "compression_default": repo.compression_default(),
            "version": repo.config().version,
            "changed": changed,
        });
        outln!("{v}")?;
        return Ok(0);
    }
    outln!("{}", describe(&repo, a.mode.is_some(), changed))?;
    Ok(0)
}

/// What the repository's default is now, and whether this run changed it.
fn describe(repo: &Repository, asked: bool, changed: bool) -> String {
    let location = repo.backend().location();
    let version = repo.config().version;
    let state = match repo.compression_default() {
        Some(c) => format!(
            "backups to {location} compress with {c} unless --compression or CAIRN_COMPRESSION says otherwise (format version {version})"
        ),
        None => format!(
            "{location} records no compression default: backups use {} unless told otherwise (format version {version})",
            Compression::AUTO
        ),
    };
    match (asked, changed) {
        (true, true) => format!("changed: {state}"),
        (true, false) => format!("unchanged: {state}"),
        _ => state,
    }
}
