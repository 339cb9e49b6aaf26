//! Reading a source file into stored blobs, as one consistent version of it.
//!
//! A file is read when it has been left alone for a moment (its ctime older than
//! [`STILL_FOR`]), up to the length it had then, and read again (three attempts) when
//! its size or times moved meanwhile. A file of more than [`SMALL_FILE`] that grew
//! while read goes to the rule below at once, with the bytes already read. A file that
//! never stops changing (an application log appended to all the time, a database written
//! without pause) still gets a version in every snapshot, by this rule (docs/FORMAT.md,
//! section 12, `changing`):
//! - Its bytes up to the length it had when opened are read, then read again, only
//!   hashing. When both reads give the same chunks and the file did not shrink, each
//!   chunk was the same at both of its reads: the file is taken to have only grown (a
//!   log), and that prefix is stored clean, with that length and the times it had when
//!   opened.
//! - Otherwise it was changed in place: what the first of the two reads gave is stored,
//!   its node marked `changing`, and the backup reports it, so a restore can say so.
//!
//! Either way the node's ctime is stored as one no file has (nanoseconds past a second,
//! [`crate::format::tree::UNSETTLED_CTIME_NSEC`]): such a version is never carried over
//! by the next backup (of this or an older cairn) without reading the file again, even
//! when the file's times did not move after the read. So a file that exists is never
//! left out for changing, and a version that may mix older and newer bytes is never
//! presented as clean.

use super::sink::{BlobSender, BlobSink, SMALL_FILE, pipeline_closed};
use crate::chunker::{ChunkStream, Chunker};
use crate::error::Result;
use crate::format::index::BlobKind;
use crate::hash::BlobId;
use crate::progress::{Progress, RunControl};
use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read, Seek};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::Ordering;

/// Open a source file the walker saw as a regular file, and its metadata as opened.
/// `O_NONBLOCK`: a FIFO swapped in since the walk would otherwise block open(2) until a
/// writer came, freezing the reader for good; with it the open returns at once and the
/// caller turns away anything that is not a regular file (by the metadata returned,
/// from `fstat` on the descriptor). `O_NOFOLLOW`: a symlink swapped in is not followed.
/// A regular file gets blocking reads back.
pub(super) fn open_source(path: &Path) -> io::Result<(File, Metadata)> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    let meta = file.metadata()?;
    if meta.is_file() {
        clear_nonblock(&file)?;
    }
    Ok((file, meta))
}

/// Clear `O_NONBLOCK` on an open descriptor (set only to open a path that might be a
/// FIFO without blocking).
fn clear_nonblock(file: &File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a descriptor this function borrows open; F_GETFL/F_SETFL only read
    // and set its status flags.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// What reading a file came to.
pub(super) enum FileRead {
    /// Stored.
    Stored(Box<StoredFile>),
    /// Not stored, and why (a warning).
    Skipped(String),
}

/// A version of a file that was stored.
#[derive(Clone)]
pub(super) struct StoredFile {
    /// Its content blobs, in order.
    pub content: Vec<BlobId>,
    /// The file's metadata for this version: as it was while read, or before the read
    /// when it kept changing.
    pub meta: Metadata,
    /// Its length: the content's, which may differ from `meta`'s when it kept changing.
    pub size: u64,
    /// Set when it was changing while read, and stored as read: why (for the report).
    pub changing: Option<String>,
    /// Read by the rule for files that never stand still: the next backup must read it
    /// again whatever its times say.
    pub read_again: bool,
}

impl StoredFile {
    /// A version read while the file stood still: all `meta` says is true of it.
    fn clean(content: Vec<BlobId>, meta: Metadata) -> Self {
        StoredFile {
            content,
            size: meta.size(),
            meta,
            changing: None,
            read_again: false,
        }
    }
}

/// Reads files consistently into stored blobs; one per reader thread (and one for the
/// walker's own reads), each keeping its chunk buffer from file to file.
pub(super) struct FileReader<'a> {
    sink: &'a BlobSink<'a>,
    pub tx: BlobSender,
    control: &'a RunControl,
    chunker: Chunker,
    buf: Vec<u8>,
}

/// Whether two looks at a file saw the same version of it (same inode, size and times):
/// what was stored for one then stands for the other.
pub(super) fn same_file(a: &Metadata, b: &Metadata) -> bool {
    a.dev() == b.dev()
        && a.ino() == b.ino()
        && a.size() == b.size()
        && a.mtime() == b.mtime()
        && a.mtime_nsec() == b.mtime_nsec()
        && a.ctime() == b.ctime()
        && a.ctime_nsec() == b.ctime_nsec()
}

impl<'a> FileReader<'a> {
    /// A reader that stores through `sink` and sends sealed blobs on `tx` (its own sender,
    /// so the packer sees the channel close when the last reader is done).
    pub(super) fn new(sink: &'a BlobSink<'a>, tx: BlobSender, control: &'a RunControl) -> Self {
        FileReader {
            sink,
            tx,
            control,
            chunker: sink.repo.chunker(),
            buf: Vec::new(),
        }
    }

    /// Read a file into stored blobs, trying again when it changed while being read, and
    /// storing a version by the module's rule when it never stood still. The error is a
    /// repository failure or a stop; a file that cannot be read at all (gone, not
    /// readable, no longer a regular file) is [`FileRead::Skipped`].
    pub(super) fn read(&mut self, path: &Path, meta: &Metadata) -> Result<FileRead> {
        const ATTEMPTS: usize = 3;
        // Files queued before the walker failed are not worth reading.
        if self.sink.abandoned.load(Ordering::Acquire) {
            return Err(pipeline_closed());
        }
        let mut last = String::new();
        for attempt in 1..=ATTEMPTS {
            match self.read_once(path, meta)? {
                Attempt::Clean(content, after) => {
                    let stored = StoredFile::clean(content, after);
                    return Ok(FileRead::Stored(Box::new(stored)));
                }
                // Another whole read would only grow with it (a large log read for
                // longer than its writer pauses): the prefix read is checked now.
                Attempt::Grew(file, before, first) => {
                    let why = attempts("grew while being read", attempt);
                    let read = before.size();
                    let stored = self.settle(path, &file, *before, first, read, &why)?;
                    return Ok(FileRead::Stored(Box::new(stored)));
                }
                Attempt::Skip(Skip::Retry(why)) => last = attempts(&why, attempt),
                Attempt::Skip(Skip::Fail(why)) => return Ok(FileRead::Skipped(why)),
            }
        }
        // Changed through every attempt: one more read, by the module's rule.
        let (file, before) = match open_regular(path)? {
            Ok(x) => x,
            Err(Skip::Fail(why) | Skip::Retry(why)) => return Ok(FileRead::Skipped(why)),
        };
        self.control.progress.set_current(&path.to_string_lossy());
        let len = before.size();
        let (first, read) = match self.chunk(&file, len, Store::Yes)? {
            (Ok(content), read) => (content, read),
            (Err(e), _) => return Ok(FileRead::Skipped(format!("read error: {e}"))),
        };
        let stored = self.settle(path, &file, before, first, read, &last)?;
        Ok(FileRead::Stored(Box::new(stored)))
    }

    /// One attempt at reading a file. The error carries repository failures.
    fn read_once(&mut self, path: &Path, lmeta: &Metadata) -> Result<Attempt> {
        let (file, before) = match open_regular(path)? {
            Ok(x) => x,
            Err(skip) => return Ok(Attempt::Skip(skip)),
        };
        if before.ino() != lmeta.ino() || before.dev() != lmeta.dev() {
            let why = "was replaced while being read".into();
            return Ok(Attempt::Skip(Skip::Retry(why)));
        }
        let before = match wait_until_still(&file, before) {
            Ok(Some(m)) => m,
            Ok(None) => {
                let why = "is being written right now".into();
                return Ok(Attempt::Skip(Skip::Retry(why)));
            }
            Err(e) => return Ok(Attempt::Skip(Skip::Fail(format!("cannot stat: {e}")))),
        };
        self.control.progress.set_current(&path.to_string_lossy());
        // Up to the length it had: a file appended faster than it is read is not chased.
        let len = before.size();
        let (chunked, read) = self.chunk(&file, len, Store::Yes)?;
        let content = match chunked {
            Ok(content) => content,
            Err(e) => return Ok(Attempt::Skip(Skip::Fail(format!("read error: {e}")))),
        };
        let after = match File::metadata(&file) {
            Ok(m) => m,
            Err(e) => return Ok(Attempt::Skip(Skip::Fail(format!("cannot stat: {e}")))),
        };
        if same_file(&before, &after) && read == after.size() {
            return Ok(Attempt::Clean(content, after));
        }
        // A large file that grew: reading it whole again is slow and would most likely
        // meet more growth.
        if read == len && after.ino() == before.ino() && after.size() > len && len > SMALL_FILE {
            return Ok(Attempt::Grew(file, Box::new(before), content));
        }
        let why = "changed while being read".into();
        Ok(Attempt::Skip(Skip::Retry(why)))
    }

    /// The version of a file that never stood still (`why`), by the module's rule, from
    /// its first read (`first`: `read` bytes of the `before.size()` it had when opened,
    /// stored already): clean when a second read agrees and it did not shrink, else
    /// marked `changing`.
    fn settle(
        &mut self,
        path: &Path,
        file: &File,
        before: Metadata,
        first: Vec<BlobId>,
        read: u64,
        why: &str,
    ) -> Result<StoredFile> {
        let len = before.size();
        let mut again = None;
        if read == len && (&*file).rewind().is_ok() {
            match self.chunk(file, len, Store::No)? {
                (Ok(ids), n) if n == read => again = Some(ids),
                _ => {}
            }
        }
        let grown = file.metadata().is_ok_and(|after| after.size() >= len);
        if grown && again.as_ref() == Some(&first) {
            tracing::info!(
                "{}: {why}; stored as it was when reading started ({len} bytes): it only grew while it was read",
                path.display()
            );
            return Ok(StoredFile {
                read_again: true,
                ..StoredFile::clean(first, before)
            });
        }
        Ok(StoredFile {
            content: first,
            meta: before,
            size: read,
            changing: Some(format!(
                "stored while it was being changed ({why}): it may mix older and newer bytes; the snapshot marks it"
            )),
            read_again: true,
        })
    }

    /// Chunk at most `len` bytes of `file` (the length it had when opened) from where it
    /// stands, storing each chunk (or, with [`Store::No`], only naming it); also how many
    /// bytes were read. The inner error is the file's read error.
    fn chunk(
        &mut self,
        file: &File,
        len: u64,
        store: Store,
    ) -> Result<(io::Result<Vec<BlobId>>, u64)> {
        // A file of several chunks reads through a window and a half (6 MiB with the default
        // sizes): borrowed from a small shared set, so that many readers can keep a cold
        // disk busy with small files without each holding that much.
        let mut loan = (len > SMALL_FILE).then(|| self.sink.windows.lend());
        let buf = match &mut loan {
            Some(l) => l.take(),
            None => std::mem::take(&mut self.buf),
        };
        let reader = file.take(len);
        let mut stream = ChunkStream::with_buffer(reader, self.chunker.clone(), buf);
        let chunked = self.chunk_all(&mut stream, store);
        let read = stream.bytes_read();
        let buf = stream.into_buffer();
        match &mut loan {
            Some(l) => l.put(buf),
            // A file that grew while it was read may have grown the buffer: not kept.
            None if buf.len() > 2 * SMALL_FILE as usize => {}
            None => self.buf = buf,
        }
        drop(loan);
        self.sink.data_read.fetch_add(read, Ordering::Relaxed);
        Ok((chunked?, read))
    }

    /// Every chunk of the stream, stored (or only named); the inner error is the file's
    /// read error.
    fn chunk_all<R: Read>(
        &self,
        stream: &mut ChunkStream<R>,
        store: Store,
    ) -> Result<io::Result<Vec<BlobId>>> {
        let mut content = Vec::new();
        loop {
            match stream.next_chunk_ref() {
                Ok(Some(chunk)) => {
                    self.control.check()?;
                    if self.sink.abandoned.load(Ordering::Acquire) {
                        return Err(pipeline_closed());
                    }
                    let id = self.sink.repo.keys().blob_id(chunk);
                    let len = chunk.len() as u64;
                    // A read that only checks moves the read counter too (the daemon
                    // sees progress), not what is done.
                    Progress::add(&self.control.progress.bytes_read, len);
                    if store == Store::Yes {
                        Progress::add(&self.control.progress.bytes_done, len);
                        self.sink.store(&self.tx, id, BlobKind::Data, chunk)?;
                    }
                    content.push(id);
                }
                Ok(None) => return Ok(Ok(content)),
                Err(e) => return Ok(Err(e)),
            }
        }
    }
}

/// Whether [`FileReader::chunk`] stores what it reads or only names it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Store {
    Yes,
    No,
}

/// Open `path` as a regular file, with its metadata as opened; why not, as a skip.
fn open_regular(path: &Path) -> Result<Result<(File, Metadata), Skip>> {
    Ok(match open_source(path) {
        Ok((file, meta)) if meta.is_file() => Ok((file, meta)),
        Ok(_) => Err(Skip::Retry("was replaced while being read".into())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Err(Skip::Fail("vanished before it could be read".into()))
        }
        Err(e) => Err(Skip::Fail(format!("cannot open: {e}"))),
    })
}

/// How long a file must have been left alone before it is read. File times come from a
/// coarse clock (one tick is 1 to 10 ms), so a write within the tick of the previous one
/// leaves mtime and ctime unchanged, and a read it overlapped would look clean. Once the
/// file's last change is older than a tick, any write during the read moves its times and
/// the before/after comparison catches it (git's "racy file" problem, solved the same way).
const STILL_FOR: std::time::Duration = std::time::Duration::from_millis(20);

/// Wait (a few times at most) until the open file's last change is older than
/// [`STILL_FOR`]; `None` if it keeps changing.
fn wait_until_still(file: &File, mut meta: Metadata) -> io::Result<Option<Metadata>> {
    for _ in 0..4 {
        // ctime, not mtime: every write moves both, but only mtime can be set by hand
        // (an archive's dates, a clock in the future), and ctime cannot.
        let changed = std::time::UNIX_EPOCH
            + std::time::Duration::new(
                u64::try_from(meta.ctime()).unwrap_or(0),
                u32::try_from(meta.ctime_nsec()).unwrap_or(0),
            );
        match std::time::SystemTime::now().duration_since(changed) {
            Ok(age) if age < STILL_FOR => std::thread::sleep(STILL_FOR - age),
            // Old enough, or changed "in the future" after the clock was set back: the
            // wait cannot help, read it.
            _ => return Ok(Some(meta)),
        }
        meta = file.metadata()?;
    }
    Ok(None)
}

/// `why`, with how many reads it took.
fn attempts(why: &str, n: usize) -> String {
    format!("{why} ({n} attempt{})", if n == 1 { "" } else { "s" })
}

/// Why a read of a file stored nothing.
enum Skip {
    /// It changed: try again.
    Retry(String),
    /// It cannot be read (gone, unreadable): say so.
    Fail(String),
}

/// What one attempt at reading a file came to.
enum Attempt {
    /// Read while it stood still: its content and metadata.
    Clean(Vec<BlobId>, Metadata),
    /// A large file that grew while read: the open file, its metadata when opened, and
    /// the content of its first `size` bytes (stored).
    Grew(File, Box<Metadata>, Vec<BlobId>),
    /// Nothing stored.
    Skip(Skip),
}
#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::ffi::OsStrExt;
    use std::time::Duration;

    #[test]
    fn a_fifo_swapped_in_for_a_file_does_not_block_the_reader() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("swapped");
        let c = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("path");
        // SAFETY: mkfifo reads a NUL-terminated path that lives across the call.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let (tx, rx) = std::sync::mpsc::channel();
        let p = path.clone();
        std::thread::spawn(move || {
            let _ = tx.send(open_source(&p).map(|(_, m)| m.is_file()));
        });
        let opened = rx.recv_timeout(Duration::from_secs(5)).unwrap_or_else(|_| {
            // Unblock the stuck open so the thread ends, then fail.
            let _ = OpenOptions::new().write(true).open(&path);
            panic!("opening a FIFO blocked the reader");
        });
        assert!(!opened.expect("opened"), "a FIFO is not a regular file");
        // A regular file reads with blocking reads.
        fs::write(dir.path().join("plain"), b"data").expect("write");
        let (f, m) = open_source(&dir.path().join("plain")).expect("open");
        assert!(m.is_file());
        // SAFETY: F_GETFL on a descriptor `f` keeps open.
        let flags = unsafe { libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(&f), libc::F_GETFL) };
        assert_eq!(flags & libc::O_NONBLOCK, 0);
    }
}
