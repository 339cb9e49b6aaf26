//! Scrubbing: the daemon reads each destination back a slice at a time, so that every
//! pack is fetched, decrypted and verified once per `schedule.scrub_period`, and damage is
//! found while the other destinations can still repair it. The slice size is the period's
//! share per `scrub_interval`; where the last slice ended is kept in
//! `state_dir/scrub/<destination>.json`, so the rotation survives restarts. A problem
//! counts only when a second look confirms it (a prune elsewhere may have moved a pack
//! between the index read and the pack read).

use super::destination::Destination;
use super::env::WorkerEnv;
use super::session::connect;
use crate::check::{CheckReport, ReadData, check_with};
use crate::error::{Error, Result};
use crate::hash::{Id, PackId};
use crate::host::now_unix;
use crate::progress::Progress;
use crate::repo::{Repository, read_config};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Where the rotation stands, kept on disk.
#[derive(Debug, Default, Serialize, Deserialize)]
struct ScrubState {
    /// Hex id of the last pack read.
    cursor: Option<String>,
    /// Packs read in the current cycle.
    cycle_read: u64,
    /// When the next slice is due (Unix seconds).
    next_due_unix: u64,
}

/// Messages of confirmed problems kept for `cairn status`.
const SHOWN_PROBLEMS: usize = 10;

/// Packs one slice reads: the period's share per interval, at least one.
pub fn slice_size(total_packs: u64, interval: Duration, period: Duration) -> usize {
    if total_packs == 0 || period.is_zero() {
        return 0;
    }
    let share = interval.as_secs_f64() / period.as_secs_f64();
    ((total_packs as f64 * share).ceil() as usize).clamp(1, total_packs as usize)
}

fn state_path(env: &WorkerEnv, dest: &Destination) -> PathBuf {
    env.state_dir
        .join("scrub")
        .join(format!("{}.json", dest.config.name))
}

fn load(path: &Path) -> ScrubState {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn save(path: &Path, state: &ScrubState) {
    let write = || -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(state).unwrap_or_default())?;
        std::fs::rename(&tmp, path)
    };
    if let Err(e) = write() {
        tracing::warn!("cannot save the scrub position in {}: {e}", path.display());
    }
}

/// The scrub loop of one destination; returns when the daemon stops.
pub fn run(dest: Arc<Destination>, env: Arc<WorkerEnv>) {
    let (period, interval) = (env.schedule.scrub_period, env.schedule.scrub_interval);
    if period.is_zero() {
        return;
    }
    let name = dest.config.name.clone();
    let path = state_path(&env, &dest);
    let mut state = load(&path);
    // Not at once after a start: the first full comparison goes first.
    let first = now_unix() + interval.min(Duration::from_secs(300)).as_secs();
    if state.next_due_unix == 0 || state.next_due_unix > now_unix() + interval.as_secs() {
        state.next_due_unix = first;
    }
    let mut status = dest.scrub_status().unwrap_or_default();
    loop {
        while now_unix() < state.next_due_unix {
            if dest.control.cancelled() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        match slice(&dest, &env, &mut state) {
            Ok((report, confirmed, total)) => {
                status.last_packs_read = report.packs_read;
                status.packs_read_total += report.packs_read;
                status.bytes_read_total += report.bytes_read;
                status.cycle_done = if total == 0 {
                    1.0
                } else {
                    (state.cycle_read as f64 / total as f64).min(1.0)
                };
                if state.cycle_read >= total {
                    state.cycle_read = 0;
                }
                env.alerts.scrub_found(&name, &confirmed);
                status.problems = confirmed.len() as u64;
                status.problem_messages = confirmed.into_iter().take(SHOWN_PROBLEMS).collect();
                status.error = None;
                if status.problems > 0 {
                    tracing::error!(
                        destination = %name,
                        "scrub found {} problem(s): {}; run `cairn check --read-data --destination {name}`, and `--repair` to mend from the other destinations",
                        status.problems,
                        status.problem_messages.join("; ")
                    );
                } else {
                    tracing::info!(
                        destination = %name,
                        "scrub: {} pack(s) read back intact; {:.0}% of the cycle done",
                        report.packs_read,
                        status.cycle_done * 100.0
                    );
                }
            }
            Err(Error::Cancelled) => return,
            Err(e) => {
                tracing::warn!(destination = %name, "scrub could not run: {e}");
                status.error = Some(e.to_string());
            }
        }
        status.last_run_unix = now_unix();
        dest.set_scrub(status.clone());
        state.next_due_unix = now_unix() + interval.as_secs().max(1);
        save(&path, &state);
    }
}

/// One slice: the problems confirmed by a second look, and the packs in the repository.
fn slice(
    dest: &Destination,
    env: &WorkerEnv,
    state: &mut ScrubState,
) -> Result<(CheckReport, Vec<String>, u64)> {
    let rt = &env.rt;
    let super::session::Connection {
        backend,
        passphrase: pass,
    } = connect(dest, env)?;
    let config = rt.block_on(read_config(backend.as_ref()))?;
    let repo = rt.block_on(Repository::open_with_config(backend, config, &pass))?;
    let total = rt
        .block_on(repo.backend().list(crate::backend::FileType::Pack))?
        .len() as u64;
    let count = slice_size(
        total,
        env.schedule.scrub_interval,
        env.schedule.scrub_period,
    );
    let after = state
        .cursor
        .as_deref()
        .and_then(Id::from_object_name)
        .map(PackId);
    let mode = ReadData::Rotating { after, count };
    let report = check_with(&repo, rt, mode, &Progress::default())?;
    let mut confirmed: Vec<String> = report
        .problems
        .iter()
        .map(|p| format!("{}: {}", p.object, p.message))
        .collect();
    if !confirmed.is_empty() {
        let again = check_with(&repo, rt, mode, &Progress::default())?;
        let seen: std::collections::HashSet<String> = again
            .problems
            .iter()
            .map(|p| format!("{}: {}", p.object, p.message))
            .collect();
        confirmed.retain(|m| seen.contains(m));
    }
    if let Some(last) = report.last_pack_read {
        state.cursor = Some(last.to_hex());
    }
    state.cycle_read += report.packs_read;
    Ok((report, confirmed, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_cover_the_repository_once_per_period() {
        let day = Duration::from_secs(86_400);
        assert_eq!(slice_size(3000, day, 30 * day), 100);
        assert_eq!(slice_size(10, day, 30 * day), 1);
        assert_eq!(slice_size(10, 30 * day, day), 10);
        assert_eq!(slice_size(0, day, 30 * day), 0);
        assert_eq!(
            slice_size(7, Duration::from_secs(1), Duration::from_secs(3)),
            3
        );
    }
}
