//! `restore --target -`: write one file's content, or a tar archive of a directory, to
//! a stream (stdout).
//!
//! A planner thread walks the snapshot ahead of the writer (trees read a range at a time
//! by the [`TreeLoader`]) and fetches the content the writer needs next, a window at a
//! time, in merged ranged reads with several in flight ([`read_plan`]). Fetched one blob
//! per request, a directory of small files cost a round trip per file. The writer takes
//! each blob from the window, opens and verifies it, and writes the entries in walk
//! order. Memory stays bounded: at most three windows of [`WINDOW_BYTES`] sealed bytes
//! (plus one blob each) exist at once (one being written, one handed over, one being
//! fetched), and [`READS_IN_FLIGHT`] reads of at most [`read_plan::MAX_RANGE`] bytes, from
//! which each blob is taken as its read completes. A blob the window lacks (not in the
//! primary's index, a failed read, a damaged blob) is read again through the
//! [`BlobReader`], which heals from copies.

use crate::backend::{FileType, Handle};
use crate::error::{Error, Result};
use crate::format::tree::{Node, NodeKind};
use crate::hash::BlobId;
use crate::heal::BlobReader;
use crate::index::BlobLocation;
use crate::pack::{check_location, open_blob};
use crate::read_plan::{self, Span};
use crate::tree_loader::TreeLoader;
use crossbeam_channel::{Receiver, Sender, bounded};
use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::runtime::Handle as Runtime;

/// Sealed bytes of content one window holds.
pub const WINDOW_BYTES: u64 = 8 * 1024 * 1024;
/// Blobs one window holds at most, so that windows of tiny blobs stay small too.
const WINDOW_BLOBS: usize = 4096;
/// Entries sent at most in one message, so that a tree of empty files and directories,
/// which fills no window, is not held whole.
const MAX_ENTRIES: usize = 4096;
/// Ranged reads in flight while a window is fetched.
const READS_IN_FLIGHT: usize = 6;
/// The planner's stack: it walks the snapshot recursively, a frame per directory level,
/// and a thread's default 2 MiB overflowed at about 2,000 levels.
const PLANNER_STACK: usize = 256 * 1024 * 1024;

/// Write the content of the file `node` to `out`; fails if the stored content does not
/// add up to the size the snapshot records.
pub fn dump_file(
    reader: &BlobReader<'_>,
    rt: &Runtime,
    node: &Node,
    out: &mut dyn Write,
) -> Result<u64> {
    let name = PathBuf::from(node.name.to_os());
    ahead(reader, rt, node, &name, |w| {
        // The file's own entry comes after its first window; only its content is written.
        w.next_entries()?;
        let mut written = 0u64;
        for id in &node.content {
            let plain = w.blob(id)?;
            out.write_all(&plain)
                .map_err(|e| Error::io("write", Path::new("<output>"), e))?;
            written += plain.len() as u64;
        }
        if written != node.size {
            return Err(size_mismatch(&node.name.lossy(), written, node.size));
        }
        Ok(written)
    })
}

/// Write a tar archive (GNU format, paths relative to `name`) of the directory `node`
/// and everything below it to `out`.
pub fn dump_tar(
    reader: &BlobReader<'_>,
    rt: &Runtime,
    node: &Node,
    name: &Path,
    out: &mut dyn Write,
) -> Result<()> {
    ahead(reader, rt, node, name, |w| {
        let mut tar = tar::Builder::new(out);
        tar.follow_symlinks(false);
        while let Some(entries) = w.next_entries()? {
            for (path, node) in entries {
                add_entry(w, &mut tar, &node, &path)?;
            }
        }
        tar.into_inner()
            .map_err(|e| Error::io("finish tar archive on", Path::new("<output>"), e))?;
        Ok(())
    })
}

/// Run `write` with a planner walking `root` (called `name`) ahead of it.
fn ahead<T>(
    reader: &BlobReader<'_>,
    rt: &Runtime,
    root: &Node,
    name: &Path,
    write: impl FnOnce(&mut Writer<'_>) -> Result<T>,
) -> Result<T> {
    // One message waiting: the planner fetches the next window while the writer works
    // through the current one, and no further.
    let (tx, rx) = bounded(1);
    let stopped = AtomicBool::new(false);
    std::thread::scope(|s| {
        let stopped = &stopped;
        let planner = std::thread::Builder::new()
            .name("cairn-dump-planner".into())
            .stack_size(PLANNER_STACK)
            .spawn_scoped(s, move || {
                let trees = TreeLoader::new(reader);
                let mut planner = Planner {
                    reader,
                    trees: &trees,
                    rt,
                    tx,
                    stopped,
                    entries: Vec::new(),
                    window: Vec::new(),
                    listed: HashSet::new(),
                    bytes: 0,
                };
                planner.run(root, name);
            })
            .map_err(|e| Error::io("start a thread for", name, e))?;
        let mut writer = Writer {
            reader,
            rt,
            rx,
            window: Window::default(),
            held: None,
        };
        let written = write(&mut writer);
        // The planner stops at its next entry or blob, instead of walking on unread.
        stopped.store(true, Ordering::Release);
        drop(writer);
        if planner.join().is_err() {
            return Err(Error::io(
                "read ahead for",
                name,
                io::Error::other("the read-ahead thread failed"),
            ));
        }
        written
    })
}

/// What the planner hands the writer, in walk order.
enum Msg {
    /// Content for the entries that follow (and the rest of the file before them).
    Data(Window),
    /// Entries to write, with their paths in the archive.
    Entries(Vec<(PathBuf, Node)>),
    /// The walk failed here; everything before has been sent.
    Failed(Error),
    /// The walk is complete: a channel closed without this means the planner died.
    Done,
}

/// Sealed blobs by id, and where each lies; `None` for a blob the window has no bytes
/// for, which the writer reads through the healing reader.
#[derive(Default)]
struct Window {
    blobs: HashMap<BlobId, Option<(BlobLocation, Vec<u8>)>>,
}

/// Walks the snapshot and fetches content ahead of the writer.
struct Planner<'p> {
    reader: &'p BlobReader<'p>,
    trees: &'p TreeLoader<'p>,
    rt: &'p Runtime,
    tx: Sender<Msg>,
    /// Set once the writer is finished, successfully or not.
    stopped: &'p AtomicBool,
    /// Entries not yet sent: they go after the window holding (the start of) their content.
    entries: Vec<(PathBuf, Node)>,
    /// The next window's blobs, each once, in walk order.
    window: Vec<(BlobId, Option<BlobLocation>)>,
    /// The blobs in `window`.
    listed: HashSet<BlobId>,
    /// Sealed bytes of `window`.
    bytes: u64,
}

/// The writer went away (it failed, or the output closed): stop walking.
struct Gone;

impl Planner<'_> {
    fn run(&mut self, root: &Node, name: &Path) {
        let walked = self.walk(root.clone(), name.to_path_buf());
        let failed = match walked {
            Ok(()) => None,
            Err(Stop::Gone) => return,
            Err(Stop::Failed(e)) => Some(e),
        };
        if self.flush().is_ok() {
            let _ = self.tx.send(match failed {
                Some(e) => Msg::Failed(e),
                None => Msg::Done,
            });
        }
    }

    fn walk(&mut self, node: Node, path: PathBuf) -> std::result::Result<(), Stop> {
        if self.stopped.load(Ordering::Acquire) {
            return Err(Stop::Gone);
        }
        let subtree = match node.kind {
            NodeKind::Dir => node.subtree,
            _ => None,
        };
        let content = match node.kind {
            NodeKind::File => node.content.clone(),
            _ => Vec::new(),
        };
        self.entries.push((path.clone(), node));
        if self.entries.len() >= MAX_ENTRIES {
            self.flush()?;
        }
        for id in content {
            self.want(id)?;
        }
        if let Some(sub) = subtree {
            let tree = self
                .trees
                .tree(self.rt, &sub, &path)
                .map_err(Stop::Failed)?;
            for child in tree.nodes {
                let at = path.join(child.name.to_os());
                self.walk(child, at)?;
            }
        }
        Ok(())
    }

    /// Add a blob to the window, sending the window on once it is full.
    fn want(&mut self, id: BlobId) -> std::result::Result<(), Gone> {
        if self.stopped.load(Ordering::Acquire) {
            return Err(Gone);
        }
        if self.listed.insert(id) {
            // A location no writer can have produced is left to the healing reader,
            // which refuses it with its reason, rather than read.
            let loc = self
                .reader
                .primary()
                .index
                .get(&id)
                .filter(|l| check_location(l).is_ok());
            self.bytes += loc.map_or(0, |l| u64::from(l.length));
            self.window.push((id, loc));
        }
        if self.bytes >= WINDOW_BYTES || self.window.len() >= WINDOW_BLOBS {
            self.flush()?;
        }
        Ok(())
    }

    /// Fetch the window and send it, then the entries waiting for it.
    fn flush(&mut self) -> std::result::Result<(), Gone> {
        let window = std::mem::take(&mut self.window);
        self.listed.clear();
        self.bytes = 0;
        if !window.is_empty() {
            let data = self.fetch(window);
            self.tx.send(Msg::Data(data)).map_err(|_| Gone)?;
        }
        if !self.entries.is_empty() {
            let entries = std::mem::take(&mut self.entries);
            self.tx.send(Msg::Entries(entries)).map_err(|_| Gone)?;
        }
        Ok(())
    }

    /// Read the window's blobs in merged ranges, several at a time.
    fn fetch(&self, window: Vec<(BlobId, Option<BlobLocation>)>) -> Window {
        let mut out = Window::default();
        let mut located = Vec::new();
        for (id, loc) in window {
            match loc {
                Some(l) => located.push((id, l)),
                None => {
                    out.blobs.insert(id, None);
                }
            }
        }
        let spans = read_plan::spans(located, |(_, l)| l);
        let backend = self.reader.primary().repo.backend();
        // Each read runs as a task of the runtime, as the restore's do, so the body is
        // received on the thread that polls the socket; its blobs are taken out as soon as
        // it completes, so only the reads in flight hold whole ranges.
        let read = |span: Span<(BlobId, BlobLocation)>| {
            let handle = Handle::new(FileType::Pack, span.pack.to_hex());
            let (start, len) = (span.start, span.end - span.start);
            let backend = backend.clone();
            // A pack that gave no answer moments ago is not read ahead (checked as each
            // read starts): the healing reader reads from a copy or fails at once.
            let read = async move {
                let task = self
                    .rt
                    .spawn(async move { backend.get_range(&handle, start, len).await });
                task.await
                    .map_err(|e| Error::InvalidInput(e.to_string()))
                    .and_then(|read| Ok(read?))
            };
            async move {
                let bytes = match self.reader.from_primary(span.pack, read).await {
                    Ok(Ok(bytes)) => Some(bytes),
                    Ok(Err(e)) => {
                        tracing::debug!("read-ahead of {}: {e}", span.pack.short());
                        None
                    }
                    Err(_resting) => None,
                };
                span.blobs
                    .into_iter()
                    .map(|(id, loc)| {
                        // Anything wrong with the range leaves the blob to the healing
                        // reader.
                        let sealed = bytes.as_ref().and_then(|b| {
                            b.get(read_plan::position(span.start, &loc)?)
                                .map(<[u8]>::to_vec)
                        });
                        (id, sealed.map(|s| (loc, s)))
                    })
                    .collect::<Vec<_>>()
            }
        };
        let blobs: Vec<Vec<_>> = self.rt.block_on(async {
            use futures_util::stream::{self, StreamExt};
            stream::iter(spans.into_iter().map(read))
                .buffer_unordered(READS_IN_FLIGHT)
                .collect()
                .await
        });
        out.blobs.extend(blobs.into_iter().flatten());
        out
    }
}

/// Why a walk stopped early.
enum Stop {
    Gone,
    Failed(Error),
}

impl From<Gone> for Stop {
    fn from(_: Gone) -> Self {
        Stop::Gone
    }
}

/// Takes entries and content from the planner.
struct Writer<'p> {
    reader: &'p BlobReader<'p>,
    rt: &'p Runtime,
    rx: Receiver<Msg>,
    window: Window,
    /// A message taken while looking for a window that was not one.
    held: Option<Msg>,
}

impl<'p> Writer<'p> {
    fn recv(&mut self) -> Option<Msg> {
        self.held.take().or_else(|| self.rx.recv().ok())
    }

    /// The next entries to write; `None` once the walk is done.
    fn next_entries(&mut self) -> Result<Option<Vec<(PathBuf, Node)>>> {
        loop {
            match self.recv() {
                Some(Msg::Data(w)) => self.window = w,
                Some(Msg::Entries(e)) => return Ok(Some(e)),
                Some(Msg::Failed(e)) => return Err(e),
                Some(Msg::Done) => return Ok(None),
                None => {
                    return Err(Error::io(
                        "read ahead for",
                        Path::new("<output>"),
                        io::Error::other("the read-ahead thread stopped before the end"),
                    ));
                }
            }
        }
    }

    /// The plaintext of the next blob of the content being written, verified.
    fn blob(&mut self, id: &BlobId) -> Result<Vec<u8>> {
        while !self.window.blobs.contains_key(id) {
            match self.recv() {
                Some(Msg::Data(w)) => self.window = w,
                // The planner lists every blob before the entries after it, so this is
                // not expected; the healing reader still serves the blob.
                other => {
                    self.held = other;
                    break;
                }
            }
        }
        let primary = self.reader.primary();
        if let Some(Some((loc, sealed))) = self.window.blobs.get(id) {
            match open_blob(primary.repo.keys(), id, loc, sealed) {
                Ok(plain) => return Ok(plain),
                Err(e) => tracing::debug!("blob {} in the read-ahead: {e}", id.short()),
            }
        }
        self.rt.block_on(self.reader.read(id))
    }

    /// The content of file `node`, as a `Read`.
    fn body<'w>(&'w mut self, node: &'w Node) -> BlobStream<'w, 'p> {
        BlobStream {
            writer: self,
            node,
            next: 0,
            buf: Vec::new(),
            pos: 0,
            total: 0,
        }
    }
}

fn size_mismatch(what: &str, got: u64, want: u64) -> Error {
    Error::Corrupt {
        object: format!("content list of {what}"),
        reason: format!("holds {got} bytes but the snapshot records {want}"),
    }
}

/// One entry of the archive; a file's content comes from the writer's windows.
fn add_entry(
    w: &mut Writer<'_>,
    tar: &mut tar::Builder<&mut dyn Write>,
    node: &Node,
    path: &Path,
) -> Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_mode(node.mode & 0o7777);
    h.set_uid(u64::from(node.uid));
    h.set_gid(u64::from(node.gid));
    h.set_mtime(u64::try_from(node.mtime).unwrap_or(0));
    let out_err = |e: io::Error| Error::io("write tar entry for", path, e);
    match node.kind {
        NodeKind::Dir => {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_size(0);
            tar.append_data(&mut h, path, io::empty())
                .map_err(out_err)?;
        }
        NodeKind::File => {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(node.size);
            tar.append_data(&mut h, path, w.body(node))
                .map_err(out_err)?;
        }
        NodeKind::Symlink => {
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            let target = node
                .link_target
                .as_ref()
                .map(|t| t.to_os())
                .unwrap_or_default();
            tar.append_link(&mut h, path, Path::new(&target))
                .map_err(out_err)?;
        }
        // Devices, fifos and sockets: tar can hold them, but a dump is for reading data.
        _ => tracing::warn!("{}: special file left out of the archive", path.display()),
    }
    Ok(())
}

/// A file's content as a `Read`, blob by blob from the writer's windows.
struct BlobStream<'w, 'p> {
    writer: &'w mut Writer<'p>,
    node: &'w Node,
    next: usize,
    buf: Vec<u8>,
    pos: usize,
    total: u64,
}

impl Read for BlobStream<'_, '_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() {
            let Some(id) = self.node.content.get(self.next) else {
                if self.total != self.node.size {
                    return Err(io::Error::other(size_mismatch(
                        &self.node.name.lossy(),
                        self.total,
                        self.node.size,
                    )));
                }
                return Ok(0);
            };
            self.next += 1;
            self.buf = self.writer.blob(id).map_err(io::Error::other)?;
            self.pos = 0;
            self.total += self.buf.len() as u64;
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
