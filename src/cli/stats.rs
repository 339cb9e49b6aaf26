//! `cairn stats`: the repository's size, deduplication and compression ratios, and for
//! each snapshot what it added and how well the data it references is compressed, from
//! the index, the object listings, the snapshots' summaries and their trees.

use super::common::{self, RepoArgs};
use super::output::{count, short_time};
use super::progress::bytes;
use super::stdout::outln;
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
    let referenced = cairn::referenced::referenced(&repo, rt.handle(), &index, &snapshots)?;
    let (s, per) = cairn::stats::compute(&index, &objects, &snapshots, &referenced);
    if json {
        let mut v = serde_json::to_value(&s)?;
        v["message_type"] = "summary".into();
        v["compression_default"] = serde_json::to_value(repo.compression_default())?;
        v["per_snapshot"] = serde_json::to_value(&per)?;
        outln!("{v}")?;
        return Ok(0);
    }
    outln!("repository {}", repo.backend().location())?;
    outln!("  snapshots:            {}", s.snapshots)?;
    outln!(
        "  stored:               {} in {} ({} in all objects)",
        bytes(s.pack_bytes),
        count(s.packs, "pack"),
        bytes(s.stored_bytes)
    )?;
    outln!(
        "  unique data:          {} in {} data and {} tree blobs",
        bytes(s.unique_bytes),
        s.data_blobs,
        s.tree_blobs
    )?;
    outln!("  all snapshots' files: {}", bytes(s.restore_bytes))?;
    outln!("  deduplication:        {:.2}x", s.dedup_ratio)?;
    outln!("  compression:          {:.2}x", s.compression_ratio)?;
    outln!(
        "  compression default:  {}",
        match repo.compression_default() {
            Some(c) => c.to_string(),
            None => "none recorded (backups use auto unless told)".into(),
        }
    )?;
    outln!("  space saving overall: {:.2}x", s.space_saving_ratio)?;
    if s.snapshots_without_summary > 0 {
        outln!(
            "  ({} no summary; their sizes are not counted)",
            match s.snapshots_without_summary {
                1 => "1 snapshot carries".to_string(),
                n => format!("{n} snapshots carry"),
            }
        )?;
    }
    outln!()?;
    outln!(
        "{:<8}  {:<23}  {:>10}  {:>12}  {:>12}  {:>12}  {:>12}",
        "ID",
        "Time",
        "Files",
        "Size",
        "Added",
        "Added stored",
        "Compression"
    )?;
    for p in &per {
        outln!(
            "{:<8}  {:<23}  {:>10}  {:>12}  {:>12}  {:>12}  {:>12}",
            &p.id[..8],
            short_time(&p.time),
            p.files,
            bytes(p.bytes),
            bytes(p.added_bytes),
            bytes(p.added_stored_bytes),
            format!("ratio {:.2}x", p.compression_ratio)
        )?;
    }
    Ok(0)
}
