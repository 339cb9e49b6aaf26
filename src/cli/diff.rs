//! `cairn diff`: what changed between two snapshots, path by path: added (+), removed
//! (-), modified (M), type changed (T) and, with `--metadata`, metadata-only (U).

use super::common::{self, RepoArgs};
use super::progress::bytes;
use super::stdout::Stdout;
use anyhow::Result;
use cairn::diff::{DiffEntry, diff};
use std::io::Write;
use std::ops::ControlFlow;
use tokio::runtime::Runtime;

/// `cairn diff` arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct DiffArgs {
    /// Where the repository is and how to open it.
    #[command(flatten)]
    pub(crate) repo: super::RepoArgs,
    /// The older snapshot (id, prefix or `latest`).
    first: String,
    /// The newer snapshot.
    second: String,
    /// Also list entries whose only change is metadata (mode, owner, times).
    #[arg(long)]
    metadata: bool,
}

/// `cairn diff A B`: changes are written as they are found, the counts last. A write
/// error (a closed pipe) stops the comparison and ends the command with it.
pub(crate) fn run(rt: &Runtime, args: &RepoArgs, d: &DiffArgs, json: bool) -> Result<i32> {
    let (first, second) = (d.first.as_str(), d.second.as_str());
    let repo = common::open(rt, args)?;
    let ((a, b), index) = rt.block_on(repo.snapshots_with_index(|ids| {
        futures_util::future::try_join(
            repo.find_snapshot_listed(first, ids.clone()),
            repo.find_snapshot_listed(second, ids),
        )
    }))?;
    let mut out = Stdout::new();
    if !json {
        writeln!(
            out,
            "comparing snapshot {} to {}:",
            a.id.short(),
            b.id.short()
        )?;
    }
    let mut write_err = None;
    let stats = diff(
        &repo,
        rt.handle(),
        &index,
        &a.snapshot.tree,
        &b.snapshot.tree,
        d.metadata,
        &mut |e: &DiffEntry| {
            let r = if json {
                let mut v = serde_json::to_value(e).unwrap_or_default();
                v["message_type"] = "change".into();
                writeln!(out, "{v}")
            } else {
                writeln!(out, "{}    {}", e.change.mark(), e.path)
            };
            match r {
                Ok(()) => ControlFlow::Continue(()),
                Err(err) => {
                    write_err = Some(err);
                    ControlFlow::Break(())
                }
            }
        },
    )?;
    if let Some(e) = write_err {
        return Err(e.into());
    }
    if json {
        let mut v = serde_json::to_value(&stats)?;
        v["message_type"] = "summary".into();
        v["first"] = a.id.to_hex().into();
        v["second"] = b.id.to_hex().into();
        writeln!(out, "{v}")?;
    } else {
        writeln!(
            out,
            "\n{} added ({}), {} removed ({}), {} modified, {} with only metadata changes",
            stats.added,
            bytes(stats.added_bytes),
            stats.removed,
            bytes(stats.removed_bytes),
            stats.modified,
            stats.metadata_only
        )?;
    }
    out.flush()?;
    Ok(0)
}
