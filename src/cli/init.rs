//! `cairn init`: create a new repository, on fresh keys or on those of an existing one
//! (`--from-repo`), so that two copies store identical data identically and can heal
//! each other.

use super::common::{self, RepoArgs};
use super::password;
use super::progress::Output;
use super::stdout::outln;
use anyhow::{Context, Result};
use cairn::compression::CompressionMode;
use cairn::format::config::DEFAULT_PACK_SIZE;
use cairn::repo::{Repository, init};
use std::path::PathBuf;
use tokio::runtime::Runtime;

/// `cairn init` arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct InitArgs {
    /// Where the repository is and how to open it.
    #[command(flatten)]
    pub(crate) repo: super::RepoArgs,
    /// Target pack size in MiB (default 16).
    #[arg(long, conflicts_with = "from_repo")]
    pack_size: Option<u32>,
    /// Build on this existing repository's keys and chunker settings, so the two
    /// store identical data identically and can heal each other (a second copy).
    #[arg(long)]
    from_repo: Option<String>,
    /// Passphrase file of --from-repo (default: the new repository's passphrase).
    #[arg(long, requires = "from_repo", conflicts_with = "from_password_command")]
    from_password_file: Option<PathBuf>,
    /// Command printing the passphrase of --from-repo on its first line, like
    /// --password-command (default: the new repository's passphrase).
    #[arg(long, value_name = "COMMAND", requires = "from_repo")]
    from_password_command: Option<String>,
    /// Record how backups compress by default when they are not told (--compression,
    /// CAIRN_COMPRESSION): off, fastest, better, max or a zstd level from 1 to 22. The
    /// repository is then format version 3, which cairn before this option refuses;
    /// auto records nothing. Change it later with `cairn compression`.
    #[arg(long, value_name = "MODE", value_parser = super::backup_args::parse_compression)]
    compression: Option<CompressionMode>,
}

/// `cairn init`: the new repository's passphrase comes from the usual sources when one
/// is set, else it is asked twice, since a typo would lock the data away for good.
pub(crate) fn run(rt: &Runtime, args: &RepoArgs, a: &InitArgs, out: Output) -> Result<i32> {
    let backend = common::backend(rt, args)?;
    let has_source = password::has_source(
        args.password_file.as_deref(),
        args.password_command.as_deref(),
    );
    let pass = if has_source {
        args.passphrase()?
    } else {
        password::resolve_new(None)?
    };
    let mut opts = common::init_options_here();
    opts.pack_size = a
        .pack_size
        .map(|m| m.saturating_mul(1024 * 1024))
        .unwrap_or(DEFAULT_PACK_SIZE);
    let sibling = match a.from_repo.as_deref() {
        Some(spec) => {
            let b = rt.block_on(cairn::backend::open(spec, &args.backend_options()?))?;
            let from_pass = password::resolve_second(
                a.from_password_file.as_deref(),
                a.from_password_command.as_deref(),
            )?
            .unwrap_or_else(|| pass.clone());
            let sibling = rt
                .block_on(Repository::open(b, &from_pass))
                .with_context(|| format!("opening --from-repo {spec}"))?;
            opts = opts.sharing_keys_with(&sibling);
            Some(sibling)
        }
        None => None,
    };
    opts.compression = a.compression.and_then(CompressionMode::recorded);
    let repo = rt.block_on(init(backend, &pass, &opts))?;
    if out.json() {
        let v = serde_json::json!({
            "message_type": "initialized",
            "id": repo.config().id.to_hex(),
            "repository": repo.backend().location(),
            "version": repo.config().version,
            "compression_default": repo.compression_default(),
        });
        outln!("{v}")?;
        return Ok(0);
    }
    outln!(
        "created cairn repository {} at {}",
        repo.config().id.short(),
        repo.backend().location()
    )?;
    if let Some(c) = repo.compression_default() {
        outln!(
            "backups compress with {c} unless told otherwise (format version {}: a cairn that reads only versions 1 and 2 refuses it)",
            repo.config().version
        )?;
    }
    if let Some(s) = sibling {
        outln!(
            "it shares keys and chunking with {}: the two can heal each other",
            s.backend().location()
        )?;
    }
    eprintln!("Keep the passphrase safe: without it the data in this repository cannot be read.");
    Ok(0)
}
