//! The daemon's configuration file: TOML with a fixed set of keys, checked as a whole so
//! that `cairn config check` lists every problem at once, each with its line and the fix.
//!
//! Checking runs in three passes: TOML syntax; unknown keys anywhere (a typo such as
//! `quiet_perod` must never be silently ignored, so each unknown key is reported with the
//! closest known one); then types and values (durations, paths, repository forms,
//! options). Relative paths are refused rather than guessed at: a service's working
//! directory is `/`.

use crate::backend::{BackendOptions, parse_location};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// Longest duration accepted in `[schedule]` (timers beyond it are mistakes).
const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);

/// Default bound of one destination's journal.
pub const DEFAULT_JOURNAL_LIMIT: u64 = 1024 * 1024 * 1024;

/// Where the daemon looks when `--config` is not given.
pub const DEFAULT_CONFIG: &str = "/etc/cairn/cairn.toml";

/// One thing wrong with a configuration file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line, when the problem has a place.
    pub line: Option<usize>,
    /// What is wrong and what to do about it.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "line {l}: {}", self.message),
            None => write!(f, "{}", self.message),
        }
    }
}

/// Every problem found in one file.
#[derive(Clone, Debug, thiserror::Error)]
pub struct ConfigError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong, in file order.
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "configuration {} has {n} problem{}:",
            self.path.display(),
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            write!(f, "\n  {}: {p}", self.path.display())?;
        }
        Ok(())
    }
}

/// Where the repository passphrase comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PasswordSource {
    /// First line of a file.
    File(PathBuf),
    /// A systemd credential (`LoadCredential=NAME:...`), read from
    /// `$CREDENTIALS_DIRECTORY/NAME`.
    Credential(String),
    /// `CAIRN_PASSWORD_FILE` or `CAIRN_PASSWORD` in the daemon's environment.
    Environment,
}

/// A set of paths backed up together into one snapshot series.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceConfig {
    /// Absolute paths.
    pub paths: Vec<PathBuf>,
    /// Exclude globs (restic syntax).
    pub excludes: Vec<String>,
    /// Stay on the file system of each path.
    pub one_file_system: bool,
    /// Tags on every snapshot of this source.
    pub tags: Vec<String>,
    /// Take a snapshot even when a source path became empty, or is no longer the mount
    /// point it was, since the last snapshot (off: that is an error, since it is most
    /// often a disk that did not mount, whose snapshot would push good history out).
    pub allow_root_change: bool,
}

/// One repository that receives every source.
#[derive(Clone, Debug)]
pub struct DestinationConfig {
    /// Short unique name used in status, metrics and logs.
    pub name: String,
    /// Repository location in any `--repo` form.
    pub repo: String,
    /// Passphrase source for this destination, if not the global one.
    pub password: Option<PasswordSource>,
    /// Storage options (S3 settings, credentials, upload limit).
    pub backend: BackendOptions,
    /// Pack uploads in flight at once.
    pub upload_concurrency: usize,
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
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    state_dir: Option<Spanned<String>>,
    cache_dir: Option<Spanned<String>>,
    password_file: Option<Spanned<String>>,
    password_credential: Option<Spanned<String>>,
    hostname: Option<Spanned<String>>,
    #[serde(default)]
    source: Vec<RawSource>,
    #[serde(default)]
    destination: Vec<RawDestination>,
    #[serde(default)]
    schedule: RawSchedule,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    control: RawControl,
    #[serde(default)]
    metrics: RawMetrics,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    paths: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    exclude: Vec<Spanned<String>>,
    #[serde(default)]
    one_file_system: bool,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    allow_root_change: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDestination {
    name: Spanned<String>,
    repo: Spanned<String>,
    password_file: Option<Spanned<String>>,
    password_credential: Option<Spanned<String>>,
    aws_profile: Option<Spanned<String>>,
    access_key_id: Option<Spanned<String>>,
    secret_access_key_file: Option<Spanned<String>>,
    upload_limit: Option<Spanned<String>>,
    upload_concurrency: Option<Spanned<u32>>,
    object_lock: Option<Spanned<String>>,
    #[serde(default)]
    options: BTreeMap<String, Spanned<OptionValue>>,
    retention: Option<Spanned<RawRetention>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRetention {
    keep_last: Option<Spanned<i64>>,
    keep_hourly: Option<Spanned<i64>>,
    keep_daily: Option<Spanned<i64>>,
    keep_weekly: Option<Spanned<i64>>,
    keep_monthly: Option<Spanned<i64>>,
    keep_yearly: Option<Spanned<i64>>,
    keep_within: Option<Spanned<String>>,
    keep_within_hourly: Option<Spanned<String>>,
    keep_within_daily: Option<Spanned<String>>,
    keep_within_weekly: Option<Spanned<String>>,
    keep_within_monthly: Option<Spanned<String>>,
    keep_within_yearly: Option<Spanned<String>>,
    #[serde(default)]
    keep_tags: Vec<String>,
    #[serde(default)]
    prune: bool,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OptionValue {
    Text(String),
    Integer(i64),
    Bool(bool),
}

impl fmt::Display for OptionValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OptionValue::Text(s) => f.write_str(s),
            OptionValue::Integer(i) => write!(f, "{i}"),
            OptionValue::Bool(b) => write!(f, "{b}"),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSchedule {
    quiet_period: Option<Spanned<String>>,
    min_interval: Option<Spanned<String>>,
    max_delay: Option<Spanned<String>>,
    rescan_interval: Option<Spanned<String>>,
    retention_interval: Option<Spanned<String>>,
    scrub_period: Option<Spanned<String>>,
    scrub_interval: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    cpu_threads: Option<Spanned<u32>>,
    upload_concurrency: Option<Spanned<u32>>,
    journal_size: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawControl {
    socket: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: Option<Spanned<String>>,
}

/// The keys each table accepts; `None` marks a table whose keys are free (checked by
/// value instead).
enum Shape {
    Table(&'static [(&'static str, Shape)]),
    ArrayOfTables(&'static [(&'static str, Shape)]),
    Free,
    Value,
}

const SOURCE_KEYS: &[(&str, Shape)] = &[
    ("paths", Shape::Value),
    ("exclude", Shape::Value),
    ("one_file_system", Shape::Value),
    ("tags", Shape::Value),
    ("allow_root_change", Shape::Value),
];
const DESTINATION_KEYS: &[(&str, Shape)] = &[
    ("name", Shape::Value),
    ("repo", Shape::Value),
    ("password_file", Shape::Value),
    ("password_credential", Shape::Value),
    ("aws_profile", Shape::Value),
    ("access_key_id", Shape::Value),
    ("secret_access_key_file", Shape::Value),
    ("upload_limit", Shape::Value),
    ("upload_concurrency", Shape::Value),
    ("object_lock", Shape::Value),
    ("options", Shape::Free),
    ("retention", Shape::Table(RETENTION_KEYS)),
];
const RETENTION_KEYS: &[(&str, Shape)] = &[
    ("keep_last", Shape::Value),
    ("keep_hourly", Shape::Value),
    ("keep_daily", Shape::Value),
    ("keep_weekly", Shape::Value),
    ("keep_monthly", Shape::Value),
    ("keep_yearly", Shape::Value),
    ("keep_within", Shape::Value),
    ("keep_within_hourly", Shape::Value),
    ("keep_within_daily", Shape::Value),
    ("keep_within_weekly", Shape::Value),
    ("keep_within_monthly", Shape::Value),
    ("keep_within_yearly", Shape::Value),
    ("keep_tags", Shape::Value),
    ("prune", Shape::Value),
];
const SCHEDULE_KEYS: &[(&str, Shape)] = &[
    ("quiet_period", Shape::Value),
    ("min_interval", Shape::Value),
    ("max_delay", Shape::Value),
    ("rescan_interval", Shape::Value),
    ("retention_interval", Shape::Value),
    ("scrub_period", Shape::Value),
    ("scrub_interval", Shape::Value),
];
const LIMITS_KEYS: &[(&str, Shape)] = &[
    ("cpu_threads", Shape::Value),
    ("upload_concurrency", Shape::Value),
    ("journal_size", Shape::Value),
];
const CONTROL_KEYS: &[(&str, Shape)] = &[("socket", Shape::Value)];
const METRICS_KEYS: &[(&str, Shape)] = &[("listen", Shape::Value)];
const TOP_KEYS: &[(&str, Shape)] = &[
    ("state_dir", Shape::Value),
    ("cache_dir", Shape::Value),
    ("password_file", Shape::Value),
    ("password_credential", Shape::Value),
    ("hostname", Shape::Value),
    ("source", Shape::ArrayOfTables(SOURCE_KEYS)),
    ("destination", Shape::ArrayOfTables(DESTINATION_KEYS)),
    ("schedule", Shape::Table(SCHEDULE_KEYS)),
    ("limits", Shape::Table(LIMITS_KEYS)),
    ("control", Shape::Table(CONTROL_KEYS)),
    ("metrics", Shape::Table(METRICS_KEYS)),
];

/// Maps byte offsets to 1-based line numbers.
struct Lines<'a>(&'a str);

impl Lines<'_> {
    fn of(&self, offset: usize) -> usize {
        let end = offset.min(self.0.len());
        self.0.as_bytes()[..end]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1
    }
}

/// Read and check a configuration file.
pub fn load(path: &Path) -> Result<DaemonConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        path: path.to_path_buf(),
        problems: vec![Problem {
            line: None,
            message: match e.kind() {
                std::io::ErrorKind::NotFound => format!(
                    "cannot read it: {e}. Create it from the example (/usr/share/doc/cairn/examples/cairn.toml or config/cairn.toml in the source) or pass --config FILE"
                ),
                _ => format!("cannot read it: {e}"),
            },
        }],
    })?;
    parse(path, &text)
}

/// Check configuration text (`path` is for messages).
pub fn parse(path: &Path, text: &str) -> Result<DaemonConfig, ConfigError> {
    let fail = |problems| ConfigError {
        path: path.to_path_buf(),
        problems,
    };
    let lines = Lines(text);
    let doc = toml::de::DeTable::parse(text).map_err(|e| {
        fail(vec![Problem {
            line: e.span().map(|s| lines.of(s.start)),
            message: format!("not valid TOML: {}", e.message().trim()),
        }])
    })?;
    let mut problems = Vec::new();
    check_keys(doc.get_ref(), TOP_KEYS, "", &lines, &mut problems);
    if !problems.is_empty() {
        problems.sort_by_key(|p| p.line);
        return Err(fail(problems));
    }
    let raw: RawConfig = toml::from_str(text).map_err(|e| {
        fail(vec![Problem {
            line: e.span().map(|s| lines.of(s.start)),
            message: e.message().trim().to_string(),
        }])
    })?;
    let config = resolve(path, raw, &lines, &mut problems);
    problems.sort_by_key(|p| p.line);
    match config {
        Some(c) if problems.is_empty() => Ok(c),
        _ => Err(fail(problems)),
    }
}

fn check_keys(
    table: &toml::de::DeTable<'_>,
    shape: &[(&str, Shape)],
    prefix: &str,
    lines: &Lines<'_>,
    out: &mut Vec<Problem>,
) {
    for (key, value) in table {
        let name = key.get_ref().as_ref();
        let full = format!("{prefix}{name}");
        let Some((_, sub)) = shape.iter().find(|(k, _)| *k == name) else {
            let mut message = format!("unknown key `{full}`");
            match closest(name, shape.iter().map(|(k, _)| *k)) {
                Some(s) => message.push_str(&format!(": did you mean `{prefix}{s}`?")),
                None => message.push_str(&format!(
                    ": remove it (known here: {})",
                    shape
                        .iter()
                        .map(|(k, _)| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            }
            out.push(Problem {
                line: Some(lines.of(key.span().start)),
                message,
            });
            continue;
        };
        match (sub, value.get_ref()) {
            (Shape::Table(keys), toml::de::DeValue::Table(t)) => {
                check_keys(t, keys, &format!("{full}."), lines, out)
            }
            (Shape::ArrayOfTables(keys), toml::de::DeValue::Array(a)) => {
                for item in a.iter() {
                    if let toml::de::DeValue::Table(t) = item.get_ref() {
                        check_keys(t, keys, &format!("{full}."), lines, out);
                    }
                }
            }
            // Wrong shapes are reported with their types by the typed pass.
            _ => {}
        }
    }
}

/// The known key nearest to a misspelt one, if it is plausibly a typo.
fn closest<'a>(name: &str, known: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    known
        .map(|k| (edit_distance(name, k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

struct Ctx<'a, 'b> {
    lines: &'a Lines<'b>,
    problems: &'a mut Vec<Problem>,
}

impl Ctx<'_, '_> {
    fn problem<T>(&mut self, span: std::ops::Range<usize>, message: String) -> Option<T> {
        self.problems.push(Problem {
            line: Some(self.lines.of(span.start)),
            message,
        });
        None
    }

    fn abs_path(&mut self, key: &str, v: &Spanned<String>) -> Option<PathBuf> {
        let p = PathBuf::from(v.get_ref());
        if v.get_ref().is_empty() {
            return self.problem(v.span(), format!("`{key}` is empty: give an absolute path"));
        }
        if !p.is_absolute() {
            return self.problem(
                v.span(),
                format!(
                    "`{key}` = {:?} is relative: write it as an absolute path (the service runs in /)",
                    v.get_ref()
                ),
            );
        }
        Some(p)
    }

    fn duration(&mut self, key: &str, v: &Option<Spanned<String>>, default: Duration) -> Duration {
        let Some(v) = v else { return default };
        match humantime::parse_duration(v.get_ref()) {
            Ok(d) if d > MAX_DURATION => self
                .problem(
                    v.span(),
                    format!("`schedule.{key}` = {:?} is longer than a year: choose a shorter one", v.get_ref()),
                )
                .unwrap_or(default),
            Ok(d) => d,
            Err(e) => self
                .problem(
                    v.span(),
                    format!(
                        "`schedule.{key}` = {:?} is not a duration ({e}): write it like \"2s\", \"500ms\" or \"1h 30m\"",
                        v.get_ref()
                    ),
                )
                .unwrap_or(default),
        }
    }

    fn retention(&mut self, dest: &str, r: &RawRetention) -> Option<crate::retention::Policy> {
        use crate::retention::{CalendarDuration, Policy};
        let mut ok = true;
        let mut count = |cx: &mut Self, key: &str, v: &Option<Spanned<i64>>| -> i64 {
            match v {
                Some(n) if *n.get_ref() < -1 => {
                    ok = false;
                    cx.problem::<()>(
                        n.span(),
                        format!("destination {dest:?}: `retention.{key}` = {}: give a count, or -1 for every period", n.get_ref()),
                    );
                    0
                }
                Some(n) => *n.get_ref(),
                None => 0,
            }
        };
        let last = count(self, "keep_last", &r.keep_last);
        let hourly = count(self, "keep_hourly", &r.keep_hourly);
        let daily = count(self, "keep_daily", &r.keep_daily);
        let weekly = count(self, "keep_weekly", &r.keep_weekly);
        let monthly = count(self, "keep_monthly", &r.keep_monthly);
        let yearly = count(self, "keep_yearly", &r.keep_yearly);
        let mut ok2 = true;
        let mut dur = |cx: &mut Self, key: &str, v: &Option<Spanned<String>>| -> CalendarDuration {
            match v {
                Some(s) => match CalendarDuration::parse(s.get_ref()) {
                    Ok(d) => d,
                    Err(e) => {
                        ok2 = false;
                        cx.problem::<()>(
                            s.span(),
                            format!("destination {dest:?}: `retention.{key}`: {e}"),
                        );
                        CalendarDuration::default()
                    }
                },
                None => CalendarDuration::default(),
            }
        };
        let policy = Policy {
            last,
            hourly,
            daily,
            weekly,
            monthly,
            yearly,
            within: dur(self, "keep_within", &r.keep_within),
            within_hourly: dur(self, "keep_within_hourly", &r.keep_within_hourly),
            within_daily: dur(self, "keep_within_daily", &r.keep_within_daily),
            within_weekly: dur(self, "keep_within_weekly", &r.keep_within_weekly),
            within_monthly: dur(self, "keep_within_monthly", &r.keep_within_monthly),
            within_yearly: dur(self, "keep_within_yearly", &r.keep_within_yearly),
            tags: r
                .keep_tags
                .iter()
                .map(|l| {
                    l.split(',')
                        .map(|t| t.trim().to_string())
                        .filter(|t| !t.is_empty())
                        .collect()
                })
                .collect(),
        };
        (ok && ok2).then_some(policy)
    }

    fn password(
        &mut self,
        scope: &str,
        file: &Option<Spanned<String>>,
        credential: &Option<Spanned<String>>,
    ) -> Option<PasswordSource> {
        match (file, credential) {
            (Some(f), Some(c)) => self.problem(
                c.span().start.min(f.span().start)..0,
                format!("{scope}both `password_file` and `password_credential` are set: keep one"),
            ),
            (Some(f), None) => self.abs_path("password_file", f).map(PasswordSource::File),
            (None, Some(c)) => {
                let name = c.get_ref();
                if name.is_empty() || name.contains('/') {
                    self.problem(
                        c.span(),
                        format!(
                            "`password_credential` = {name:?} must be a systemd credential name (as in LoadCredential=NAME:PATH), without '/'"
                        ),
                    )
                } else {
                    Some(PasswordSource::Credential(name.clone()))
                }
            }
            (None, None) => None,
        }
    }
}

fn resolve(
    path: &Path,
    raw: RawConfig,
    lines: &Lines<'_>,
    problems: &mut Vec<Problem>,
) -> Option<DaemonConfig> {
    let mut cx = Ctx { lines, problems };
    let state_dir = match &raw.state_dir {
        Some(v) => cx.abs_path("state_dir", v),
        None => Some(PathBuf::from("/var/lib/cairn")),
    };
    let cache_dir = match &raw.cache_dir {
        Some(v) => cx.abs_path("cache_dir", v),
        None => state_dir.as_ref().map(|s| s.join("cache")),
    };
    let password = cx
        .password("", &raw.password_file, &raw.password_credential)
        .unwrap_or(PasswordSource::Environment);
    let hostname = match &raw.hostname {
        Some(h) if h.get_ref().trim().is_empty() => cx.problem(
            h.span(),
            "`hostname` is empty: remove it to use this machine's name".into(),
        ),
        Some(h) => Some(h.get_ref().clone()),
        None => None,
    };

    let mut sources = Vec::new();
    if raw.source.is_empty() {
        cx.problems.push(Problem {
            line: None,
            message: "no [[source]]: add one with `paths = [\"/srv/data\"]` naming what to back up"
                .into(),
        });
    }
    for s in &raw.source {
        if s.paths.get_ref().is_empty() {
            cx.problem::<()>(
                s.paths.span(),
                "`paths` is empty: name at least one directory or file to back up".into(),
            );
        }
        let paths: Vec<PathBuf> = s
            .paths
            .get_ref()
            .iter()
            .filter_map(|p| cx.abs_path("paths", p))
            .collect();
        let excludes: Vec<String> = s.exclude.iter().map(|e| e.get_ref().clone()).collect();
        for e in &s.exclude {
            if let Err(why) = crate::exclude::Excludes::new(std::slice::from_ref(e.get_ref())) {
                cx.problem::<()>(e.span(), format!("`exclude` pattern: {why}"));
            }
        }
        sources.push(SourceConfig {
            paths,
            excludes,
            one_file_system: s.one_file_system,
            tags: s.tags.clone(),
            allow_root_change: s.allow_root_change,
        });
    }

    let default_uploads = match &raw.limits.upload_concurrency {
        Some(v) if *v.get_ref() == 0 => cx
            .problem(
                v.span(),
                "`limits.upload_concurrency` must be at least 1".into(),
            )
            .unwrap_or(4),
        Some(v) => *v.get_ref() as usize,
        None => 4,
    };
    let cpu_threads = match &raw.limits.cpu_threads {
        Some(v) if *v.get_ref() == 0 => cx
            .problem(v.span(), "`limits.cpu_threads` must be at least 1".into())
            .unwrap_or(1),
        Some(v) => *v.get_ref() as usize,
        None => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2),
    };

    let journal_limit = match &raw.limits.journal_size {
        Some(v) => match crate::backend::options::parse_size("journal_size", v.get_ref()) {
            Ok(n) => n,
            Err(_) => cx
                .problem(
                    v.span(),
                    format!(
                        "`limits.journal_size` = {:?}: write a size like \"1GiB\" or \"500M\" (\"0\" turns journaling off)",
                        v.get_ref()
                    ),
                )
                .unwrap_or(DEFAULT_JOURNAL_LIMIT),
        },
        None => DEFAULT_JOURNAL_LIMIT,
    };

    let mut destinations: Vec<DestinationConfig> = Vec::new();
    if raw.destination.is_empty() {
        cx.problems.push(Problem {
            line: None,
            message:
                "no [[destination]]: add one with `name` and `repo` (a directory or s3:... URL)"
                    .into(),
        });
    }
    for d in &raw.destination {
        let name = d.name.get_ref().clone();
        let valid_name = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !valid_name {
            cx.problem::<()>(
                d.name.span(),
                format!("destination name {name:?} must be letters, digits, '-', '_' or '.' (it labels status and metrics)"),
            );
        } else if destinations.iter().any(|o| o.name == name) {
            cx.problem::<()>(
                d.name.span(),
                format!(
                    "destination name {name:?} is used twice: give each destination its own name"
                ),
            );
        }
        if let Err(e) = parse_location(d.repo.get_ref()) {
            cx.problem::<()>(
                d.repo.span(),
                format!("`repo` of destination {name:?}: {e}"),
            );
        } else if let crate::backend::Location::Local(p) = parse_location(d.repo.get_ref())
            .unwrap_or(crate::backend::Location::Local(PathBuf::new()))
            && !p.is_absolute()
        {
            cx.problem::<()>(
                d.repo.span(),
                format!("`repo` of destination {name:?} is a relative path: write it as an absolute path"),
            );
        }
        let password = cx.password(
            &format!("destination {name:?}: "),
            &d.password_file,
            &d.password_credential,
        );
        let mut backend = BackendOptions::default();
        for (key, value) in &d.options {
            if let Err(e) = backend.apply(&[format!("{key}={}", value.get_ref())]) {
                cx.problem::<()>(value.span(), format!("destination {name:?}: {e}"));
            }
        }
        if let Some(p) = &d.aws_profile {
            backend.profile = Some(p.get_ref().clone());
        }
        if let Some(lock) = &d.object_lock {
            if let Err(e) = backend.apply(&[format!("s3.object-lock={}", lock.get_ref())]) {
                cx.problem::<()>(lock.span(), format!("destination {name:?}: {e}"));
            } else if !d.repo.get_ref().starts_with("s3:") {
                cx.problem::<()>(
                    lock.span(),
                    format!("destination {name:?}: object_lock needs an S3 repository (s3:...)"),
                );
            }
        }
        if let Some(limit) = &d.upload_limit {
            match crate::backend::options::parse_size("upload_limit", limit.get_ref()) {
                Ok(n) if n > 0 => backend.upload_limit = Some(n),
                _ => {
                    cx.problem::<()>(
                        limit.span(),
                        format!(
                            "`upload_limit` = {:?} of destination {name:?}: write bytes per second like \"2MiB\" or \"500K\"",
                            limit.get_ref()
                        ),
                    );
                }
            }
        }
        match (&d.access_key_id, &d.secret_access_key_file) {
            (Some(id), Some(file)) => {
                if let Some(f) = cx.abs_path("secret_access_key_file", file) {
                    match read_secret_line(&f) {
                        Ok(secret) => {
                            backend.access_key_id = Some(id.get_ref().clone());
                            backend.secret_access_key =
                                Some(crate::secret::SecretString::new(secret));
                        }
                        Err(e) => {
                            cx.problem::<()>(file.span(), format!("destination {name:?}: {e}"));
                        }
                    }
                }
            }
            (Some(v), None) | (None, Some(v)) => {
                cx.problem::<()>(
                    v.span(),
                    format!("destination {name:?}: set both `access_key_id` and `secret_access_key_file`, or neither to use the AWS environment"),
                );
            }
            (None, None) => {}
        }
        let upload_concurrency = match &d.upload_concurrency {
            Some(v) if *v.get_ref() == 0 => cx
                .problem(v.span(), "`upload_concurrency` must be at least 1".into())
                .unwrap_or(default_uploads),
            Some(v) => *v.get_ref() as usize,
            None => default_uploads,
        };
        let retention = match &d.retention {
            Some(r) => {
                let policy = cx.retention(&name, r.get_ref());
                if policy.as_ref().is_some_and(|p| p.is_empty()) {
                    cx.problem::<()>(
                        r.span(),
                        format!("destination {name:?}: [retention] keeps nothing in particular: give at least one keep_* rule, or remove the table"),
                    );
                }
                policy
            }
            None => None,
        };
        destinations.push(DestinationConfig {
            name,
            repo: d.repo.get_ref().clone(),
            password,
            backend,
            upload_concurrency,
            retention,
            prune: d.retention.as_ref().is_some_and(|r| r.get_ref().prune),
        });
    }

    let defaults = Schedule::default();
    let schedule = Schedule {
        quiet_period: cx.duration(
            "quiet_period",
            &raw.schedule.quiet_period,
            defaults.quiet_period,
        ),
        min_interval: cx.duration(
            "min_interval",
            &raw.schedule.min_interval,
            defaults.min_interval,
        ),
        max_delay: cx.duration("max_delay", &raw.schedule.max_delay, defaults.max_delay),
        rescan_interval: cx.duration(
            "rescan_interval",
            &raw.schedule.rescan_interval,
            defaults.rescan_interval,
        ),
        retention_interval: cx.duration(
            "retention_interval",
            &raw.schedule.retention_interval,
            defaults.retention_interval,
        ),
        scrub_period: cx.duration(
            "scrub_period",
            &raw.schedule.scrub_period,
            defaults.scrub_period,
        ),
        scrub_interval: cx.duration(
            "scrub_interval",
            &raw.schedule.scrub_interval,
            defaults.scrub_interval,
        ),
    };
    if !schedule.scrub_period.is_zero()
        && schedule.scrub_interval > schedule.scrub_period
        && let Some(v) = &raw.schedule.scrub_interval
    {
        cx.problem::<()>(
            v.span(),
            "`schedule.scrub_interval` is longer than `scrub_period`: make it shorter (each interval reads one slice of the period)".into(),
        );
    }
    if schedule.max_delay < schedule.quiet_period
        && let Some(v) = &raw.schedule.max_delay
    {
        cx.problem::<()>(
            v.span(),
            "`schedule.max_delay` is shorter than `quiet_period`: make it longer (it caps the wait while files keep changing)".into(),
        );
    }
    if schedule.rescan_interval < Duration::from_secs(1)
        && let Some(v) = &raw.schedule.rescan_interval
    {
        cx.problem::<()>(
            v.span(),
            "`schedule.rescan_interval` must be at least 1s".into(),
        );
    }

    let socket = match &raw.control.socket {
        Some(v) => cx.abs_path("control.socket", v),
        None => state_dir.as_ref().map(|s| s.join("cairn.sock")),
    };
    let metrics_listen = match &raw.metrics.listen {
        Some(v) => match v.get_ref().parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => cx.problem(
                v.span(),
                format!(
                    "`metrics.listen` = {:?} is not an address: write it like \"127.0.0.1:9184\"",
                    v.get_ref()
                ),
            ),
        },
        None => None,
    };

    // The daemon's own directories must not contain what it backs up: it writes there
    // constantly (and a local repository inside its own source would back itself up).
    let mut own: Vec<(&str, PathBuf)> = Vec::new();
    if let Some(s) = &state_dir {
        own.push(("state_dir", s.clone()));
    }
    if let Some(c) = &cache_dir {
        own.push(("cache_dir", c.clone()));
    }
    for d in &destinations {
        if let Ok(crate::backend::Location::Local(p)) = parse_location(&d.repo) {
            own.push(("a local destination", p));
        }
    }
    for (s, raw_s) in sources.iter().zip(&raw.source) {
        for p in &s.paths {
            if let Some((what, dir)) = own.iter().find(|(_, dir)| p.starts_with(dir)) {
                cx.problem::<()>(
                    raw_s.paths.span(),
                    format!(
                        "source path {} lies inside {what} ({}): back up a folder outside it, or move {what} elsewhere",
                        p.display(),
                        dir.display()
                    ),
                );
            }
        }
    }

    Some(DaemonConfig {
        file: path.to_path_buf(),
        state_dir: state_dir?,
        cache_dir: cache_dir?,
        password,
        hostname,
        sources,
        destinations,
        schedule,
        cpu_threads,
        journal_limit,
        socket: socket?,
        metrics_listen,
    })
}

/// First line of a secret file, refusing files others can read.
fn read_secret_line(path: &Path) -> Result<String, String> {
    let line = crate::secret::read_secret_file(path, "secret file").map_err(|e| e.to_string())?;
    String::from_utf8(line.to_vec())
        .map(|s| s.trim().to_string())
        .map_err(|_| format!("{} is not UTF-8 text", path.display()))
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

    #[test]
    fn syntax_and_type_errors_have_lines() {
        let p = problems("state_dir = \"/x\"\n[[source]\n");
        assert!(p[0].starts_with("line 2: not valid TOML"), "{p:?}");
        let p = problems(&GOOD.replace("paths = [\"/srv/data\"]", "paths = \"/srv/data\""));
        assert!(p[0].starts_with("line 6:"), "{p:?}");
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

    #[test]
    fn typo_suggestions_stay_plausible() {
        assert_eq!(
            closest("quiet_perod", ["quiet_period", "min_interval"].into_iter()),
            Some("quiet_period")
        );
        assert_eq!(
            closest("zzz", ["quiet_period", "min_interval"].into_iter()),
            None
        );
    }
}
