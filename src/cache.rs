//! A local cache of repository metadata under the daemon's state directory: stored index
//! objects (which blobs the repository holds) and tree blobs (the file metadata of recent
//! snapshots). It only saves network round trips. Every entry is checked on use (index
//! objects by their content hash, trees by their keyed blob id after decryption), and a
//! missing, damaged or foreign entry is silently fetched again from the repository, so
//! deleting the cache costs time, never data. Tree entries are sealed with the
//! repository's keys, so the cache reveals no more than the repository does.

use crate::crypto::{Keys, Purpose};
use crate::format::{compress, decompress};
use crate::hash::{BlobId, Id, IndexId, KeyId};
use crate::limits::MAX_BLOB_LEN;
use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The cache of one repository (keyed by its id, so two repositories never mix).
#[derive(Clone, Debug)]
pub struct MetadataCache {
    dir: PathBuf,
}

impl MetadataCache {
    /// The cache for repository `repo_id` under `root`; directories are created on first
    /// write, mode 0700.
    pub fn new(root: &Path, repo_id: &Id) -> Self {
        MetadataCache {
            dir: root.join(repo_id.to_hex()),
        }
    }

    /// Where it lives.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, kind: &str, id: &Id) -> PathBuf {
        self.dir.join(kind).join(id.to_hex())
    }

    /// A cached index object, if present and intact.
    pub fn index(&self, id: IndexId) -> Option<Vec<u8>> {
        let bytes = fs::read(self.path("index", &id.0)).ok()?;
        (Id::of_stored(&bytes) == id.0).then_some(bytes)
    }

    /// Remember an index object as stored in the repository.
    pub fn put_index(&self, id: IndexId, stored: &[u8]) {
        self.write("index", &id.0, stored);
    }

    /// Forget cached index objects the repository no longer lists.
    pub fn retain_index(&self, keep: &HashSet<IndexId>) {
        self.retain("index", |id| keep.contains(&IndexId(id)));
    }

    /// Where the cached trees are, one file each: for reading them ahead.
    pub fn trees_dir(&self) -> PathBuf {
        self.dir.join("trees")
    }

    /// A cached tree's plaintext, if present and verified against its id.
    pub fn tree(&self, keys: &Keys, id: &BlobId) -> Option<Vec<u8>> {
        let sealed = fs::read(self.path("trees", &id.0)).ok()?;
        let compressed = keys.open(Purpose::Blob, &sealed).ok()?;
        let plain = decompress("tree", &compressed, MAX_BLOB_LEN as usize).ok()?;
        (keys.blob_id(&plain) == *id).then_some(plain)
    }

    /// Remember a tree.
    pub fn put_tree(&self, keys: &Keys, id: &BlobId, plain: &[u8]) {
        if self.path("trees", &id.0).exists() {
            return;
        }
        if let Ok(sealed) = keys.seal(Purpose::Blob, &compress(plain)) {
            self.write("trees", &id.0, &sealed);
        }
    }

    /// Drop cached trees not in `keep` (the trees of the latest full snapshot).
    pub fn retain_trees(&self, keep: &HashSet<BlobId>) {
        self.retain("trees", |id| keep.contains(&BlobId(id)));
    }

    fn retain(&self, kind: &str, keep: impl Fn(Id) -> bool) {
        let Ok(rd) = fs::read_dir(self.dir.join(kind)) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name();
            let keep_it = name
                .to_str()
                .and_then(Id::from_object_name)
                .is_some_and(&keep);
            if !keep_it {
                let _ = fs::remove_file(e.path());
            }
        }
    }

    /// The key that opened this repository last time on this machine: tried first next
    /// time ([`crate::repo::Repository::open_preferring`]), so keys planted in the bucket
    /// cost nothing in the usual case. Only a hint: a wrong one costs one key's try.
    pub fn key_hint(&self) -> Option<KeyId> {
        let text = fs::read_to_string(self.dir.join("unlock-key")).ok()?;
        Id::from_object_name(text.trim()).map(KeyId)
    }

    /// Remember the key that opened the repository (see [`MetadataCache::key_hint`]).
    pub fn put_key_hint(&self, id: KeyId) {
        self.write_in(&self.dir, "unlock-key", id.to_hex().as_bytes());
    }

    fn write(&self, kind: &str, id: &Id, bytes: &[u8]) {
        self.write_in(&self.dir.join(kind), &id.to_hex(), bytes);
    }

    /// Best effort: a failed cache write only costs a later fetch.
    fn write_in(&self, dir: &Path, name: &str, bytes: &[u8]) {
        if let Err(e) = fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
        {
            tracing::debug!("cache {}: {e}", dir.display());
            return;
        }
        let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
        let result = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| f.write_all(bytes))
            .and_then(|()| fs::rename(&tmp, dir.join(name)));
        if let Err(e) = result {
            tracing::debug!("cache write {}: {e}", tmp.display());
            let _ = fs::remove_file(&tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::MasterSecret;

    fn keys() -> Keys {
        Keys::derive(MasterSecret::from_bytes([7u8; 32]))
    }

    #[test]
    fn the_unlock_key_hint_reads_back_and_a_damaged_one_is_none() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let c = MetadataCache::new(tmp.path(), &Id([1; 32]));
        assert_eq!(c.key_hint(), None);
        c.put_key_hint(KeyId(Id([3; 32])));
        assert_eq!(c.key_hint(), Some(KeyId(Id([3; 32]))));
        fs::write(c.dir().join("unlock-key"), "not a key id").expect("write");
        assert_eq!(c.key_hint(), None);
    }

    #[test]
    fn damaged_or_foreign_entries_are_misses() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let c = MetadataCache::new(tmp.path(), &Id([1; 32]));
        let k = keys();
        let plain = b"{\"nodes\":[]}".to_vec();
        let id = k.blob_id(&plain);
        assert_eq!(c.tree(&k, &id), None);
        c.put_tree(&k, &id, &plain);
        assert_eq!(c.tree(&k, &id).as_deref(), Some(plain.as_slice()));
        // Another repository's keys cannot use (or be fooled by) the entry.
        let other = Keys::derive(MasterSecret::from_bytes([8u8; 32]));
        assert_eq!(c.tree(&other, &id), None);
        // A flipped byte is a miss, not an error.
        let p = c.path("trees", &id.0);
        let mut bytes = fs::read(&p).expect("read");
        bytes[30] ^= 1;
        fs::write(&p, bytes).expect("write");
        assert_eq!(c.tree(&k, &id), None);

        let stored = b"sealed index bytes".to_vec();
        let iid = IndexId(Id::of_stored(&stored));
        c.put_index(iid, &stored);
        assert_eq!(c.index(iid).as_deref(), Some(stored.as_slice()));
        fs::write(c.path("index", &iid.0), b"other").expect("write");
        assert_eq!(c.index(iid), None);
        c.retain_index(&HashSet::new());
        assert!(!c.path("index", &iid.0).exists());
    }
}
