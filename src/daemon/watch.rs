//! Change detection: a recursive inotify watch (through `notify`) over every source path.
//! Events become changed paths; a lost or overflowed event stream becomes a request for a
//! full rescan. When the kernel's inotify limits run out, the daemon says so once, with
//! the sysctl that fixes it, and falls back to periodic full scans.

use notify::event::{AccessKind, AccessMode, EventKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::mpsc;

/// What the watcher reports.
#[derive(Debug)]
pub enum WatchEvent {
    /// These paths changed.
    Changed(Vec<PathBuf>),
    /// Events were lost: compare everything.
    Rescan(String),
}

/// Watch limits that can run out, and the sysctl that raises each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitHit {
    /// `fs.inotify.max_user_watches` (one watch per directory).
    Watches,
    /// `fs.inotify.max_user_instances`.
    Instances,
}

impl LimitHit {
    /// The message, once per daemon run.
    pub fn advice(self) -> String {
        let (what, key, value) = match self {
            LimitHit::Watches => (
                "inotify watch limit",
                "fs.inotify.max_user_watches",
                1_048_576,
            ),
            LimitHit::Instances => (
                "inotify instance limit",
                "fs.inotify.max_user_instances",
                1024,
            ),
        };
        format!(
            "the kernel's {what} is reached, so some changes are not seen as they happen; cairn falls back to full scans. Raise it: `sysctl -w {key}={value}` and persist it with `echo {key}={value} > /etc/sysctl.d/90-cairn.conf`"
        )
    }
}

/// Classify a watcher error: a kernel limit, or something else.
pub fn limit_hit(e: &notify::Error) -> Option<LimitHit> {
    match &e.kind {
        notify::ErrorKind::MaxFilesWatch => Some(LimitHit::Watches),
        notify::ErrorKind::Io(io) if io.raw_os_error() == Some(libc::ENOSPC) => {
            Some(LimitHit::Watches)
        }
        notify::ErrorKind::Io(io) if io.raw_os_error() == Some(libc::EMFILE) => {
            Some(LimitHit::Instances)
        }
        _ => None,
    }
}

/// Whether an event kind can mean changed content or metadata (reads and opens cannot).
pub fn is_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// A running watcher; dropping it stops watching.
pub struct Watcher {
    _inner: Option<RecommendedWatcher>,
    degraded: Arc<AtomicBool>,
}

impl Watcher {
    /// Whether some changes may go unseen (limits reached, or no watcher at all), so the
    /// caller should scan periodically.
    pub fn degraded(&self) -> bool {
        self.degraded.load(Ordering::Relaxed)
    }

    /// The flag behind [`Watcher::degraded`], for tasks that outlive a borrow.
    pub fn degraded_flag(&self) -> Arc<AtomicBool> {
        self.degraded.clone()
    }
}

/// Start watching `roots`. Events go to `tx`; when it is full, a rescan is requested
/// instead of blocking the kernel event reader.
pub fn start(roots: &[PathBuf], tx: mpsc::Sender<WatchEvent>) -> Watcher {
    let degraded = Arc::new(AtomicBool::new(false));
    let warned = Arc::new(AtomicBool::new(false));
    let warn_once = {
        let degraded = degraded.clone();
        let warned = warned.clone();
        move |hit: LimitHit| {
            degraded.store(true, Ordering::Relaxed);
            if !warned.swap(true, Ordering::Relaxed) {
                tracing::warn!("{}", hit.advice());
            }
        }
    };
    let handler = {
        let tx = tx.clone();
        let warn_once = warn_once.clone();
        move |res: notify::Result<notify::Event>| {
            let msg = match res {
                Ok(ev) if ev.need_rescan() => {
                    WatchEvent::Rescan("the kernel dropped events".into())
                }
                Ok(ev) if !is_change(&ev.kind) => return,
                Ok(ev) => WatchEvent::Changed(ev.paths),
                Err(e) => {
                    if let Some(hit) = limit_hit(&e) {
                        warn_once(hit);
                    }
                    WatchEvent::Rescan(format!("watch error: {e}"))
                }
            };
            if let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send(msg) {
                // The queue is full: whatever is lost, a rescan covers. If even that
                // does not fit, the queued events already force work soon.
                let _ = tx.try_send(WatchEvent::Rescan("event queue overflow".into()));
            }
        }
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            match limit_hit(&e) {
                Some(hit) => warn_once(hit),
                None => {
                    degraded.store(true, Ordering::Relaxed);
                    tracing::warn!("cannot watch for changes ({e}); falling back to full scans");
                }
            }
            return Watcher {
                _inner: None,
                degraded,
            };
        }
    };
    for root in roots {
        if let Err(e) = watcher.watch(root, RecursiveMode::Recursive) {
            match limit_hit(&e) {
                Some(hit) => warn_once(hit),
                None => {
                    degraded.store(true, Ordering::Relaxed);
                    tracing::warn!(
                        "cannot watch {} for changes ({e}); it is covered by full scans only",
                        root.display()
                    );
                }
            }
        }
    }
    Watcher {
        _inner: Some(watcher),
        degraded,
    }
}

/// Whether `path` lies inside one of `dirs`.
pub fn inside_any(path: &Path, dirs: &[PathBuf]) -> bool {
    dirs.iter().any(|d| path.starts_with(d))
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, ModifyKind};

    #[test]
    fn reads_are_not_changes() {
        assert!(!is_change(&EventKind::Access(AccessKind::Read)));
        assert!(!is_change(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(is_change(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(is_change(&EventKind::Create(CreateKind::File)));
        assert!(is_change(&EventKind::Modify(ModifyKind::Any)));
        assert!(is_change(&EventKind::Remove(
            notify::event::RemoveKind::Any
        )));
    }

    #[test]
    fn limits_are_recognised_with_their_sysctl() {
        let e = notify::Error::new(notify::ErrorKind::MaxFilesWatch);
        assert_eq!(limit_hit(&e), Some(LimitHit::Watches));
        let e = notify::Error::io(std::io::Error::from_raw_os_error(libc::ENOSPC));
        assert_eq!(limit_hit(&e), Some(LimitHit::Watches));
        let e = notify::Error::io(std::io::Error::from_raw_os_error(libc::EMFILE));
        assert_eq!(limit_hit(&e), Some(LimitHit::Instances));
        assert!(
            LimitHit::Watches
                .advice()
                .contains("sysctl -w fs.inotify.max_user_watches=")
        );
        let e = notify::Error::generic("x");
        assert_eq!(limit_hit(&e), None);
    }

    #[tokio::test]
    async fn real_changes_arrive() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (tx, mut rx) = mpsc::channel(64);
        let w = start(&[dir.path().to_path_buf()], tx);
        assert!(!w.degraded());
        std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
        // A file created in a new directory is seen (the watch follows new directories).
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        std::fs::write(dir.path().join("sub/f"), b"x").expect("write");
        let want = dir.path().join("sub/f");
        let seen = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            while let Some(ev) = rx.recv().await {
                if let WatchEvent::Changed(p) = ev
                    && p.contains(&want)
                {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(seen.ok(), Some(true));
    }
}
