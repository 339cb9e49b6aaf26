//! The daemon's configuration file: TOML with a fixed set of keys, checked as a whole so
//! that `cairn config check` lists every problem at once, each with its line and the fix.
//!
//! Checking runs in three passes: TOML syntax; then the key schema ([`schema`]): unknown
//! keys anywhere (a typo such as `quiet_perod` must never be silently ignored, so each is
//! reported with the closest known one), missing keys and values of the wrong type, each
//! named with the form to write; then values (durations, paths, repository forms,
//! options). Every pass after the syntax reports all it finds and the next still runs on
//! what is usable, so one run lists every problem of a file. Relative paths are refused rather than guessed at: a service's working
//! directory is `/`.

//!
//! The module is in layers: [`schema`] is which keys each table has and their types;
//! [`raw`] is the file as TOML gives it, with the typo hints; [`resolve`] (and [`destination`] for `[[destination]]`, [`source`] and [`excludes`] for `[[source]]`) judge the values
//! section by section and build the typed model defined here; [`password`] says where a
//! passphrase comes from and reads it; [`problem`] is what is wrong.

mod destination;
mod excludes;
mod judge;
mod notify;
pub mod password;
pub mod problem;
mod raw;
mod resolve;
mod schema;
mod source;

pub use password::PasswordSource;
pub use problem::{ConfigError, Problem};

use crate::backend::{BackendOptions, Location};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Longest duration accepted in `[schedule]` (timers beyond it are mistakes).
pub(super) const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);

/// Default bound of one destination's journal.
pub const DEFAULT_JOURNAL_LIMIT: u64 = 1024 * 1024 * 1024;

/// Where the daemon looks when `--config` is not given.
pub const DEFAULT_CONFIG: &str = "/etc/cairn/cairn.toml";

/// A set of paths backed up together into one snapshot series, or a command whose
/// output is stored as one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceConfig {
    /// Absolute paths (empty for a command source).
    pub paths: Vec<PathBuf>,
    /// What is left out (`exclude`, `exclude_file`, `iexclude`, `iexclude_file`,
    /// `exclude_larger_than`, `exclude_caches`, `exclude_if_present`; restic's meaning).
    /// Pattern files are read when the configuration is (start, reload, `config check`).
    pub excludes: crate::exclude::ExcludeRules,
    /// Stay on the file system of each path.
    pub one_file_system: bool,
    /// Tags on every snapshot of this source.
    pub tags: Vec<String>,
    /// Take a snapshot even when a source path became empty, or is no longer the mount
    /// point it was, since the last snapshot (off: that is an error, since it is most
    /// often a disk that did not mount, whose snapshot would push good history out).
    pub allow_root_change: bool,
    /// A command whose output is the source, instead of paths: not watched, run on its
    /// interval and on `backup --now`.
    pub command: Option<CommandSource>,
    /// Commands run before and after every snapshot of this source, in each destination.
    pub hooks: crate::external::Hooks,
}

/// A source that is a command's output (a database dump), stored as one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandSource {
    /// The command, as an argument vector (no shell).
    pub argv: Vec<String>,
    /// The file's name in the snapshot (`app.dump`; paths record `/app.dump`).
    pub filename: String,
    /// How often it runs.
    pub every: Duration,
    /// The account it runs as, looked up when the configuration was read.
    pub user: Option<crate::external::RunAs>,
}

impl SourceConfig {
    /// What the snapshots of this source record as their paths, for logs and hooks:
    /// the paths, or `/<filename>` for a command.
    pub fn label(&self) -> String {
        match &self.command {
            Some(c) => format!("/{}", c.filename.trim_start_matches('/')),
            None => self
                .paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(" "),
        }
    }
}

/// One repository that receives every source.
#[derive(Clone, Debug)]
pub struct DestinationConfig {
    /// Short unique name used in status, metrics and logs.
    pub name: String,
    /// Where the repository lives, parsed once from the `repo` key.
    pub location: Location,
    /// Passphrase source for this destination, if not the global one.
    pub password: Option<PasswordSource>,
    /// Storage options (S3 settings, credentials, upload limit).
    pub backend: BackendOptions,
    /// Pack uploads in flight at once.
    pub upload_concurrency: usize,
    /// How backups to this destination compress blobs (its `compression` key); `None`:
    /// the repository's default, else auto.
    pub compression: Option<crate::compression::Compression>,
    /// Snapshots to keep (restic's `forget` rules), applied to this host's snapshots.
    pub retention: Option<crate::retention::Policy>,
    /// Also prune after removing snapshots (needs delete permission on the bucket).
    pub prune: bool,
}

/// When snapshots are taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// Time without new changes before a snapshot starts.
    pub quiet_period: Duration,
    /// Shortest time between the starts of two snapshots of one destination.
    pub min_interval: Duration,
    /// Longest a change waits for a snapshot even while files keep changing.
    pub max_delay: Duration,
    /// Full comparison of every file against the last snapshot, as a safety net for
    /// changes the watcher missed.
    pub rescan_interval: Duration,
    /// Shortest time between two applications of a destination's retention rules.
    pub retention_interval: Duration,
    /// Every destination is read back in full once per this period, a slice at a time
    /// (0: no scrubbing).
    pub scrub_period: Duration,
    /// Time between two scrub slices.
    pub scrub_interval: Duration,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            quiet_period: Duration::from_secs(2),
            min_interval: Duration::from_secs(10),
            max_delay: Duration::from_secs(300),
            rescan_interval: Duration::from_secs(3600),
            retention_interval: Duration::from_secs(3600),
            scrub_period: Duration::from_secs(30 * 86_400),
            scrub_interval: Duration::from_secs(86_400),
        }
    }
}

/// When a state is worth telling the operator about (`[alerts]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AlertRules {
    /// A destination that has not accepted a snapshot for this long while trying is
    /// reported failing.
    pub failing_after: Duration,
    /// A source without a successful snapshot in a destination for this long is
    /// reported stale, whatever the reason (a stuck daemon included).
    pub stale_after: Duration,
}

impl Default for AlertRules {
    fn default() -> Self {
        AlertRules {
            failing_after: Duration::from_secs(15 * 60),
            stale_after: Duration::from_secs(25 * 3600),
        }
    }
}

/// A checked configuration, ready to run.
#[derive(Clone, Debug)]
pub struct DaemonConfig {
    /// The file it came from.
    pub file: PathBuf,
    /// Local state: caches and the control socket by default.
    pub state_dir: PathBuf,
    /// Metadata cache (defaults to `<state_dir>/cache`).
    pub cache_dir: PathBuf,
    /// Passphrase of every destination without its own.
    pub password: PasswordSource,
    /// Host name recorded in snapshots (default: this machine's).
    pub hostname: Option<String>,
    /// What to back up.
    pub sources: Vec<SourceConfig>,
    /// Where to.
    pub destinations: Vec<DestinationConfig>,
    /// When.
    pub schedule: Schedule,
    /// Threads per backup that read, compress and seal (at least), and large files read
    /// at once.
    pub cpu_threads: usize,
    /// Disk space one unreachable destination's journal may use.
    pub journal_limit: u64,
    /// Unix socket for `cairn status` and `cairn backup --now`.
    pub socket: PathBuf,
    /// Address for Prometheus metrics, if enabled.
    pub metrics_listen: Option<SocketAddr>,
    /// When to raise alerts.
    pub alerts: AlertRules,
    /// Where alerts go (`[[notify]]`).
    pub notifiers: Vec<crate::notify::NotifierConfig>,
}

/// Read and check a configuration file.
pub fn load(path: &Path) -> Result<DaemonConfig, ConfigError> {
    match load_all(path) {
        (Some(c), None) => Ok(c),
        (_, Some(e)) => Err(e),
        // `judge` gives a configuration or a problem; this arm is for the compiler.
        (None, None) => Err(ConfigError {
            path: path.to_path_buf(),
            problems: Vec::new(),
        }),
    }
}

/// Read and check a configuration file, keeping what could be judged: every problem of
/// the file, and the configuration without the destinations that have one (`None` when
/// something every part needs, such as `state_dir`, is unusable). For `cairn config
/// check`, which goes on to contact the destinations that are right while reporting the
/// ones that are not; never for running.
pub fn load_all(path: &Path) -> (Option<DaemonConfig>, Option<ConfigError>) {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            let message = match e.kind() {
                std::io::ErrorKind::NotFound => format!(
                    "cannot read it: {e}. Create it from the example (/usr/share/doc/cairn/examples/cairn.toml or config/cairn.toml in the source) or pass --config FILE"
                ),
                _ => format!("cannot read it: {e}"),
            };
            let problems = vec![Problem {
                line: None,
                message,
            }];
            return (
                None,
                Some(ConfigError {
                    path: path.to_path_buf(),
                    problems,
                }),
            );
        }
    };
    judge(path, &text)
}

/// Check configuration text (`path` is for messages).
pub fn parse(path: &Path, text: &str) -> Result<DaemonConfig, ConfigError> {
    match judge(path, text) {
        (Some(c), None) => Ok(c),
        (_, Some(e)) => Err(e),
        (None, None) => Err(ConfigError {
            path: path.to_path_buf(),
            problems: Vec::new(),
        }),
    }
}

/// Every problem of `text`, and the configuration as far as it is usable (see
/// [`load_all`]).
fn judge(path: &Path, text: &str) -> (Option<DaemonConfig>, Option<ConfigError>) {
    let fail = |mut problems: Vec<Problem>| {
        problems.sort_by_key(|p| p.line);
        Some(ConfigError {
            path: path.to_path_buf(),
            problems,
        })
    };
    let lines = raw::Lines(text);
    let mut doc = match toml::de::DeTable::parse(text) {
        Ok(doc) => doc,
        Err(e) => {
            let problems = vec![Problem {
                line: e.span().map(|s| lines.of(s.start)),
                message: format!("not valid TOML: {}", e.message().trim()),
            }];
            return (None, fail(problems));
        }
    };
    let mut problems = Vec::new();
    schema::check(doc.get_mut(), schema::TOP, "", None, &lines, &mut problems);
    let raw = match <raw::RawConfig as serde::Deserialize>::deserialize(
        toml::de::Deserializer::from(doc),
    ) {
        Ok(raw) => raw,
        // The schema took out everything serde could stumble on; should it still, its
        // message is reported beside the schema's, not instead of them.
        Err(e) => {
            problems.push(Problem {
                line: e.span().map(|s| lines.of(s.start)),
                message: e.message().trim().to_string(),
            });
            return (None, fail(problems));
        }
    };
    let config = resolve::resolve(path, raw, &lines, &mut problems);
    if problems.is_empty() {
        (config, None)
    } else {
        (config, fail(problems))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
state_dir = "/var/lib/cairn"
password_file = "/etc/cairn/passphrase"

[[source]]
paths = ["/srv/data"]
exclude = ["*.tmp"]

[[destination]]
name = "lan"
repo = "s3:http://127.0.0.1:9000/backups/host1"
options = { "s3.region" = "garage", "s3.retries" = 3 }

[[destination]]
name = "disk"
repo = "/mnt/backup/cairn"

[schedule]
quiet_period = "2s"
min_interval = "1m"

[control]
socket = "/run/cairn/control.sock"
"#;

    fn problems(text: &str) -> Vec<String> {
        parse(Path::new("t.toml"), text)
            .err()
            .map(|e| e.problems.iter().map(|p| p.to_string()).collect())
            .unwrap_or_default()
    }

    #[test]
    fn fixed_keys_parse() {
        let c = parse(Path::new("t.toml"), GOOD).expect("valid");
        assert_eq!(c.state_dir, Path::new("/var/lib/cairn"));
        assert_eq!(
            c.password,
            PasswordSource::File("/etc/cairn/passphrase".into())
        );
        assert_eq!(c.sources[0].paths, [PathBuf::from("/srv/data")]);
        assert_eq!(c.destinations.len(), 2);
        assert_eq!(c.destinations[0].backend.region.as_deref(), Some("garage"));
        assert_eq!(c.destinations[0].backend.attempts, 3);
        assert_eq!(c.schedule.quiet_period, Duration::from_secs(2));
        assert_eq!(c.schedule.min_interval, Duration::from_secs(60));
        assert_eq!(c.socket, Path::new("/run/cairn/control.sock"));
        assert_eq!(c.cache_dir, Path::new("/var/lib/cairn/cache"));
    }

    #[test]
    fn a_password_command_is_one_passphrase_source_among_the_others() {
        let text = GOOD
            .replace(
                "password_file = \"/etc/cairn/passphrase\"",
                "password_command = [\"/bin/sh\", \"-c\", \"echo pw\"]",
            )
            .replace(
                "name = \"disk\"",
                "name = \"disk\"\npassword_command = [\"sh\", \"-c\", \"echo other\"]\ndownload_limit = \"2MiB\"",
            );
        let c = parse(Path::new("t.toml"), &text).expect("valid");
        assert_eq!(
            c.password,
            PasswordSource::Command(vec!["/bin/sh".into(), "-c".into(), "echo pw".into()])
        );
        assert_eq!(c.password.read().expect("runs").as_slice(), b"pw");
        let disk = &c.destinations[1];
        assert_eq!(
            disk.password
                .as_ref()
                .map(|p| p.read().expect("runs").to_vec()),
            Some(b"other".to_vec())
        );
        assert_eq!(disk.backend.download_limit, Some(2 << 20));
        assert_eq!(c.destinations[0].backend.download_limit, None);
        let p = problems(&GOOD.replace(
            "password_file = \"/etc/cairn/passphrase\"",
            "password_file = \"/etc/cairn/passphrase\"\npassword_command = [\"pass\"]\npassword_credential = \"c\"",
        ));
        assert!(
            p.iter().any(|m| m.starts_with(
                "line 3: `password_file`, `password_credential` and `password_command` are set"
            )),
            "{p:?}"
        );
        let p = problems(&GOOD.replace(
            "name = \"disk\"",
            "name = \"disk\"\npassword_command = []\ndownload_limit = \"fast\"",
        ));
        assert!(
            p.iter()
                .any(|m| m.contains("`password_command` is empty: write the program")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|m| m.contains("`download_limit` = \"fast\" of destination \"disk\"")),
            "{p:?}"
        );
        let p = problems(&GOOD.replace(
            "password_file = \"/etc/cairn/passphrase\"",
            "password_command = [\"cairn-no-such-program\"]",
        ));
        assert!(
            p.iter().any(|m| m.starts_with("line 3: `password_command` runs \"cairn-no-such-program\", but it is not found in PATH")),
            "{p:?}"
        );
    }

    #[test]
    fn every_unknown_key_is_named_with_its_line_and_a_suggestion() {
        let text = GOOD
            .replace("quiet_period", "quiet_perod")
            .replace("exclude =", "excludes =")
            .replace("[control]", "[control]\nbogus = 1");
        let p = problems(&text);
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(
            p.iter().any(|m| m.starts_with(
                "line 7: unknown key `source.excludes`: did you mean `source.exclude`?"
            )),
            "{p:?}"
        );
        assert!(
            p.iter().any(
                |m| m.contains("`schedule.quiet_perod`: did you mean `schedule.quiet_period`?")
            ),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|m| m.starts_with("line 23: unknown key `control.bogus`")),
            "{p:?}"
        );
    }

    #[test]
    fn bad_values_are_all_reported() {
        let text = GOOD
            .replace("\"2s\"", "\"2 seconds please\"")
            .replace("/srv/data", "srv/data")
            .replace("\"lan\"", "\"disk\"")
            .replace("\"s3.retries\" = 3", "\"s3.retries\" = 0");
        let p = problems(&text);
        assert!(
            p.iter()
                .any(|m| m.contains("`schedule.quiet_period`") && m.starts_with("line 19")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|m| m.contains("relative") && m.starts_with("line 6")),
            "{p:?}"
        );
        assert!(p.iter().any(|m| m.contains("used twice")), "{p:?}");
        assert!(p.iter().any(|m| m.contains("s3.retries")), "{p:?}");
    }

    /// A destination's `compression` takes the modes of `--compression`; a bad one is
    /// named with its line and the accepted forms, a number is asked for in quotes.
    #[test]
    fn destination_compression_is_a_mode() {
        use crate::compression::Compression;
        let with = |value: &str| {
            GOOD.replace(
                "name = \"disk\"",
                &format!("name = \"disk\"\ncompression = {value}"),
            )
        };
        let c = parse(Path::new("t.toml"), &with("\"max\"")).expect("valid");
        assert_eq!(c.destinations[0].compression, None);
        assert_eq!(c.destinations[1].compression, Some(Compression::Level(19)));
        let c = parse(Path::new("t.toml"), &with("\"off\"")).expect("valid");
        assert_eq!(c.destinations[1].compression, Some(Compression::Off));
        let c = parse(Path::new("t.toml"), &with("\"12\"")).expect("valid");
        assert_eq!(c.destinations[1].compression, Some(Compression::Level(12)));
        let p = problems(&with("\"maximum\""));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with("line 16: destination \"disk\": compression \"maximum\" is not a mode: write auto, off, fastest, better, max, or a zstd level from 1 to 22"),
            "{p:?}"
        );
        let p = problems(&with("19"));
        assert!(
            p[0].starts_with(
                "line 16: destination.compression is text in quotes: write compression = \"19\""
            ),
            "{p:?}"
        );
    }

    #[test]
    fn syntax_and_type_errors_have_lines() {
        let p = problems("state_dir = \"/x\"\n[[source]\n");
        assert!(p[0].starts_with("line 2: not valid TOML"), "{p:?}");
        let p = problems(&GOOD.replace("paths = [\"/srv/data\"]", "paths = \"/srv/data\""));
        assert!(p[0].starts_with("line 6:"), "{p:?}");
    }

    #[test]
    fn every_mistyped_value_is_named_with_the_form_to_write() {
        let text = format!("limits = 3\n{GOOD}")
            .replace(
                "repo = \"/mnt/backup/cairn\"",
                "repo = \"/mnt/backup/cairn\"\n[destination.retention]\nkeep_daily = 7\nkeep_last = \"20\"\nkeep_within = 2\nprune = \"true\"",
            )
            .replace("quiet_period = \"2s\"", "quiet_period = 2")
            .replace("exclude = [\"*.tmp\"]", "exclude = \"*.tmp\"")
            .replace("socket = \"/run/cairn/control.sock\"", "socket = 5")
            .replace(
                "min_interval = \"1m\"",
                "min_interval = \"1 fortnight\"\nmax_dealy = \"1m\"",
            );
        let p = problems(&text);
        for want in [
            "destination.retention.keep_last is a number: write keep_last = 20",
            "destination.retention.keep_within is a duration in quotes: write keep_within = \"2d\"",
            "destination.retention.prune is true or false: write prune = true",
            "schedule.quiet_period is a duration in quotes: write quiet_period = \"2s\"",
            "source.exclude is a list of strings: write exclude = [\"*.tmp\"]",
            "control.socket is text in quotes: write socket = \"5\"",
            "limits is a table: write [limits] on a line of its own",
            // The other passes still run: unknown keys and bad values are reported too.
            "did you mean `schedule.max_delay`?",
            "`schedule.min_interval` = \"1 fortnight\" is not a duration",
        ] {
            assert!(p.iter().any(|m| m.contains(want)), "{want}\nin {p:#?}");
        }
        assert_eq!(p.len(), 9, "{p:#?}");
    }

    #[test]
    fn missing_keys_are_named_and_the_rest_still_judged() {
        let text = GOOD
            .replace("repo = \"/mnt/backup/cairn\"", "")
            .replace("paths = [\"/srv/data\"]", "")
            .replace("\"2s\"", "\"2 seconds please\"");
        let p = problems(&text);
        assert!(
            p.iter()
                .any(|m| m
                    .contains("[[destination]] has no `repo`: add repo = \"/var/backups/cairn\"")),
            "{p:#?}"
        );
        assert!(
            p.iter().any(|m| m.contains(
                "[[source]] has neither `paths` nor `command`: add paths = [\"/srv/data\"]"
            )),
            "{p:#?}"
        );
        assert!(
            p.iter().any(|m| m.contains("`schedule.quiet_period`")),
            "{p:#?}"
        );
        // What is right is kept for `config check` to go on with.
        let (partial, error) = judge(Path::new("t.toml"), &text);
        assert_eq!(error.expect("problems").problems.len(), 3);
        let partial = partial.expect("partial");
        assert_eq!(partial.destinations.len(), 1);
        assert_eq!(partial.destinations[0].name, "lan");
    }

    #[test]
    fn missing_sections_say_what_to_add() {
        let p = problems("state_dir = \"/var/lib/cairn\"\n");
        assert!(p.iter().any(|m| m.contains("no [[source]]")));
        assert!(p.iter().any(|m| m.contains("no [[destination]]")));
    }

    #[test]
    fn sources_inside_the_daemons_own_folders_are_refused() {
        let p = problems(&GOOD.replace("/srv/data", "/var/lib/cairn/x"));
        assert!(
            p.iter().any(|m| m.contains("lies inside state_dir")),
            "{p:?}"
        );
        let p = problems(&GOOD.replace("/srv/data", "/mnt/backup/cairn/data"));
        assert!(
            p.iter()
                .any(|m| m.contains("lies inside a local destination")),
            "{p:?}"
        );
        let p = problems(&GOOD.replace("min_interval = \"1m\"", "min_interval = \"9999 days\""));
        assert!(p.iter().any(|m| m.contains("longer than a year")), "{p:?}");
    }

    #[test]
    fn retention_tables_are_checked() {
        let with = GOOD.replace(
            "[[destination]]\nname = \"disk\"",
            "[[destination]]\nname = \"disk\"\n[destination.retention]\nkeep_daily = 7\nkeep_within = \"2d\"",
        );
        // The table must come after the destination's keys: put it at the end of "disk".
        let with = with.replace(
            "[destination.retention]\nkeep_daily = 7\nkeep_within = \"2d\"\nrepo = \"/mnt/backup/cairn\"",
            "repo = \"/mnt/backup/cairn\"\n[destination.retention]\nkeep_daily = 7\nkeep_within = \"2d\"",
        );
        let c = parse(Path::new("t.toml"), &with).expect("valid");
        let r = c.destinations[1].retention.as_ref().expect("retention");
        assert_eq!(r.daily, 7);
        assert_eq!(r.within.days, 2);
        assert!(c.destinations[0].retention.is_none());
        let p = problems(&with.replace("keep_daily = 7", "keep_daly = 7"));
        assert!(
            p.iter()
                .any(|m| m.contains("did you mean `destination.retention.keep_daily`?")),
            "{p:?}"
        );
        let p = problems(&with.replace("keep_daily = 7", "keep_daily = -3"));
        assert!(p.iter().any(|m| m.contains("-1 for every period")), "{p:?}");
        let p = problems(&with.replace("\"2d\"", "\"2 days\""));
        assert!(p.iter().any(|m| m.contains("1y2m3d4h")), "{p:?}");
    }
}
