//! Tree blobs: one directory's entries with their metadata. A directory's `subtree` is the
//! blob id of its own tree, so unchanged subtrees are shared between snapshots for free.
//!
//! Trees come from storage and are never trusted: [`Tree::from_plain`] refuses names that
//! could escape a restore target (empty, `.`, `..`, containing `/` or NUL) and duplicate or
//! unsorted names, so a hostile tree cannot make restore write outside the target or
//! through a symlink it created itself.

use super::name::{ByteName, HexBytes};
use super::{FormatError, from_json, to_json};
use crate::hash::BlobId;
use serde::{Deserialize, Serialize};

/// What a tree entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    /// Regular file; content in `content`.
    File,
    /// Directory; entries in `subtree`.
    Dir,
    /// Symbolic link; target in `link_target`.
    Symlink,
    /// Named pipe.
    Fifo,
    /// Unix socket (recreated as an inert socket file).
    Socket,
    /// Character device; numbers in `rdev`.
    Chardev,
    /// Block device; numbers in `rdev`.
    Blockdev,
}

/// One extended attribute.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Xattr {
    /// Attribute name, e.g. `user.comment`.
    pub name: ByteName,
    /// Raw value.
    pub value: HexBytes,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

fn is_false(v: &bool) -> bool {
    !*v
}

/// The `ctime_nsec` of a file stored by the rule for files that never stand still
/// (docs/FORMAT.md, section 12): nanoseconds no clock gives, so the node never matches
/// the file's times and the next backup reads it again, whatever cairn version makes it.
pub const UNSETTLED_CTIME_NSEC: u32 = u32::MAX;

/// One directory entry with everything restore needs and what change detection compares.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// Entry name: one path component, arbitrary bytes.
    pub name: ByteName,
    /// Entry type.
    #[serde(rename = "type")]
    pub kind: NodeKind,
    /// Permission bits including setuid, setgid and sticky (`st_mode & 0o7777`).
    pub mode: u32,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Nanoseconds part of `mtime`.
    pub mtime_nsec: u32,
    /// Status-change time: compared, never restored (the kernel sets it).
    pub ctime: i64,
    /// Nanoseconds part of `ctime`.
    pub ctime_nsec: u32,
    /// Owner id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Inode number (change detection and hard links).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub inode: u64,
    /// Device of the file system the entry was on (hard links).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub device: u64,
    /// Hard-link count at backup time.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub links: u64,
    /// File size in bytes.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub size: u64,
    /// Device numbers of device nodes.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rdev: u64,
    /// True when the file had holes; restore leaves zero chunks as holes.
    #[serde(default, skip_serializing_if = "is_false")]
    pub sparse: bool,
    /// Data blobs, in order, for files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub content: Vec<BlobId>,
    /// Tree blob for directories.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtree: Option<BlobId>,
    /// Symlink target, stored as is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_target: Option<ByteName>,
    /// Extended attributes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub xattrs: Vec<Xattr>,
    /// The file never stood still while it was backed up and is stored as read: its
    /// content may mix older and newer bytes. Informational: a reader that ignores it
    /// restores the same bytes, so it needs no new repository version.
    #[serde(default, skip_serializing_if = "is_false")]
    pub changing: bool,
}

impl Node {
    /// An entry with only a name and a type, every other field zero, empty or unset:
    /// the base that a writer fills in, and that trees built by hand (tests) start from
    /// without naming every field.
    pub fn bare(name: ByteName, kind: NodeKind) -> Node {
        Node {
            name,
            kind,
            mode: 0,
            mtime: 0,
            mtime_nsec: 0,
            ctime: 0,
            ctime_nsec: 0,
            uid: 0,
            gid: 0,
            inode: 0,
            device: 0,
            links: 0,
            size: 0,
            rdev: 0,
            sparse: false,
            content: Vec::new(),
            subtree: None,
            link_target: None,
            xattrs: Vec::new(),
            changing: false,
        }
    }
}

/// A directory listing, sorted by name bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    /// Entries, strictly increasing by name.
    pub nodes: Vec<Node>,
}

/// Why a name is unsafe to create; `None` when it is a single ordinary component.
pub fn unsafe_name_reason(name: &[u8]) -> Option<&'static str> {
    if name.is_empty() {
        Some("is empty")
    } else if name == b"." || name == b".." {
        Some("is a relative directory reference")
    } else if name.contains(&b'/') {
        Some("contains '/'")
    } else if name.contains(&0) {
        Some("contains a NUL byte")
    } else {
        None
    }
}

impl Tree {
    /// JSON bytes: the blob plaintext whose keyed hash is the tree's id.
    pub fn to_plain(&self) -> Vec<u8> {
        to_json(self)
    }

    /// Parse and validate a decrypted tree blob.
    pub fn from_plain(bytes: &[u8]) -> Result<Self, FormatError> {
        let t: Tree = from_json("tree", bytes)?;
        t.validate()?;
        Ok(t)
    }

    /// Check the rules every stored tree must follow.
    pub fn validate(&self) -> Result<(), FormatError> {
        let bad = |reason: String| FormatError::Invalid {
            what: "tree",
            reason,
        };
        let mut prev: Option<&ByteName> = None;
        for n in &self.nodes {
            if let Some(r) = unsafe_name_reason(&n.name.0) {
                return Err(bad(format!("entry name {:?} {r}", n.name)));
            }
            if let Some(p) = prev
                && p >= &n.name
            {
                return Err(bad(format!(
                    "entry {:?} is duplicated or out of order",
                    n.name
                )));
            }
            prev = Some(&n.name);
            match n.kind {
                NodeKind::Dir if n.subtree.is_none() => {
                    return Err(bad(format!("directory {:?} has no subtree", n.name)));
                }
                NodeKind::Symlink if n.link_target.is_none() => {
                    return Err(bad(format!("symlink {:?} has no target", n.name)));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(changing: bool) -> Tree {
        Tree {
            nodes: vec![Node {
                mode: 0o600,
                changing,
                ..Node::bare(ByteName(b"db".to_vec()), NodeKind::File)
            }],
        }
    }

    #[test]
    fn changing_is_written_last_and_only_when_set() {
        let plain = String::from_utf8(file(true).to_plain()).expect("utf8");
        assert!(plain.ends_with(r#""changing":true}]}"#), "{plain}");
        let plain = String::from_utf8(file(false).to_plain()).expect("utf8");
        assert!(!plain.contains("changing"), "{plain}");
        // A tree written before the field existed reads as not changing, and so the
        // bytes (and the tree id) of an unmarked tree are what they always were.
        assert_eq!(Tree::from_plain(plain.as_bytes()).ok(), Some(file(false)));
        let marked = file(true).to_plain();
        assert_eq!(Tree::from_plain(&marked).ok(), Some(file(true)));
    }
}
