//! `restore --verify`: read back every file a restore wrote and check it blob by blob
//! against the snapshot (lengths from the index, ids by keyed hash), so a disk that
//! drops or garbles writes is caught while the backup can still be restored again.
//! Reads are streamed one blob at a time; nothing is fetched from the repository but
//! trees.

use crate::error::{Error, Result};
use crate::format::tree::{Node, NodeKind};
use crate::hash::BlobId;
use crate::heal::BlobReader;
use crate::progress::Progress;
use crate::restore::{Selection, select};
use crate::tree_loader::TreeLoader;
use crossbeam_channel::bounded;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use tokio::runtime::Handle as Runtime;

/// What a verification found.
#[derive(Debug, Default, serde::Serialize)]
pub struct VerifyReport {
    /// Files read back.
    pub files: u64,
    /// Bytes read back.
    pub bytes: u64,
    /// Files that differ from the snapshot, with what is wrong.
    pub problems: Vec<(PathBuf, String)>,
}

/// Re-read the files restored from tree `root` into `target` (only those under
/// `includes`, if any, as the restore chose them). Files the restore reported as failed
/// are checked too and show up here as well. Call off the runtime's threads.
pub fn verify_restored(
    reader: &BlobReader<'_>,
    rt: &Runtime,
    root: &BlobId,
    includes: &[PathBuf],
    target: &Path,
    progress: &Progress,
) -> Result<VerifyReport> {
    let report = Mutex::new(VerifyReport::default());
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(2, 8);
    let (tx, rx) = bounded::<(Node, PathBuf)>(workers * 4);
    let walked = std::thread::scope(|s| {
        for _ in 0..workers {
            let rx = rx.clone();
            let report = &report;
            s.spawn(move || {
                for (node, path) in rx.iter() {
                    progress.set_current(&path.to_string_lossy());
                    let result = verify_file(reader, &node, &path, progress);
                    if let Ok(mut r) = report.lock() {
                        r.files += 1;
                        match result {
                            Ok(n) => r.bytes += n,
                            Err(why) => r.problems.push((path, why)),
                        }
                    }
                }
            });
        }
        drop(rx);
        // Each tree with its neighbours in one request, not one GET per directory.
        let trees = TreeLoader::new(reader);
        let mut stack = vec![(PathBuf::from("/"), *root)];
        while let Some((dir, id)) = stack.pop() {
            let tree = trees.tree(rt, &id, &dir)?;
            for node in &tree.nodes {
                let snap = dir.join(node.name.to_os());
                let sel = select(includes, &snap);
                match (node.kind, node.subtree) {
                    (NodeKind::Dir, Some(sub)) if sel != Selection::Skip => stack.push((snap, sub)),
                    (NodeKind::File, _) if sel == Selection::All => {
                        let rel = snap.strip_prefix("/").unwrap_or(&snap);
                        if tx.send((node.clone(), target.join(rel))).is_err() {
                            return Err(Error::Internal("the verify readers stopped".into()));
                        }
                    }
                    _ => {}
                }
            }
        }
        drop(tx);
        Ok(())
    });
    walked?;
    Ok(report.into_inner().unwrap_or_default())
}

/// Read one restored file back; `Ok(bytes)` when it matches, else what is wrong.
fn verify_file(
    reader: &BlobReader<'_>,
    node: &Node,
    path: &Path,
    progress: &Progress,
) -> std::result::Result<u64, String> {
    let mut f: File = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| format!("cannot open the restored file: {e}"))?;
    let keys = reader.primary().repo.keys();
    let mut buf = Vec::new();
    let mut offset: u64 = 0;
    for id in &node.content {
        let len = reader
            .raw_length(id)
            .ok_or_else(|| format!("blob {} is not in the index", id.short()))?;
        buf.resize(len as usize, 0);
        f.read_exact(&mut buf).map_err(|e| {
            format!("ends early: reading {len} bytes at offset {offset} failed: {e}")
        })?;
        if keys.blob_id(&buf) != *id {
            return Err(format!(
                "differs from the snapshot in the {len} bytes at offset {offset}"
            ));
        }
        offset += u64::from(len);
        Progress::add(&progress.bytes_done, u64::from(len));
    }
    let mut extra = [0u8; 1];
    match f.read(&mut extra) {
        Ok(0) => {}
        Ok(_) => return Err(format!("is longer than the {offset} bytes in the snapshot")),
        Err(e) => return Err(format!("read error after {offset} bytes: {e}")),
    }
    Progress::add(&progress.files, 1);
    Ok(offset)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::{BackupOptions, backup};
    use crate::heal::Copy;
    use crate::restore::{RestoreOptions, restore_with};
    use std::sync::Arc;

    /// A restored tree verifies clean; then a flipped byte, a truncation and an appended
    /// byte in three restored files are each named, and nothing else is.
    #[test]
    fn verify_names_every_file_that_differs_from_the_snapshot() {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let tmp = tempfile::tempdir().expect("tempdir");
        let src = tmp.path().join("src");
        std::fs::create_dir_all(src.join("sub")).expect("mkdir");
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(src.join("big"), &big).expect("write");
        for name in ["a", "b", "sub/c", "sub/untouched"] {
            std::fs::write(src.join(name), format!("content of {name}")).expect("write");
        }
        let repo = crate::repo::test_repo(&rt, &tmp.path().join("repo"));
        let opts = BackupOptions::new(
            vec![src.clone()],
            "h".into(),
            "u".into(),
            "2026-01-01T00:00:00Z".into(),
        );
        let report = backup(&repo, rt.handle(), &opts).expect("backup");
        let index = rt.block_on(repo.load_index()).expect("index");
        let reader = BlobReader::new(
            Copy {
                repo: &repo,
                index: &index,
            },
            Vec::new(),
        )
        .expect("reader");
        let target = tmp.path().join("target");
        let root = report.snapshot.tree;
        let ro = RestoreOptions {
            target: target.clone(),
            includes: Vec::new(),
            overwrite: false,
            progress: Arc::default(),
        };
        restore_with(&reader, rt.handle(), &root, &ro).expect("restore");
        let p = Progress::default();
        let clean = verify_restored(&reader, rt.handle(), &root, &[], &target, &p).expect("verify");
        assert!(clean.problems.is_empty(), "{:?}", clean.problems);
        assert_eq!(clean.files, 5);
        assert_eq!(clean.bytes, Progress::get(&p.bytes_done));

        let at = |name: &str| target.join(src.strip_prefix("/").expect("abs")).join(name);
        let mut bytes = std::fs::read(at("big")).expect("read");
        bytes[2_000_000] ^= 1;
        std::fs::write(at("big"), bytes).expect("write");
        std::fs::write(at("a"), "content of").expect("truncate");
        std::fs::write(at("sub/c"), "content of sub/c!").expect("append");
        let bad = verify_restored(&reader, rt.handle(), &root, &[], &target, &p).expect("verify");
        let mut named: Vec<_> = bad
            .problems
            .iter()
            .map(|(path, why)| (path.file_name().unwrap_or_default().to_owned(), why.clone()))
            .collect();
        named.sort();
        assert_eq!(named.len(), 3, "{named:?}");
        assert!(
            named[0].0 == "a" && named[0].1.contains("ends early"),
            "{named:?}"
        );
        assert!(
            named[1].0 == "big" && named[1].1.contains("differs"),
            "{named:?}"
        );
        assert!(
            named[2].0 == "c" && named[2].1.contains("longer"),
            "{named:?}"
        );
    }
}
