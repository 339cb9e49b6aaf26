//! `cairn copy`: snapshots from another repository (`--from-repo`) into this one, as
//! restic's `copy` does; on the same keys byte for byte, on other keys re-encrypted
//! ([`cairn::copy`]).

use super::common::{RepoArgs, open};
use super::output;
use super::password;
use super::progress::bytes;
use super::select::SnapshotFilter;
use super::stdout::outln;
use anyhow::{Context, Result};
use cairn::repo::Repository;
use std::path::PathBuf;
use tokio::runtime::Runtime;

/// `cairn copy` arguments.
#[derive(Debug, clap::Args)]
pub struct CopyArgs {
    /// The repository copied into, and how to open it.
    #[command(flatten)]
    pub repo: RepoArgs,
    /// The repository to copy snapshots from (else CAIRN_FROM_REPOSITORY); opened with
    /// the same -o options.
    #[arg(long, value_name = "REPO", env = "CAIRN_FROM_REPOSITORY")]
    pub from_repo: String,
    /// Passphrase file of --from-repo (else CAIRN_FROM_PASSWORD_FILE; without it or a
    /// command, the passphrase of the repository copied into).
    #[arg(long, value_name = "FILE", env = "CAIRN_FROM_PASSWORD_FILE")]
    pub from_password_file: Option<PathBuf>,
    /// Command printing the passphrase of --from-repo on its first line, like
    /// --password-command (else CAIRN_FROM_PASSWORD_COMMAND).
    #[arg(long, value_name = "COMMAND", env = "CAIRN_FROM_PASSWORD_COMMAND")]
    pub from_password_command: Option<String>,
    /// Which snapshots of --from-repo to copy, when no ids are given.
    #[command(flatten)]
    pub filter: SnapshotFilter,
    /// Snapshots to copy (ids, prefixes, `latest`); default: all that pass the filters.
    #[arg(value_name = "SNAPSHOT")]
    pub snapshots: Vec<String>,
}

/// `cairn copy`.
pub fn run(rt: &Runtime, args: &RepoArgs, a: &CopyArgs, json: bool) -> Result<i32> {
    let dst = open(rt, args)?;
    let backend = rt
        .block_on(cairn::backend::open(&a.from_repo, &args.backend_options()?))
        .with_context(|| format!("--from-repo {}", a.from_repo))?;
    let pass = match password::resolve_second(
        a.from_password_file.as_deref(),
        a.from_password_command.as_deref(),
    )? {
        Some(p) => p,
        None => args.passphrase()?,
    };
    let src = rt
        .block_on(Repository::open(backend, &pass))
        .with_context(|| format!("opening --from-repo {}", a.from_repo))?;
    super::opened(&src);
    if src.config().id == dst.config().id {
        anyhow::bail!(
            "--from-repo {} is the repository copied into: give another one",
            a.from_repo
        );
    }
    let wanted = a.filter.select(rt, &src, &a.snapshots)?;
    let report = rt.block_on(cairn::copy::copy(&src, &dst, wanted.clone()))?;
    let describe = |id: &cairn::hash::SnapshotId| {
        wanted
            .iter()
            .find(|e| e.id == *id)
            .map(|e| {
                format!(
                    "{}  {}  {}",
                    output::short_time(&e.snapshot.time),
                    e.snapshot.hostname,
                    output::paths_shown(&e.snapshot)
                )
            })
            .unwrap_or_default()
    };
    if json {
        let v = serde_json::json!({
            "message_type": "summary",
            "same_keys": report.same_keys,
            "snapshots_copied": report.copied.iter().map(|(from, to)| serde_json::json!({
                "from": from.to_hex(), "to": to.to_hex(),
            })).collect::<Vec<_>>(),
            "snapshots_already_there": report.already_there.iter().map(|i| i.to_hex()).collect::<Vec<_>>(),
            "packs_copied": report.packs_copied,
            "packs_found": report.packs_found,
            "index_objects_copied": report.index_objects_copied,
            "blobs_stored": report.blobs_stored,
            "bytes_sent": report.bytes_sent,
        });
        outln!("{v}")?;
        return Ok(0);
    }
    for id in &report.already_there {
        outln!("already there: {}  {}", id.short(), describe(id))?;
    }
    for (from, to) in &report.copied {
        if from == to {
            outln!("copied {}  {}", from.short(), describe(from))?;
        } else {
            outln!(
                "copied {} as {}  {}",
                from.short(),
                to.short(),
                describe(from)
            )?;
        }
    }
    outln!(
        "{} copied, {} already there ({}); {} sent: {} copied whole, {} new, {}",
        output::count(report.copied.len() as u64, "snapshot"),
        report.already_there.len(),
        if report.same_keys {
            "same keys: objects copied as stored"
        } else {
            "other keys: re-encrypted"
        },
        bytes(report.bytes_sent),
        output::count(report.packs_copied, "pack"),
        output::count(report.blobs_stored, "blob"),
        output::count(report.index_objects_copied, "index object"),
    )?;
    Ok(0)
}
