//! File-system metadata in and out: turning `lstat` results and extended attributes into
//! tree nodes at backup, and setting owner, mode, xattrs and times at restore. The only
//! module that calls `libc` for metadata, so platform details stay in one place.

use crate::format::name::{ByteName, HexBytes};
use crate::format::tree::{Node, NodeKind, Xattr};
use std::ffi::CString;
use std::fs::Metadata;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// The node kind of a file type, or `None` for types cairn cannot represent.
pub fn kind_of(meta: &Metadata) -> Option<NodeKind> {
    let ft = meta.file_type();
    Some(if ft.is_file() {
        NodeKind::File
    } else if ft.is_dir() {
        NodeKind::Dir
    } else if ft.is_symlink() {
        NodeKind::Symlink
    } else if ft.is_fifo() {
        NodeKind::Fifo
    } else if ft.is_socket() {
        NodeKind::Socket
    } else if ft.is_char_device() {
        NodeKind::Chardev
    } else if ft.is_block_device() {
        NodeKind::Blockdev
    } else {
        return None;
    })
}

/// A node with every metadata field filled from `meta`; content, subtree and link target
/// are left for the caller.
pub fn node_from_metadata(name: ByteName, kind: NodeKind, meta: &Metadata) -> Node {
    let size = if kind == NodeKind::File {
        meta.size()
    } else {
        0
    };
    Node {
        name,
        kind,
        mode: meta.mode() & 0o7777,
        mtime: meta.mtime(),
        mtime_nsec: meta.mtime_nsec() as u32,
        ctime: meta.ctime(),
        ctime_nsec: meta.ctime_nsec() as u32,
        uid: meta.uid(),
        gid: meta.gid(),
        inode: meta.ino(),
        device: meta.dev(),
        links: meta.nlink(),
        size,
        rdev: if matches!(kind, NodeKind::Chardev | NodeKind::Blockdev) {
            meta.rdev()
        } else {
            0
        },
        // Fewer allocated blocks than the size needs means the file has holes.
        sparse: kind == NodeKind::File && meta.blocks().saturating_mul(512) < size,
        content: Vec::new(),
        subtree: None,
        link_target: None,
        xattrs: Vec::new(),
        changing: false,
    }
}

/// Extended attributes of `path` (not following symlinks). File systems without xattr
/// support yield none.
pub fn read_xattrs(path: &Path) -> io::Result<Vec<Xattr>> {
    let names = match xattr::list(path) {
        Ok(n) => n,
        Err(e) if is_unsupported(&e) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for name in names {
        if let Some(value) = xattr::get(path, &name)? {
            out.push(Xattr {
                name: ByteName::from_os(&name),
                value: HexBytes(value),
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn is_unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOTSUP))
}

fn cpath(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}

/// Whether this process may set file ownership (it runs as root).
pub fn can_chown() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Create a FIFO, socket or device node at `path`.
pub fn make_special(path: &Path, node: &Node) -> io::Result<()> {
    let c = cpath(path)?;
    let (fmt, dev) = match node.kind {
        NodeKind::Fifo => (libc::S_IFIFO, 0),
        NodeKind::Socket => (libc::S_IFSOCK, 0),
        NodeKind::Chardev => (libc::S_IFCHR, node.rdev),
        NodeKind::Blockdev => (libc::S_IFBLK, node.rdev),
        _ => return Err(io::Error::other("not a special file")),
    };
    // SAFETY: `c` is a valid NUL-terminated path; mknod only reads it.
    let rc = unsafe { libc::mknod(c.as_ptr(), fmt | 0o600, dev as libc::dev_t) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Apply owner (when root), xattrs, mode (not for symlinks) and times to a restored
/// entry, in that order: chown clears setuid bits and file capabilities, so both the
/// xattrs and the mode come after it; xattrs need write access to the file, which its
/// real mode (a 0444 file) may not give, so they come before the mode; and every other
/// change updates times, so times come last.
pub fn apply_metadata(path: &Path, node: &Node, chown: bool) -> io::Result<()> {
    let c = cpath(path)?;
    if chown {
        // SAFETY: valid C string; lchown does not follow symlinks.
        if unsafe { libc::lchown(c.as_ptr(), node.uid, node.gid) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    for x in &node.xattrs {
        if let Err(e) = xattr::set(path, x.name.to_os(), &x.value.0)
            && !is_unsupported(&e)
        {
            return Err(io::Error::new(
                e.kind(),
                format!("extended attribute {}: {e}", x.name.lossy()),
            ));
        }
    }
    if node.kind != NodeKind::Symlink {
        // SAFETY: valid C string; chmod on a path we created (not a symlink).
        if unsafe { libc::chmod(c.as_ptr(), node.mode as libc::mode_t) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // Access times are not stored (they change on every read and would make every
    // directory's tree differ between snapshots); restore sets them to the mtime.
    let mtime = filetime::FileTime::from_unix_time(node.mtime, node.mtime_nsec);
    filetime::set_symlink_file_times(path, mtime, mtime)
}
