//! Alerts as an operator meets them: a destination's server stops, and one
//! `destination_failing` arrives at every receiver after `failing_after` (however many
//! retries), then one `destination_recovered` when it is back; a destination that hangs
//! without an error makes its source `stale`, and fresh again; `cairn notify test`
//! reaches every receiver and names the one it cannot. Real receivers on loopback: an
//! HTTP server for webhook, ntfy and healthchecks, and aiosmtpd (STARTTLS and a login)
//! for mail; the destination is a real S3 server behind the fault proxy.

use crate::support;

pub(crate) mod receiver;
mod smtp;

use receiver::{Received, Receiver};
use smtp::Smtp;
use std::path::Path;
use std::time::Duration;
use support::daemon::{Daemon, QUICK_SCHEDULE, dest, dest_settled, destination_table, metrics};
use support::fault_proxy::{FaultProxy, Schedule};
use support::s3::{S3Server, aws_env};
use support::{Env, describe};

/// Secrets the configurations below hold: none may reach a log or a message.
const WEBHOOK_TOKEN: &str = "t0ken-in-the-path";
const HEADER_SECRET: &str = "Bearer h3ader-secret";
const CHECK_UUID: &str = "5f1c-check-uuid";
const SMTP_PASSWORD: &str = "smtp-pa55word";

/// Quick retries and short timeouts: a destination that is down fails in moments.
const QUICK_RETRIES: [&str; 3] = ["s3.retry-delay=20ms", "s3.retries=2", "s3.timeout=2s"];

/// Three HTTP receivers (webhook, ntfy, healthchecks) and, where aiosmtpd is installed,
/// a mail server.
struct Receivers {
    webhook: Receiver,
    ntfy: Receiver,
    checks: Receiver,
    mail: Option<Smtp>,
}

impl Receivers {
    fn start(env: &Env) -> Receivers {
        Receivers {
            webhook: Receiver::start(),
            ntfy: Receiver::start(),
            checks: Receiver::start(),
            mail: Smtp::start(&env.path("mailserver"), "cairn", SMTP_PASSWORD),
        }
    }

    /// The `[[notify]]` tables for all of them.
    fn tables(&self, env: &Env) -> String {
        let mut t = format!(
            "[[notify]]\nwebhook = \"{}\"\nheaders = {{ Authorization = \"{HEADER_SECRET}\" }}\n\n[[notify]]\nntfy = \"{}\"\n\n[[notify]]\nhealthchecks = \"{}\"\n",
            self.webhook.url(&format!("/hook/{WEBHOOK_TOKEN}")),
            self.ntfy.url("/backups"),
            self.checks.url(&format!("/ping/{CHECK_UUID}")),
        );
        if let Some(m) = &self.mail {
            let pw = env.path("smtp.password");
            std::fs::write(&pw, format!("{SMTP_PASSWORD}\n")).expect("password");
            t.push_str(&format!(
                "\n[[notify]]\nname = \"ops mail\"\nemail = {{ smtp = \"smtp://127.0.0.1:{}\", from = \"cairn <cairn@example.org>\", to = [\"ops@example.org\", \"oncall@example.org\"], username = \"cairn\", password_file = \"{}\" }}\nca_file = \"{}\"\n",
                m.port,
                pw.display(),
                m.ca_file.display()
            ));
        }
        t
    }
}

/// Events of `kind` among webhook requests.
fn events<'a>(got: &'a [Received], kind: &str) -> Vec<&'a Received> {
    got.iter().filter(|r| r.json()["event"] == kind).collect()
}

/// A configuration: `src` into one destination `offsite` at `repo` (quick retries and
/// `options`), `[alerts]` and `[schedule]` lines, and `notify` tables.
fn config(
    env: &Env,
    src: &Path,
    repo: &str,
    options: &[&str],
    alerts: &str,
    schedule: &str,
    notify: &str,
) -> std::path::PathBuf {
    // An option given overrides the quick one of the same key.
    let mut opts: Vec<&str> = QUICK_RETRIES
        .iter()
        .copied()
        .filter(|q| {
            !options
                .iter()
                .any(|o| o.split('=').next() == q.split('=').next())
        })
        .collect();
    opts.extend_from_slice(options);
    let config = env.path("cairn.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"{state}\"\npassword_file = \"{pw}\"\nhostname = \"alert-host\"\n\n[[source]]\npaths = [\"{src}\"]\n\n{dest}\n\n[schedule]\n{QUICK_SCHEDULE}{schedule}\n\n[alerts]\n{alerts}\n\n{notify}",
            state = env.path("state").display(),
            pw = env.password_file.display(),
            src = src.display(),
            dest = destination_table("offsite", repo, &opts),
        ),
    )
    .expect("write config");
    config
}

fn source(env: &Env) -> std::path::PathBuf {
    let src = env.path("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    std::fs::write(src.join("a.txt"), b"first\n").expect("write");
    src
}

/// Nothing secret in `text`.
fn assert_no_secrets(what: &str, text: &str) {
    for s in [WEBHOOK_TOKEN, "h3ader-secret", CHECK_UUID, SMTP_PASSWORD] {
        assert!(!text.contains(s), "{what} shows the secret {s:?}:\n{text}");
    }
}

#[test]
fn a_destination_that_stops_answering_is_reported_failing_once_and_recovered_once() {
    let mut env = Env::new();
    env.env = aws_env();
    let src = source(&env);
    let server = S3Server::start(&["backups"]);
    let proxy = FaultProxy::start(server.port, Schedule::clean());
    let repo = format!("s3:{}/backups/host1", proxy.endpoint());
    let r = Receivers::start(&env);
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let notify = format!(
        "{}\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n",
        r.tables(&env)
    );
    let config = config(
        &env,
        &src,
        &repo,
        &[],
        "failing_after = \"3s\"",
        "",
        &notify,
    );
    let mut d = Daemon::start_logging_to(&env, &config, &env.path("daemon.log"));
    d.wait_for("the first snapshot", Duration::from_secs(60), |s| {
        dest_settled(dest(s, "offsite"))
    });
    // Healthchecks follows snapshots: a start, then a success.
    let pings = r.checks.wait_for(
        "a start and a success ping",
        "/ping/",
        Duration::from_secs(20),
        |g| {
            g.iter().any(|p| p.path.ends_with("/start"))
                && g.iter().any(|p| p.path == format!("/ping/{CHECK_UUID}"))
        },
    );
    let start = pings
        .iter()
        .find(|p| p.path.ends_with("/start"))
        .expect("start");
    assert_eq!(start.method, "GET");
    assert!(
        r.webhook.requests().is_empty(),
        "no alert while all is well: {:?}",
        r.webhook.requests()
    );

    // The server stops answering; the webhook receiver refuses the first delivery.
    r.webhook.refuse_next(1);
    proxy.set_schedule(Schedule {
        reset: 1000,
        ..Schedule::clean()
    });
    std::fs::write(src.join("a.txt"), b"changed while the bucket is down\n").expect("write");
    let got = r.webhook.wait_for(
        "destination_failing",
        "/hook/",
        Duration::from_secs(30),
        |g| !events(g, "destination_failing").is_empty(),
    );
    let failing = events(&got, "destination_failing")[0].clone();
    let v = failing.json();
    assert_eq!(v["host"], "alert-host", "{v}");
    assert_eq!(v["destination"], "offsite", "{v}");
    assert!(
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("has not accepted a snapshot for")),
        "{v}"
    );
    assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
    time_parses(&v["time"]);
    assert_eq!(failing.method, "POST");
    assert_eq!(failing.path, format!("/hook/{WEBHOOK_TOKEN}"));
    assert_eq!(failing.header("authorization"), Some(HEADER_SECRET));
    assert_eq!(failing.header("content-type"), Some("application/json"));
    // The refused delivery was retried.
    assert_eq!(r.webhook.requests().iter().filter(|q| q.refused).count(), 1);

    // The outage goes on, with retries: still one alert each.
    d.wait_for("several failed attempts", Duration::from_secs(30), |s| {
        dest(s, "offsite")["consecutive_failures"].as_u64() >= Some(3)
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        events(&r.webhook.accepted("/hook/"), "destination_failing").len(),
        1
    );
    let ntfy = r
        .ntfy
        .wait_for("the ntfy alert", "/backups", Duration::from_secs(10), |g| {
            !g.is_empty()
        });
    assert_eq!(ntfy.len(), 1, "{ntfy:?}");
    assert_eq!(ntfy[0].method, "POST");
    assert_eq!(ntfy[0].header("priority"), Some("urgent"));
    assert_eq!(
        ntfy[0].header("title"),
        Some("cairn on alert-host: backups failing (offsite)")
    );
    assert!(
        ntfy[0]
            .header("tags")
            .is_some_and(|t| t.contains("destination_failing"))
    );
    assert!(
        ntfy[0].text().contains("has not accepted a snapshot"),
        "{}",
        ntfy[0].text()
    );
    // Healthchecks hears every failed attempt on /fail.
    let fails = r.checks.accepted(&format!("/ping/{CHECK_UUID}/fail"));
    assert!(
        !fails.is_empty() && fails[0].method == "POST",
        "{:?}",
        r.checks.requests()
    );
    assert!(fails[0].text().contains("snapshot"), "{}", fails[0].text());
    if let Some(m) = &r.mail {
        let mails = m.wait_for(1, Duration::from_secs(20));
        assert_eq!(mails.len(), 1, "{mails:?}");
        let mail = &mails[0];
        assert!(mail.tls, "the mail went without STARTTLS");
        assert_eq!(mail.login.as_deref(), Some("cairn"));
        assert_eq!(mail.from, "cairn@example.org");
        assert_eq!(mail.to, ["ops@example.org", "oncall@example.org"]);
        assert!(
            mail.data
                .contains("Subject: cairn on alert-host: backups failing (offsite)"),
            "{}",
            mail.data
        );
        assert!(mail.data.contains("destination: offsite"), "{}", mail.data);
    }
    // Status and metrics show the alert and the notifiers' health.
    let s = d.status().expect("status");
    assert_eq!(
        dest(&s, "offsite")["last_alert"]["event"],
        "destination_failing",
        "{s}"
    );
    let hook = s["notifiers"]
        .as_array()
        .and_then(|a| a.iter().find(|n| n["kind"] == "webhook"))
        .expect("webhook notifier")
        .clone();
    assert_eq!(hook["failures"], 1, "{s}");
    assert_eq!(hook["healthy"], true, "{s}");
    let text = d.cli(&["status"]);
    let shown = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(
        shown.contains("last alert:     destination_failing"),
        "{}",
        describe(&text)
    );
    assert!(shown.contains("notifiers:"), "{}", describe(&text));
    let m = metrics(port);
    let name = format!("webhook 127.0.0.1:{}", r.webhook.port);
    assert!(
        m.contains(&format!(
            "cairn_notify_failures_total{{notifier=\"{name}\"}} 1\n"
        )),
        "{m}"
    );
    assert!(m.contains("cairn_last_alert_timestamp_seconds{destination=\"offsite\",event=\"destination_failing\"}"), "{m}");

    // Back: one recovery each.
    proxy.set_schedule(Schedule::clean());
    r.webhook.wait_for(
        "destination_recovered",
        "/hook/",
        Duration::from_secs(60),
        |g| !events(g, "destination_recovered").is_empty(),
    );
    d.wait_for("the catch-up", Duration::from_secs(60), |s| {
        dest_settled(dest(s, "offsite"))
    });
    std::thread::sleep(Duration::from_secs(2));
    let got = r.webhook.accepted("/hook/");
    assert_eq!(events(&got, "destination_failing").len(), 1, "{got:?}");
    assert_eq!(events(&got, "destination_recovered").len(), 1, "{got:?}");
    assert_eq!(got.len(), 2, "only the two state changes: {got:?}");
    let ntfy = r.ntfy.accepted("/backups");
    assert_eq!(ntfy.len(), 2, "{ntfy:?}");
    assert_eq!(ntfy[1].header("priority"), Some("default"));
    if let Some(m) = &r.mail {
        let mails = m.wait_for(2, Duration::from_secs(20));
        assert!(
            mails[1].data.contains("backups working again"),
            "{}",
            mails[1].data
        );
    }
    let last_ping = r.checks.accepted("/ping/").pop().expect("pings");
    assert_eq!(
        last_ping.path,
        format!("/ping/{CHECK_UUID}"),
        "a success ping after the catch-up"
    );
    d.terminate();
    assert_no_secrets("the daemon's log", &d.log());
}

fn time_parses(v: &serde_json::Value) {
    let t = v.as_str().expect("time");
    assert!(t.len() >= 20 && t.contains('T') && t.ends_with('Z'), "{t}");
}

#[test]
fn a_destination_that_hangs_without_an_error_makes_its_source_stale_and_then_current() {
    let mut env = Env::new();
    env.env = aws_env();
    let src = source(&env);
    let server = S3Server::start(&["backups"]);
    let proxy = FaultProxy::start(server.port, Schedule::clean());
    let repo = format!("s3:{}/backups/host1", proxy.endpoint());
    let hook = Receiver::start();
    let notify = format!("[[notify]]\nwebhook = \"{}\"\n", hook.url("/hook"));
    // Rescans every second confirm the source while all is well; requests may take 30 s
    // before they count as failed.
    let config = config(
        &env,
        &src,
        &repo,
        &["s3.timeout=30s"],
        "stale_after = \"4s\"\nfailing_after = \"1h\"",
        "rescan_interval = \"1s\"\n",
        &notify,
    );
    let mut d = Daemon::start_logging_to(&env, &config, &env.path("daemon.log"));
    d.wait_for("the first snapshot", Duration::from_secs(60), |s| {
        dest_settled(dest(s, "offsite"))
    });
    // Unchanged, but confirmed by every rescan: never stale.
    std::thread::sleep(Duration::from_secs(6));
    assert!(
        hook.requests().is_empty(),
        "{:?}\n{}",
        hook.requests(),
        d.log()
    );

    // Every request now hangs (for 12 s, then the connection closes): nothing fails
    // within stale_after, and nothing is saved either.
    proxy.set_schedule(Schedule {
        stall: 1000,
        stall_for: Duration::from_secs(12),
        ..Schedule::clean()
    });
    let got = hook.wait_for("stale", "/hook", Duration::from_secs(12), |g| {
        !events(g, "stale").is_empty()
    });
    let v = got[0].json();
    assert_eq!(v["event"], "stale", "{v}");
    assert_eq!(v["destination"], "offsite", "{v}");
    assert_eq!(v["source"], src.display().to_string(), "{v}");
    assert!(
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("no successful snapshot of")),
        "{v}"
    );
    let s = d.status().expect("status");
    assert!(
        s["destinations"][0]["last_error"].is_null(),
        "no error was reported: {s}"
    );

    proxy.set_schedule(Schedule::clean());
    hook.wait_for("stale_recovered", "/hook", Duration::from_secs(60), |g| {
        !events(g, "stale_recovered").is_empty()
    });
    let got = hook.accepted("/hook");
    assert_eq!(events(&got, "stale").len(), 1, "{got:?}");
    assert_eq!(
        events(&got, "stale_recovered")[0].json()["source"],
        src.display().to_string()
    );
    d.terminate();
}

#[test]
fn notify_test_reaches_every_receiver_and_names_the_one_it_cannot() {
    let mut env = Env::new();
    env.env = aws_env();
    let src = source(&env);
    let r = Receivers::start(&env);
    let notify = r.tables(&env);
    let config = config(&env, &src, &env.repo.clone(), &[], "", "", &notify);
    let c = config.display().to_string();
    let out = env.run(&["notify", "test", "--config", &c]);
    assert!(out.status.success(), "{}", describe(&out));
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines = if r.mail.is_some() { 4 } else { 3 };
    assert_eq!(said.matches(": delivered").count(), lines, "{said}");
    let hook = r.webhook.accepted("/hook/");
    assert_eq!(hook.len(), 1);
    assert_eq!(hook[0].json()["event"], "test");
    assert_eq!(hook[0].json()["host"], "alert-host");
    let ping = r.checks.accepted("/ping/");
    assert_eq!(
        (ping.len(), ping[0].path.as_str()),
        (1, format!("/ping/{CHECK_UUID}").as_str())
    );
    let ntfy = r.ntfy.accepted("/backups");
    assert_eq!(
        ntfy[0].header("title"),
        Some("cairn on alert-host: test notification")
    );
    if let Some(m) = &r.mail {
        let mails = m.wait_for(1, Duration::from_secs(10));
        assert!(
            mails[0].tls && mails[0].data.contains("test notification"),
            "{mails:?}"
        );
    }

    // One receiver that is not there, one that refuses: both named, nothing secret shown.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    r.webhook.refuse_next(1);
    let more = format!(
        "{notify}\n[[notify]]\nname = \"gone\"\nwebhook = \"http://127.0.0.1:{closed}/x/{WEBHOOK_TOKEN}\"\n"
    );
    let config = self::config(&env, &src, &env.repo.clone(), &[], "", "", &more);
    let out = env.run(&["notify", "test", "--config", &config.display().to_string()]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        said.contains("gone: NOT delivered: could not reach gone"),
        "{said}"
    );
    assert!(
        said.contains(&format!(
            "webhook 127.0.0.1:{}: NOT delivered",
            r.webhook.port
        )) && said.contains("503"),
        "{said}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("2 of"),
        "{}",
        describe(&out)
    );
    assert_no_secrets(
        "notify test",
        &format!("{said}{}", String::from_utf8_lossy(&out.stderr)),
    );

    // A wrong mail password is named as the mail server's refusal.
    if r.mail.is_some() {
        std::fs::write(env.path("smtp.password"), "wrong\n").expect("write");
        let out = env.run(&["notify", "test", "--config", &c]);
        assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(said.contains("ops mail: NOT delivered"), "{said}");
        assert_no_secrets("notify test", &said);
    }
}
