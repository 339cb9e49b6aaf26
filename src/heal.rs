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
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long reads leave a pack of the primary alone, at least, once reading it got no
/// answer (refused, reset, timed out, retries spent) twice in a row. Every blob a failed
/// ranged read covered is read again through [`BlobReader::read`], and before this each
/// of them asked the primary again with the whole retry budget (seconds each, minutes
/// where every attempt times out): a restore from a server that went away took the
/// budget times the number of blobs to end, and with a copy it paid that before each
/// blob went to the copy. Now such a pack costs two budgets (the range, then its first
/// blob, so an outage shorter than that is ridden out as before), then its blobs go to
/// a copy at once or fail at once. Other packs are still asked: a failure may be that
/// object's alone. The rest lasts as long as the failed read took if that was longer.
pub const PACK_REST: Duration = Duration::from_secs(30);

/// No-answer failures in a row after which a pack rests.
const FAILURES_TO_REST: u32 = 2;

/// What is known of one pack of the primary that gave no answer.
struct Unanswered {
    /// Failures in a row, each with no answer.
    failures: u32,
    /// Until when reads leave it alone, once it rests.
    until: Instant,
    /// The last failure, for the errors of skipped reads.
    why: String,
    /// When it last served a read (a failure of a read started before that is old news).
    served: Option<Instant>,
}

/// Which packs of the primary rest, from the reads' outcomes: plain bookkeeping, with
/// the time passed in.
#[derive(Default)]
struct PackRests {
    packs: HashMap<PackId, Unanswered>,
}

impl PackRests {
    /// Why `pack` rests at `now`, if it does.
    fn resting(&self, pack: &PackId, now: Instant) -> Option<String> {
        let u = self.packs.get(pack)?;
        (u.failures >= FAILURES_TO_REST && now < u.until).then(|| u.why.clone())
    }

    /// A read of `pack` started at `started` got no answer, seen at `now`.
    fn failed(&mut self, pack: PackId, started: Instant, now: Instant, why: String) {
        let u = self.packs.entry(pack).or_insert(Unanswered {
            failures: 0,
            until: now,
            why: String::new(),
            served: None,
        });
        if u.served.is_some_and(|served| served > started) {
            return;
        }
        if u.failures >= FAILURES_TO_REST && now >= u.until {
            // Rested and asked again: one more failure rests it again.
            u.failures = FAILURES_TO_REST - 1;
        }
        u.failures += 1;
        u.until = now + PACK_REST.max(now.saturating_duration_since(started));
        u.why = why;
    }

    /// A read of `pack` was served at `now`.
    fn served(&mut self, pack: &PackId, now: Instant) {
        if let Some(u) = self.packs.get_mut(pack) {
            u.failures = 0;
            u.served = Some(now);
        }
    }
}

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
    /// The primary holds it damaged or not at all (rather than not answering, or
    /// failing in passing): a repair from the copy is due.
    pub damaged: bool,
}

/// Reads blobs from a primary repository, falling back to copies.
pub struct BlobReader<'a> {
    primary: Copy<'a>,
    fallbacks: Vec<Copy<'a>>,
    healed: Mutex<Vec<Healed>>,
    /// Packs of the primary that gave no answer lately: reads skip those resting
    /// ([`PACK_REST`]).
    rests: Mutex<PackRests>,
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
            rests: Mutex::new(PackRests::default()),
        }
    }

    /// The primary repository and index.
    pub fn primary(&self) -> Copy<'a> {
        self.primary
    }

    /// Why reads leave `pack` of the primary alone now: reading it got no answer twice in
    /// a row, lately ([`PACK_REST`]).
    fn pack_resting(&self, pack: &PackId) -> Option<String> {
        self.rests.lock().ok()?.resting(pack, Instant::now())
    }

    /// Run `read`, a read of `pack` from the primary, and note its outcome: a failure
    /// with no answer (refused, reset, timed out, retries spent) counts towards resting
    /// the pack unless the pack served a read started after this one; anything the
    /// server answered (a missing, damaged or refused object, an error status) is that
    /// read's own failure. While the pack rests, `read` is not run, and the outer error
    /// says why: for readers that fetch ranges of the primary themselves, ahead of
    /// [`BlobReader::read`], which then reads from a copy or fails at once.
    pub async fn from_primary<T>(
        &self,
        pack: PackId,
        read: impl Future<Output = Result<T>>,
    ) -> std::result::Result<Result<T>, String> {
        if let Some(why) = self.pack_resting(&pack) {
            return Err(why);
        }
        let started = Instant::now();
        let out = read.await;
        if let Ok(mut rests) = self.rests.lock() {
            match &out {
                Ok(_) => rests.served(&pack, Instant::now()),
                Err(Error::Backend(e)) if e.is_transport_failure() => {
                    rests.failed(pack, started, Instant::now(), e.to_string())
                }
                Err(_) => {}
            }
        }
        Ok(out)
    }

    /// Read and verify a blob, from the primary or else from the first copy that has it
    /// intact. The primary's error is returned when no copy helps. A pack of the primary
    /// that gave no answer moments ago is not asked again ([`PACK_REST`]).
    pub async fn read(&self, id: &BlobId) -> Result<Vec<u8>> {
        let pack = self.primary.index.get(id).map(|l| l.pack);
        let read = self.primary.repo.read_blob(self.primary.index, id);
        let err = match pack {
            Some(pack) => match self.from_primary(pack, read).await {
                Ok(Ok(plain)) => return Ok(plain),
                Ok(Err(e)) => e,
                Err(why) => Error::Backend(BackendError::Io {
                    op: "read",
                    object: format!("blob {} in pack {}", id.short(), pack.short()),
                    location: self.primary.repo.backend().location(),
                    source: std::io::Error::other(format!(
                        "not asked again: its pack gave no answer twice in a row moments ago ({why})"
                    )),
                    retryable: true,
                }),
            },
            // Not in the primary's index: its read names the missing blob.
            None => match read.await {
                Ok(plain) => return Ok(plain),
                Err(e) => e,
            },
        };
        // Only what the primary holds damaged or not at all wants a repair there.
        let damaged = matches!(
            &err,
            Error::Corrupt { .. } | Error::MissingBlob { .. } | Error::Crypto(_)
        ) || matches!(&err, Error::Backend(b) if b.is_not_found());
        for f in &self.fallbacks {
            if let Ok(plain) = f.repo.read_blob(f.index, id).await {
                let from = f.repo.backend().location();
                tracing::warn!("blob {} read from {from} instead: {err}", id.short());
                if let Ok(mut h) = self.healed.lock() {
                    h.push(Healed {
                        blob: id.to_hex(),
                        problem: err.to_string(),
                        from,
                        damaged,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn pack(n: u8) -> PackId {
        PackId(crate::hash::Id([n; 32]))
    }

    #[test]
    fn a_pack_rests_after_two_failures_in_a_row_for_thirty_seconds() {
        let t0 = Instant::now();
        let mut r = PackRests::default();
        r.failed(pack(1), t0, t0, "reset".into());
        assert_eq!(r.resting(&pack(1), t0), None, "one failure is not enough");
        r.failed(pack(1), t0, t0, "reset".into());
        assert_eq!(r.resting(&pack(1), t0).as_deref(), Some("reset"));
        assert_eq!(r.resting(&pack(2), t0), None, "other packs are still asked");
        let later = t0 + PACK_REST;
        assert_eq!(
            r.resting(&pack(1), later),
            None,
            "asked again after the rest"
        );
        r.failed(pack(1), later, later, "refused".into());
        assert_eq!(
            r.resting(&pack(1), later).as_deref(),
            Some("refused"),
            "one more failure after a rest rests it again"
        );
    }

    #[test]
    fn a_pack_that_answers_starts_over_and_older_failures_do_not_count() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(1);
        let mut r = PackRests::default();
        r.failed(pack(1), t0, t0, "reset".into());
        r.served(&pack(1), t1);
        r.failed(pack(1), t1, t1, "reset".into());
        assert_eq!(r.resting(&pack(1), t1), None, "served in between");
        // A read that started before the pack served, failing late, is old news.
        r.failed(pack(1), t0, t1 + Duration::from_secs(5), "late".into());
        assert_eq!(r.resting(&pack(1), t1 + Duration::from_secs(5)), None);
    }

    #[test]
    fn a_rest_lasts_as_long_as_the_failed_read_took_if_longer() {
        let t0 = Instant::now();
        let slow = Duration::from_secs(120);
        let mut r = PackRests::default();
        r.failed(pack(1), t0, t0 + slow, "timed out".into());
        r.failed(pack(1), t0 + slow, t0 + 2 * slow, "timed out".into());
        let at = t0 + 2 * slow + PACK_REST + Duration::from_secs(1);
        assert!(r.resting(&pack(1), at).is_some(), "rests 120 s, not 30 s");
        assert!(r.resting(&pack(1), t0 + 4 * slow).is_none());
    }
}
