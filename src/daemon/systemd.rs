//! systemd integration: readiness, status line, watchdog and stop/reload notices
//! (`Type=notify`). Every call is a no-op when not started by systemd.

use sd_notify::NotifyState;

/// Tell systemd the daemon is ready (after the first configuration is running).
pub fn ready() {
    send(&[NotifyState::Ready]);
}

/// A one-line status for `systemctl status`.
pub fn status(line: &str) {
    send(&[NotifyState::Status(line)]);
}

/// Keep the watchdog from restarting the service.
pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// Reloading the configuration (SIGHUP).
pub fn reloading() {
    let now = sd_notify::NotifyState::monotonic_usec_now().ok();
    match now {
        Some(t) => send(&[NotifyState::Reloading, t]),
        None => send(&[NotifyState::Reloading]),
    }
}

/// Ask for more time before systemd gives up on a start or reload.
pub fn extend_timeout(by: std::time::Duration) {
    let usec = u32::try_from(by.as_micros()).unwrap_or(u32::MAX);
    send(&[NotifyState::ExtendTimeoutUsec(usec)]);
}

/// Stopping (SIGTERM).
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// How often to ping the watchdog, if systemd asked for it: half its timeout.
pub fn watchdog_interval() -> Option<std::time::Duration> {
    sd_notify::watchdog_enabled().map(|d| d / 2)
}

fn send(states: &[NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!("sd_notify: {e}");
    }
}
