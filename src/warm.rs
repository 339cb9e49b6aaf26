//! Metadata read-ahead for a full backup walk. The walker looks at one entry at a time,
//! so on a cold cache every directory listing and inode costs it a disk round trip. A
//! few threads listing and lstat-ing the same tree ahead of it keep several of those
//! reads in flight; the walker then finds them in the kernel's caches. Nothing they read
//! is used: the walker still reads every entry itself, so a tree changing meanwhile
//! changes nothing about what is stored.

use crate::exclude::Excludes;
use crossbeam_channel::{Receiver, Sender, unbounded};
use std::fs;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// Threads reading ahead: enough to keep a disk's queue busy, few enough to leave the
/// cores to the walker.
pub const WARM_THREADS: usize = 4;

/// Directories queued at most; past this, what is found is left for the walker to read
/// cold, so the queue (one path per directory) stays small in a tree of millions and no
/// thread ever descends recursively (a deep hostile tree cannot exhaust its stack or
/// descriptors).
const MAX_QUEUED: usize = 4096;

/// What every reading thread shares.
struct Shared<'a> {
    tx: Sender<(PathBuf, u64)>,
    rx: Receiver<(PathBuf, u64)>,
    /// Directories queued or being read.
    pending: AtomicUsize,
    /// Directories listed.
    read: AtomicUsize,
    excludes: &'a Excludes,
    one_file_system: bool,
    done: &'a AtomicBool,
    data: Option<&'a DataAhead<'a>>,
}

/// Asks the kernel to read small files ahead of the backup's readers. The walker hands a
/// directory's files to the readers and waits for them all before the next directory, so
/// where directories hold a few files each, a cold disk saw only a few reads at a time;
/// with the files' data already on its way, those waits are short (figures in
/// docs/PERFORMANCE.md, session 6). Only for a backup that reads every file (no
/// parent): read ahead of a backup that finds them unchanged would be wasted disk work.
/// Bounded: no more than [`DATA_AHEAD_WINDOW`] bytes requested beyond what the readers
/// have consumed (the read-ahead waits for them), so a huge tree cannot push its own data
/// out of the page cache.
pub struct DataAhead<'a> {
    consumed: &'a AtomicU64,
    requested: AtomicU64,
    window: u64,
}

/// Largest file read ahead: larger ones are read in big sequential reads, which the
/// kernel reads ahead of by itself.
pub const DATA_AHEAD_FILE: u64 = 1024 * 1024;

/// Bytes requested ahead of what the readers have consumed, at most.
pub const DATA_AHEAD_WINDOW: u64 = 256 * 1024 * 1024;

impl<'a> DataAhead<'a> {
    /// A read-ahead that measures its lead against `consumed`, the bytes the backup's
    /// readers have read so far.
    pub fn new(consumed: &'a AtomicU64) -> Self {
        DataAhead {
            consumed,
            requested: AtomicU64::new(0),
            window: DATA_AHEAD_WINDOW,
        }
    }

    /// Bytes requested so far.
    pub fn requested(&self) -> u64 {
        self.requested.load(Ordering::Acquire)
    }

    /// Ask for a small regular file's data, first waiting (until `done`) while the lead
    /// is full: a file passed over would be read cold later. Never waits for the read.
    fn request(&self, path: &Path, len: u64, done: &AtomicBool) {
        if len == 0 || len > DATA_AHEAD_FILE {
            return;
        }
        loop {
            if done.load(Ordering::Acquire) {
                return;
            }
            let lead = self
                .requested
                .load(Ordering::Acquire)
                .saturating_sub(self.consumed.load(Ordering::Acquire));
            if lead + len <= self.window {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let Ok(f) = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
        else {
            return;
        };
        // SAFETY: `f` is an open descriptor for the duration of the call.
        unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_WILLNEED) };
        self.requested.fetch_add(len, Ordering::AcqRel);
    }
}

/// List and lstat everything under `roots` (honouring `excludes`, and staying on each
/// root's file system when `one_file_system` is set) with [`WARM_THREADS`] threads;
/// returns the number of directories listed when all is read or as soon as `done` is
/// set. With `data`, small files' contents are requested ahead too. Errors are ignored:
/// the walker meets and reports them itself.
pub fn warm_metadata(
    roots: &[PathBuf],
    excludes: &Excludes,
    one_file_system: bool,
    done: &AtomicBool,
    data: Option<&DataAhead<'_>>,
) -> usize {
    let (tx, rx) = unbounded();
    let shared = Shared {
        tx,
        rx,
        pending: AtomicUsize::new(0),
        read: AtomicUsize::new(0),
        excludes,
        one_file_system,
        done,
        data,
    };
    for root in roots {
        if let Ok(m) = fs::symlink_metadata(root)
            && m.is_dir()
        {
            shared.pending.fetch_add(1, Ordering::AcqRel);
            let _ = shared.tx.send((root.clone(), m.dev()));
        }
    }
    std::thread::scope(|s| {
        for _ in 0..WARM_THREADS {
            s.spawn(|| shared.run());
        }
    });
    shared.read.load(Ordering::Acquire)
}

impl Shared<'_> {
    fn run(&self) {
        while !self.done.load(Ordering::Acquire) {
            match self.rx.recv_timeout(Duration::from_millis(5)) {
                Ok((dir, dev)) => {
                    self.read_dir(&dir, dev);
                    self.pending.fetch_sub(1, Ordering::AcqRel);
                }
                Err(_) if self.pending.load(Ordering::Acquire) == 0 => return,
                Err(_) => {}
            }
        }
    }

    /// Lstat the entries of `dir` and queue its subdirectories while the queue has room.
    fn read_dir(&self, dir: &Path, dev: u64) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        self.read.fetch_add(1, Ordering::AcqRel);
        // A marked folder's contents are not stored: no use reading them ahead.
        let marks = self.excludes.marks(dir);
        for e in entries.flatten() {
            if self.done.load(Ordering::Acquire) {
                return;
            }
            let path = e.path();
            let name = e.file_name();
            if marks.excludes(&name) || self.excludes.matches(&path, &name) {
                continue;
            }
            let Ok(m) = fs::symlink_metadata(&path) else {
                continue;
            };
            if m.is_file()
                && let Some(d) = self.data
            {
                if !self.excludes.too_large(m.len()) {
                    d.request(&path, m.len(), self.done);
                }
                continue;
            }
            if !m.is_dir() || (self.one_file_system && m.dev() != dev) {
                continue;
            }
            if self.rx.len() < MAX_QUEUED {
                self.pending.fetch_add(1, Ordering::AcqRel);
                if self.tx.send((path, dev)).is_err() {
                    self.pending.fetch_sub(1, Ordering::AcqRel);
                }
            }
        }
    }
}

/// A metadata read-ahead of its own thread, started before a backup has opened its
/// repository: deriving the key and loading the index take a few hundred milliseconds in
/// which the disk would otherwise sit idle. Told to stop on drop, and not waited for: it
/// owns all it uses, and a read stuck in a hung mount must not hold up the backup's end.
pub struct MetadataWarmer {
    done: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<usize>>,
}

impl MetadataWarmer {
    /// Start reading ahead under `roots`, as [`warm_metadata`] does.
    pub fn start(roots: Vec<PathBuf>, excludes: Excludes, one_file_system: bool) -> Self {
        let done = Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        let thread = std::thread::Builder::new()
            .name("cairn-read-ahead".into())
            .spawn(move || warm_metadata(&roots, &excludes, one_file_system, &flag, None))
            .ok();
        MetadataWarmer { done, thread }
    }
}

impl MetadataWarmer {
    /// Stop and wait; the number of directories listed.
    #[cfg(test)]
    fn stop(mut self) -> usize {
        self.done.store(true, Ordering::Release);
        self.thread.take().and_then(|t| t.join().ok()).unwrap_or(0)
    }
}

impl Drop for MetadataWarmer {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Release);
        // Detached: it stops at its next directory.
        drop(self.thread.take());
    }
}

/// Read every file directly in `dir` once, with [`WARM_THREADS`] threads, so that a
/// reader meeting them one at a time finds them in the page cache: the metadata cache's
/// trees are thousands of small files, and read one by one on a cold cache they cost a
/// no-change backup a third of its time. Returns the files read; stops as soon as `done`
/// is set. Errors are ignored: the real reader checks every entry and fetches again.
pub fn warm_files(dir: &Path, done: &AtomicBool) -> usize {
    let Ok(rd) = fs::read_dir(dir) else {
        return 0;
    };
    let files: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
    let next = AtomicUsize::new(0);
    let read = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..WARM_THREADS {
            s.spawn(|| {
                let mut buf = vec![0u8; 64 * 1024];
                while !done.load(Ordering::Acquire) {
                    let Some(path) = files.get(next.fetch_add(1, Ordering::AcqRel)) else {
                        break;
                    };
                    let Ok(mut f) = fs::File::open(path) else {
                        continue;
                    };
                    let whole = loop {
                        match f.read(&mut buf) {
                            Ok(0) => break true,
                            Ok(_) => {}
                            Err(_) => break false,
                        }
                    };
                    if whole {
                        read.fetch_add(1, Ordering::AcqRel);
                    }
                }
            });
        }
    });
    read.load(Ordering::Acquire)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// It reads a whole tree and returns (no thread waits forever), skips what is
    /// excluded, and stops at once when told to.
    #[test]
    fn reads_a_tree_and_returns_or_stops_when_told() {
        let tmp = tempfile::tempdir().expect("tempdir");
        for d in ["a/b/c", "a/skip/deep", "d"] {
            fs::create_dir_all(tmp.path().join(d)).expect("mkdir");
        }
        fs::write(tmp.path().join("a/b/c/f"), b"x").expect("write");
        let ex = Excludes::new(&["skip".to_string()]).expect("excludes");
        let done = AtomicBool::new(false);
        // The root, a, a/b, a/b/c and d; not a/skip or below it.
        assert_eq!(
            warm_metadata(&[tmp.path().to_path_buf()], &ex, true, &done, None),
            5
        );
        done.store(true, Ordering::Release);
        let started = std::time::Instant::now();
        assert_eq!(
            warm_metadata(&[tmp.path().to_path_buf()], &ex, false, &done, None),
            0
        );
        assert!(started.elapsed() < Duration::from_secs(1));
        let missing = [tmp.path().join("missing")];
        assert_eq!(
            warm_metadata(&missing, &ex, false, &AtomicBool::new(false), None),
            0
        );
    }

    #[test]
    fn reads_every_file_of_a_directory_or_stops_when_told() {
        let tmp = tempfile::tempdir().expect("tempdir");
        for i in 0..20 {
            fs::write(tmp.path().join(format!("t{i}")), vec![i as u8; 100_000]).expect("write");
        }
        fs::create_dir(tmp.path().join("sub")).expect("mkdir");
        // Twenty files; the directory cannot be read as one and is not counted.
        assert_eq!(warm_files(tmp.path(), &AtomicBool::new(false)), 20);
        assert_eq!(warm_files(tmp.path(), &AtomicBool::new(true)), 0);
        assert_eq!(
            warm_files(&tmp.path().join("missing"), &AtomicBool::new(false)),
            0
        );
    }

    #[test]
    fn an_early_read_ahead_reads_everything_or_stops_when_told() {
        let tmp = tempfile::tempdir().expect("tempdir");
        for i in 0..100 {
            for j in 0..30 {
                fs::create_dir_all(tmp.path().join(format!("d{i}/e{j}"))).expect("mkdir");
            }
        }
        let root = vec![tmp.path().to_path_buf()];
        let all = 1 + 100 + 100 * 30;
        // Left alone, it lists every directory.
        let whole = MetadataWarmer::start(root.clone(), Excludes::default(), false);
        let started = std::time::Instant::now();
        while whole.thread.as_ref().is_some_and(|t| !t.is_finished()) {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "never finished"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(whole.stop(), all);
        // Stopped at once, it lists far fewer.
        let stopped = MetadataWarmer::start(root, Excludes::default(), false).stop();
        assert!(
            stopped < all / 2,
            "listed {stopped} of {all} after being stopped"
        );
    }

    #[test]
    fn data_is_requested_for_small_files_within_the_window() {
        let tmp = tempfile::tempdir().expect("tempdir");
        for i in 0..10 {
            fs::write(tmp.path().join(format!("small{i}")), [i as u8; 4096]).expect("write");
        }
        fs::write(tmp.path().join("empty"), b"").expect("write");
        let big = vec![1u8; DATA_AHEAD_FILE as usize + 1];
        fs::write(tmp.path().join("big"), &big).expect("write");
        let read_ahead = |done: &AtomicBool, data: &DataAhead<'_>| {
            warm_metadata(
                &[tmp.path().to_path_buf()],
                &Excludes::default(),
                false,
                done,
                Some(data),
            )
        };
        let consumed = AtomicU64::new(0);
        let mut data = DataAhead::new(&consumed);
        // Room for two of the small files until the readers consume more.
        data.window = 10_000;
        let done = AtomicBool::new(false);
        let wait_for = |want: u64| {
            let started = std::time::Instant::now();
            while data.requested() != want {
                assert!(
                    started.elapsed() < Duration::from_secs(20),
                    "requested {} bytes, expected {want}",
                    data.requested()
                );
                std::thread::sleep(Duration::from_millis(5));
            }
        };
        std::thread::scope(|s| {
            let walk = s.spawn(|| read_ahead(&done, &data));
            wait_for(2 * 4096);
            std::thread::sleep(Duration::from_millis(50));
            assert_eq!(data.requested(), 2 * 4096, "went past its window");
            // The readers catch up: the rest follows; the empty and the large file never.
            consumed.store(1 << 20, Ordering::Release);
            wait_for(10 * 4096);
            assert_eq!(walk.join().expect("join"), 1);
        });
        // A read-ahead waiting for room returns once told to stop.
        let consumed = AtomicU64::new(0);
        let mut data = DataAhead::new(&consumed);
        data.window = 0;
        let done = AtomicBool::new(false);
        std::thread::scope(|s| {
            let walk = s.spawn(|| read_ahead(&done, &data));
            std::thread::sleep(Duration::from_millis(50));
            assert!(
                !walk.is_finished(),
                "nothing could be requested, yet it finished"
            );
            done.store(true, Ordering::Release);
            assert_eq!(walk.join().expect("join"), 1);
        });
        assert_eq!(data.requested(), 0);
    }
}
