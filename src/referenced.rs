//! The blobs each snapshot references (its trees and the contents of its files, each
//! distinct blob once), with their plaintext and stored sizes from the index: what
//! `cairn stats` reports a snapshot's compression ratio from. Every tree is read and
//! decoded once, however many snapshots share it; what a tree references is kept as a
//! list of ids meanwhile.

use crate::error::{Error, Result};
use crate::format::tree::Tree;
use crate::hash::BlobId;
use crate::index::MasterIndex;
use crate::repo::{Repository, SnapshotEntry};
use crate::tree_loader::TreeLoader;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tokio::runtime::Handle as Runtime;

/// The distinct blobs one snapshot references.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Referenced {
    /// Blobs, trees included.
    pub blobs: u64,
    /// Their plaintext bytes.
    pub plain_bytes: u64,
    /// Their bytes in packs (compressed, where that saved space, and sealed).
    pub stored_bytes: u64,
}

/// What one tree references directly.
struct Children {
    subtrees: Vec<BlobId>,
    data: Vec<BlobId>,
}

/// Sum up the blobs each of `snapshots` references, in their order. A blob the index
/// does not list, or a tree that cannot be read, is an error naming the snapshot: its
/// figures would be wrong, and `cairn check` says more.
pub fn referenced(
    repo: &Repository,
    rt: &Runtime,
    index: &MasterIndex,
    snapshots: &[SnapshotEntry],
) -> Result<Vec<Referenced>> {
    let trees = TreeLoader::for_repo(repo, index);
    let mut known: HashMap<BlobId, Arc<Children>> = HashMap::new();
    let mut out = Vec::with_capacity(snapshots.len());
    for e in snapshots {
        let snapshot = format!("snapshot {}", e.id.short());
        let mut sum = Referenced::default();
        let mut seen: HashSet<BlobId> = HashSet::new();
        let count = |id: &BlobId, sum: &mut Referenced| -> Result<()> {
            let loc = index.get(id).ok_or_else(|| Error::MissingBlob {
                blob: id.to_hex(),
                referrer: snapshot.clone(),
            })?;
            sum.blobs += 1;
            sum.plain_bytes += u64::from(loc.raw_length);
            sum.stored_bytes += u64::from(loc.length);
            Ok(())
        };
        let mut stack = vec![e.snapshot.tree];
        while let Some(tree) = stack.pop() {
            if !seen.insert(tree) {
                continue;
            }
            count(&tree, &mut sum)?;
            let children = match known.get(&tree) {
                Some(c) => c.clone(),
                None => {
                    let c = Arc::new(children(&trees.load(rt, &tree)?, &tree, &snapshot)?);
                    known.insert(tree, c.clone());
                    c
                }
            };
            for blob in &children.data {
                if seen.insert(*blob) {
                    count(blob, &mut sum)?;
                }
            }
            stack.extend(children.subtrees.iter().copied());
        }
        out.push(sum);
    }
    Ok(out)
}

/// The subtrees and file contents tree `id` (of `snapshot`) lists.
fn children(plain: &[u8], id: &BlobId, snapshot: &str) -> Result<Children> {
    let tree = Tree::from_plain(plain)
        .map_err(|e| Error::corrupt_format(format!("tree {} of {snapshot}", id.short()), e))?;
    let mut c = Children {
        subtrees: Vec::new(),
        data: Vec::new(),
    };
    for node in tree.nodes {
        c.subtrees.extend(node.subtree);
        c.data.extend(node.content);
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::{BackupOptions, backup};
    use crate::compression::Compression;

    /// Two snapshots of one folder, the second with a file added: each counts its own
    /// blobs once (a file stored twice in it counts once), and uncompressed blobs
    /// cost exactly their plaintext plus the sealing overhead.
    #[test]
    fn each_snapshot_counts_its_own_distinct_blobs() {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let tmp = tempfile::tempdir().expect("tempdir");
        let repo = crate::repo::test_repo(&rt, &tmp.path().join("repo"));
        let src = tmp.path().join("src");
        std::fs::create_dir_all(src.join("sub")).expect("mkdir");
        std::fs::write(src.join("a"), b"first file").expect("write");
        std::fs::write(src.join("sub/a-again"), b"first file").expect("write");
        let mut opts = BackupOptions::new(
            vec![src.clone()],
            "h".into(),
            "u".into(),
            "2026-01-01T00:00:00Z".into(),
        );
        opts.compression = Some(Compression::Off);
        backup(&repo, rt.handle(), &opts).expect("first");
        std::fs::write(src.join("b"), b"second file").expect("write");
        opts.time = "2026-01-02T00:00:00Z".into();
        backup(&repo, rt.handle(), &opts).expect("second");

        let snapshots = rt.block_on(repo.list_snapshots()).expect("snapshots");
        let index = rt.block_on(repo.load_index()).expect("index");
        let sums = referenced(&repo, rt.handle(), &index, &snapshots).expect("sums");
        assert_eq!(sums.len(), 2);
        // The snapshot path's folders down to src, src, sub; one file content.
        let trees = src.components().count() as u64 + 1;
        assert_eq!(sums[0].blobs, trees + 1, "{sums:?}");
        assert_eq!(sums[1].blobs, trees + 2, "{sums:?}");
        for s in &sums {
            assert_eq!(
                s.stored_bytes,
                s.plain_bytes + s.blobs * crate::crypto::OVERHEAD as u64,
                "{s:?}"
            );
        }
        assert!(sums[1].plain_bytes > sums[0].plain_bytes);
    }
}
