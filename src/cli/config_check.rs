//! `cairn config check`: every problem of the file with its line and the fix, then
//! (unless `--offline`) every destination contacted as the daemon will need it, then a
//! summary of what would run: sources, each destination with its retention and prune
//! setting, schedule and local folders. The checks themselves live in the library
//! (`daemon::config` for the file, `daemon::preflight` for the rest).

use super::stdout::outln;
use anyhow::Result;
use cairn::backend::Location;
use cairn::daemon::config::{self, DaemonConfig, PasswordSource};
use cairn::daemon::preflight::{self, Contact, Finding, Level};
use cairn::retention::Policy;
use std::path::Path;

/// Run the check; exit code 0 when nothing would stop the daemon, 1 otherwise.
/// `password_file` is the daemon's command-line override, checked in its place.
pub fn cmd_config_check(path: &Path, password_file: Option<&Path>, offline: bool) -> Result<i32> {
    // The file's own problems first; the destinations it gets right are still checked,
    // so one run reports everything.
    let (cfg, file_error) = config::load_all(path);
    if let Some(e) = &file_error {
        eprintln!("{e}");
    }
    let Some(mut cfg) = cfg else {
        return Ok(1);
    };
    if let Some(p) = password_file {
        cfg.password = PasswordSource::File(p.to_path_buf());
    }
    let mut findings = preflight::local_checks(&cfg, offline);
    let contacts = if offline {
        Vec::new()
    } else {
        if !cfg.destinations.is_empty() {
            eprintln!(
                "contacting {} destination(s) (--offline skips this)...",
                cfg.destinations.len()
            );
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .worker_threads(2)
            .build()?;
        let contacts = rt.block_on(preflight::contact_all(&cfg));
        findings.extend(contacts.iter().flat_map(|c| c.findings.iter().cloned()));
        contacts
    };
    let (problems, warnings): (Vec<&Finding>, Vec<&Finding>) =
        findings.iter().partition(|f| f.level == Level::Problem);
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    if file_error.is_some() && problems.is_empty() {
        return Ok(1);
    }
    if !problems.is_empty() {
        let n = problems.len();
        eprintln!(
            "configuration {} cannot run as it is ({n} {}problem{}):",
            cfg.file.display(),
            if file_error.is_some() { "more " } else { "" },
            if n == 1 { "" } else { "s" }
        );
        for p in &problems {
            eprintln!("  {p}");
        }
        return Ok(1);
    }
    outln!("{}", describe(&cfg, &contacts, offline))?;
    Ok(0)
}

fn describe(cfg: &DaemonConfig, contacts: &[Contact], offline: bool) -> String {
    let mut out = format!("configuration {} is valid\n", cfg.file.display());
    for s in &cfg.sources {
        if let Some(c) = &s.command {
            out.push_str(&format!(
                "  source: {} from `{}`{}, every {}\n",
                s.label(),
                cairn::external::shown(&c.argv),
                c.user
                    .as_ref()
                    .map_or(String::new(), |u| format!(" as user {}", u.name)),
                humantime::format_duration(c.every)
            ));
            continue;
        }
        out.push_str(&format!(
            "  source: {}{}\n",
            s.paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            if s.excludes.is_empty() {
                String::new()
            } else {
                format!(" (excluding {})", s.excludes.describe().join(", "))
            }
        ));
    }
    for d in &cfg.destinations {
        out.push_str(&format!("  destination {}: {}\n", d.name, d.location));
        let reached = contacts
            .iter()
            .find(|c| c.destination == d.name)
            .map(|c| c.reached.as_str())
            .filter(|r| !r.is_empty());
        match (reached, offline) {
            (Some(r), _) => out.push_str(&format!("    {r}\n")),
            (None, true) => out.push_str("    not contacted (--offline)\n"),
            (None, false) => {}
        }
        out.push_str(&format!(
            "    retention: {}\n",
            match &d.retention {
                Some(p) => retention(p),
                None => "none: every snapshot is kept".into(),
            }
        ));
        if d.retention.is_some() {
            out.push_str(if d.prune {
                "    prune: after retention (needs permission to delete objects)\n"
            } else {
                "    prune: off (only snapshot objects are removed; run `cairn prune` to free their data)\n"
            });
        }
        if let Location::Local(dir) = &d.location
            && dir != Path::new("/var/backups/cairn")
        {
            out.push_str(&format!(
                "    under systemd: `systemctl edit cairn`, [Service] {}\n",
                preflight::read_write_paths(dir)
            ));
        }
    }
    let s = &cfg.schedule;
    out.push_str(&format!(
        "  schedule: snapshot {} after the last change (at most {} after the first), at most every {}, full rescan every {}\n",
        humantime::format_duration(s.quiet_period),
        humantime::format_duration(s.max_delay),
        humantime::format_duration(s.min_interval),
        humantime::format_duration(s.rescan_interval)
    ));
    let a = &cfg.alerts;
    let to = if cfg.notifiers.is_empty() {
        "logged only (no [[notify]])".to_string()
    } else {
        format!(
            "sent to {} (`cairn notify test` tries them)",
            cfg.notifiers
                .iter()
                .map(|n| n.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    out.push_str(&format!(
        "  alerts: a destination failing for {}, a source without a snapshot for {}; {to}\n",
        humantime::format_duration(a.failing_after),
        humantime::format_duration(a.stale_after),
    ));
    out.push_str(&format!(
        "  state: {}; cache: {}; control socket: {}",
        cfg.state_dir.display(),
        cfg.cache_dir.display(),
        cfg.socket.display()
    ));
    if let Some(m) = cfg.metrics_listen {
        out.push_str(&format!("; metrics: http://{m}/metrics"));
    }
    out
}

/// A retention policy in a line, rule by rule as the configuration names them.
fn retention(p: &Policy) -> String {
    let mut rules = Vec::new();
    let count = |n: i64| {
        if n == -1 {
            "all".to_string()
        } else {
            n.to_string()
        }
    };
    for (n, what) in [
        (p.last, "last"),
        (p.hourly, "hourly"),
        (p.daily, "daily"),
        (p.weekly, "weekly"),
        (p.monthly, "monthly"),
        (p.yearly, "yearly"),
    ] {
        if n != 0 {
            rules.push(format!("keep_{what} = {}", count(n)));
        }
    }
    for (d, what) in [
        (p.within, "within"),
        (p.within_hourly, "within_hourly"),
        (p.within_daily, "within_daily"),
        (p.within_weekly, "within_weekly"),
        (p.within_monthly, "within_monthly"),
        (p.within_yearly, "within_yearly"),
    ] {
        if d != Default::default() {
            rules.push(format!("keep_{what} = {d}"));
        }
    }
    for tags in &p.tags {
        rules.push(format!("keep_tags = {}", tags.join(",")));
    }
    rules.join(", ")
}
