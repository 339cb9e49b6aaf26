//! The configuration file as TOML gives it: the raw tables with their spans, the key
//! schema every table is checked against, and the typo hints for unknown keys. Nothing
//! here judges values; [`super::resolve`] does.

use super::Problem;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) state_dir: Option<Spanned<String>>,
    pub(super) cache_dir: Option<Spanned<String>>,
    pub(super) password_file: Option<Spanned<String>>,
    pub(super) password_credential: Option<Spanned<String>>,
    pub(super) hostname: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) source: Vec<RawSource>,
    #[serde(default)]
    pub(super) destination: Vec<RawDestination>,
    #[serde(default)]
    pub(super) schedule: RawSchedule,
    #[serde(default)]
    pub(super) limits: RawLimits,
    #[serde(default)]
    pub(super) control: RawControl,
    #[serde(default)]
    pub(super) metrics: RawMetrics,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSource {
    pub(super) paths: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    pub(super) exclude: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) one_file_system: bool,
    #[serde(default)]
    pub(super) tags: Vec<String>,
    #[serde(default)]
    pub(super) allow_root_change: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDestination {
    pub(super) name: Spanned<String>,
    pub(super) repo: Spanned<String>,
    pub(super) password_file: Option<Spanned<String>>,
    pub(super) password_credential: Option<Spanned<String>>,
    pub(super) aws_profile: Option<Spanned<String>>,
    pub(super) access_key_id: Option<Spanned<String>>,
    pub(super) secret_access_key_file: Option<Spanned<String>>,
    pub(super) upload_limit: Option<Spanned<String>>,
    pub(super) upload_concurrency: Option<Spanned<u32>>,
    pub(super) object_lock: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) options: BTreeMap<String, Spanned<OptionValue>>,
    pub(super) retention: Option<Spanned<RawRetention>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRetention {
    pub(super) keep_last: Option<Spanned<i64>>,
    pub(super) keep_hourly: Option<Spanned<i64>>,
    pub(super) keep_daily: Option<Spanned<i64>>,
    pub(super) keep_weekly: Option<Spanned<i64>>,
    pub(super) keep_monthly: Option<Spanned<i64>>,
    pub(super) keep_yearly: Option<Spanned<i64>>,
    pub(super) keep_within: Option<Spanned<String>>,
    pub(super) keep_within_hourly: Option<Spanned<String>>,
    pub(super) keep_within_daily: Option<Spanned<String>>,
    pub(super) keep_within_weekly: Option<Spanned<String>>,
    pub(super) keep_within_monthly: Option<Spanned<String>>,
    pub(super) keep_within_yearly: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) keep_tags: Vec<String>,
    #[serde(default)]
    pub(super) prune: bool,
}

#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum OptionValue {
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
pub(super) struct RawSchedule {
    pub(super) quiet_period: Option<Spanned<String>>,
    pub(super) min_interval: Option<Spanned<String>>,
    pub(super) max_delay: Option<Spanned<String>>,
    pub(super) rescan_interval: Option<Spanned<String>>,
    pub(super) retention_interval: Option<Spanned<String>>,
    pub(super) scrub_period: Option<Spanned<String>>,
    pub(super) scrub_interval: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    pub(super) cpu_threads: Option<Spanned<u32>>,
    pub(super) upload_concurrency: Option<Spanned<u32>>,
    pub(super) journal_size: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawControl {
    pub(super) socket: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    pub(super) listen: Option<Spanned<String>>,
}

/// The keys each table accepts; `None` marks a table whose keys are free (checked by
/// value instead).
pub(super) enum Shape {
    Table(&'static [(&'static str, Shape)]),
    ArrayOfTables(&'static [(&'static str, Shape)]),
    Free,
    Value,
}

pub(super) const SOURCE_KEYS: &[(&str, Shape)] = &[
    ("paths", Shape::Value),
    ("exclude", Shape::Value),
    ("one_file_system", Shape::Value),
    ("tags", Shape::Value),
    ("allow_root_change", Shape::Value),
];
pub(super) const DESTINATION_KEYS: &[(&str, Shape)] = &[
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
pub(super) const RETENTION_KEYS: &[(&str, Shape)] = &[
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
pub(super) const SCHEDULE_KEYS: &[(&str, Shape)] = &[
    ("quiet_period", Shape::Value),
    ("min_interval", Shape::Value),
    ("max_delay", Shape::Value),
    ("rescan_interval", Shape::Value),
    ("retention_interval", Shape::Value),
    ("scrub_period", Shape::Value),
    ("scrub_interval", Shape::Value),
];
pub(super) const LIMITS_KEYS: &[(&str, Shape)] = &[
    ("cpu_threads", Shape::Value),
    ("upload_concurrency", Shape::Value),
    ("journal_size", Shape::Value),
];
pub(super) const CONTROL_KEYS: &[(&str, Shape)] = &[("socket", Shape::Value)];
pub(super) const METRICS_KEYS: &[(&str, Shape)] = &[("listen", Shape::Value)];
pub(super) const TOP_KEYS: &[(&str, Shape)] = &[
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
pub(super) struct Lines<'a>(pub(super) &'a str);

impl Lines<'_> {
    /// The line of a byte offset.
    pub(super) fn of(&self, offset: usize) -> usize {
        let end = offset.min(self.0.len());
        self.0.as_bytes()[..end]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1
    }
}

pub(super) fn check_keys(
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
pub(super) fn closest<'a>(name: &str, known: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    known
        .map(|k| (edit_distance(name, k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

pub(super) fn edit_distance(a: &str, b: &str) -> usize {
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

#[cfg(test)]
mod tests {
    use super::*;

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
