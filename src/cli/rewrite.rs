//! `cairn rewrite`: new snapshots without the entries the patterns match, as restic's
//! `rewrite` makes them ([`cairn::rewrite`]); with `--forget` the originals are removed,
//! and a `prune` then frees what only the removed entries used.

use super::common::{RepoArgs, open};
use super::forget::remove_snapshot;
use super::output;
use super::select::SnapshotFilter;
use super::stdout::outln;
use anyhow::{Result, bail};
use cairn::blob_writer::BlobWriter;
use cairn::exclude::{ExcludeRules, Excludes, read_pattern_file};
use cairn::format::snapshot::Snapshot;
use cairn::rewrite::{Removed, without_matches};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use tokio::runtime::Runtime;

/// `cairn rewrite` arguments.
#[derive(Debug, clap::Args)]
pub struct RewriteArgs {
    /// Where the repository is and how to open it.
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Remove entries matching this pattern (repeatable; `backup --exclude`'s meaning).
    #[arg(short = 'e', long, value_name = "PATTERN")]
    pub exclude: Vec<String>,
    /// Like --exclude, ignoring upper and lower case (repeatable).
    #[arg(long, value_name = "PATTERN")]
    pub iexclude: Vec<String>,
    /// Read --exclude patterns from FILE (repeatable), as `backup --exclude-file` does.
    #[arg(long, value_name = "FILE")]
    pub exclude_file: Vec<PathBuf>,
    /// Like --exclude-file, the patterns ignoring case (repeatable).
    #[arg(long, value_name = "FILE")]
    pub iexclude_file: Vec<PathBuf>,
    /// Remove the original snapshots once their rewritten ones are stored.
    #[arg(long)]
    pub forget: bool,
    /// Only list what would be removed.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Which snapshots to rewrite, when no ids are given.
    #[command(flatten)]
    pub filter: SnapshotFilter,
    /// Snapshots to rewrite (ids, prefixes, `latest`); default: all that pass the filters.
    #[arg(value_name = "SNAPSHOT")]
    pub snapshots: Vec<String>,
}

/// `cairn rewrite`.
pub fn run(rt: &Runtime, args: &RepoArgs, a: &RewriteArgs, json: bool) -> Result<i32> {
    let mut rules = ExcludeRules {
        patterns: a.exclude.clone(),
        ipatterns: a.iexclude.clone(),
        ..ExcludeRules::default()
    };
    for f in &a.exclude_file {
        rules.patterns.extend(read_pattern_file(f)?);
    }
    for f in &a.iexclude_file {
        rules.ipatterns.extend(read_pattern_file(f)?);
    }
    if rules.is_empty() {
        bail!("nothing to remove: give --exclude, --iexclude, --exclude-file or --iexclude-file");
    }
    let excludes = Excludes::from_rules(&rules)?;
    let matcher = |path: &Path, name: &OsStr| excludes.matches(path, name);
    let repo = open(rt, args)?;
    let selected = a.filter.select(rt, &repo, &a.snapshots)?;
    let index = rt.block_on(repo.load_index())?;
    // What the repository holds: its index objects, not blobs a prune took out (a new
    // tree equal to one of those is stored again, as a backup would).
    let (held, _taken_out) = rt.block_on(repo.load_index_parts(None))?;
    let mut writer = BlobWriter::new(&repo, &held);
    let mut planned = Vec::new();
    for e in &selected {
        let w = (!a.dry_run).then_some(&mut writer);
        let r = rt.block_on(without_matches(&repo, &index, e.snapshot.tree, &matcher, w))?;
        report_removed(e.id.short(), &r.removed, json)?;
        if let Some(tree) = r.tree {
            planned.push((e, tree, r.removed.len()));
        }
    }
    if a.dry_run {
        if !json {
            outln!(
                "dry run: {} would be rewritten, nothing was changed",
                output::count(planned.len() as u64, "snapshot")
            )?;
        }
        return Ok(0);
    }
    // The new trees are durable, and indexed, before any snapshot names them.
    rt.block_on(writer.finish())?;
    let mut forgotten = 0u64;
    for (e, tree, _) in &planned {
        let snap = Snapshot {
            tree: *tree,
            original: Some(e.snapshot.original.unwrap_or(e.id)),
            // The counts described the backup run; the new tree is not what it stored.
            summary: None,
            ..e.snapshot.clone()
        };
        let id = rt.block_on(repo.save_snapshot(&snap))?;
        if a.forget && remove_snapshot(rt, &repo, e)? {
            forgotten += 1;
        }
        if json {
            outln!(
                "{}",
                serde_json::json!({
                    "message_type": "rewritten",
                    "old_snapshot_id": e.id.to_hex(),
                    "new_snapshot_id": id.to_hex(),
                    "forgotten": a.forget,
                })
            )?;
        } else {
            outln!("{} rewritten as {}", e.id.short(), id.short())?;
        }
    }
    if json {
        outln!(
            "{}",
            serde_json::json!({
                "message_type": "summary",
                "snapshots_rewritten": planned.len(),
                "snapshots_forgotten": forgotten,
                "snapshots_considered": selected.len(),
            })
        )?;
    } else {
        outln!(
            "{} rewritten of {} considered{}",
            output::count(planned.len() as u64, "snapshot"),
            selected.len(),
            if a.forget {
                format!(
                    "; {} removed: `cairn prune` frees the data only they used",
                    output::count(forgotten, "original")
                )
            } else {
                "; the originals stay (add --forget to remove them)".to_string()
            }
        )?;
    }
    Ok(0)
}

fn report_removed(short: String, removed: &[Removed], json: bool) -> Result<()> {
    for r in removed {
        if json {
            outln!(
                "{}",
                serde_json::json!({
                    "message_type": "removed",
                    "snapshot": short,
                    "path": r.path.to_string_lossy(),
                    "type": r.kind,
                    "size": r.size,
                })
            )?;
        } else {
            outln!("{short}: removing {}", r.path.display())?;
        }
    }
    Ok(())
}
