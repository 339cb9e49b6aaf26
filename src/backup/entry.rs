//! One directory entry becomes one node of the new snapshot's tree: its metadata and
//! extended attributes, a symlink's target, a subdirectory's tree (walked in turn), or a
//! regular file's content: carried over from the parent when its size, times and inode
//! did not change, else read by a reader thread (or by the walker itself for a file with
//! several hard links, so that later links reuse what the first stored).

use super::plan::ReadJob;
use super::reader::{FileRead, StoredFile, same_file};
use super::sink::pipeline_closed;
use super::walk::{Slot, Walker};
use crate::error::Result;
use crate::format::index::BlobKind;
use crate::format::name::ByteName;
use crate::format::tree::{Node, NodeKind, Tree};
use crate::fsmeta;
use crate::progress::Progress;
use crossbeam_channel::bounded;
use std::fs::{self, Metadata};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

impl Walker<'_> {
    /// The node of an entry, once its file (if any) is read; `None` when it was skipped
    /// with a warning.
    pub(super) fn resolve(&mut self, slot: Slot) -> Result<Option<Node>> {
        match slot {
            Slot::Ready(node) => Ok(Some(node)),
            Slot::Skipped => Ok(None),
            Slot::Pending {
                node,
                path,
                had_parent,
                reply,
            } => {
                let read = reply.recv().map_err(|_| pipeline_closed())??;
                Ok(self.file_node(node, &path, had_parent, read))
            }
        }
    }

    /// A file's node from what reading it gave: its metadata as it was when read (which
    /// may differ from the earlier lstat if it changed in between) and its content.
    fn file_node(
        &mut self,
        mut node: Node,
        path: &Path,
        had_parent: bool,
        read: FileRead,
    ) -> Option<Node> {
        match read {
            FileRead::Skipped(why) => {
                self.warn(path, why);
                None
            }
            FileRead::Stored(stored) => {
                let xattrs = std::mem::take(&mut node.xattrs);
                let mut node = fsmeta::node_from_metadata(node.name, NodeKind::File, &stored.meta);
                node.xattrs = xattrs;
                let StoredFile {
                    content,
                    size,
                    changing,
                    read_again,
                    meta,
                } = *stored;
                node.content = content;
                node.size = size;
                node.sparse = meta.blocks().saturating_mul(512) < size;
                if read_again {
                    // Never carried over unread (see `reader`).
                    node.ctime_nsec = crate::format::tree::UNSETTLED_CTIME_NSEC;
                }
                if let Some(why) = changing {
                    node.changing = true;
                    self.summary.files_changing += 1;
                    self.warn_stored(path, why);
                }
                if had_parent {
                    self.summary.files_changed += 1;
                } else {
                    self.summary.files_new += 1;
                }
                Some(node)
            }
        }
    }

    /// The entry's node, or its file handed to a reader; `None` when it was skipped with
    /// a warning.
    pub(super) fn node_for(
        &mut self,
        path: &Path,
        name: ByteName,
        meta: &Metadata,
        prev: Option<&Node>,
    ) -> Result<Option<Slot>> {
        let Some(kind) = fsmeta::kind_of(meta) else {
            self.warn(path, "unsupported file type");
            return Ok(None);
        };
        let mut node = fsmeta::node_from_metadata(name, kind, meta);
        match fsmeta::read_xattrs(path) {
            Ok(x) => node.xattrs = x,
            Err(e) => self.warn(path, format!("extended attributes not stored: {e}")),
        }
        match kind {
            NodeKind::Dir if self.one_file_system && meta.dev() != self.dev => {
                // A mount point: keep the directory, not what is mounted on it.
                node.subtree = Some(self.store_blob(BlobKind::Tree, Tree::default().to_plain())?);
                self.summary.dirs_processed += 1;
            }
            NodeKind::Dir => {
                let prev_tree = match prev
                    .filter(|p| p.kind == NodeKind::Dir)
                    .and_then(|p| p.subtree)
                {
                    Some(id) => self.load_tree(&id),
                    None => None,
                };
                node.subtree = Some(self.walk_dir(path, prev_tree.as_ref())?);
                self.summary.dirs_processed += 1;
            }
            NodeKind::Symlink => match fs::read_link(path) {
                Ok(t) => node.link_target = Some(ByteName::from_os(t.as_os_str())),
                Err(e) => {
                    self.warn(path, format!("cannot read symlink: {e}"));
                    return Ok(None);
                }
            },
            NodeKind::File => {
                Progress::add(&self.control.progress.files, 1);
                if meta.nlink() > 1 {
                    self.multi_link.push(path.to_path_buf());
                }
                self.summary.total_files_processed += 1;
                self.summary.total_bytes_processed += meta.size();
                let unchanged = prev.filter(|p| {
                    p.kind == NodeKind::File
                        && p.size == meta.size()
                        && p.inode == meta.ino()
                        && p.mtime == meta.mtime()
                        && p.mtime_nsec == meta.mtime_nsec() as u32
                        && p.ctime == meta.ctime()
                        && p.ctime_nsec == meta.ctime_nsec() as u32
                        // Stored while it changed: read again, whatever its times say.
                        && !p.changing
                        && p.content.iter().all(|b| self.index.contains(b))
                });
                if let Some(p) = unchanged {
                    node.content = p.content.clone();
                    self.summary.files_unmodified += 1;
                    Progress::add(&self.control.progress.bytes_done, meta.size());
                } else if meta.nlink() > 1 {
                    // Read here, so the next link to the same file reuses the content.
                    let read = self.linked_file_content(path, meta)?;
                    return Ok(self
                        .file_node(node, path, prev.is_some(), read)
                        .map(Slot::Ready));
                } else {
                    let (reply_tx, reply) = bounded(1);
                    let job = ReadJob {
                        path: path.to_path_buf(),
                        meta: meta.clone(),
                        reply: reply_tx,
                    };
                    self.readers.send(job).map_err(|_| pipeline_closed())?;
                    return Ok(Some(Slot::Pending {
                        node,
                        path: path.to_path_buf(),
                        had_parent: prev.is_some(),
                        reply,
                    }));
                }
            }
            _ => {}
        }
        Ok(Some(Slot::Ready(node)))
    }

    /// Content of a file with several links, read once per backup: a later link to the
    /// same unchanged file reuses what the first read stored.
    fn linked_file_content(&mut self, path: &Path, meta: &Metadata) -> Result<FileRead> {
        let key = (meta.dev(), meta.ino());
        if let Some(stored) = self.hardlinks.get(&key)
            && same_file(&stored.meta, meta)
        {
            return Ok(FileRead::Stored(Box::new(stored.clone())));
        }
        let read = self.reader.read(path, meta)?;
        // Only a version read while the file stood still describes the next link too.
        if let FileRead::Stored(stored) = &read
            && !stored.read_again
        {
            self.hardlinks.insert(key, (**stored).clone());
        }
        Ok(read)
    }
}
