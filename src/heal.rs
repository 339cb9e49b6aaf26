//! Reading blobs from one repository with other copies standing by: when a blob is
//! missing, damaged or unreachable in the primary repository, a copy built on the same
//! master key (a second destination of the daemon, or one made with `init --from-repo`)
//! holds the same blob under the same id, verified the same way. Every blob read from a
//! stand-in is recorded, so the user learns what was damaged where.

use crate::backend::BackendError;
use crate::error::{Error, Result};
use crate::hash::{BlobId, PackId};
use crate::index::MasterIndex;
use crate::repo::Repository;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long reads leave a pack of the primary alone after reading it failed without an
/// answer (refused, reset, timed out), its retries spent. Every blob a failed ranged read
/// covered is read again through [`BlobReader::read`], and before this each of them asked
/// the primary again with the whole retry budget (seconds each, minutes where every
/// attempt times out): a restore from a server that went away took the budget times the
/// number of blobs to end, and with a copy it paid that before each blob went to the
/// copy. Now such a pack costs one budget: its blobs go to a copy at once, or fail at
/// once. Other packs are still asked (a failure may be that object's alone), and the
/// pack is asked again after this long.
pub const PACK_REST: Duration = Duration::from_secs(30);

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
    /// The primary was not reached (no answer, retries spent) rather than found damaged
    /// or missing: nothing there needs repair.
    pub unreachable: bool,
}

/// Reads blobs from a primary repository, falling back to copies.
pub struct BlobReader<'a> {
    primary: Copy<'a>,
    fallbacks: Vec<Copy<'a>>,
    healed: Mutex<Vec<Healed>>,
    /// Packs of the primary that could not be read for want of an answer, when and why:
    /// reads skip them for [`PACK_REST`].
    resting: Mutex<HashMap<PackId, (Instant, String)>>,
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
            resting: Mutex::new(HashMap::new()),
        }
    }

    /// The primary repository and index.
    pub fn primary(&self) -> Copy<'a> {
        self.primary
    }

    /// Why reads leave `pack` of the primary alone now: reading it failed without an
    /// answer less than [`PACK_REST`] ago. Readers that fetch ranges of the primary
    /// themselves (ahead of the healing reader) skip those packs too.
    pub fn pack_resting(&self, pack: &PackId) -> Option<String> {
        let resting = self.resting.lock().ok()?;
        let (since, why) = resting.get(pack)?;
        (since.elapsed() < PACK_REST).then(|| why.clone())
    }

    /// Note a failed read of `pack` from the primary: when no answer came (refused,
    /// reset, timed out, retries spent), the pack is left alone for [`PACK_REST`];
    /// anything the server answered (a missing, damaged or refused object, an error
    /// status) is that read's own failure.
    pub fn pack_failed(&self, pack: PackId, e: &BackendError) {
        if e.is_transport_failure()
            && let Ok(mut resting) = self.resting.lock()
        {
            resting.insert(pack, (Instant::now(), e.to_string()));
        }
    }

    /// Note a read of `pack` the primary served: it answers again.
    pub fn pack_served(&self, pack: &PackId) {
        if let Ok(mut resting) = self.resting.lock()
            && !resting.is_empty()
        {
            resting.remove(pack);
        }
    }

    /// Read and verify a blob, from the primary or else from the first copy that has it
    /// intact. The primary's error is returned when no copy helps. A pack of the primary
    /// that gave no answer moments ago is not asked again ([`PACK_REST`]).
    pub async fn read(&self, id: &BlobId) -> Result<Vec<u8>> {
        let pack = self.primary.index.get(id).map(|l| l.pack);
        let resting = pack.as_ref().and_then(|p| self.pack_resting(p));
        let unreachable = resting.is_some();
        let err = match (resting, pack) {
            (Some(why), Some(pack)) => Error::Backend(BackendError::Io {
                op: "read",
                object: format!("blob {} in pack {}", id.short(), pack.short()),
                location: self.primary.repo.backend().location(),
                source: std::io::Error::other(format!(
                    "not asked again: reading its pack got no answer moments ago ({why})"
                )),
                retryable: true,
            }),
            _ => match self.primary.repo.read_blob(self.primary.index, id).await {
                Ok(plain) => {
                    if let Some(p) = &pack {
                        self.pack_served(p);
                    }
                    return Ok(plain);
                }
                Err(e) => {
                    if let (Error::Backend(b), Some(p)) = (&e, pack) {
                        self.pack_failed(p, b);
                    }
                    e
                }
            },
        };
        let unreachable =
            unreachable || matches!(&err, Error::Backend(b) if b.is_transport_failure());
        for f in &self.fallbacks {
            if let Ok(plain) = f.repo.read_blob(f.index, id).await {
                let from = f.repo.backend().location();
                tracing::warn!("blob {} read from {from} instead: {err}", id.short());
                if let Ok(mut h) = self.healed.lock() {
                    h.push(Healed {
                        blob: id.to_hex(),
                        problem: err.to_string(),
                        from,
                        unreachable,
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
