//! Judging one `[[destination]]`: its name, where it is (parsed once, here, into a
//! [`Location`]), its passphrase source, its storage options (set through
//! [`BackendOptions`]' typed setters), credentials, limits, compression and retention.

use super::judge::Ctx;
use super::raw::{RawDestination, RawRetention};
use super::{DestinationConfig, Problem};
use crate::backend::{BackendOptions, Location, ObjectLock, parse_location};
use crate::compression::CompressionMode;
use std::path::Path;
use toml::Spanned;

/// Every destination of the file; a destination with a problem is left out (its problem
/// is reported, so the file is refused anyway).
pub(super) fn resolve_all(
    cx: &mut Ctx<'_, '_>,
    raw: &[RawDestination],
    default_uploads: usize,
) -> Vec<DestinationConfig> {
    if raw.is_empty() {
        cx.problems.push(Problem {
            line: None,
            message:
                "no [[destination]]: add one with `name` and `repo` (a directory or s3:... URL)"
                    .into(),
        });
    }
    let mut names: Vec<&str> = Vec::new();
    let mut destinations = Vec::new();
    for d in raw {
        // A destination without `name` or `repo` was reported by the schema.
        let (Some(name_key), Some(repo)) = (&d.name, &d.repo) else {
            continue;
        };
        let name = name_key.get_ref();
        let before = cx.problems.len();
        check_name(cx, name_key, names.contains(&name.as_str()));
        names.push(name);
        // A destination with a problem is left out: the file is refused anyway, and
        // `config check` contacts only the destinations that are right.
        if let Some(dest) = resolve_one(cx, d, name_key, repo, default_uploads)
            && cx.problems.len() == before
        {
            destinations.push(dest);
        }
    }
    destinations
}

/// A name labels status and metrics, so it must be plain and unique.
fn check_name(cx: &mut Ctx<'_, '_>, name: &Spanned<String>, taken: bool) {
    let n = name.get_ref();
    let valid = !n.is_empty()
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !valid {
        cx.problem::<()>(
            name.span(),
            format!("destination name {n:?} must be letters, digits, '-', '_' or '.' (it labels status and metrics)"),
        );
    } else if taken {
        cx.problem::<()>(
            name.span(),
            format!("destination name {n:?} is used twice: give each destination its own name"),
        );
    }
}

fn resolve_one(
    cx: &mut Ctx<'_, '_>,
    d: &RawDestination,
    name: &Spanned<String>,
    repo: &Spanned<String>,
    default_uploads: usize,
) -> Option<DestinationConfig> {
    let name = name.get_ref().clone();
    let location = location(cx, &name, repo);
    let password = cx.password(
        &format!("destination {name:?}: "),
        &d.password_file,
        &d.password_credential,
        &d.password_command,
    );
    let backend = storage_options(cx, &name, d, location.as_ref());
    let upload_concurrency = match &d.upload_concurrency {
        Some(v) if *v.get_ref() == 0 => cx
            .problem(v.span(), "`upload_concurrency` must be at least 1".into())
            .unwrap_or(default_uploads),
        Some(v) => *v.get_ref() as usize,
        None => default_uploads,
    };
    let compression =
        d.compression
            .as_ref()
            .and_then(|v| match v.get_ref().parse::<CompressionMode>() {
                Ok(mode) => Some(mode.compression()),
                Err(e) => cx.problem(v.span(), format!("destination {name:?}: {e}")),
            });
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
    Some(DestinationConfig {
        name,
        location: location?,
        password,
        backend,
        upload_concurrency,
        compression,
        retention,
        prune: d.retention.as_ref().is_some_and(|r| r.get_ref().prune),
    })
}

/// The `repo` key, parsed once; a local repository must be an absolute path.
fn location(cx: &mut Ctx<'_, '_>, name: &str, repo: &Spanned<String>) -> Option<Location> {
    match parse_location(repo.get_ref()) {
        Err(e) => cx.problem(repo.span(), format!("`repo` of destination {name:?}: {e}")),
        Ok(Location::Local(p)) if !p.is_absolute() => cx.problem(
            repo.span(),
            format!(
                "`repo` of destination {name:?} is a relative path: write it as an absolute path"
            ),
        ),
        Ok(l) => Some(l),
    }
}

/// The storage stack's settings: the free `options` table, then the keys that have a
/// name of their own (profile, object lock, bandwidth limits, credentials).
fn storage_options(
    cx: &mut Ctx<'_, '_>,
    name: &str,
    d: &RawDestination,
    location: Option<&Location>,
) -> BackendOptions {
    let mut backend = BackendOptions::default();
    for (key, value) in &d.options {
        if let Err(e) = backend.set(key, &value.get_ref().to_string()) {
            cx.problem::<()>(value.span(), format!("destination {name:?}: {e}"));
        }
    }
    if let Some(p) = &d.aws_profile {
        backend.profile = Some(p.get_ref().clone());
    }
    if let Some(lock) = &d.object_lock {
        match ObjectLock::parse(lock.get_ref()) {
            Err(e) => {
                cx.problem::<()>(lock.span(), format!("destination {name:?}: {e}"));
            }
            Ok(_) if location.is_some_and(|l| !l.is_s3()) => {
                cx.problem::<()>(
                    lock.span(),
                    format!("destination {name:?}: object_lock needs an S3 repository (s3:...)"),
                );
            }
            Ok(l) => backend.set_object_lock(l),
        }
    }
    if let Some(n) = rate(cx, name, "upload_limit", &d.upload_limit) {
        backend.upload_limit = Some(n);
    }
    if let Some(n) = rate(cx, name, "download_limit", &d.download_limit) {
        backend.download_limit = Some(n);
    }
    match (&d.access_key_id, &d.secret_access_key_file) {
        (Some(id), Some(file)) => {
            if let Some(f) = cx.abs_path("secret_access_key_file", file) {
                match read_secret_line(&f) {
                    Ok(secret) => {
                        backend.access_key_id = Some(id.get_ref().clone());
                        backend.secret_access_key = Some(crate::secret::SecretString::new(secret));
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
    backend
}

/// A bandwidth limit (`upload_limit`, `download_limit`) in bytes per second; `None` when
/// not given, or unusable (reported).
fn rate(cx: &mut Ctx<'_, '_>, name: &str, key: &str, v: &Option<Spanned<String>>) -> Option<u64> {
    let v = v.as_ref()?;
    match crate::backend::options::parse_size(key, v.get_ref()) {
        Ok(n) if n > 0 => Some(n),
        _ => cx.problem(
            v.span(),
            format!(
                "`{key}` = {:?} of destination {name:?}: write bytes per second like \"2MiB\" or \"500K\"",
                v.get_ref()
            ),
        ),
    }
}

impl Ctx<'_, '_> {
    /// A destination's `[retention]` table as a policy; `None` when a rule is unusable.
    pub(super) fn retention(
        &mut self,
        dest: &str,
        r: &RawRetention,
    ) -> Option<crate::retention::Policy> {
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
}

/// First line of a secret file, refusing files others can read.
fn read_secret_line(path: &Path) -> Result<String, String> {
    let line = crate::secret::read_secret_file(path, "secret file").map_err(|e| e.to_string())?;
    String::from_utf8(line.to_vec())
        .map(|s| s.trim().to_string())
        .map_err(|_| format!("{} is not UTF-8 text", path.display()))
}
