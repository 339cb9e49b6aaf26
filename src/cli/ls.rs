//! `cairn ls`: the entries of one snapshot, or of one directory in it, streamed to
//! stdout as they are read (paths, long lines, or JSON lines).

use super::common::{self, RepoArgs};
use super::output;
use super::stdout::Stdout;
use anyhow::Result;
use cairn::backup::clean_absolute;
use std::io::Write;
use std::ops::ControlFlow;
use std::path::PathBuf;
use tokio::runtime::Runtime;

/// `cairn ls` arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct LsArgs {
    /// Where the repository is and how to open it.
    #[command(flatten)]
    pub(crate) repo: super::RepoArgs,
    /// Snapshot id, unique prefix, or `latest`.
    snapshot: String,
    /// Only this directory (and what it contains).
    path: Option<PathBuf>,
    /// Long listing with mode, owner, size and time.
    #[arg(short, long)]
    long: bool,
}

/// `cairn ls`: a write error (a closed pipe) stops the walk at once and ends the command
/// with that error, which for a closed pipe is a quiet exit 0 (`cli::stdout`).
pub(crate) fn run(rt: &Runtime, args: &RepoArgs, a: &LsArgs, json: bool) -> Result<i32> {
    let repo = common::open(rt, args)?;
    let (entry, index) =
        rt.block_on(repo.snapshots_with_index(|ids| repo.find_snapshot_listed(&a.snapshot, ids)))?;
    let under = match &a.path {
        Some(p) => clean_absolute(p)?,
        None => PathBuf::from("/"),
    };
    let mut out = Stdout::new();
    let mut write_err = None;
    cairn::ls::walk(
        &repo,
        rt.handle(),
        &index,
        &entry.snapshot.tree,
        &under,
        &mut |p, n| {
            let line = if json {
                output::node_json(p, n).to_string()
            } else if a.long {
                output::long_line(p, n)
            } else {
                p.display().to_string()
            };
            match writeln!(out, "{line}") {
                Ok(()) => ControlFlow::Continue(()),
                Err(e) => {
                    write_err = Some(e);
                    ControlFlow::Break(())
                }
            }
        },
    )?;
    if let Some(e) = write_err {
        return Err(e.into());
    }
    out.flush()?;
    Ok(0)
}
