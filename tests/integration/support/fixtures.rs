//! Hand-made stored objects for the tests that plant hostile or damaged ones in a
//! repository (`hostile*.rs`, `tamper.rs`): tree nodes, trees and snapshots built
//! directly, bypassing the scanner and every check, so a test can name an entry anything
//! and point it anywhere, as an attacker with the keys could.

use cairn::format::name::ByteName;
use cairn::format::snapshot::Snapshot;
use cairn::format::tree::{Node, NodeKind, Tree};
use cairn::hash::BlobId;

/// A tree node named `name` of `kind`, with nothing else set but the usual permission
/// bits (0644 for a file, 0755 for anything else, so a planted folder can be entered);
/// tests fill in content, subtree or link target themselves.
pub fn node(name: &[u8], kind: NodeKind) -> Node {
    let mode = if kind == NodeKind::File { 0o644 } else { 0o755 };
    Node {
        mode,
        ..Node::bare(ByteName(name.to_vec()), kind)
    }
}

/// A file node named `name` whose content is the one blob `id` holding `content`.
pub fn file(name: &[u8], content: &[u8], id: BlobId) -> Node {
    let mut n = node(name, NodeKind::File);
    n.size = content.len() as u64;
    n.content = vec![id];
    n
}

/// A folder node named `name` whose entries are the tree `subtree`.
pub fn dir(name: &[u8], subtree: BlobId) -> Node {
    let mut n = node(name, NodeKind::Dir);
    n.subtree = Some(subtree);
    n
}

/// The stored plaintext of a tree of `nodes`, as given (neither sorted nor checked).
pub fn tree(nodes: Vec<Node>) -> Vec<u8> {
    Tree { nodes }.to_plain()
}

/// A snapshot of the root tree `tree`, as an attacker would write one: fixed time, host
/// and user, so that the planted objects are the only thing a test varies.
pub fn snapshot(tree: BlobId) -> Snapshot {
    Snapshot {
        time: "2030-01-01T00:00:00Z".into(),
        parent: None,
        tree,
        paths: vec!["/x".into()],
        hostname: "attacker".into(),
        username: "attacker".into(),
        uid: 0,
        gid: 0,
        tags: vec![],
        program_version: "evil".into(),
        summary: None,
        origin: None,
        original: None,
    }
}
