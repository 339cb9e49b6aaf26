//! Judging a configuration's values, section by section (paths, sources, limits,
//! schedule, control, metrics, the daemon's own folders), into the typed model; each
//! `[[destination]]` is judged in [`super::destination`].

use super::destination;
use super::judge::Ctx;
use super::raw::{Lines, RawConfig};
use super::{DEFAULT_JOURNAL_LIMIT, DaemonConfig, PasswordSource, Problem, Schedule, SourceConfig};
use crate::backend::Location;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Judge every value of a file whose keys are known, section by section; `None` when a
/// value the model cannot do without is unusable (its problem is in `problems`).
pub(super) fn resolve(
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
        .password(
            "",
            &raw.password_file,
            &raw.password_credential,
            &raw.password_command,
        )
        .unwrap_or(PasswordSource::Environment);
    let hostname = match &raw.hostname {
        Some(h) if h.get_ref().trim().is_empty() => cx.problem(
            h.span(),
            "`hostname` is empty: remove it to use this machine's name".into(),
        ),
        Some(h) => Some(h.get_ref().clone()),
        None => None,
    };

    if raw.source.is_empty() {
        cx.problems.push(Problem {
            line: None,
            message: "no [[source]]: add one with `paths = [\"/srv/data\"]` naming what to back up"
                .into(),
        });
    }
    let resolved = super::source::resolve_all(&mut cx, &raw.source);
    let sources: Vec<SourceConfig> = resolved.iter().map(|(s, _)| s.clone()).collect();

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

    let destinations = destination::resolve_all(&mut cx, &raw.destination, default_uploads);

    let alerts = super::notify::alert_rules(&mut cx, &raw.alerts);
    let names: Vec<String> = destinations.iter().map(|d| d.name.clone()).collect();
    let notifiers = super::notify::notifiers(&mut cx, &raw.notify, &names);

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
        if let Location::Local(p) = &d.location {
            own.push(("a local destination", p.clone()));
        }
    }
    for (s, span) in &resolved {
        for p in &s.paths {
            if let Some((what, dir)) = own.iter().find(|(_, dir)| p.starts_with(dir)) {
                cx.problem::<()>(
                    span.clone(),
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
        alerts,
        notifiers,
    })
}
