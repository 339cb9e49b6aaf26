//! The key schema of the configuration file: every table's keys, the type each value
//! must have and which keys are required. The file's TOML document is checked against
//! it before any value is judged, so that one run reports every unknown key (with the
//! nearest known one), every missing key and every value of the wrong type (naming the
//! key and the form to write), instead of stopping at the first error serde meets. A
//! value found unusable here is taken out of the document, so the typed pass that
//! follows ([`super::raw`]) cannot fail on it and still judges everything else.

use super::Problem;
use super::raw::{Lines, closest};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// The type a key's value must have; the text is the example shown in the fix when the
/// value given cannot be turned into one.
#[derive(Clone, Copy)]
pub(super) enum Ty {
    /// A string (a path, a name, an address).
    Text(&'static str),
    /// A string holding a duration ("2s", "1h 30m").
    Duration(&'static str),
    /// A string holding a calendar duration as retention writes it ("2d", "1y6m").
    Calendar(&'static str),
    /// A string holding a size ("1GiB").
    Size(&'static str),
    /// A whole number from 0 to 2^32-1.
    Count(&'static str),
    /// A whole number, negative allowed (retention's -1).
    Int(&'static str),
    /// `true` or `false`.
    Bool,
    /// A list of strings.
    TextList(&'static str),
    /// A table with these keys.
    Table(&'static [Key]),
    /// A list of tables (`[[name]]`) with these keys.
    Tables(&'static [Key]),
    /// A table of free keys whose values are strings, numbers or booleans (`options`).
    Options,
}

/// One key a table accepts.
pub(super) struct Key {
    pub(super) name: &'static str,
    pub(super) ty: Ty,
    pub(super) required: bool,
}

const fn key(name: &'static str, ty: Ty) -> Key {
    Key {
        name,
        ty,
        required: false,
    }
}

const fn required(name: &'static str, ty: Ty) -> Key {
    Key {
        name,
        ty,
        required: true,
    }
}

// A source has `paths` or `command` (one of them, judged in `source`).
const SOURCE: &[Key] = &[
    key("paths", Ty::TextList("/srv/data")),
    key("exclude", Ty::TextList("*.tmp")),
    key("exclude_file", Ty::TextList("/etc/cairn/excludes.txt")),
    key("iexclude", Ty::TextList("*.jpg")),
    key("iexclude_file", Ty::TextList("/etc/cairn/iexcludes.txt")),
    key("exclude_larger_than", Ty::Size("1G")),
    key("exclude_caches", Ty::Bool),
    key("exclude_if_present", Ty::TextList(".nobackup")),
    key("one_file_system", Ty::Bool),
    key("tags", Ty::TextList("daily")),
    key("allow_root_change", Ty::Bool),
    key("command", Ty::TextList("pg_dump")),
    key("filename", Ty::Text("app.dump")),
    key("every", Ty::Duration("1h")),
    key("user", Ty::Text("postgres")),
    key("before", Ty::TextList("/usr/local/bin/prepare")),
    key("after", Ty::TextList("/usr/local/bin/cleanup")),
    key("on_failure", Ty::TextList("/usr/local/bin/alert")),
    key("hook_timeout", Ty::Duration("5m")),
];
const DESTINATION: &[Key] = &[
    required("name", Ty::Text("offsite")),
    required("repo", Ty::Text("/var/backups/cairn")),
    key("password_file", Ty::Text("/etc/cairn/passphrase")),
    key("password_credential", Ty::Text("cairn-passphrase")),
    key("password_command", Ty::TextList("pass")),
    key("aws_profile", Ty::Text("default")),
    key("access_key_id", Ty::Text("AKIAIOSFODNN7EXAMPLE")),
    key("secret_access_key_file", Ty::Text("/etc/cairn/s3.secret")),
    key("upload_limit", Ty::Size("20MiB")),
    key("download_limit", Ty::Size("50MiB")),
    key("upload_concurrency", Ty::Count("4")),
    key("compression", Ty::Text("max")),
    key("object_lock", Ty::Text("governance:30d")),
    key("options", Ty::Options),
    key("retention", Ty::Table(RETENTION)),
];
const RETENTION: &[Key] = &[
    key("keep_last", Ty::Int("10")),
    key("keep_hourly", Ty::Int("24")),
    key("keep_daily", Ty::Int("14")),
    key("keep_weekly", Ty::Int("8")),
    key("keep_monthly", Ty::Int("12")),
    key("keep_yearly", Ty::Int("-1")),
    key("keep_within", Ty::Calendar("2d")),
    key("keep_within_hourly", Ty::Calendar("2d")),
    key("keep_within_daily", Ty::Calendar("1m")),
    key("keep_within_weekly", Ty::Calendar("6m")),
    key("keep_within_monthly", Ty::Calendar("2y")),
    key("keep_within_yearly", Ty::Calendar("10y")),
    key("keep_tags", Ty::TextList("important")),
    key("prune", Ty::Bool),
];
const SCHEDULE: &[Key] = &[
    key("quiet_period", Ty::Duration("2s")),
    key("min_interval", Ty::Duration("10s")),
    key("max_delay", Ty::Duration("5m")),
    key("rescan_interval", Ty::Duration("1h")),
    key("retention_interval", Ty::Duration("1h")),
    key("scrub_period", Ty::Duration("30d")),
    key("scrub_interval", Ty::Duration("1d")),
];
const LIMITS: &[Key] = &[
    key("cpu_threads", Ty::Count("2")),
    key("upload_concurrency", Ty::Count("4")),
    key("journal_size", Ty::Size("1GiB")),
];
const CONTROL: &[Key] = &[key("socket", Ty::Text("/run/cairn/control.sock"))];
const METRICS: &[Key] = &[key("listen", Ty::Text("127.0.0.1:9184"))];
const ALERTS: &[Key] = &[
    key("failing_after", Ty::Duration("15m")),
    key("stale_after", Ty::Duration("25h")),
];
// A notifier has exactly one of webhook, healthchecks, ntfy and email (judged in
// `notify`).
const NOTIFY: &[Key] = &[
    key("name", Ty::Text("ops")),
    key("webhook", Ty::Text("https://hooks.example.org/cairn")),
    key("healthchecks", Ty::Text("https://hc-ping.com/YOUR-UUID")),
    key("ntfy", Ty::Text("https://ntfy.sh/YOUR-TOPIC")),
    key("email", Ty::Table(EMAIL)),
    key("headers", Ty::Options),
    key("events", Ty::TextList("destination_failing")),
    key("destinations", Ty::TextList("offsite")),
    key("ca_file", Ty::Text("/etc/cairn/notify-ca.pem")),
];
const EMAIL: &[Key] = &[
    required("smtp", Ty::Text("smtp://mail.example.org:587")),
    required("from", Ty::Text("cairn@example.org")),
    required("to", Ty::TextList("ops@example.org")),
    key("starttls", Ty::Bool),
    key("username", Ty::Text("cairn")),
    key("password_file", Ty::Text("/etc/cairn/smtp.password")),
];

/// The keys of the whole file.
pub(super) const TOP: &[Key] = &[
    key("state_dir", Ty::Text("/var/lib/cairn")),
    key("cache_dir", Ty::Text("/var/cache/cairn")),
    key("password_file", Ty::Text("/etc/cairn/passphrase")),
    key("password_credential", Ty::Text("cairn-passphrase")),
    key("password_command", Ty::TextList("pass")),
    key("hostname", Ty::Text("web-1")),
    key("source", Ty::Tables(SOURCE)),
    key("destination", Ty::Tables(DESTINATION)),
    key("schedule", Ty::Table(SCHEDULE)),
    key("limits", Ty::Table(LIMITS)),
    key("control", Ty::Table(CONTROL)),
    key("metrics", Ty::Table(METRICS)),
    key("alerts", Ty::Table(ALERTS)),
    key("notify", Ty::Tables(NOTIFY)),
];

/// Check `table` against `keys`, reporting every unknown key, missing required key and
/// value of the wrong type, and removing the unknown and mistyped entries so that the
/// typed pass sees only what it can read. `prefix` names the table (`destination.`);
/// `at` is where the table starts, for a missing key's line.
pub(super) fn check(
    table: &mut DeTable<'_>,
    keys: &[Key],
    prefix: &str,
    at: Option<usize>,
    lines: &Lines<'_>,
    out: &mut Vec<Problem>,
) {
    let mut unusable: Vec<String> = Vec::new();
    for (k, v) in table.iter_mut() {
        let name: &str = k.get_ref().as_ref();
        match keys.iter().find(|key| key.name == name) {
            None => {
                out.push(unknown(name, prefix, keys, lines.of(k.span().start)));
                unusable.push(name.to_string());
            }
            Some(key) => {
                let mut cx = Value {
                    name,
                    full: format!("{prefix}{name}"),
                    lines,
                    out: &mut *out,
                };
                if !cx.check(v, key.ty) {
                    unusable.push(name.to_string());
                }
            }
        }
    }
    for name in &unusable {
        table.remove(name.as_str());
    }
    // A source is either watched paths or a command: one of the two must be there.
    if prefix == "source." {
        let has = |name: &str| {
            table.iter().any(|(k, _)| k.get_ref().as_ref() == name)
                || unusable.iter().any(|u| u == name)
        };
        if !has("paths") && !has("command") {
            out.push(Problem {
                line: at.map(|a| lines.of(a)),
                message: "[[source]] has neither `paths` nor `command`: add paths = [\"/srv/data\"] to back up folders, or command = [\"pg_dump\", \"-Fc\", \"app\"] with filename = \"app.dump\" to store a command's output".into(),
            });
        }
    }
    for key in keys.iter().filter(|k| k.required) {
        let present = table.iter().any(|(k, _)| k.get_ref().as_ref() == key.name)
            || unusable.iter().any(|u| u == key.name);
        if !present {
            let table_name = prefix.trim_end_matches('.');
            let table_name = if table_name.contains('.') {
                format!("`{table_name}`")
            } else {
                format!("[[{table_name}]]")
            };
            out.push(Problem {
                line: at.map(|a| lines.of(a)),
                message: format!(
                    "{table_name} has no `{}`: add {} = {}",
                    key.name,
                    key.name,
                    example(key.ty)
                ),
            });
        }
    }
}

/// An unknown key, with the nearest known one as a typo hint, or the list of known ones.
fn unknown(name: &str, prefix: &str, keys: &[Key], line: usize) -> Problem {
    let mut message = format!("unknown key `{prefix}{name}`");
    match closest(name, keys.iter().map(|k| k.name)) {
        Some(s) => message.push_str(&format!(": did you mean `{prefix}{s}`?")),
        None => message.push_str(&format!(
            ": remove it (known here: {})",
            keys.iter()
                .map(|k| format!("`{}`", k.name))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
    Problem {
        line: Some(line),
        message,
    }
}

/// How a value of this type is written, for a fix that has nothing better to go on.
fn example(ty: Ty) -> String {
    match ty {
        Ty::Text(e) | Ty::Duration(e) | Ty::Calendar(e) | Ty::Size(e) => format!("{e:?}"),
        Ty::Count(e) | Ty::Int(e) => e.to_string(),
        Ty::Bool => "true".into(),
        Ty::TextList(e) => format!("[{e:?}]"),
        Ty::Table(_) | Ty::Tables(_) => "a table".into(),
        Ty::Options => "{ \"s3.region\" = \"us-east-1\" }".into(),
    }
}

/// One value being checked: its key, for messages, and where problems go.
struct Value<'a, 'b, 'c> {
    name: &'a str,
    full: String,
    lines: &'b Lines<'c>,
    out: &'b mut Vec<Problem>,
}

impl Value<'_, '_, '_> {
    /// Whether `v` has type `ty` (tables are checked inside too); reports it if not.
    fn check(&mut self, v: &mut Spanned<DeValue<'_>>, ty: Ty) -> bool {
        let span = v.span();
        match (ty, v.get_mut()) {
            (Ty::Text(_) | Ty::Duration(_) | Ty::Calendar(_) | Ty::Size(_), DeValue::String(_)) => {
                true
            }
            (Ty::Bool, DeValue::Boolean(_)) => true,
            (Ty::Int(_), DeValue::Integer(i)) if integer(i).is_some() => true,
            (Ty::Count(_), DeValue::Integer(i)) => match integer(i) {
                Some(n) if u32::try_from(n).is_ok() => true,
                _ => self.wrong(span, "a whole number from 0 to 4294967295", ty),
            },
            (Ty::TextList(_), DeValue::Array(a)) => {
                if a.iter()
                    .all(|item| matches!(item.get_ref(), DeValue::String(_)))
                {
                    true
                } else {
                    self.wrong(span, "a list of strings in quotes", ty)
                }
            }
            (Ty::Table(keys), DeValue::Table(t)) => {
                check(
                    t,
                    keys,
                    &format!("{}.", self.full),
                    Some(span.start),
                    self.lines,
                    self.out,
                );
                true
            }
            (Ty::Tables(keys), DeValue::Array(a))
                if a.iter().all(|i| matches!(i.get_ref(), DeValue::Table(_))) =>
            {
                for item in a.iter_mut() {
                    let at = item.span().start;
                    if let DeValue::Table(t) = item.get_mut() {
                        check(
                            t,
                            keys,
                            &format!("{}.", self.full),
                            Some(at),
                            self.lines,
                            self.out,
                        );
                    }
                }
                true
            }
            (Ty::Options, DeValue::Table(t)) => {
                let mut unusable = Vec::new();
                for (k, item) in t.iter() {
                    if !matches!(
                        item.get_ref(),
                        DeValue::String(_) | DeValue::Integer(_) | DeValue::Boolean(_)
                    ) {
                        let name: &str = k.get_ref().as_ref();
                        self.out.push(Problem {
                            line: Some(self.lines.of(item.span().start)),
                            message: format!(
                                "option {name:?} in {} is a string, a number or true/false: write {name:?} = \"...\"",
                                self.full
                            ),
                        });
                        unusable.push(name.to_string());
                    }
                }
                for name in &unusable {
                    t.remove(name.as_str());
                }
                true
            }
            (Ty::Int(_), _) => self.wrong(span, "a number", ty),
            (Ty::Count(_), _) => self.wrong(span, "a number", ty),
            (Ty::Text(_), _) => self.wrong(span, "text in quotes", ty),
            (Ty::Duration(_) | Ty::Calendar(_), _) => self.wrong(span, "a duration in quotes", ty),
            (Ty::Size(_), _) => self.wrong(span, "a size in quotes", ty),
            (Ty::Bool, _) => self.wrong(span, "true or false", ty),
            (Ty::TextList(_), _) => self.wrong(span, "a list of strings", ty),
            (Ty::Options, _) => self.wrong(span, "a table of options", ty),
            (Ty::Table(_), _) => self.wrong(span, "a table", ty),
            (Ty::Tables(_), _) => self.wrong(span, "a list of tables", ty),
        }
    }

    /// Report a value of the wrong type: what the key is, and the line to write instead,
    /// made from the value given where it can be (`"20"` for a number becomes `20`).
    fn wrong(&mut self, span: std::ops::Range<usize>, what: &str, ty: Ty) -> bool {
        let given = self.lines.0.get(span.clone()).unwrap_or_default().trim();
        let unquoted = given.trim_matches(|c| c == '"' || c == '\'').trim();
        let name = self.name;
        let fix = match ty {
            Ty::Int(_) | Ty::Count(_) => match unquoted.parse::<i64>() {
                Ok(n) => format!("write {name} = {n}"),
                Err(_) => format!("write {name} = {}", example(ty)),
            },
            Ty::Bool => match unquoted {
                "true" | "false" => format!("write {name} = {unquoted}"),
                _ => format!("write {name} = true (or false)"),
            },
            Ty::Duration(e) => match unquoted.parse::<u64>() {
                Ok(n) => format!("write {name} = \"{n}s\" (a number with its unit)"),
                Err(_) => format!("write {name} = {e:?}"),
            },
            Ty::Calendar(e) => match unquoted.parse::<u64>() {
                Ok(n) => format!("write {name} = \"{n}d\" (y, m, d or h after each number)"),
                Err(_) => format!("write {name} = {e:?}"),
            },
            Ty::Text(_) | Ty::Size(_) if is_scalar(given) => {
                format!("write {name} = {unquoted:?}")
            }
            Ty::TextList(_) if given.starts_with('"') || given.starts_with('\'') => {
                format!("write {name} = [{unquoted:?}]")
            }
            Ty::Table(_) => format!(
                "write [{}] on a line of its own, with its keys on the lines below",
                self.full
            ),
            Ty::Tables(_) => format!(
                "write [[{}]] on a line of its own for each one, with its keys on the lines below",
                self.full
            ),
            _ => format!("write {name} = {}", example(ty)),
        };
        self.out.push(Problem {
            line: Some(self.lines.of(span.start)),
            message: format!("{} is {what}: {fix}", self.full),
        });
        false
    }
}

/// A TOML integer's value, if it fits an `i64`.
fn integer(i: &toml::de::DeInteger<'_>) -> Option<i64> {
    i64::from_str_radix(i.as_str(), i.radix()).ok()
}

/// Whether source text is a single scalar (not an array or table).
fn is_scalar(given: &str) -> bool {
    !given.is_empty() && !given.starts_with('[') && !given.starts_with('{')
}
