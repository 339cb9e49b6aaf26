//! What every destination's worker (and scrubber) shares: the runtime, the sources,
//! the schedule, who the snapshots say took them, and the registries that coordinate
//! destinations. A leaf of the daemon, so the worker loop, a round and a session all
//! depend on it and not on each other.

use super::config::{PasswordSource, Schedule, SourceConfig};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::runtime::Handle as Runtime;

/// What every worker shares.
pub struct WorkerEnv {
    /// Runtime for I/O.
    pub rt: Runtime,
    /// Sources, with the daemon's own directories excluded.
    pub sources: Vec<SourceConfig>,
    /// Timing rules.
    pub schedule: Schedule,
    /// Recorded host name.
    pub hostname: String,
    /// Recorded user name.
    pub username: String,
    /// Threads per backup that read, compress and seal (at least), and large files read
    /// at once.
    pub cpu_threads: usize,
    /// Metadata cache root.
    pub cache_dir: PathBuf,
    /// Passphrase of destinations without their own.
    pub password: PasswordSource,
    /// Set while the watcher may miss changes: every run then compares everything.
    pub degraded: Arc<std::sync::atomic::AtomicBool>,
    /// Shares master secrets between destinations with the same passphrase.
    pub keyring: super::keyring::KeyRing,
    /// Where journals live.
    pub state_dir: PathBuf,
    /// Disk space one destination's journal may use (0: no journal).
    pub journal_limit: u64,
    /// Every configured destination's name: a journal kept under a name that is no
    /// longer configured (a destination renamed) is taken over by the destination that
    /// now holds its repository.
    pub destination_names: Vec<String>,
    /// Where state changes worth telling the operator go.
    pub alerts: Arc<super::alerts::Alerts>,
}
