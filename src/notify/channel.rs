//! The notifiers a configuration names, and what each one sends for an event: a pure
//! function from (notifier, event) to the request or mail to make, so the wording, the
//! healthchecks endpoints and the ntfy headers are tested without a network. Sending
//! is in [`super::send`].

use super::event::{Event, EventKind, Tone};
use std::path::PathBuf;

/// Where one notifier delivers.
#[derive(Clone, Debug, PartialEq)]
pub enum Channel {
    /// POST the event as JSON to `url`, with extra `headers` (an `Authorization`, say).
    Webhook {
        /// Receiver.
        url: reqwest::Url,
        /// Extra request headers (values are secrets: never logged).
        headers: Vec<(String, String)>,
    },
    /// The healthchecks.io ping protocol: `url/start` when a snapshot starts, `url` on
    /// success, `url/fail` (with the error as the body) on trouble.
    Healthchecks {
        /// The check's ping URL (its path is the secret).
        url: reqwest::Url,
    },
    /// An ntfy message to `url` (server and topic), with title, priority and tags.
    Ntfy {
        /// Server and topic, `https://ntfy.sh/TOPIC`.
        url: reqwest::Url,
        /// Extra request headers (an access token, as `Authorization`).
        headers: Vec<(String, String)>,
    },
    /// A plain-text mail through an SMTP server.
    Email(EmailConfig),
}

/// A mail notifier's server and addresses.
#[derive(Clone, Debug, PartialEq)]
pub struct EmailConfig {
    /// SMTP server host.
    pub host: String,
    /// Its port (587 for `smtp://` with STARTTLS, 25 without, 465 for `smtps://`).
    pub port: u16,
    /// `smtps://`: TLS from the first byte.
    pub implicit_tls: bool,
    /// With `smtp://`: insist on STARTTLS (refuse to send in the clear).
    pub starttls: bool,
    /// Sender address.
    pub from: String,
    /// Recipients.
    pub to: Vec<String>,
    /// SMTP login, if the server wants one.
    pub username: Option<String>,
    /// File holding the SMTP password (read at each delivery, never logged).
    pub password_file: Option<PathBuf>,
}

/// One `[[notify]]` table, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct NotifierConfig {
    /// How logs, metrics and `status` name it: its `name`, or the kind and the host it
    /// delivers to (never a URL's path or query, which may hold a token).
    pub name: String,
    /// Where it delivers.
    pub channel: Channel,
    /// The events it wants (`None`: its kind's default, see [`NotifierConfig::wants`]).
    pub events: Option<Vec<EventKind>>,
    /// The destinations whose events it wants (`None`: all).
    pub destinations: Option<Vec<String>>,
    /// Extra PEM certificates to trust (a private CA of a self-hosted receiver).
    pub ca_file: Option<PathBuf>,
}

impl NotifierConfig {
    /// The kind's word, as configurations write it.
    pub fn kind(&self) -> &'static str {
        match self.channel {
            Channel::Webhook { .. } => "webhook",
            Channel::Healthchecks { .. } => "healthchecks",
            Channel::Ntfy { .. } => "ntfy",
            Channel::Email(_) => "email",
        }
    }

    /// Whether this notifier gets `event`. A `test` always goes through; otherwise the
    /// `events` and `destinations` lists decide, and without `events` a healthchecks
    /// notifier follows snapshots (start, success, failure) while the others get the
    /// alerts.
    pub fn wants(&self, event: &Event) -> bool {
        if event.event == EventKind::Test {
            return true;
        }
        if let (Some(only), Some(d)) = (&self.destinations, &event.destination)
            && !only.contains(d)
        {
            return false;
        }
        match (&self.events, &self.channel) {
            (Some(list), _) => list.contains(&event.event),
            (None, Channel::Healthchecks { .. }) => matches!(
                event.event,
                EventKind::SnapshotStarted | EventKind::SnapshotSaved | EventKind::SnapshotFailed
            ),
            (None, _) => event.event.is_alert(),
        }
    }
}

/// The name a notifier is shown by when it has none: its kind and the host (and port)
/// it delivers to.
pub fn default_name(channel: &Channel) -> String {
    let at = |url: &reqwest::Url| match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        (None, _) => "?".to_string(),
    };
    match channel {
        Channel::Webhook { url, .. } => format!("webhook {}", at(url)),
        Channel::Healthchecks { url } => format!("healthchecks {}", at(url)),
        Channel::Ntfy { url, .. } => format!("ntfy {}", at(url)),
        Channel::Email(m) => format!("email {}:{}", m.host, m.port),
    }
}

/// One HTTP request a notifier makes.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpRequest {
    /// `GET` or `POST`.
    pub method: &'static str,
    /// Where to (holds the notifier's secrets: never logged).
    pub url: reqwest::Url,
    /// Headers, the configured ones last.
    pub headers: Vec<(String, String)>,
    /// The body (empty for a GET).
    pub body: Vec<u8>,
}

/// Largest body a healthchecks ping carries (its servers keep the first 100 kB).
const PING_BODY_LIMIT: usize = 10_000;

/// The request an HTTP notifier makes for `event`; `None` when the channel has nothing
/// to say about it (or is not HTTP).
pub fn http_request(channel: &Channel, event: &Event) -> Option<HttpRequest> {
    match channel {
        Channel::Webhook { url, headers } => {
            let body = serde_json::to_vec(event).ok()?;
            let mut h = vec![("content-type".to_string(), "application/json".to_string())];
            h.extend(headers.iter().cloned());
            Some(HttpRequest {
                method: "POST",
                url: url.clone(),
                headers: h,
                body,
            })
        }
        Channel::Healthchecks { url } => {
            let (suffix, method) = match event.event.tone() {
                Tone::Start => (Some("start"), "GET"),
                Tone::Good => (None, "POST"),
                Tone::Trouble | Tone::Warning => (Some("fail"), "POST"),
            };
            let mut url = url.clone();
            if let Some(s) = suffix {
                let path = format!("{}/{s}", url.path().trim_end_matches('/'));
                url.set_path(&path);
            }
            let mut body = if method == "POST" {
                event.text().into_bytes()
            } else {
                Vec::new()
            };
            body.truncate(PING_BODY_LIMIT);
            Some(HttpRequest {
                method,
                url,
                headers: vec![("content-type".into(), "text/plain; charset=utf-8".into())],
                body,
            })
        }
        Channel::Ntfy { url, headers } => {
            let (priority, tags) = match event.event.tone() {
                Tone::Trouble => ("urgent", "rotating_light"),
                Tone::Warning => ("high", "warning"),
                Tone::Good => ("default", "white_check_mark"),
                Tone::Start => ("low", "hourglass"),
            };
            let mut body = event.message.clone();
            if let Some(e) = &event.error {
                body.push_str(&format!("\n\n{e}"));
            }
            let mut h = vec![
                // ntfy reads header values as ASCII or RFC 2047; the title is ASCII
                // apart from names, so anything else is replaced.
                ("Title".to_string(), ascii(&event.title())),
                ("Priority".to_string(), priority.to_string()),
                ("Tags".to_string(), format!("{tags},cairn,{}", event.event)),
            ];
            h.extend(headers.iter().cloned());
            Some(HttpRequest {
                method: "POST",
                url: url.clone(),
                headers: h,
                body: body.into_bytes(),
            })
        }
        Channel::Email(_) => None,
    }
}

/// `text` with every character a header cannot carry as is replaced by `?`.
fn ascii(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii() && !c.is_ascii_control() {
                c
            } else {
                '?'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> reqwest::Url {
        reqwest::Url::parse(s).expect("url")
    }

    fn notifier(channel: Channel) -> NotifierConfig {
        NotifierConfig {
            name: default_name(&channel),
            channel,
            events: None,
            destinations: None,
            ca_file: None,
        }
    }

    fn event(kind: EventKind) -> Event {
        Event::new(kind, "web-1", "the message")
            .destination("offsite")
            .error("boom")
    }

    #[test]
    fn healthchecks_pings_start_success_and_fail_endpoints() {
        let ch = Channel::Healthchecks {
            url: url("https://hc.example/ping/abc-123/"),
        };
        let start = http_request(&ch, &event(EventKind::SnapshotStarted)).expect("start");
        assert_eq!(
            (start.method, start.url.as_str()),
            ("GET", "https://hc.example/ping/abc-123/start")
        );
        assert!(start.body.is_empty());
        let ok = http_request(&ch, &event(EventKind::SnapshotSaved)).expect("ok");
        assert_eq!(
            (ok.method, ok.url.as_str()),
            ("POST", "https://hc.example/ping/abc-123/")
        );
        let fail = http_request(&ch, &event(EventKind::SnapshotFailed)).expect("fail");
        assert_eq!(fail.url.as_str(), "https://hc.example/ping/abc-123/fail");
        let body = String::from_utf8(fail.body).expect("utf-8");
        assert!(
            body.starts_with("the message\n") && body.contains("error: boom"),
            "{body}"
        );
    }

    #[test]
    fn a_webhook_posts_the_event_as_json_with_its_headers_and_ntfy_sets_title_priority_tags() {
        let ch = Channel::Webhook {
            url: url("http://127.0.0.1:9/hook"),
            headers: vec![("Authorization".into(), "Bearer t".into())],
        };
        let r = http_request(&ch, &event(EventKind::Stale)).expect("request");
        assert_eq!(r.method, "POST");
        assert!(
            r.headers
                .contains(&("Authorization".into(), "Bearer t".into()))
        );
        let v: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
        assert_eq!(v["event"], "stale");
        let ch = Channel::Ntfy {
            url: url("https://ntfy.example/backups"),
            headers: Vec::new(),
        };
        let r = http_request(&ch, &event(EventKind::DestinationFailing)).expect("request");
        let header = |n: &str| {
            r.headers
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(header("Priority").as_deref(), Some("urgent"));
        assert_eq!(
            header("Title").as_deref(),
            Some("cairn on web-1: backups failing (offsite)")
        );
        assert!(
            header("Tags")
                .expect("tags")
                .contains("destination_failing")
        );
        assert_eq!(
            String::from_utf8(r.body).expect("utf-8"),
            "the message\n\nboom"
        );
    }

    #[test]
    fn filters_pick_events_and_test_always_passes() {
        let mut n = notifier(Channel::Webhook {
            url: url("http://127.0.0.1:9/"),
            headers: Vec::new(),
        });
        assert!(n.wants(&event(EventKind::DestinationFailing)));
        assert!(!n.wants(&event(EventKind::SnapshotSaved)));
        n.events = Some(vec![EventKind::SnapshotSaved]);
        assert!(n.wants(&event(EventKind::SnapshotSaved)));
        assert!(!n.wants(&event(EventKind::DestinationFailing)));
        n.destinations = Some(vec!["lan".into()]);
        assert!(!n.wants(&event(EventKind::SnapshotSaved)));
        assert!(n.wants(&event(EventKind::Test)));
        let hc = notifier(Channel::Healthchecks {
            url: url("https://hc.example/x"),
        });
        assert!(hc.wants(&event(EventKind::SnapshotStarted)));
        assert!(!hc.wants(&event(EventKind::Stale)));
    }

    #[test]
    fn default_names_show_the_host_and_never_the_secret_path() {
        let ch = Channel::Healthchecks {
            url: url("https://hc-ping.com/6b1c-secret-uuid?x=1"),
        };
        assert_eq!(default_name(&ch), "healthchecks hc-ping.com");
        let ch = Channel::Webhook {
            url: url("http://user:pw@127.0.0.1:8080/t0ken"),
            headers: Vec::new(),
        };
        assert_eq!(default_name(&ch), "webhook 127.0.0.1:8080");
    }
}
