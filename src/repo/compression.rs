//! The repository's compression default: what a backup uses when nobody chose, and
//! setting or removing it on an existing repository, which rewrites `config` (format
//! version 3 with a default, 2 without: `docs/FORMAT.md` sections 6 and 16).
//!
//! The rewrite is safe to do while other hosts back up: `config` is replaced in one
//! atomic write (one PUT; a local repository writes a temporary file and renames it), so
//! a reader sees the old object or the new one, both complete and MACed. Nothing else
//! changes: the repository id, chunker and pack size stay, and every stored blob reads
//! as before whatever its level. A writer that opened the repository before goes on with
//! the default it read until it opens it again.

use super::{Repository, read_config};
use crate::backend::Handle;
use crate::compression::Compression;
use crate::error::{Error, Result};
use crate::format::config::ConfigFile;
use bytes::Bytes;

impl Repository {
    /// The compression default recorded in `config`, if any.
    pub fn compression_default(&self) -> Option<Compression> {
        self.config.compression
    }

    /// What a backup compresses blobs with: `chosen` (`--compression`,
    /// `CAIRN_COMPRESSION`, a destination's `compression`), else the repository's
    /// default, else `auto`.
    pub fn compression_for(&self, chosen: Option<Compression>) -> Compression {
        chosen
            .or(self.config.compression)
            .unwrap_or(Compression::AUTO)
    }

    /// Record `compression` as the repository's default (`None`: record none, so the
    /// repository is version 2 again and older cairn reads it), and return the
    /// repository with its new settings. The `config` in storage must still be the one
    /// this session opened: if another host changed it meanwhile, nothing is written and
    /// the error says so. The new object is read back and checked before this returns.
    pub async fn set_compression_default(
        &self,
        compression: Option<Compression>,
    ) -> Result<Repository> {
        let location = self.backend.location();
        let body = self
            .config
            .with_compression(compression)
            .map_err(Error::InvalidInput)?;
        if body == self.config {
            return Ok(self.clone());
        }
        let now = read_config(self.backend.as_ref()).await?;
        if now.body != self.config || !self.mac_matches(&now) {
            return Err(Error::InvalidInput(format!(
                "the config of {location} changed since this command opened it (another host set the compression default?): nothing was written; run the command again"
            )));
        }
        let file = ConfigFile {
            mac: hex::encode(self.keys.config_mac(&body.canonical())),
            body: body.clone(),
        };
        self.backend
            .put(&Handle::config(), Bytes::from(file.to_bytes()))
            .await?;
        let written = read_config(self.backend.as_ref()).await?;
        if written.body != body || !self.mac_matches(&written) {
            return Err(Error::Corrupt {
                object: "config".into(),
                reason: format!(
                    "it reads back differently from what was just written to {location} (another host wrote it at the same moment?): run `cairn compression` to see what it holds"
                ),
            });
        }
        let mut repo = self.clone();
        repo.config = body;
        Ok(repo)
    }

    /// Whether `file`'s MAC is right under this repository's keys (blake3::Hash
    /// compares in constant time).
    fn mac_matches(&self, file: &ConfigFile) -> bool {
        let mac = blake3::Hash::from(self.keys.config_mac(&file.body.canonical()));
        blake3::Hash::from_hex(&file.mac).ok() == Some(mac)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Backend;
    use crate::backend::local::LocalBackend;
    use std::sync::Arc;

    fn open(rt: &tokio::runtime::Runtime, dir: &std::path::Path) -> Result<Repository> {
        let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(dir));
        rt.block_on(Repository::open(backend, b"pw"))
    }

    fn config_text(dir: &std::path::Path) -> String {
        std::fs::read_to_string(dir.join("config")).expect("config")
    }

    /// Setting a default makes the repository version 3 with the field, and a fresh
    /// session reads it (its MAC checked on opening); removing it gives back the very
    /// bytes a version 2 config of these settings has.
    #[test]
    fn a_default_is_set_read_back_and_removed() {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let tmp = tempfile::tempdir().expect("tempdir");
        let repo = super::super::test_repo(&rt, tmp.path());
        let before = config_text(tmp.path());
        assert_eq!(repo.config().version, 2);
        assert_eq!(repo.compression_for(None), Compression::AUTO);

        let max = Some(Compression::Level(19));
        let set = rt.block_on(repo.set_compression_default(max)).expect("set");
        assert_eq!(set.compression_default(), max);
        let again = open(&rt, tmp.path()).expect("reopen");
        assert_eq!(
            (again.config().version, again.compression_default()),
            (3, max)
        );
        assert_eq!(again.compression_for(None), Compression::Level(19));
        assert_eq!(
            again.compression_for(Some(Compression::Off)),
            Compression::Off
        );
        assert!(config_text(tmp.path()).contains("\"compression\": 19"));

        let unset = rt
            .block_on(again.set_compression_default(None))
            .expect("unset");
        assert_eq!(unset.config().version, 2);
        assert_eq!(config_text(tmp.path()), before);
        assert_eq!(open(&rt, tmp.path()).expect("reopen").config().version, 2);
    }

    /// The field is under the MAC: a default changed in storage stops the repository
    /// from opening.
    #[test]
    fn a_default_altered_in_storage_fails_the_mac() {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let tmp = tempfile::tempdir().expect("tempdir");
        let repo = super::super::test_repo(&rt, tmp.path());
        rt.block_on(repo.set_compression_default(Some(Compression::Level(19))))
            .expect("set");
        let text = config_text(tmp.path());
        let altered = text.replacen("\"compression\": 19", "\"compression\": \"off\"", 1);
        assert_ne!(altered, text);
        std::fs::write(tmp.path().join("config"), altered).expect("write");
        let err = open(&rt, tmp.path()).expect_err("altered config accepted");
        assert!(err.to_string().contains("MAC does not match"), "{err}");
    }

    /// A session whose `config` was replaced meanwhile writes nothing; a version-1
    /// repository records no default, and says what to do instead.
    #[test]
    fn a_changed_config_or_a_version_1_repository_is_left_alone() {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let tmp = tempfile::tempdir().expect("tempdir");
        let repo = super::super::test_repo(&rt, tmp.path());
        let stale = repo.clone();
        rt.block_on(repo.set_compression_default(Some(Compression::Off)))
            .expect("set");
        let written = config_text(tmp.path());
        let err = rt
            .block_on(stale.set_compression_default(Some(Compression::Level(5))))
            .expect_err("a stale session wrote");
        assert!(err.to_string().contains("changed since"), "{err}");
        assert_eq!(config_text(tmp.path()), written);

        let mut v1 = stale.clone();
        v1.config.version = 1;
        let err = rt
            .block_on(v1.set_compression_default(Some(Compression::Level(5))))
            .expect_err("v1 got a default");
        assert!(err.to_string().contains("version-1 repository"), "{err}");
        assert_eq!(config_text(tmp.path()), written);
    }
}
