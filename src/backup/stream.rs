//! A snapshot of one stream: what arrives on standard input, or a database dump a command
//! writes, stored as a single file. The stream is read once, front to back, through the
//! same content-defined chunker as files, so a second dump of an unchanged database
//! shares almost every chunk with the first. Memory stays bounded whatever the stream's
//! length: chunks are sealed by a few threads from a bounded queue and packed as for any
//! backup, and only the list of chunk ids grows (32 bytes per chunk, about 130 KiB for a
//! 4 GiB stream).
//!
//! The snapshot is written only when the caller's `finish` says the stream was whole (a
//! command that exited 0), after every pack and index object is durable. A stream that
//! ends early leaves at most unreferenced packs, which the next dump reuses and a prune
//! removes.

use super::context::BackupContext;
use super::sink::{BlobSender, BlobSink, SEALED_QUEUE, pipeline_closed};
use super::{BackupReport, Warning};
use crate::chunker::ChunkStream;
use crate::compression::Compression;
use crate::error::{Error, Result};
use crate::format::index::BlobKind;
use crate::format::name::ByteName;
use crate::format::snapshot::{Snapshot, Summary};
use crate::format::tree::{Node, NodeKind, Tree, unsafe_name_reason};
use crate::hash::BlobId;
use crate::packer::run_packer;
use crate::progress::{Phase, Progress, RunControl};
use crate::repo::Repository;
use crossbeam_channel::bounded;
use std::io::Read;
use std::sync::atomic::Ordering;
use tokio::runtime::Handle as Runtime;

/// The name a stream gets when the user gives none (restic's).
pub const DEFAULT_STREAM_NAME: &str = "stdin";

/// What a stream snapshot records and how it runs.
#[derive(Clone, Debug)]
pub struct StreamOptions {
    /// Where the file goes in the snapshot: `app.dump`, or `db/app.dump` (folders made).
    pub filename: String,
    /// Where the bytes came from, for the snapshot's `origin` (`stdin`, `command: ...`).
    pub origin: String,
    /// Tags for the snapshot.
    pub tags: Vec<String>,
    /// Host name recorded.
    pub hostname: String,
    /// User name recorded.
    pub username: String,
    /// RFC 3339 time of the snapshot; also the file's modification time.
    pub time: String,
    /// Threads that compress and seal chunks.
    pub workers: usize,
    /// Pack uploads in flight at once.
    pub max_uploads: usize,
    /// How to compress the stream's chunks; `None`: the repository's default, else
    /// `auto` ([`Repository::compression_for`]).
    pub compression: Option<Compression>,
    /// Stop flag and live counters.
    pub control: RunControl,
}

/// The components of a stream's file name in the snapshot, checked: one or more plain
/// names (a leading `/` is dropped), none empty, `.` or `..`. The error names the fix.
pub fn stream_path(name: &str) -> Result<Vec<String>> {
    let parts: Vec<&str> = name.trim_start_matches('/').split('/').collect();
    for p in &parts {
        if let Some(why) = unsafe_name_reason(p.as_bytes()) {
            return Err(Error::InvalidInput(format!(
                "--stdin-filename {name:?}: a part of it {why}; give a plain name such as \"app.dump\" or \"db/app.dump\""
            )));
        }
    }
    Ok(parts.into_iter().map(str::to_string).collect())
}

/// Store `input` as the one file of a new snapshot. `finish` is called once the stream
/// ended, before anything is committed: an error from it (a command that failed) means
/// no snapshot. `ctx` must be refreshed by the caller; what this run stores is added to
/// its index. Must be called from a thread that is not driving the runtime.
pub fn backup_stream(
    repo: &Repository,
    rt: &Runtime,
    opts: &StreamOptions,
    input: &mut dyn Read,
    finish: &mut dyn FnMut() -> Result<()>,
    ctx: &mut BackupContext,
) -> Result<BackupReport> {
    let parts = stream_path(&opts.filename)?;
    let mtime =
        time::OffsetDateTime::parse(&opts.time, &time::format_description::well_known::Rfc3339)
            .map_err(|e| Error::InvalidInput(format!("snapshot time {:?}: {e}", opts.time)))?
            .unix_timestamp();
    let progress = &opts.control.progress;
    progress.set_phase(Phase::Scanning);
    progress.set_current(&format!("/{}", parts.join("/")));
    let result = store_and_commit(repo, rt, opts, input, finish, ctx, &parts, mtime);
    progress.set_phase(Phase::Idle);
    result
}

/// The `origin` a snapshot of a command's output records: `command: <command line>`.
pub fn command_origin(argv: &[String]) -> String {
    format!("command: {}", crate::external::shown(argv))
}

/// Run `spec` and store its standard output as [`backup_stream`] does: the snapshot is
/// saved only if the command exits 0 after all of its output was stored; its error
/// output goes to `log`; a stop of `opts.control` ends its whole process group.
pub fn backup_command(
    repo: &Repository,
    rt: &Runtime,
    opts: &StreamOptions,
    spec: &crate::external::Spec,
    log: crate::external::LineSink,
    ctx: &mut BackupContext,
) -> Result<BackupReport> {
    let (mut child, mut output) =
        crate::external::StreamCommand::start(spec, log, opts.control.cancel.clone())?;
    backup_stream(repo, rt, opts, &mut output, &mut || child.finish(), ctx)
}

/// The stream's chunks and trees, stored; then the snapshot, if `finish` agrees.
#[allow(clippy::too_many_arguments)]
fn store_and_commit(
    repo: &Repository,
    rt: &Runtime,
    opts: &StreamOptions,
    input: &mut dyn Read,
    finish: &mut dyn FnMut() -> Result<()>,
    ctx: &mut BackupContext,
    parts: &[String],
    mtime: i64,
) -> Result<BackupReport> {
    let workers = opts.workers.max(1);
    let sink = BlobSink::new(
        repo,
        &ctx.index,
        workers,
        repo.compression_for(opts.compression),
    );
    let (sealed_tx, sealed_rx) = bounded(SEALED_QUEUE);
    // Chunks waiting to be sealed: each holds at most one chunk (4 MiB by default).
    let (plain_tx, plain_rx) = bounded::<(BlobId, Vec<u8>)>(workers);
    let control = &opts.control;
    let (stored, packed, sealed) = std::thread::scope(|s| {
        let sink = &sink;
        let sealers: Vec<_> = (0..workers)
            .map(|_| {
                let (rx, tx) = (plain_rx.clone(), sealed_tx.clone());
                s.spawn(move || -> Result<()> {
                    for (id, plain) in rx.iter() {
                        if let Err(e) = sink.store(&tx, id, BlobKind::Data, &plain) {
                            sink.abandoned.store(true, Ordering::Release);
                            return Err(e);
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        drop(plain_rx);
        let packer = s.spawn(|| run_packer(repo, rt, sealed_rx, opts.max_uploads, None, control));
        let tree_tx = sealed_tx.clone();
        drop(sealed_tx);
        let stored = read_stream(sink, input, plain_tx, &repo.chunker(), control).and_then(
            |(content, size)| {
                // The stream ended: whether it is whole is known before anything that
                // names it is written.
                finish()?;
                let file = file_node(parts, content, size, mtime);
                store_trees(sink, &tree_tx, parts, file, mtime).map(|root| (root, size))
            },
        );
        if stored.is_err() {
            sink.abandoned.store(true, Ordering::Release);
        }
        drop(tree_tx);
        let sealed: Result<()> = sealers.into_iter().try_for_each(|h| {
            h.join()
                .map_err(|_| Error::Internal("a sealing thread panicked".into()))?
        });
        let packed = packer
            .join()
            .map_err(|_| Error::Internal("the packer thread panicked".into()));
        (stored, packed, sealed)
    });
    let counts = (
        sink.data_blobs.load(Ordering::Relaxed),
        sink.tree_blobs.load(Ordering::Relaxed),
        sink.data_added.load(Ordering::Relaxed),
    );
    drop(sink);
    // A packer failure explains a closed pipeline.
    let packed = packed??;
    ctx.add_stored(&packed);
    let (root, size) = stored?;
    sealed?;
    control.check()?;
    control.progress.set_phase(Phase::Committing);
    let summary = Summary {
        files_new: 1,
        dirs_processed: parts.len() as u64 - 1,
        data_blobs: counts.0,
        tree_blobs: counts.1,
        data_added: counts.2,
        data_added_packed: packed.bytes,
        data_read: size,
        total_files_processed: 1,
        total_bytes_processed: size,
        ..Summary::default()
    };
    let snapshot = Snapshot {
        time: opts.time.clone(),
        parent: None,
        tree: root,
        paths: vec![format!("/{}", parts.join("/"))],
        hostname: opts.hostname.clone(),
        username: opts.username.clone(),
        // SAFETY: getuid/getgid have no preconditions and cannot fail.
        uid: unsafe { libc::getuid() },
        gid: unsafe { libc::getgid() },
        tags: opts.tags.clone(),
        program_version: format!("cairn {}", env!("CARGO_PKG_VERSION")),
        summary: Some(summary),
        origin: Some(opts.origin.clone()),
        original: None,
    };
    let id = rt.block_on(repo.save_snapshot(&snapshot))?;
    Ok(BackupReport {
        id,
        snapshot,
        warnings: Vec::<Warning>::new(),
        unchanged: false,
        multi_link_files: Vec::new(),
    })
}

/// Chunk the stream to its end, handing chunks not stored yet to the sealers; the
/// chunk ids in order and the stream's length.
fn read_stream(
    sink: &BlobSink<'_>,
    input: &mut dyn Read,
    plain_tx: crossbeam_channel::Sender<(BlobId, Vec<u8>)>,
    chunker: &crate::chunker::Chunker,
    control: &RunControl,
) -> Result<(Vec<BlobId>, u64)> {
    let mut stream = ChunkStream::new(input, chunker.clone());
    let mut content = Vec::new();
    let mut size = 0u64;
    loop {
        let chunk = match stream.next_chunk_ref() {
            Ok(Some(c)) => c,
            Ok(None) => break,
            Err(e) => return Err(Error::io("read the stream", "-", e)),
        };
        control.check()?;
        if sink.abandoned.load(Ordering::Acquire) {
            return Err(pipeline_closed());
        }
        let id = sink.repo.keys().blob_id(chunk);
        let len = chunk.len() as u64;
        size += len;
        Progress::add(&control.progress.bytes_read, len);
        Progress::add(&control.progress.bytes_done, len);
        if !sink.is_stored(&id) {
            plain_tx
                .send((id, chunk.to_vec()))
                .map_err(|_| pipeline_closed())?;
        }
        content.push(id);
    }
    sink.data_read.fetch_add(size, Ordering::Relaxed);
    Progress::add(&control.progress.files, 1);
    Ok((content, size))
}

/// The stream's file: private to its owner (a dump holds a whole database), dated at
/// the snapshot's time, owned by whoever runs the backup.
fn file_node(parts: &[String], content: Vec<BlobId>, size: u64, mtime: i64) -> Node {
    let name = parts.last().map_or("stdin", String::as_str);
    let mut node = owned_node(name, NodeKind::File, 0o600, mtime);
    node.size = size;
    node.content = content;
    node.links = 1;
    node
}

/// A node owned by the running user, with the given mode and times.
fn owned_node(name: &str, kind: NodeKind, mode: u32, mtime: i64) -> Node {
    let mut node = Node::bare(ByteName(name.as_bytes().to_vec()), kind);
    node.mode = mode;
    node.mtime = mtime;
    node.ctime = mtime;
    // SAFETY: getuid/getgid have no preconditions and cannot fail.
    node.uid = unsafe { libc::getuid() };
    node.gid = unsafe { libc::getgid() };
    node
}

/// Store the trees from the file up to the root (one folder per leading part of the
/// name, private like the file) and return the root tree's id.
fn store_trees(
    sink: &BlobSink<'_>,
    tx: &BlobSender,
    parts: &[String],
    file: Node,
    mtime: i64,
) -> Result<BlobId> {
    let mut node = file;
    for dir in parts[..parts.len() - 1].iter().rev() {
        let id = store_tree(sink, tx, node)?;
        node = owned_node(dir, NodeKind::Dir, 0o700, mtime);
        node.subtree = Some(id);
    }
    store_tree(sink, tx, node)
}

/// Store a tree of one node; its id.
fn store_tree(sink: &BlobSink<'_>, tx: &BlobSender, node: Node) -> Result<BlobId> {
    let plain = Tree { nodes: vec![node] }.to_plain();
    let id = sink.repo.keys().blob_id(&plain);
    sink.store(tx, id, BlobKind::Tree, &plain)?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_names_are_plain_parts() {
        assert_eq!(stream_path("app.dump").expect("ok"), ["app.dump"]);
        assert_eq!(stream_path("/db/app.dump").expect("ok"), ["db", "app.dump"]);
        for bad in ["", "/", "a//b", "../x", "a/./b", "x/"] {
            let e = stream_path(bad).expect_err(bad).to_string();
            assert!(e.contains("--stdin-filename"), "{bad}: {e}");
        }
    }
}
