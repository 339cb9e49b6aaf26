//! Judging `[alerts]` (when a failing destination or a stale source is worth telling)
//! and `[[notify]]` tables (where to tell it: exactly one of `webhook`, `healthchecks`,
//! `ntfy` and `email`, with optional `headers`, `events`, `destinations`, `ca_file`).
//! URLs, mail addresses, event names and files are checked here, with their lines, so
//! a notifier that could never deliver is found by `config check`, not by an outage.

use super::AlertRules;
use super::judge::Ctx;
use super::raw::{RawAlerts, RawEmail, RawNotify};
use crate::notify::channel::{Channel, EmailConfig, NotifierConfig, default_name};
use crate::notify::event::EventKind;
use std::time::Duration;
use toml::Spanned;

/// `[alerts]`, or the defaults.
pub(super) fn alert_rules(cx: &mut Ctx<'_, '_>, raw: &RawAlerts) -> AlertRules {
    let defaults = AlertRules::default();
    let mut at = |key: &str, v: &Option<Spanned<String>>, default: Duration| match v {
        Some(v) => cx
            .duration_at(
                &format!("alerts.{key}"),
                v,
                Duration::from_secs(1),
                "\"15m\" or \"25h\"",
            )
            .unwrap_or(default),
        None => default,
    };
    AlertRules {
        failing_after: at("failing_after", &raw.failing_after, defaults.failing_after),
        stale_after: at("stale_after", &raw.stale_after, defaults.stale_after),
    }
}

/// Every usable `[[notify]]`, named uniquely; `destinations` are the configured
/// destinations' names, which a notifier's `destinations` list must use.
pub(super) fn notifiers(
    cx: &mut Ctx<'_, '_>,
    raw: &[RawNotify],
    destinations: &[String],
) -> Vec<NotifierConfig> {
    let mut out: Vec<NotifierConfig> = Vec::new();
    for n in raw {
        let Some(mut config) = notifier(cx, n, destinations) else {
            continue;
        };
        if out.iter().any(|o| o.name == config.name) {
            match &n.name {
                Some(v) => {
                    cx.problem::<()>(
                        v.span(),
                        format!(
                            "notifier name {:?} is used twice: give each [[notify]] its own",
                            v.get_ref()
                        ),
                    );
                    continue;
                }
                // Two unnamed notifiers to the same host: number the second.
                None => {
                    let base = config.name.clone();
                    let mut i = 2;
                    while out.iter().any(|o| o.name == config.name) {
                        config.name = format!("{base} #{i}");
                        i += 1;
                    }
                }
            }
        }
        out.push(config);
    }
    out
}

fn notifier(
    cx: &mut Ctx<'_, '_>,
    n: &RawNotify,
    destinations: &[String],
) -> Option<NotifierConfig> {
    let given: Vec<(&str, std::ops::Range<usize>)> = [
        ("webhook", n.webhook.as_ref().map(|v| v.span())),
        ("healthchecks", n.healthchecks.as_ref().map(|v| v.span())),
        ("ntfy", n.ntfy.as_ref().map(|v| v.span())),
        ("email", n.email.as_ref().map(|v| v.span())),
    ]
    .into_iter()
    .filter_map(|(k, s)| s.map(|s| (k, s)))
    .collect();
    let span_of_table = n
        .name
        .as_ref()
        .map(|v| v.span())
        .or_else(|| given.first().map(|(_, s)| s.clone()));
    match given.len() {
        1 => {}
        0 => {
            let message = "a [[notify]] names no receiver: add one of webhook = \"https://...\", healthchecks = \"https://hc-ping.com/UUID\", ntfy = \"https://ntfy.sh/TOPIC\" or email = { smtp = \"smtp://mail.example.org:587\", from = \"...\", to = [\"...\"] }".to_string();
            match span_of_table {
                Some(s) => return cx.problem(s, message),
                None => {
                    cx.problems.push(super::Problem {
                        line: None,
                        message,
                    });
                    return None;
                }
            }
        }
        _ => {
            let names: Vec<&str> = given.iter().map(|(k, _)| *k).collect();
            return cx.problem(
                given[1].1.clone(),
                format!(
                    "a [[notify]] has {}: keep one, and give each receiver a [[notify]] of its own",
                    names.join(" and ")
                ),
            );
        }
    }
    let headers = headers(cx, n);
    let channel = if let Some(v) = &n.webhook {
        Channel::Webhook {
            url: url(cx, "webhook", v)?,
            headers: headers?,
        }
    } else if let Some(v) = &n.healthchecks {
        Channel::Healthchecks {
            url: url(cx, "healthchecks", v)?,
        }
    } else if let Some(v) = &n.ntfy {
        let url = url(cx, "ntfy", v)?;
        if url.path().trim_matches('/').is_empty() {
            return cx.problem(
                v.span(),
                "`notify.ntfy` has no topic: write it as \"https://ntfy.sh/YOUR-TOPIC\"".into(),
            );
        }
        Channel::Ntfy {
            url,
            headers: headers?,
        }
    } else if let Some(v) = &n.email {
        Channel::Email(email(cx, v)?)
    } else {
        return None;
    };
    if !n.headers.is_empty()
        && matches!(channel, Channel::Healthchecks { .. } | Channel::Email(_))
        && let Some((_, v)) = n.headers.iter().next()
    {
        cx.problem::<()>(
            v.span(),
            "`notify.headers` applies to webhook and ntfy only: remove it".into(),
        );
    }
    let events = n.events.as_ref().map(|list| {
        list.get_ref()
            .iter()
            .filter_map(|e| match EventKind::parse(e.get_ref()) {
                Some(k) => Some(k),
                None => cx.problem(
                    e.span(),
                    format!(
                        "`notify.events` names {:?}, which is not an event: use {}",
                        e.get_ref(),
                        EventKind::ALL.map(EventKind::name).join(", ")
                    ),
                ),
            })
            .collect::<Vec<_>>()
    });
    let only = n.destinations.as_ref().map(|list| {
        list.get_ref()
            .iter()
            .filter_map(|d| {
                if destinations.contains(d.get_ref()) {
                    Some(d.get_ref().clone())
                } else {
                    cx.problem(
                        d.span(),
                        format!(
                            "`notify.destinations` names {:?}, which is not a configured destination: use one of {}",
                            d.get_ref(),
                            destinations.join(", ")
                        ),
                    )
                }
            })
            .collect::<Vec<_>>()
    });
    let ca_file = match &n.ca_file {
        Some(v) => {
            let p = cx.abs_path("notify.ca_file", v)?;
            if let Err(e) = std::fs::read(&p) {
                return cx.problem(
                    v.span(),
                    format!(
                        "cannot read `notify.ca_file` {}: {e}: give a readable PEM file",
                        p.display()
                    ),
                );
            }
            Some(p)
        }
        None => None,
    };
    let name = match &n.name {
        Some(v) if v.get_ref().trim().is_empty() => {
            return cx.problem(
                v.span(),
                "`notify.name` is empty: remove it or name the notifier".into(),
            );
        }
        Some(v) => v.get_ref().clone(),
        None => default_name(&channel),
    };
    Some(NotifierConfig {
        name,
        channel,
        events,
        destinations: only,
        ca_file,
    })
}

/// `headers`, all strings.
fn headers(cx: &mut Ctx<'_, '_>, n: &RawNotify) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut ok = true;
    for (k, v) in &n.headers {
        match v.get_ref() {
            super::raw::OptionValue::Text(t) => {
                let valid = reqwest::header::HeaderName::from_bytes(k.as_bytes()).is_ok()
                    && reqwest::header::HeaderValue::from_str(t).is_ok();
                if valid {
                    out.push((k.clone(), t.clone()));
                } else {
                    ok = false;
                    cx.problem::<()>(
                        v.span(),
                        format!("`notify.headers` {k:?} is not a valid HTTP header: use a plain name and a value without line breaks"),
                    );
                }
            }
            _ => {
                ok = false;
                cx.problem::<()>(
                    v.span(),
                    format!("`notify.headers.{k}` is a header value: write it in quotes"),
                );
            }
        }
    }
    ok.then_some(out)
}

/// An http(s) URL. The message repeats the scheme and host only: the rest may be a
/// secret.
fn url(cx: &mut Ctx<'_, '_>, key: &str, v: &Spanned<String>) -> Option<reqwest::Url> {
    match reqwest::Url::parse(v.get_ref()) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Some(u),
        Ok(u) => cx.problem(
            v.span(),
            format!(
                "`notify.{key}` is a {} URL: write an http:// or https:// address",
                u.scheme()
            ),
        ),
        Err(e) => cx.problem(
            v.span(),
            format!("`notify.{key}` is not a URL ({e}): write it like \"https://host/path\""),
        ),
    }
}

fn email(cx: &mut Ctx<'_, '_>, v: &Spanned<RawEmail>) -> Option<EmailConfig> {
    let m = v.get_ref();
    let smtp = m.smtp.as_ref()?;
    let starttls = m.starttls.as_ref().map(|s| *s.get_ref());
    let server = match reqwest::Url::parse(smtp.get_ref()) {
        Ok(u) if !u.username().is_empty() || u.password().is_some() => cx.problem(
            smtp.span(),
            "`notify.email.smtp` holds a login: write the server only, and the login as username = \"...\" with password_file = \"...\"".into(),
        ),
        Ok(u) if matches!(u.scheme(), "smtp" | "smtps") && u.host_str().is_some() => Some(u),
        // The value is not repeated: it may hold a password.
        _ => cx.problem(
            smtp.span(),
            "`notify.email.smtp` is not an SMTP server: write \"smtp://host:587\" (STARTTLS) or \"smtps://host:465\" (TLS)".into(),
        ),
    };
    let implicit_tls = server.as_ref().is_some_and(|u| u.scheme() == "smtps");
    if implicit_tls
        && let Some(s) = &m.starttls
        && !*s.get_ref()
    {
        cx.problem::<()>(
            s.span(),
            "`notify.email.starttls = false` with smtps://: smtps is TLS from the start; remove starttls".into(),
        );
    }
    let starttls = !implicit_tls && starttls.unwrap_or(true);
    let mut ok = true;
    let from = m.from.as_ref().map(|f| {
        if let Err(e) = crate::notify::mail::mailbox("notify.email.from", f.get_ref()) {
            ok = false;
            cx.problem::<()>(f.span(), e);
        }
        f.get_ref().clone()
    });
    let to: Vec<String> = m
        .to
        .as_ref()
        .map(|list| {
            list.get_ref()
                .iter()
                .map(|t| {
                    if let Err(e) = crate::notify::mail::mailbox("notify.email.to", t.get_ref()) {
                        ok = false;
                        cx.problem::<()>(t.span(), e);
                    }
                    t.get_ref().clone()
                })
                .collect()
        })
        .unwrap_or_default();
    if let Some(list) = &m.to
        && to.is_empty()
    {
        ok = false;
        cx.problem::<()>(
            list.span(),
            "`notify.email.to` is empty: name at least one recipient".into(),
        );
    }
    let password_file = match &m.password_file {
        Some(p) => {
            let path = cx.abs_path("notify.email.password_file", p)?;
            if let Err(e) = crate::notify::send::read_secret(&path) {
                ok = false;
                cx.problem::<()>(p.span(), e);
            }
            Some(path)
        }
        None => None,
    };
    if let (Some(u), None) = (&m.username, &m.password_file) {
        ok = false;
        cx.problem::<()>(
            u.span(),
            "`notify.email.username` without `password_file`: add password_file = \"/etc/cairn/smtp.password\" (a file holding the SMTP password)".into(),
        );
    }
    if let (Some(p), None) = (&m.password_file, &m.username) {
        ok = false;
        cx.problem::<()>(p.span(), "`notify.email.password_file` without `username`: add username = \"...\" (the SMTP login)".into());
    }
    let server = server?;
    let host = server.host_str()?.trim_matches(['[', ']']).to_string();
    let port = server.port().unwrap_or(match (implicit_tls, starttls) {
        (true, _) => 465,
        (false, true) => 587,
        (false, false) => 25,
    });
    (ok && from.is_some()).then(|| EmailConfig {
        host,
        port,
        implicit_tls,
        starttls,
        from: from.unwrap_or_default(),
        to,
        username: m.username.as_ref().map(|u| u.get_ref().clone()),
        password_file,
    })
}

#[cfg(test)]
mod tests {
    use super::super::parse;
    use crate::notify::channel::Channel;
    use crate::notify::event::EventKind;
    use std::path::Path;
    use std::time::Duration;

    const BASE: &str = "state_dir = \"/var/lib/cairn\"\npassword_file = \"/etc/cairn/passphrase\"\n\n[[source]]\npaths = [\"/srv/data\"]\n\n[[destination]]\nname = \"lan\"\nrepo = \"/mnt/backup/cairn\"\n";

    fn problems(extra: &str) -> Vec<String> {
        parse(Path::new("t.toml"), &format!("{BASE}{extra}"))
            .err()
            .map(|e| e.problems.iter().map(|p| p.to_string()).collect())
            .unwrap_or_default()
    }

    fn has(p: &[String], want: &str) {
        assert!(p.iter().any(|m| m.contains(want)), "{want}\nin {p:#?}");
    }

    #[test]
    fn alerts_and_every_kind_of_notifier_parse() {
        let text = format!(
            "{BASE}\n[alerts]\nfailing_after = \"5m\"\n\n[[notify]]\nwebhook = \"https://hooks.example.org/x/TOKEN\"\nheaders = {{ Authorization = \"Bearer x\" }}\nevents = [\"destination_failing\", \"snapshot_saved\"]\ndestinations = [\"lan\"]\n\n[[notify]]\nhealthchecks = \"https://hc-ping.com/uuid\"\n\n[[notify]]\nntfy = \"https://ntfy.sh/backups\"\n\n[[notify]]\nname = \"ops\"\nemail = {{ smtp = \"smtps://mail.example.org\", from = \"cairn@example.org\", to = [\"ops@example.org\"] }}\n"
        );
        let c = parse(Path::new("t.toml"), &text).expect("valid");
        assert_eq!(c.alerts.failing_after, Duration::from_secs(300));
        assert_eq!(c.alerts.stale_after, Duration::from_secs(25 * 3600));
        let names: Vec<&str> = c.notifiers.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "webhook hooks.example.org",
                "healthchecks hc-ping.com",
                "ntfy ntfy.sh",
                "ops"
            ]
        );
        assert_eq!(
            c.notifiers[0].events.as_deref(),
            Some(&[EventKind::DestinationFailing, EventKind::SnapshotSaved][..])
        );
        let Channel::Email(m) = &c.notifiers[3].channel else {
            panic!("email")
        };
        assert_eq!((m.port, m.implicit_tls, m.starttls), (465, true, false));
    }

    #[test]
    fn a_notifier_with_no_receiver_or_two_is_refused_with_the_fix() {
        has(
            &problems("\n[[notify]]\nname = \"x\"\n"),
            "names no receiver: add one of webhook",
        );
        has(
            &problems("\n[[notify]]\nwebhook = \"https://a/\"\nntfy = \"https://b/t\"\n"),
            "has webhook and ntfy: keep one",
        );
    }

    #[test]
    fn bad_values_are_named_without_repeating_secrets() {
        let p = problems(
            "\n[[notify]]\nwebhook = \"ftp://host/SECRET\"\n\n[[notify]]\nntfy = \"https://ntfy.sh/\"\n\n[[notify]]\nhealthchecks = \"https://hc/x\"\nevents = [\"destination_failed\"]\ndestinations = [\"wan\"]\nheaders = { A = \"b\" }\n",
        );
        has(&p, "`notify.webhook` is a ftp URL");
        assert!(p.iter().all(|m| !m.contains("SECRET")), "{p:#?}");
        has(&p, "`notify.ntfy` has no topic");
        has(&p, "\"destination_failed\", which is not an event");
        has(&p, "\"wan\", which is not a configured destination");
        has(&p, "`notify.headers` applies to webhook and ntfy only");
    }

    #[test]
    fn mail_settings_are_checked() {
        let p = problems(
            "\n[[notify]]\nemail = { smtp = \"http://mail\", from = \"not an address\", to = [] }\n",
        );
        has(&p, "is not an SMTP server");
        let q = problems(
            "\n[[notify]]\nemail = { smtp = \"smtp://me:PW@mail\", from = \"a@b.c\", to = [\"a@b.c\"], username = \"me\" }\n",
        );
        has(&q, "holds a login");
        has(&q, "without `password_file`");
        assert!(q.iter().all(|m| !m.contains("PW")), "{q:#?}");
        has(&p, "is not a mail address");
        has(&p, "`notify.email.to` is empty");
        let p = problems(
            "\n[[notify]]\nemail = { smtp = \"smtp://mail\", to = [\"a@b.c\"], password_file = \"/nonexistent/pw\" }\n",
        );
        has(&p, "`notify.email` has no `from`");
        has(&p, "cannot read password_file /nonexistent/pw");
        has(&p, "without `username`");
        let p = problems("\n[alerts]\nstale_after = \"0s\"\n");
        has(&p, "`alerts.stale_after` = \"0s\" is shorter than 1s");
    }
}
