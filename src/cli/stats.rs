//! `cairn stats`: the repository's size, deduplication and compression ratios, and what
//! each snapshot added, from the index, the object listings and the snapshots'
//! summaries.

use super::common::{self, RepoArgs};
use super::output::{count, short_time};
use super::progress::bytes;
use anyhow::Result;
use cairn::backend::FileType;
use tokio::runtime::Runtime;

/// `cairn stats` (it takes no arguments of its own).
pub(crate) fn run(rt: &Runtime, args: &RepoArgs, json: bool) -> Result<i32> {
    let repo = common::open(rt, args)?;
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
        "  stored:               {} in {} ({} in all objects)",
        bytes(s.pack_bytes),
        count(s.packs, "pack"),
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
            "  ({} no summary; their sizes are not counted)",
            match s.snapshots_without_summary {
                1 => "1 snapshot carries".to_string(),
                n => format!("{n} snapshots carry"),
            }
        );
    }
    println!();
    println!(
        "{:<8}  {:<23}  {:>10}  {:>12}  {:>12}  {:>12}",
        "ID", "Time", "Files", "Size", "Added", "Added stored"
    );
    for p in &per {
        println!(
            "{:<8}  {:<23}  {:>10}  {:>12}  {:>12}  {:>12}",
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
