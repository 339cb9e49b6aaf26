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
    inner: Option<RecommendedWatcher>,
    degraded: Arc<AtomicBool>,
    /// Identity (device, inode) of each root when its watch was added: a root replaced
    /// by a new inode (an editor's save, `mv` and `mkdir`) has lost its watch.
    roots: Vec<(PathBuf, Option<(u64, u64)>)>,
    warn_once: Arc<dyn Fn(LimitHit) + Send + Sync>,
}

/// Set when events were lost (queue overflow, kernel overflow, watch errors); whoever
/// consumes the events checks it and compares everything.
#[derive(Debug, Default)]
pub struct RescanFlag {
    needed: AtomicBool,
    wake: tokio::sync::Notify,
}

impl RescanFlag {
    /// Ask for a rescan (callable from any thread).
    pub fn raise(&self) {
        self.needed.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// Whether a rescan was asked for since the last call.
    pub fn take(&self) -> bool {
        self.needed.swap(false, Ordering::SeqCst)
    }

    /// Wait until raised (or woken spuriously; check [`RescanFlag::take`]).
    pub async fn raised(&self) {
        self.wake.notified().await;
    }
}

fn identity(p: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(p)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

/// File systems whose changes inotify does not see (changes made by other clients).
fn is_remote_fs(p: &Path) -> Option<&'static str> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).ok()?;
    // SAFETY: statfs fills the zeroed struct; `c` is a valid NUL-terminated path.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    #[allow(clippy::unnecessary_cast)]
    match st.f_type as i64 {
        0x6969 => Some("NFS"),
        0x517B => Some("SMB"),
        0xFF53_4D42 => Some("CIFS"),
        0xFE53_4D42 => Some("SMB2"),
        0x6573_5546 => Some("FUSE"),
        0x0102_1997 => Some("9P"),
        0x00C3_6400 => Some("CephFS"),
        _ => None,
    }
}

impl Watcher {
    /// Whether some changes may go unseen (limits reached, a remote file system, or no
    /// watcher at all), so the caller should compare everything, periodically.
    pub fn degraded(&self) -> bool {
        self.degraded.load(Ordering::Relaxed)
    }

    /// The flag behind [`Watcher::degraded`], for tasks that outlive a borrow.
    pub fn degraded_flag(&self) -> Arc<AtomicBool> {
        self.degraded.clone()
    }

    /// Re-add the watch of every root whose inode changed (or that appeared or
    /// vanished) since it was watched; returns those roots, which need a rescan.
    pub fn recheck_roots(&mut self) -> Vec<PathBuf> {
        let mut replaced = Vec::new();
        for (root, id) in &mut self.roots {
            let now = identity(root);
            if now == *id {
                continue;
            }
            *id = now;
            replaced.push(root.clone());
            if let Some(w) = &mut self.inner {
                let _ = w.unwatch(root);
                if now.is_some()
                    && let Err(e) = w.watch(root, RecursiveMode::Recursive)
                {
                    match limit_hit(&e) {
                        Some(hit) => (self.warn_once)(hit),
                        None => tracing::warn!("cannot watch {} again: {e}", root.display()),
                    }
                }
            }
        }
        replaced
    }
}

/// Start watching `roots`. Events go to `tx`; when it is full, `lost` is raised instead
/// of blocking the kernel event reader. Symbolic links are not followed (a link is
/// backed up as a link, so what it points to is not a source).
/// `on_limit` hears, once, the advice for the first kernel limit that runs out.
pub fn start(
    roots: &[PathBuf],
    tx: mpsc::Sender<WatchEvent>,
    lost: Arc<RescanFlag>,
    on_limit: Arc<dyn Fn(String) + Send + Sync>,
) -> Watcher {
    let degraded = Arc::new(AtomicBool::new(false));
    let warned = Arc::new(AtomicBool::new(false));
    let warn_once: Arc<dyn Fn(LimitHit) + Send + Sync> = {
        let degraded = degraded.clone();
        let warned = warned.clone();
        Arc::new(move |hit: LimitHit| {
            degraded.store(true, Ordering::Relaxed);
            if !warned.swap(true, Ordering::Relaxed) {
                tracing::warn!("{}", hit.advice());
                on_limit(hit.advice());
            }
        })
    };
    let handler = {
        let warn_once = warn_once.clone();
        let lost = lost.clone();
        move |res: notify::Result<notify::Event>| {
            let msg = match res {
                Ok(ev) if ev.need_rescan() => {
                    tracing::info!("the kernel dropped file events; comparing everything");
                    lost.raise();
                    return;
                }
                Ok(ev) if !is_change(&ev.kind) => return,
                Ok(ev) => WatchEvent::Changed(ev.paths),
                Err(e) => {
                    if let Some(hit) = limit_hit(&e) {
                        warn_once(hit);
                    }
                    // A directory that vanished while a watch was being added is not a
                    // lost event: its removal is reported on its own.
                    if !matches!(
                        e.kind,
                        notify::ErrorKind::PathNotFound | notify::ErrorKind::WatchNotFound
                    ) {
                        tracing::debug!("watch error: {e}");
                        lost.raise();
                    }
                    return;
                }
            };
            if tx.try_send(msg).is_err() {
                // Full (or closed): what is dropped here, a rescan finds.
                lost.raise();
            }
        }
    };
    let config = notify::Config::default().with_follow_symlinks(false);
    let mut watcher = match RecommendedWatcher::new(handler, config) {
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
                inner: None,
                degraded,
                roots: roots.iter().map(|r| (r.clone(), identity(r))).collect(),
                warn_once,
            };
        }
    };
    for root in roots {
        if let Some(fs) = is_remote_fs(root) {
            degraded.store(true, Ordering::Relaxed);
            tracing::warn!(
                "{} is on {fs}, where changes made by other machines raise no events; it is covered by periodic full scans",
                root.display()
            );
        }
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
        inner: Some(watcher),
        degraded,
        roots: roots.iter().map(|r| (r.clone(), identity(r))).collect(),
        warn_once,
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
        let w = start(
            &[dir.path().to_path_buf()],
            tx,
            Arc::default(),
            Arc::new(|_| {}),
        );
        assert!(!w.degraded());
        std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
        // A file created in a new directory is seen (the watch follows new directories).
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        std::fs::write(dir.path().join("sub/f"), b"x").expect("write");
        let want = dir.path().join("sub/f");
        let seen = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            while let Some(ev) = rx.recv().await {
                let WatchEvent::Changed(p) = ev;
                if p.contains(&want) {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(seen.ok(), Some(true));
    }
}

#[cfg(test)]
mod root_tests {
    use super::*;

    #[tokio::test]
    async fn a_replaced_root_is_watched_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("data");
        std::fs::create_dir(&root).expect("mkdir");
        let (tx, mut rx) = mpsc::channel(64);
        let mut w = start(
            std::slice::from_ref(&root),
            tx,
            Arc::default(),
            Arc::new(|_| {}),
        );
        assert!(w.recheck_roots().is_empty());
        std::fs::rename(&root, dir.path().join("old")).expect("mv");
        std::fs::create_dir(&root).expect("mkdir again");
        assert_eq!(w.recheck_roots(), std::slice::from_ref(&root));
        while rx.try_recv().is_ok() {}
        std::fs::write(root.join("new"), b"x").expect("write");
        let want = root.join("new");
        let seen = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            while let Some(WatchEvent::Changed(p)) = rx.recv().await {
                if p.contains(&want) {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(seen.ok(), Some(true));
    }
}
