//! `cairn diff`, `cairn find` and `cairn stats`: looking into a repository's history.

use super::RepoArgs;
use super::commands::open;
use super::output::short_time;
use super::progress::bytes;
use anyhow::Result;
use cairn::backend::FileType;
use cairn::diff::{DiffEntry, diff};
use cairn::find::{Finder, patterns as compile_patterns};
use serde_json::json;
use std::io::Write;
use tokio::runtime::Runtime;

/// `cairn diff A B`.
pub fn cmd_diff(
    rt: &Runtime,
    args: &RepoArgs,
    first: &str,
    second: &str,
    metadata: bool,
    json: bool,
) -> Result<i32> {
    let repo = open(rt, args)?;
    let ((a, b), index) = rt.block_on(repo.snapshots_with_index(|ids| {
        futures_util::future::try_join(
            repo.find_snapshot_listed(first, ids.clone()),
            repo.find_snapshot_listed(second, ids),
        )
    }))?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
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
        metadata,
        &mut |e: &DiffEntry| {
            let r = if json {
                let mut v = serde_json::to_value(e).unwrap_or_default();
                v["message_type"] = "change".into();
                writeln!(out, "{v}")
            } else {
                writeln!(out, "{}    {}", e.change.mark(), e.path)
            };
            if let Err(err) = r {
                write_err.get_or_insert(err);
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

/// `cairn find PATTERN...`.
pub fn cmd_find(
    rt: &Runtime,
    args: &RepoArgs,
    patterns: &[String],
    only: &[String],
    host: Option<&str>,
    json: bool,
) -> Result<i32> {
    let pats = compile_patterns(patterns)?;
    let repo = open(rt, args)?;
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
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
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
                writeln!(out, "  {}", super::output::long_line(&f.path, &f.node))?;
            }
        }
    }
    if json {
        let v = json!({"message_type": "summary", "matches": total, "snapshots": in_snapshots, "searched": list.len()});
        writeln!(out, "{v}")?;
    } else if total == 0 {
        writeln!(out, "no entry matches in {} snapshot(s)", list.len())?;
    } else {
        writeln!(
            out,
            "{total} match(es) in {in_snapshots} of {} snapshot(s)",
            list.len()
        )?;
    }
    out.flush()?;
    Ok(if total == 0 { 1 } else { 0 })
}

/// `cairn stats`.
pub fn cmd_stats(rt: &Runtime, args: &RepoArgs, json: bool) -> Result<i32> {
    let repo = open(rt, args)?;
    let (snapshots, index) =
        rt.block_on(repo.snapshots_with_index(|ids| repo.snapshots_listed(ids)))?;
    let mut objects = Vec::new();
    for kind in [
        FileType::Config,
        FileType::Key,
        FileType::Pack,
        FileType::Index,
        FileType::Snapshot,
        FileType::Deletion,
    ] {
        objects.push((kind, rt.block_on(repo.backend().list(kind))?));
    }
    let (s, per) = cairn::stats::compute(&index, &objects, &snapshots);
    if json {
        let mut v = serde_json::to_value(&s)?;
        v["message_type"] = "summary".into();
        v["per_snapshot"] = serde_json::to_value(&per)?;
        println!("{v}");
        return Ok(0);
    }
    println!("repository {}", repo.backend().location());
    println!("  snapshots:            {}", s.snapshots);
    println!(
        "  stored:               {} in {} packs ({} in all objects)",
        bytes(s.pack_bytes),
        s.packs,
        bytes(s.stored_bytes)
    );
    println!(
        "  unique data:          {} in {} data and {} tree blobs",
        bytes(s.unique_bytes),
        s.data_blobs,
        s.tree_blobs
    );
    println!("  all snapshots' files: {}", bytes(s.restore_bytes));
    println!("  deduplication:        {:.2}x", s.dedup_ratio);
    println!("  compression:          {:.2}x", s.compression_ratio);
    println!("  space saving overall: {:.2}x", s.space_saving_ratio);
    if s.snapshots_without_summary > 0 {
        println!(
            "  ({} snapshot(s) carry no summary; their sizes are not counted)",
            s.snapshots_without_summary
        );
    }
    println!();
    println!(
        "{:<8}  {:<19}  {:>10}  {:>12}  {:>12}  {:>12}",
        "ID", "Time", "Files", "Size", "Added", "Added stored"
    );
    for p in &per {
        println!(
            "{:<8}  {:<19}  {:>10}  {:>12}  {:>12}  {:>12}",
            &p.id[..8],
            short_time(&p.time),
            p.files,
            bytes(p.bytes),
            bytes(p.added_bytes),
            bytes(p.added_stored_bytes)
        );
    }
    Ok(0)
}
