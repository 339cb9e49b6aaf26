//! `restore --target -`: write one file's content, or a tar archive of a directory, to
//! a stream (stdout), one blob at a time so memory stays at one blob whatever the size.

use crate::error::{Error, Result};
use crate::format::tree::{Node, NodeKind};
use crate::heal::BlobReader;
use crate::tree_loader::TreeLoader;
use std::io::{self, Read, Write};
use std::path::Path;
use tokio::runtime::Handle as Runtime;

/// Write the content of the file `node` to `out`; fails if the stored content does not
/// add up to the size the snapshot records.
pub fn dump_file(
    reader: &BlobReader<'_>,
    rt: &Runtime,
    node: &Node,
    out: &mut dyn Write,
) -> Result<u64> {
    let mut written = 0u64;
    for id in &node.content {
        let plain = rt.block_on(reader.read(id))?;
        out.write_all(&plain)
            .map_err(|e| Error::io("write", Path::new("<output>"), e))?;
        written += plain.len() as u64;
    }
    if written != node.size {
        return Err(size_mismatch(&node.name.lossy(), written, node.size));
    }
    Ok(written)
}

fn size_mismatch(what: &str, got: u64, want: u64) -> Error {
    Error::Corrupt {
        object: format!("content list of {what}"),
        reason: format!("holds {got} bytes but the snapshot records {want}"),
    }
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
    let mut tar = tar::Builder::new(out);
    tar.follow_symlinks(false);
    // Each tree with its neighbours in one request, not one GET per directory.
    let trees = TreeLoader::new(reader);
    add_entry(reader, &trees, rt, &mut tar, node, name)?;
    tar.into_inner()
        .map_err(|e| Error::io("finish tar archive on", Path::new("<output>"), e))?;
    Ok(())
}

fn add_entry(
    reader: &BlobReader<'_>,
    trees: &TreeLoader<'_>,
    rt: &Runtime,
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
            if let Some(sub) = node.subtree {
                let tree = trees.tree(rt, &sub, path)?;
                for child in &tree.nodes {
                    add_entry(
                        reader,
                        trees,
                        rt,
                        tar,
                        child,
                        &path.join(child.name.to_os()),
                    )?;
                }
            }
        }
        NodeKind::File => {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(node.size);
            let body = BlobStream {
                reader,
                rt,
                node,
                next: 0,
                buf: Vec::new(),
                pos: 0,
                total: 0,
            };
            tar.append_data(&mut h, path, body).map_err(out_err)?;
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

/// A file's content as a `Read`, fetching one blob at a time.
struct BlobStream<'a, 'r> {
    reader: &'a BlobReader<'r>,
    rt: &'a Runtime,
    node: &'a Node,
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
            self.buf = self
                .rt
                .block_on(self.reader.read(id))
                .map_err(io::Error::other)?;
            self.pos = 0;
            self.total += self.buf.len() as u64;
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
