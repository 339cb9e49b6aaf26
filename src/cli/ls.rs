//! `cairn ls`: the entries of one snapshot, or of one directory in it, streamed to
//! stdout as they are read (paths, long lines, or JSON lines).

use super::common::{self, RepoArgs};
use super::output;
use anyhow::Result;
use cairn::backup::clean_absolute;
use std::io::Write;
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

/// `cairn ls`: a write error (a closed pipe) ends the command with that error once the
/// walk is done, rather than part-way through the library's tree reading.
pub(crate) fn run(rt: &Runtime, args: &RepoArgs, a: &LsArgs, json: bool) -> Result<i32> {
    let repo = common::open(rt, args)?;
    let (entry, index) =
        rt.block_on(repo.snapshots_with_index(|ids| repo.find_snapshot_listed(&a.snapshot, ids)))?;
    let under = match &a.path {
        Some(p) => clean_absolute(p)?,
        None => PathBuf::from("/"),
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
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
            if let Err(e) = writeln!(out, "{line}") {
                write_err.get_or_insert(e);
            }
        },
    )?;
    out.flush()?;
    if let Some(e) = write_err {
        return Err(e.into());
    }
    Ok(0)
}
