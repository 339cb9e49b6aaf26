//! `cairn prune`: remove data no snapshot needs (two-phase, see `cairn::prune`).

use super::common::{RepoArgs, open};
use super::stdout::outln;
use anyhow::{Context, Result};
use cairn::prune::{PruneOptions, PruneReport, prune};
use tokio::runtime::Runtime;

/// `cairn prune` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct PruneArgs {
    /// Where the repository is and how to open it.
    #[command(flatten)]
    pub repo: super::RepoArgs,
    /// Repack packs with at least this share of unused bytes, e.g. 20%.
    #[arg(long, default_value = "20%", value_name = "N%")]
    pub max_unused: String,
    /// Repack at most this many bytes of packs in one run (e.g. 10GiB).
    #[arg(long, value_name = "SIZE")]
    pub max_repack_size: Option<String>,
    /// Time between condemning unused packs and deleting them; must be longer than any
    /// backup into this repository takes (a backup that started earlier may still come
    /// to use them).
    #[arg(long, default_value = "24h", value_name = "DURATION")]
    pub grace: String,
    /// Only say what would be done.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Set from the global `--json`.
    #[arg(skip)]
    pub json: bool,
    /// Set from the global `--quiet`.
    #[arg(skip)]
    pub quiet: bool,
}

impl PruneArgs {
    fn options(&self) -> Result<PruneOptions> {
        let share = self
            .max_unused
            .trim()
            .strip_suffix('%')
            .and_then(|n| n.trim().parse::<f64>().ok())
            .filter(|p| (0.0..=100.0).contains(p))
            .with_context(|| {
                format!(
                    "--max-unused {:?}: write a percentage like 20%",
                    self.max_unused
                )
            })?;
        let grace = humantime::parse_duration(&self.grace)
            .with_context(|| format!("--grace {:?}: write a duration like 24h", self.grace))?;
        let max_repack = match &self.max_repack_size {
            Some(s) => Some(
                cairn::backend::options::parse_size("--max-repack-size", s)
                    .map_err(anyhow::Error::msg)?,
            ),
            None => None,
        };
        if grace < std::time::Duration::from_secs(3600) && !self.dry_run {
            eprintln!(
                "warning: a grace period of {} is only safe while no backup into this repository is running",
                humantime::format_duration(grace)
            );
        }
        Ok(PruneOptions {
            repack_threshold: share / 100.0,
            max_repack_bytes: max_repack,
            grace,
            dry_run: self.dry_run,
            progress: Default::default(),
        })
    }
}

/// `cairn prune`.
pub fn run(rt: &Runtime, args: &RepoArgs, p: &PruneArgs) -> Result<i32> {
    let opts = p.options()?;
    let repo = open(rt, args)?;
    if !p.json && !p.quiet {
        eprintln!("pruning {}...", repo.backend().location());
    }
    let out = super::progress::Output::new(p.json, p.quiet);
    let reporter = super::progress::Reporter::start("prune", "packs", opts.progress.clone(), out);
    let result = prune(&repo, rt.handle(), &opts);
    reporter.finish();
    let report = result?;
    print_report(&report, p.json, p.dry_run)?;
    if !p.dry_run {
        let n = cairn::prune::extend_locks(&repo, rt.handle())?;
        if n > 0 && !p.json {
            outln!("extended the Object Lock of {n} object(s) still needed")?;
        }
    }
    Ok(0)
}

fn print_report(r: &PruneReport, json: bool, dry: bool) -> Result<()> {
    if json {
        let mut v = serde_json::to_value(r)?;
        v["message_type"] = "summary".into();
        outln!("{v}")?;
        return Ok(());
    }
    let would = if dry { "would be " } else { "" };
    outln!(
        "{} snapshot(s) use {} blob(s) in {} pack(s)",
        r.snapshots,
        r.used_blobs,
        r.packs
    )?;
    if r.missing_packs > 0 {
        outln!(
            "{} pack(s) the index named are not in data/: their entries {}dropped from the index (`cairn check` lists what is affected)",
            r.missing_packs,
            if dry { "would be " } else { "are " }
        )?;
    }
    if r.revived_blobs > 0 {
        outln!(
            "{} blob(s) a snapshot uses were {}taken back into the index",
            r.revived_blobs,
            would
        )?;
    }
    outln!(
        "{} pack(s) {}deleted now ({} bytes), condemned by an earlier prune",
        r.deleted_packs,
        would,
        r.deleted_bytes
    )?;
    outln!(
        "{} pack(s) {}condemned ({} bytes; {} of them repacked, {} bytes of used blobs copied): deleted by a prune after the grace period",
        r.condemned_packs,
        would,
        r.condemned_bytes,
        r.repacked_packs,
        r.repacked_bytes
    )?;
    if r.orphan_packs > 0 {
        outln!(
            "{} of them {}in no index (left by interrupted backups)",
            r.orphan_packs,
            if dry { "would be " } else { "" }
        )?;
    }
    if r.locked_packs > 0 {
        outln!(
            "{} condemned pack(s) wait for their S3 Object Lock to expire (the first at {}); a prune after that deletes them",
            r.locked_packs,
            r.next_unlock.as_deref().unwrap_or("?")
        )?;
    }
    if r.waiting_packs > 0 {
        outln!(
            "{} pack(s) condemned earlier still wait for their grace period",
            r.waiting_packs
        )?;
    }
    Ok(())
}

/// `forget --prune` runs a prune with the defaults after removing snapshots.
pub fn prune_after_forget(rt: &Runtime, args: &RepoArgs, json: bool) -> Result<()> {
    let p = PruneArgs {
        repo: args.clone(),
        max_unused: "20%".into(),
        max_repack_size: None,
        grace: "24h".into(),
        dry_run: false,
        json,
        quiet: true,
    };
    let repo = open(rt, args)?;
    let report = prune(&repo, rt.handle(), &p.options()?)?;
    print_report(&report, json, false)?;
    cairn::prune::extend_locks(&repo, rt.handle())?;
    Ok(())
}
