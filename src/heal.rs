//! Reading blobs from one repository with other copies standing by: when a blob is
//! missing, damaged or unreachable in the primary repository, a copy built on the same
//! master key (a second destination of the daemon, or one made with `init --from-repo`)
//! holds the same blob under the same id, verified the same way. Every blob read from a
//! stand-in is recorded, so the user learns what was damaged where.

use crate::error::{Error, Result};
use crate::hash::BlobId;
use crate::index::MasterIndex;
use crate::repo::Repository;
use std::sync::Mutex;

/// One repository and its index.
#[derive(Clone, Copy)]
pub struct Copy<'a> {
    /// The repository.
    pub repo: &'a Repository,
    /// Its loaded index.
    pub index: &'a MasterIndex,
}

/// A blob that was read from a stand-in because the primary could not serve it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Healed {
    /// The blob.
    pub blob: String,
    /// What went wrong in the primary.
    pub problem: String,
    /// The repository that served it.
    pub from: String,
}

/// Reads blobs from a primary repository, falling back to copies.
pub struct BlobReader<'a> {
    primary: Copy<'a>,
    fallbacks: Vec<Copy<'a>>,
    healed: Mutex<Vec<Healed>>,
}

impl<'a> BlobReader<'a> {
    /// A reader; every fallback must share the primary's master key.
    pub fn new(primary: Copy<'a>, fallbacks: Vec<Copy<'a>>) -> Result<Self> {
        for f in &fallbacks {
            if !f.repo.shares_keys_with(primary.repo) {
                return Err(Error::InvalidInput(format!(
                    "{} was not created on the keys of {} (with `init --from-repo` or by the daemon with the same passphrase), so it cannot stand in for it blob by blob: restore from it directly with --repo",
                    f.repo.backend().location(),
                    primary.repo.backend().location()
                )));
            }
        }
        Ok(BlobReader {
            fallbacks,
            ..BlobReader::alone(primary)
        })
    }

    /// A reader of one repository with no copies to heal from; nothing to check.
    pub fn alone(primary: Copy<'a>) -> Self {
        BlobReader {
            primary,
            fallbacks: Vec::new(),
            healed: Mutex::new(Vec::new()),
        }
    }

    /// The primary repository and index.
    pub fn primary(&self) -> Copy<'a> {
        self.primary
    }

    /// Read and verify a blob, from the primary or else from the first copy that has it
    /// intact. The primary's error is returned when no copy helps.
    pub async fn read(&self, id: &BlobId) -> Result<Vec<u8>> {
        let err = match self.primary.repo.read_blob(self.primary.index, id).await {
            Ok(plain) => return Ok(plain),
            Err(e) => e,
        };
        for f in &self.fallbacks {
            if let Ok(plain) = f.repo.read_blob(f.index, id).await {
                let from = f.repo.backend().location();
                tracing::warn!("blob {} read from {from} instead: {err}", id.short());
                if let Ok(mut h) = self.healed.lock() {
                    h.push(Healed {
                        blob: id.to_hex(),
                        problem: err.to_string(),
                        from,
                    });
                }
                return Ok(plain);
            }
        }
        Err(err)
    }

    /// The plaintext length of a blob, from the first index (primary, then copies) that
    /// knows it: what `restore --verify` re-reads a file in.
    pub fn raw_length(&self, id: &BlobId) -> Option<u32> {
        std::iter::once(&self.primary)
            .chain(&self.fallbacks)
            .find_map(|c| c.index.get(id).map(|l| l.raw_length))
    }

    /// Every blob read from a stand-in so far.
    pub fn healed(&self) -> Vec<Healed> {
        self.healed.lock().map(|h| h.clone()).unwrap_or_default()
    }
}
