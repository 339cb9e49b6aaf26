//! Replaying a destination's journal into it once it is back: packs, then index
//! objects, then snapshots oldest first, verbatim. Object names are content hashes, so
//! a replay that is interrupted is simply run again; each snapshot leaves the journal
//! once it is in the destination, so the journal's count is the replay's progress.
//!
//! Before a snapshot goes in, the replay makes sure the destination holds everything it
//! needs (a prune elsewhere may have removed data the journal relied on while the
//! destination was away). That check costs what the journal holds, not the size of the
//! tree: the trees the journal wrote are read from the journal itself, and a tree the
//! journal did not write is whole if the destination's index lists it. Data goes away
//! only by a prune, which leaves only blobs some snapshot uses in the index, and
//! everything below them with them ([`crate::prune`]); and a tree the journal's backup
//! found indexed was built by it from children it checked itself. The index is read
//! through the metadata cache, so a replay costs a few listings and requests for what
//! is new, whatever the number of directories. Only a tree the index no longer lists but a deletion record still
//! holds is read from the destination.

use super::journal::Journal;
use crate::backend::local::LocalBackend;
use crate::backend::{Backend, FileType, Handle};
use crate::cache::MetadataCache;
use crate::error::{Error, Result};
use crate::hash::{BlobId, IndexId, SnapshotId};
use crate::index::MasterIndex;
use crate::progress::{Phase, Progress, RunControl};
use crate::repo::Repository;
use std::collections::HashSet;

/// What a replay put into the destination.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Replayed {
    /// Journaled snapshots now in the destination.
    pub snapshots: u64,
    /// The newest of them and its recorded time: the destination's latest snapshot.
    pub latest: Option<(SnapshotId, String)>,
}

/// Where the trees below a journaled snapshot can be: the journal, the destination's
/// index, or blobs a prune took out of that index without deleting them yet.
struct Holdings<'a> {
    journaled: &'a Repository,
    journal_index: &'a MasterIndex,
    dest: &'a Repository,
    indexed: &'a MasterIndex,
    taken_out: &'a MasterIndex,
    cache: Option<&'a MetadataCache>,
}

/// The destination's progress shows [`Phase::Replaying`] while the replay runs, and
/// idle again however it ends.
struct PhaseGuard<'a>(&'a Progress);

impl<'a> PhaseGuard<'a> {
    fn enter(p: &'a Progress) -> Self {
        p.set_phase(Phase::Replaying);
        PhaseGuard(p)
    }
}

impl Drop for PhaseGuard<'_> {
    fn drop(&mut self) {
        self.0.set_phase(Phase::Idle);
    }
}

impl Journal {
    /// Copy everything journaled into `dest` (packs, then index objects, then snapshots
    /// oldest first) and delete the journal. `None` when there is no journal at all. A
    /// journaled snapshot that cannot be read, or whose data the destination no longer
    /// holds, is left out with a warning (its data is replayed all the same). `cache`
    /// is the destination's metadata cache; `name` names the destination in the log.
    pub async fn replay(
        &self,
        dest: &Repository,
        cache: Option<&MetadataCache>,
        control: &RunControl,
        name: &str,
    ) -> Result<Option<Replayed>> {
        if !self.dir.exists() {
            return Ok(None);
        }
        let _phase = PhaseGuard::enter(&control.progress);
        let local = LocalBackend::without_config(&self.dir);
        let target = dest.backend();
        for kind in [FileType::Pack, FileType::Index] {
            for info in local.list(kind).await? {
                control.check()?;
                copy_one(&local, target.as_ref(), kind, &info.name).await?;
                if let (FileType::Index, Some(c)) = (kind, cache) {
                    // The destination's index is read through the cache just below:
                    // what was just copied need not be fetched back.
                    remember_index(&local, c, &info.name).await;
                }
                // Progress for the status and the stall detection: a long replay moves.
                Progress::add(&control.progress.bytes_uploaded, info.size);
            }
        }
        let journaled = self.repository(dest);
        let journal_index = journaled.load_index_strict().await?;
        // What the destination holds now, replayed objects included.
        let (indexed, taken_out) = dest.load_index_parts(cache).await?;
        let holdings = Holdings {
            journaled: &journaled,
            journal_index: &journal_index,
            dest,
            indexed: &indexed,
            taken_out: &taken_out,
            cache,
        };
        let mut snaps = Vec::new();
        for id in journaled.snapshot_ids().await? {
            match journaled.load_snapshot(id).await {
                Ok(s) => snaps.push((s.time.clone(), id, s.tree)),
                Err(e) => tracing::warn!(
                    destination = %name,
                    "journaled snapshot {} cannot be read and is left out: {e}",
                    id.short()
                ),
            }
        }
        snaps.sort();
        let total = snaps.len();
        let mut whole = HashSet::new();
        let mut done = Replayed::default();
        for (k, (time, id, tree)) in snaps.into_iter().enumerate() {
            control.check()?;
            // A read that failed for any other reason than absence or damage (the
            // destination blinked) fails the replay: the journal stays and is replayed
            // again, never judged on a connection that was refused.
            if !complete(&holdings, &tree, &mut whole, &control.progress).await? {
                tracing::warn!(
                    destination = %name,
                    "journaled snapshot {} is left out: data it relies on is no longer in the destination (pruned meanwhile)",
                    id.short()
                );
                self.incomplete
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                continue;
            }
            let handle = Handle::new(FileType::Snapshot, id.to_hex());
            copy_one(&local, target.as_ref(), FileType::Snapshot, &handle.name).await?;
            // In the destination now: out of the journal, so its count shows progress.
            local.delete(&handle).await?;
            done.snapshots += 1;
            done.latest = Some((id, time));
            tracing::info!(
                destination = %name,
                "replayed journaled snapshot {} of {total} ({})",
                k + 1,
                id.short()
            );
        }
        std::fs::remove_dir_all(&self.dir)
            .map_err(|e| Error::io("remove the replayed journal", &self.dir, e))?;
        Ok(Some(done))
    }
}

/// Put an index object just copied from the journal into the destination's cache.
async fn remember_index(local: &LocalBackend, cache: &MetadataCache, name: &str) {
    let Some(id) = crate::hash::Id::from_object_name(name).map(IndexId) else {
        return;
    };
    if let Ok(bytes) = local
        .get(&Handle::new(FileType::Index, name.to_string()))
        .await
    {
        cache.put_index(id, &bytes);
    }
}

/// Whether every tree and data blob below `tree` is held (see the module doc for
/// where each is looked for). `false` only on a confirmed absence (not held, its pack
/// not found) or damage; any other failure to read is the error, and decides nothing.
/// Trees found whole go into `whole`, so snapshots sharing them check them once.
async fn complete(
    h: &Holdings<'_>,
    tree: &BlobId,
    whole: &mut HashSet<BlobId>,
    progress: &Progress,
) -> Result<bool> {
    let mut stack = vec![*tree];
    let mut seen = Vec::new();
    while let Some(t) = stack.pop() {
        if whole.contains(&t) {
            continue;
        }
        let read = if h.journal_index.contains(&t) {
            h.journaled.read_blob(h.journal_index, &t).await
        } else if h.indexed.contains(&t) {
            // Indexed in the destination: whole, as a prune leaves it.
            seen.push(t);
            continue;
        } else if h.taken_out.contains(&t) {
            match h.cache.and_then(|c| c.tree(h.dest.keys(), &t)) {
                Some(plain) => Ok(plain),
                None => h.dest.read_blob(h.taken_out, &t).await,
            }
        } else {
            return Ok(false);
        };
        let plain = match read {
            Ok(plain) => plain,
            Err(e) if absent_or_damaged(&e) => return Ok(false),
            Err(e) => return Err(e),
        };
        Progress::add(&progress.bytes_done, plain.len() as u64);
        let Ok(tree) = crate::format::tree::Tree::from_plain(&plain) else {
            return Ok(false);
        };
        for n in tree.nodes {
            if n.content
                .iter()
                .any(|b| !h.indexed.contains(b) && !h.taken_out.contains(b))
            {
                return Ok(false);
            }
            if let Some(sub) = n.subtree {
                stack.push(sub);
            }
        }
        seen.push(t);
    }
    whole.extend(seen);
    Ok(true)
}

/// Whether a failed read says the blob is not there to be read: not in the index, its
/// pack not found, or what was read is damaged. Anything else (refused, reset, timed
/// out, a server error) says nothing about the destination's content.
fn absent_or_damaged(e: &Error) -> bool {
    match e {
        Error::MissingBlob { .. } | Error::Corrupt { .. } | Error::Crypto(_) => true,
        Error::Backend(b) => {
            b.is_not_found() || matches!(b, crate::backend::BackendError::Invalid { .. })
        }
        _ => false,
    }
}

async fn copy_one(from: &dyn Backend, to: &dyn Backend, kind: FileType, name: &str) -> Result<()> {
    let h = Handle::new(kind, name.to_string());
    if to.stat(&h).await.is_ok() {
        return Ok(());
    }
    let bytes = from.get(&h).await?;
    to.put(&h, bytes::Bytes::from(bytes)).await?;
    Ok(())
}
