//! `cairn restore`: a snapshot, or one file or directory of it, into a directory or to
//! stdout, reading blobs the repository cannot serve from copies on the same keys
//! (`--fallback-repo`, or the daemon's other destinations with `--destination`).

use super::common::{self, Copies, RepoArgs};
use super::output::count;
use super::progress::{Output, Reporter, bytes};
use super::stdout::outln;
use anyhow::{Result, bail};
use cairn::backup::clean_absolute;
use cairn::daemon::config;
use cairn::restore::{RestoreOptions, RestoreReport};
use cairn::verify::VerifyReport;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;
use tokio::runtime::Runtime;

/// `cairn restore` arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct RestoreArgs {
    /// Where the repository is and how to open it.
    #[command(flatten)]
    pub(crate) repo: super::RepoArgs,
    /// Snapshot id, unique prefix, or `latest`; `SNAPSHOT:PATH` restores only PATH,
    /// placed directly in the target (a file to stdout with `--target -`, a directory
    /// as a tar archive).
    snapshot: String,
    /// Directory to restore into, or `-` for stdout (with SNAPSHOT:PATH).
    #[arg(short, long)]
    target: PathBuf,
    /// Read every restored file back and compare it with the snapshot.
    #[arg(long)]
    verify: bool,
    /// Restore only this snapshot path and what it contains (repeatable).
    #[arg(short, long = "include")]
    include: Vec<PathBuf>,
    /// Restore into a non-empty target, replacing entries.
    #[arg(long)]
    overwrite: bool,
    /// Another copy of the repository (same keys: a second daemon destination with
    /// the same passphrase, or made with `init --from-repo`) to read blobs from when
    /// the main one is missing or damaged (repeatable).
    #[arg(long = "fallback-repo")]
    fallback_repos: Vec<String>,
    /// Restore from this destination of the daemon's configuration (instead of
    /// --repo), healing from the other destinations on the same keys.
    #[arg(long, conflicts_with = "fallback_repos")]
    destination: Option<String>,
    /// Daemon configuration for --destination.
    #[arg(long, default_value = config::DEFAULT_CONFIG)]
    config: PathBuf,
}

/// `cairn restore`: exits 1 when an entry could not be restored or, with `--verify`,
/// does not read back as the snapshot has it; a blob read from another copy instead is
/// a warning, since the restored data is intact.
pub(crate) fn run(rt: &Runtime, args: &RepoArgs, ra: &RestoreArgs, out: Output) -> Result<i32> {
    let (spec, sub) = match ra.snapshot.split_once(':') {
        Some((s, p)) => (s, Some(clean_absolute(Path::new(p))?)),
        None => (ra.snapshot.as_str(), None),
    };
    let to_stdout = ra.target == Path::new("-");
    if sub.is_some() && !ra.include.is_empty() {
        bail!("give either SNAPSHOT:PATH or --include, not both");
    }
    if to_stdout && sub.is_none() {
        bail!(
            "--target - writes one file (or a tar archive of one directory) to stdout: name it as SNAPSHOT:PATH, e.g. `cairn restore latest:/etc/hosts --target -`"
        );
    }
    if to_stdout && ra.verify {
        bail!("--verify re-reads restored files; it cannot with --target -");
    }
    let sources = Copies {
        fallback_repos: &ra.fallback_repos,
        destination: ra.destination.as_deref(),
        config: &ra.config,
    };
    let (repo, copies) = common::open_with_copies(rt, args, &sources)?;
    let (entry, index) =
        rt.block_on(repo.snapshots_with_index(|ids| repo.find_snapshot_listed(spec, ids)))?;
    let reader = cairn::heal::BlobReader::new(
        cairn::heal::Copy {
            repo: &repo,
            index: &index,
        },
        copies
            .iter()
            .map(|(repo, index)| cairn::heal::Copy { repo, index })
            .collect(),
    )?;
    // What to restore: the whole tree (maybe narrowed by --include), or the one entry
    // SNAPSHOT:PATH names, placed directly in the target.
    let mut root = entry.snapshot.tree;
    let mut includes = ra
        .include
        .iter()
        .map(|p| clean_absolute(p))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(path) = &sub
        && path != Path::new("/")
    {
        // Through the reader, so a damaged tree on the path heals from a copy as the
        // rest of the restore would; dropped before the dump or restore (which load
        // their own), since it holds the trees it read.
        let trees = cairn::tree_loader::TreeLoader::new(&reader);
        let found = cairn::ls::lookup(&trees, rt.handle(), &root, path)?;
        drop(trees);
        let Some((node, parent)) = found else {
            bail!(
                "{} is not in snapshot {}: list it with `cairn ls {} {}`",
                path.display(),
                entry.id.short(),
                entry.id.short(),
                path.parent().unwrap_or(Path::new("/")).display()
            );
        };
        if to_stdout {
            return dump_to_stdout(&reader, rt, &node, path);
        }
        match (node.kind, node.subtree) {
            (cairn::format::tree::NodeKind::Dir, Some(t)) => root = t,
            _ => {
                root = parent;
                includes = vec![Path::new("/").join(node.name.to_os())];
            }
        }
    } else if to_stdout {
        bail!("--target - needs a file or directory below /, not the whole snapshot");
    }
    let progress = Arc::new(cairn::progress::Progress::default());
    if includes.is_empty()
        && sub.is_none()
        && let Some(sum) = &entry.snapshot.summary
    {
        progress
            .files_total
            .store(sum.total_files_processed, Ordering::Relaxed);
        progress
            .bytes_total
            .store(sum.total_bytes_processed, Ordering::Relaxed);
    }
    let opts = RestoreOptions {
        target: ra.target.clone(),
        includes: includes.clone(),
        overwrite: ra.overwrite,
        progress: progress.clone(),
    };
    if out.chatty() {
        eprintln!(
            "restoring snapshot {}{} to {}",
            entry.id.short(),
            sub.as_ref()
                .map(|p| format!(":{}", p.display()))
                .unwrap_or_default(),
            ra.target.display()
        );
    }
    let started = Instant::now();
    let reporter = Reporter::start("restore", "files", progress.clone(), out);
    let result = cairn::restore::restore_with(&reader, rt.handle(), &root, &opts);
    reporter.finish();
    let report = result?;
    let seconds = started.elapsed().as_secs_f64();
    let verified = if ra.verify {
        let vp = Arc::new(cairn::progress::Progress::default());
        vp.bytes_total.store(report.bytes, Ordering::Relaxed);
        vp.files_total.store(report.files, Ordering::Relaxed);
        let reporter = Reporter::start("verify", "files", vp.clone(), out);
        let v =
            cairn::verify::verify_restored(&reader, rt.handle(), &root, &includes, &ra.target, &vp);
        reporter.finish();
        Some(v?)
    } else {
        None
    };
    let failed =
        !report.errors.is_empty() || verified.as_ref().is_some_and(|v| !v.problems.is_empty());
    if out.json() {
        let mut v = serde_json::json!({
            "message_type": "summary",
            "snapshot_id": entry.id.to_hex(),
            "files_restored": report.files,
            "bytes_restored": report.bytes,
            "dirs_restored": report.dirs,
            "others_restored": report.others,
            "total_duration": (seconds * 1000.0).round() / 1000.0,
            "errors": report.errors.iter().map(|(p, e)| serde_json::json!({"path": p.to_string_lossy(), "error": e})).collect::<Vec<_>>(),
            "healed": report.healed,
            "changing": report.changing.iter().map(|p| p.to_string_lossy()).collect::<Vec<_>>(),
        });
        if let Some(vr) = &verified {
            v["verify"] = serde_json::to_value(vr)?;
        }
        outln!("{v}")?;
        return Ok(if failed { 1 } else { 0 });
    }
    print_text(
        &report,
        verified.as_ref(),
        &repo.backend().location(),
        seconds,
        failed,
        out,
    );
    Ok(if failed { 1 } else { 0 })
}

/// `restore SNAPSHOT:PATH --target -`: a file's bytes, or a directory as tar, to stdout.
fn dump_to_stdout(
    reader: &cairn::heal::BlobReader<'_>,
    rt: &Runtime,
    node: &cairn::format::tree::Node,
    path: &Path,
) -> Result<i32> {
    use cairn::format::tree::NodeKind;
    use std::io::Write;
    let mut out = super::stdout::Stdout::with_capacity(1 << 20);
    match node.kind {
        NodeKind::File => {
            if node.changing {
                eprintln!(
                    "warning: {} never stood still while it was backed up and is written as read then (it may mix older and newer bytes)",
                    path.display()
                );
            }
            cairn::dump::dump_file(reader, rt.handle(), node, &mut out)?;
        }
        NodeKind::Dir => {
            let name = path.file_name().map(PathBuf::from).unwrap_or_default();
            cairn::dump::dump_tar(reader, rt.handle(), node, &name, &mut out)?;
        }
        _ => bail!(
            "{} is not a file or directory: restore it into a directory with --target DIR",
            path.display()
        ),
    }
    out.flush()?;
    Ok(0)
}

/// The restore's outcome on stderr: files that changed while backed up (said even when
/// quiet, as they are not what a clean backup would hold), then, unless quiet and all
/// went well, the counts, the verification, blobs read from other copies and the
/// entries that failed.
fn print_text(
    report: &RestoreReport,
    verified: Option<&VerifyReport>,
    location: &str,
    seconds: f64,
    failed: bool,
    out: Output,
) {
    // Said even when quiet: these files are not what a clean backup would have stored.
    if !report.changing.is_empty() {
        eprintln!(
            "warning: {} file(s) never stood still while they were backed up and are restored as read then (they may mix older and newer bytes):",
            report.changing.len()
        );
        for p in report.changing.iter().take(50) {
            eprintln!("  {}", p.display());
        }
        if report.changing.len() > 50 {
            eprintln!("  ... and {} more", report.changing.len() - 50);
        }
    }
    if !out.chatty() && !failed {
        return;
    }
    eprintln!(
        "restored {} ({}), {}, {} in {:.1} s",
        count(report.files, "file"),
        bytes(report.bytes),
        count(report.dirs, "directory"),
        count(report.others, "other entry"),
        seconds
    );
    if let Some(v) = verified {
        if v.problems.is_empty() {
            eprintln!(
                "verified: {} files ({}) read back match the snapshot",
                v.files,
                bytes(v.bytes)
            );
        } else {
            eprintln!(
                "error: {} of {} restored files differ from the snapshot (restore them again; check the target disk):",
                v.problems.len(),
                v.files
            );
            for (p, why) in v.problems.iter().take(50) {
                eprintln!("  {}: {why}", p.display());
            }
        }
    }
    // Blobs the primary did not serve for want of an answer (or a transient error) are
    // not damage there: no repair to suggest.
    let (damaged, unread): (Vec<_>, Vec<_>) = report.healed.iter().partition(|h| h.damaged);
    for (healed, what) in [(&unread, "could not be read"), (&damaged, "is damaged")] {
        if healed.is_empty() {
            continue;
        }
        eprintln!(
            "warning: {} {what}: {} blob(s) were read from another copy instead:",
            location,
            healed.len()
        );
        for h in healed.iter().take(20) {
            eprintln!("  blob {} from {}: {}", &h.blob[..12], h.from, h.problem);
        }
        if healed.len() > 20 {
            eprintln!("  ... and {} more", healed.len() - 20);
        }
    }
    if !damaged.is_empty() {
        eprintln!("  repair it with: cairn check --repair --fallback-repo REPO");
    }
    if !report.errors.is_empty() {
        eprintln!(
            "error: {} entries could not be restored:",
            report.errors.len()
        );
        for (p, e) in &report.errors {
            eprintln!("  {}: {e}", p.display());
        }
        eprintln!(
            "`cairn check --read-data` names all damage; `--fallback-repo REPO` reads what is damaged or cannot be read here from another copy on the same keys"
        );
    }
}
