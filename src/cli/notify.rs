//! `cairn notify test`: send a `test` event to every `[[notify]]` of a configuration,
//! once each (no retries), and say which were delivered and why the others were not;
//! exits 1 unless all were. The check an operator runs after writing the tables, and
//! again whenever a token or a mail password changes.

use super::stdout::outln;
use anyhow::{Result, bail};
use cairn::daemon::config;
use cairn::notify::{Event, EventKind, Sender};
use std::path::PathBuf;

/// `cairn notify`.
#[derive(clap::Args)]
pub struct NotifyArgs {
    #[command(subcommand)]
    action: NotifyCommand,
}

#[derive(clap::Subcommand)]
enum NotifyCommand {
    /// Send a test notification to every [[notify]] of the configuration and say which
    /// were delivered.
    Test {
        /// Configuration file.
        #[arg(long, default_value = config::DEFAULT_CONFIG)]
        config: PathBuf,
    },
}

/// Run `cairn notify ...`; `json` prints one result object per notifier.
pub fn run(a: &NotifyArgs, json: bool) -> Result<i32> {
    let NotifyCommand::Test { config: path } = &a.action;
    let cfg = config::load(path)?;
    if cfg.notifiers.is_empty() {
        bail!(
            "{} has no [[notify]]: add one, such as\n\n[[notify]]\nwebhook = \"https://hooks.example.org/cairn\"",
            path.display()
        );
    }
    let host = cfg.hostname.clone().unwrap_or_else(cairn::host::hostname);
    let event = Event::new(
        EventKind::Test,
        &host,
        format!(
            "a test notification from cairn on {host} (`cairn notify test --config {}`): alerts reach this receiver",
            path.display()
        ),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut failed = 0;
    for n in &cfg.notifiers {
        let outcome = match Sender::new(n.clone()) {
            Ok(sender) => rt.block_on(sender.deliver(&event)).map(|_| ()),
            Err(e) => Err(e),
        };
        if outcome.is_err() {
            failed += 1;
        }
        if json {
            let v = serde_json::json!({
                "notifier": n.name,
                "kind": n.kind(),
                "delivered": outcome.is_ok(),
                "error": outcome.as_ref().err().map(|e| e.to_string()),
            });
            outln!("{v}")?;
        } else {
            match &outcome {
                Ok(()) => outln!("{}: delivered", n.name)?,
                Err(e) => outln!("{}: NOT delivered: {e}", n.name)?,
            }
        }
    }
    if failed > 0 {
        eprintln!(
            "{failed} of {} notifier(s) did not take the test notification",
            cfg.notifiers.len()
        );
        return Ok(1);
    }
    Ok(0)
}
