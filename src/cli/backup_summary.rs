//! What `cairn backup` says when a snapshot is saved: the summary (a JSON line, or lines
//! for a person) and the paths that were not stored cleanly.

use super::output::count;
use super::progress::{Output, bytes};
use super::stdout::outln;
use anyhow::Result;
use cairn::backup::BackupReport;

/// The snapshot's summary: a JSON line, or three lines on stderr and the id on stdout.
pub(crate) fn print_summary(report: &BackupReport, seconds: f64, out: Output) -> Result<()> {
    let sum = report.snapshot.summary.clone().unwrap_or_default();
    if out.json() {
        // The summary's fields, then the id and the skipped paths themselves in place of
        // their count.
        let mut v = serde_json::to_value(&sum)?;
        v["message_type"] = "summary".into();
        // Always present here, though the stored summary leaves a 0 out.
        v["files_removed"] = sum.files_removed.into();
        v["snapshot_id"] = report.id.to_hex().into();
        v["total_duration"] = ((seconds * 1000.0).round() / 1000.0).into();
        v["warnings"] = report
            .warnings
            .iter()
            .map(|w| {
                serde_json::json!({
                    "path": w.path.to_string_lossy(),
                    "reason": w.reason,
                    "stored": w.stored,
                })
            })
            .collect();
        outln!("{v}")?;
    } else {
        eprintln!(
            "Files:   {} new, {} changed, {} unmodified, removed {} ({})",
            sum.files_new,
            sum.files_changed,
            sum.files_unmodified,
            count(sum.files_removed, "file"),
            count(sum.dirs_processed, "directory")
        );
        eprintln!(
            "Added:   {} ({} stored after compression and encryption) in {}",
            bytes(sum.data_added),
            bytes(sum.data_added_packed),
            count(sum.data_blobs + sum.tree_blobs, "blob"),
        );
        eprintln!(
            "Total:   {}, {}; read {} in {:.1} s",
            count(sum.total_files_processed, "file"),
            bytes(sum.total_bytes_processed),
            bytes(sum.data_read),
            seconds
        );
        outln!("snapshot {} saved", report.id.to_hex())?;
    }
    Ok(())
}

/// The paths the snapshot lacks and those stored while they changed, said even with
/// `--json` and `--quiet`, since the snapshot is not what a clean backup would hold.
pub(crate) fn print_warnings(report: &BackupReport) {
    let (changing, skipped): (Vec<_>, Vec<_>) = report.warnings.iter().partition(|w| w.stored);
    if !skipped.is_empty() {
        eprintln!(
            "warning: {} could not be stored (the snapshot has everything else):",
            count(skipped.len() as u64, "path")
        );
        for w in skipped {
            eprintln!("  {}: {}", w.path.display(), w.reason);
        }
    }
    if !changing.is_empty() {
        eprintln!(
            "warning: {} never stood still and {} stored as read, marked as changing (a restore names them):",
            count(changing.len() as u64, "file"),
            if changing.len() == 1 { "is" } else { "are" }
        );
        for w in changing {
            eprintln!("  {}: {}", w.path.display(), w.reason);
        }
    }
}
