//! Key management: several passphrases may open one repository; each `keys/*` object wraps
//! the same master secret, so adding or removing one never touches data. A key object is
//! written by [`write_key`], which lives with `init` (that writes the first one, and owns
//! the [`InitOptions`] recording who made it), so that init does not depend on this module.

use super::init::{InitOptions, write_key};
use super::{Repository, load_key_file};
use crate::backend::{FileType, Handle};
use crate::crypto::KdfParams;
use crate::error::{Error, Result};
use crate::format::key::KeyFile;
use crate::hash::{Id, KeyId};

/// A key as `key list` shows it.
#[derive(Clone, Debug)]
pub struct KeyInfo {
    /// Key object id.
    pub id: KeyId,
    /// Whether this key opened the current session.
    pub current: bool,
    /// Who and where created it, and when.
    pub file: KeyFile,
}

impl Repository {
    /// Every key object, with the one in use marked.
    pub async fn list_keys(&self) -> Result<Vec<KeyInfo>> {
        let mut out = Vec::new();
        for info in self.backend.list(FileType::Key).await? {
            let Some(id) = Id::from_object_name(&info.name) else {
                continue;
            };
            let file = load_key_file(self.backend.as_ref(), KeyId(id)).await?;
            out.push(KeyInfo {
                id: KeyId(id),
                current: KeyId(id) == self.key_id,
                file,
            });
        }
        out.sort_by(|a, b| a.file.created.cmp(&b.file.created));
        Ok(out)
    }

    /// Add a key for another passphrase.
    pub async fn add_key(
        &self,
        passphrase: &[u8],
        kdf: KdfParams,
        who: &InitOptions,
    ) -> Result<KeyId> {
        if passphrase.is_empty() {
            return Err(Error::InvalidInput(
                "the new passphrase is empty: choose a non-empty passphrase".into(),
            ));
        }
        write_key(
            self.backend.as_ref(),
            self.keys.secret(),
            passphrase,
            kdf,
            who,
        )
        .await
    }

    /// Resolve a key id or unique prefix.
    pub async fn find_key(&self, prefix: &str) -> Result<KeyId> {
        let keys = self.list_keys().await?;
        let matches: Vec<_> = keys
            .iter()
            .filter(|k| k.id.to_hex().starts_with(&prefix.to_lowercase()))
            .collect();
        match matches.as_slice() {
            [one] => Ok(one.id),
            [] => Err(Error::Key(format!(
                "no key matches {prefix:?}: list them with `cairn key list`"
            ))),
            _ => Err(Error::Key(format!(
                "key prefix {prefix:?} matches {} keys: give more digits",
                matches.len()
            ))),
        }
    }

    /// Remove a key. Refuses the key in use, so the repository cannot be locked out by
    /// mistake (add another key and open with it first, as `key passwd` does).
    pub async fn remove_key(&self, id: KeyId) -> Result<()> {
        if id == self.key_id {
            return Err(Error::Key(format!(
                "key {} is the one this command opened the repository with: open with another passphrase to remove it, or use `cairn key passwd`",
                id.short()
            )));
        }
        let handle = Handle::new(FileType::Key, id.to_hex());
        self.backend.stat(&handle).await?;
        self.backend.delete(&handle).await?;
        Ok(())
    }

    /// Replace the current key with one for a new passphrase; the new key is written
    /// before the old one is removed, so a crash leaves at least one working key.
    pub async fn change_passphrase(
        &mut self,
        new_passphrase: &[u8],
        kdf: KdfParams,
        who: &InitOptions,
    ) -> Result<KeyId> {
        let old = self.key_id;
        let new = self.add_key(new_passphrase, kdf, who).await?;
        self.key_id = new;
        self.remove_key(old).await?;
        Ok(new)
    }
}
