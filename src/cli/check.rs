//! `cairn check`: verify the repository's structure and, with `--read-data`, its stored
//! blobs; with `--repair`, write good copies of damaged or missing blobs back from
//! copies on the same keys and check again.

use super::common::{self, Copies, RepoArgs};
use super::progress::{Output, Reporter};
use super::stdout::outln;
use anyhow::{Context, Result};
use cairn::check::{ReadData, check};
use cairn::daemon::config;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::runtime::Runtime;

/// `cairn check` arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct CheckArgs {
    /// Where the repository is and how to open it.
    #[command(flatten)]
    pub(crate) repo: super::RepoArgs,
    /// Read back and verify every blob.
    #[arg(long, conflicts_with = "read_data_subset")]
    read_data: bool,
    /// Read back a random share of the packs, e.g. 10%.
    #[arg(long, value_name = "N%")]
    read_data_subset: Option<String>,
    /// A copy on the same keys, to repair from (repeatable).
    #[arg(long = "fallback-repo")]
    fallback_repos: Vec<String>,
    /// Write good copies of damaged or missing blobs back from --fallback-repo (or
    /// from the other destinations, with --destination).
    #[arg(long)]
    repair: bool,
    /// Check this destination of the daemon's configuration (instead of --repo);
    /// the other destinations on the same keys are the copies to repair from.
    #[arg(long, conflicts_with = "fallback_repos")]
    destination: Option<String>,
    /// Daemon configuration for --destination.
    #[arg(long, default_value = config::DEFAULT_CONFIG)]
    config: PathBuf,
}

/// `cairn check`: exits 1 unless the repository (after a repair, if asked for) is
/// healthy, so a scheduled check can alert.
pub(crate) fn run(rt: &Runtime, args: &RepoArgs, a: &CheckArgs, out: Output) -> Result<i32> {
    let json = out.json();
    let repair = a.repair;
    let mode = match (a.read_data, a.read_data_subset.as_deref()) {
        (true, _) => ReadData::All,
        (false, Some(s)) => {
            let pct = s
                .trim()
                .strip_suffix('%')
                .and_then(|n| n.trim().parse::<f64>().ok())
                .filter(|p| *p > 0.0 && *p <= 100.0)
                .with_context(|| {
                    format!("--read-data-subset {s:?}: write a percentage like 10%")
                })?;
            ReadData::Subset(pct / 100.0)
        }
        (false, None) => ReadData::None,
    };
    let sources = Copies {
        fallback_repos: &a.fallback_repos,
        destination: a.destination.as_deref(),
        config: &a.config,
    };
    if repair && sources.destination.is_none() && sources.fallback_repos.is_empty() {
        anyhow::bail!(
            "--repair needs copies to repair from: give --fallback-repo REPO, or --destination NAME to use the daemon's other destinations"
        );
    }
    let (repo, copies) = common::open_with_copies(rt, args, &sources)?;
    let location = repo.backend().location();
    if out.chatty() {
        eprintln!("checking {location}...");
    }
    let progress = Arc::new(cairn::progress::Progress::default());
    let reporter = Reporter::start("check", "packs", progress.clone(), out);
    let first = cairn::check::check_with(&repo, rt.handle(), mode, &progress);
    reporter.finish();
    let mut report = first?;
    let mut repaired = None;
    if repair && !report.is_healthy() {
        let refs: Vec<cairn::heal::Copy<'_>> = copies
            .iter()
            .map(|(repo, index)| cairn::heal::Copy { repo, index })
            .collect();
        let r = cairn::check::repair(&repo, rt.handle(), &report, &refs)?;
        if !json {
            eprintln!(
                "repair: wrote {} blob(s) back from the copies, dropped {} damaged location(s) from the index{}",
                r.restored_blobs,
                r.dropped_locations,
                if r.unrepairable.is_empty() {
                    String::new()
                } else {
                    format!("; {} blob(s) are intact in no copy", r.unrepairable.len())
                }
            );
            eprintln!("checking again...");
        }
        repaired = Some(r);
        report = check(&repo, rt.handle(), mode)?;
    }
    if json {
        let mut v = serde_json::to_value(&report)?;
        v["message_type"] = "summary".into();
        v["healthy"] = report.is_healthy().into();
        if let Some(r) = &repaired {
            v["repair"] = serde_json::to_value(r)?;
        }
        outln!("{v}")?;
    } else {
        outln!(
            "{} snapshot(s), {} pack(s), {} blob(s); read back {} pack(s), {} bytes",
            report.snapshots,
            report.packs,
            report.blobs,
            report.packs_read,
            report.bytes_read
        )?;
        if report.is_healthy() {
            outln!("no problems found")?;
        } else {
            outln!("{} problem(s):", report.problems.len())?;
            for p in &report.problems {
                outln!("  {}: {}", p.object, p.message)?;
            }
            if !report.affected.is_empty() {
                outln!("files and directories that cannot be restored intact:")?;
                for a in report.affected.iter().take(100) {
                    outln!(
                        "  snapshot {}: {} (blob {})",
                        a.snapshot,
                        a.path,
                        &a.blob[..12]
                    )?;
                }
                if report.affected.len() > 100 {
                    outln!("  ... and {} more", report.affected.len() - 100)?;
                }
            }
            if !repair {
                outln!(
                    "if another destination holds a copy on the same keys: cairn check --repair --fallback-repo REPO"
                )?;
            }
        }
    }
    Ok(if report.is_healthy() { 0 } else { 1 })
}
