//! `cairn find`: which snapshots hold entries matching a glob, by name (`*.jpg`) or by
//! path when the pattern has a `/` (`/home/*/notes.txt`).

use super::common::{self, RepoArgs};
use super::output::{self, count, short_time};
use super::stdout::Stdout;
use anyhow::Result;
use cairn::find::{Finder, patterns as compile_patterns};
use serde_json::json;
use std::io::Write;
use tokio::runtime::Runtime;

/// `cairn find` arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct FindArgs {
    /// Where the repository is and how to open it.
    #[command(flatten)]
    pub(crate) repo: super::RepoArgs,
    /// Glob patterns (any may match).
    #[arg(required = true)]
    patterns: Vec<String>,
    /// Only these snapshots (repeatable; default: all).
    #[arg(short, long = "snapshot")]
    snapshots: Vec<String>,
    /// Only snapshots of this host.
    #[arg(long)]
    host: Option<String>,
}

/// `cairn find PATTERN...`: exits 1 when nothing matches, as grep does, so scripts can
/// test for presence.
pub(crate) fn run(rt: &Runtime, args: &RepoArgs, f: &FindArgs, json: bool) -> Result<i32> {
    let (only, host) = (&f.snapshots, f.host.as_deref());
    let pats = compile_patterns(&f.patterns)?;
    let repo = common::open(rt, args)?;
    let repo = &repo;
    let (mut list, index) = rt.block_on(repo.snapshots_with_index(|ids| async move {
        if only.is_empty() {
            repo.snapshots_listed(ids).await
        } else {
            let mut v = Vec::new();
            for s in only {
                v.push(repo.find_snapshot_listed(s, ids.clone()).await?);
            }
            Ok(v)
        }
    }))?;
    if let Some(h) = host {
        list.retain(|e| e.snapshot.hostname == h);
    }
    let mut finder = Finder::new(repo, rt.handle(), &index, &pats);
    // A write error (a closed pipe) ends the search before the next snapshot.
    let mut out = Stdout::new();
    let mut total = 0usize;
    let mut in_snapshots = 0usize;
    for e in &list {
        let found = finder.search(&e.snapshot.tree)?;
        if found.is_empty() {
            continue;
        }
        total += found.len();
        in_snapshots += 1;
        if json {
            let matches: Vec<_> = found
                .iter()
                .map(|f| {
                    json!({
                        "path": f.path.to_string_lossy(),
                        "type": format!("{:?}", f.node.kind).to_lowercase(),
                        "size": f.node.size,
                        "mtime": f.node.mtime,
                    })
                })
                .collect();
            let v = json!({
                "message_type": "match",
                "snapshot": e.id.to_hex(),
                "time": e.snapshot.time,
                "hostname": e.snapshot.hostname,
                "matches": matches,
            });
            writeln!(out, "{v}")?;
        } else {
            writeln!(
                out,
                "snapshot {} of {} ({}):",
                e.id.short(),
                short_time(&e.snapshot.time),
                e.snapshot.hostname
            )?;
            for f in &found {
                writeln!(out, "  {}", output::long_line(&f.path, &f.node))?;
            }
        }
    }
    if json {
        let v = json!({"message_type": "summary", "matches": total, "snapshots": in_snapshots, "searched": list.len()});
        writeln!(out, "{v}")?;
    } else if total == 0 {
        let searched = count(list.len() as u64, "snapshot");
        writeln!(out, "no entry matches in {searched}")?;
    } else {
        let searched = count(list.len() as u64, "snapshot");
        writeln!(
            out,
            "{} in {in_snapshots} of {searched}",
            count(total as u64, "match")
        )?;
    }
    out.flush()?;
    Ok(if total == 0 { 1 } else { 0 })
}
