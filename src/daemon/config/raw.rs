//! The configuration file as TOML gives it: the raw tables with their spans (read once
//! [`super::schema`] has taken out every unknown key and mistyped value, so reading them
//! cannot fail; the keys it requires are still `Option` here so that a missing one only
//! leaves its table out), and the typo hints for unknown keys. Nothing here judges
//! values; [`super::resolve`] does.

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
    pub(super) password_command: Option<Spanned<Vec<Spanned<String>>>>,
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
    #[serde(default)]
    pub(super) alerts: RawAlerts,
    #[serde(default)]
    pub(super) notify: Vec<RawNotify>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSource {
    pub(super) paths: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    pub(super) exclude: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) exclude_file: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) iexclude: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) iexclude_file: Vec<Spanned<String>>,
    pub(super) exclude_larger_than: Option<Spanned<String>>,
    pub(super) exclude_caches: Option<Spanned<bool>>,
    #[serde(default)]
    pub(super) exclude_if_present: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) one_file_system: bool,
    #[serde(default)]
    pub(super) tags: Vec<String>,
    #[serde(default)]
    pub(super) allow_root_change: bool,
    pub(super) command: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) filename: Option<Spanned<String>>,
    pub(super) every: Option<Spanned<String>>,
    pub(super) user: Option<Spanned<String>>,
    pub(super) before: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) after: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) on_failure: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) hook_timeout: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDestination {
    pub(super) name: Option<Spanned<String>>,
    pub(super) repo: Option<Spanned<String>>,
    pub(super) password_file: Option<Spanned<String>>,
    pub(super) password_credential: Option<Spanned<String>>,
    pub(super) password_command: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) aws_profile: Option<Spanned<String>>,
    pub(super) access_key_id: Option<Spanned<String>>,
    pub(super) secret_access_key_file: Option<Spanned<String>>,
    pub(super) upload_limit: Option<Spanned<String>>,
    pub(super) download_limit: Option<Spanned<String>>,
    pub(super) upload_concurrency: Option<Spanned<u32>>,
    pub(super) compression: Option<Spanned<String>>,
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

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAlerts {
    pub(super) failing_after: Option<Spanned<String>>,
    pub(super) stale_after: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNotify {
    pub(super) name: Option<Spanned<String>>,
    pub(super) webhook: Option<Spanned<String>>,
    pub(super) healthchecks: Option<Spanned<String>>,
    pub(super) ntfy: Option<Spanned<String>>,
    pub(super) email: Option<Spanned<RawEmail>>,
    #[serde(default)]
    pub(super) headers: BTreeMap<String, Spanned<OptionValue>>,
    pub(super) events: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) destinations: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) ca_file: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEmail {
    pub(super) smtp: Option<Spanned<String>>,
    pub(super) from: Option<Spanned<String>>,
    pub(super) to: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) starttls: Option<Spanned<bool>>,
    pub(super) username: Option<Spanned<String>>,
    pub(super) password_file: Option<Spanned<String>>,
}

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
