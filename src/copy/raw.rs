//! A copy between repositories on the same keys: stored objects byte for byte.
//!
//! 1. Walk every tree of the snapshots in the source and collect the blobs the target's
//!    index does not list. Every tree is read: a tree the target indexes is not taken
//!    to be whole there (a pack copied whole by an earlier copy of other snapshots may
//!    have brought trees without their data).
//! 2. For each source pack holding some of them: if the target has that pack object
//!    already (a run cut short), only its header is read; if every blob the source
//!    index places in the pack is needed, the pack is copied whole (checked against its
//!    name); otherwise the blobs needed are read one by one, authenticated, and packed
//!    anew, so the target never indexes a tree whose data it was not sent.
//! 3. Index objects, data before trees: new ones for the packed-anew data and for whole
//!    packs of data no copied source index object names; then each source index object
//!    whose packs the target now all holds, and of which it has one copied whole, copied
//!    whole; then the trees packed anew and whole tree packs no such object names.
//! 4. The snapshot objects, oldest first.

use super::CopyReport;
use crate::backend::{FileType, Handle};
use crate::blob_writer::BlobWriter;
use crate::crypto::Purpose;
use crate::error::{Error, Result};
use crate::format::index::{IndexPack, PackedBlob};
use crate::format::pack::decode_header;
use crate::hash::{BlobId, Id, IndexId, PackId, SnapshotId};
use crate::index::{BlobLocation, MasterIndex};
use crate::pack::{HeaderAt, SealedBlob, header_in_tail, open_blob};
use crate::repo::{Repository, SnapshotEntry};
use crate::tree_loader::decode;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

pub(super) async fn copy(
    src: &Repository,
    dst: &Repository,
    src_index: &MasterIndex,
    dst_index: &MasterIndex,
    todo: &[SnapshotEntry],
    report: &mut CopyReport,
) -> Result<()> {
    let needed = missing_blobs(src, src_index, dst_index, todo).await?;
    // The needed blobs by the source pack that holds them, and every blob the source
    // index places in those packs (to know whether the target holds any of them).
    let mut by_pack: BTreeMap<PackId, Vec<(BlobId, BlobLocation)>> = BTreeMap::new();
    for id in &needed {
        let loc = src_index.get(id).ok_or_else(|| Error::MissingBlob {
            blob: id.to_hex(),
            referrer: format!("a tree in {}", src.backend().location()),
        })?;
        by_pack.entry(loc.pack).or_default().push((*id, loc));
    }
    // Packs holding a blob that is not needed (the target has it, or no snapshot being
    // copied uses it): those are not copied whole.
    let mut partial: HashSet<PackId> = HashSet::new();
    for (id, loc) in src_index.iter() {
        if by_pack.contains_key(&loc.pack) && !needed.contains(&id) {
            partial.insert(loc.pack);
        }
    }
    let stored: HashMap<PackId, u64> = dst
        .backend()
        .list(FileType::Pack)
        .await?
        .into_iter()
        .filter_map(|o| Some((PackId(Id::from_object_name(&o.name)?), o.size)))
        .collect();
    let mut writer = BlobWriter::new(dst, dst_index);
    let mut whole: Vec<IndexPack> = Vec::new();
    for (pack, mut blobs) in by_pack {
        let handle = Handle::new(FileType::Pack, pack.to_hex());
        if let Some(size) = stored.get(&pack) {
            let blobs = dst
                .read_pack_header(pack, *size, None)
                .await
                .map_err(|e| Error::InvalidInput(format!(
                    "{} in {} (left by a copy cut short) cannot be read: {e}; delete it there and copy again",
                    handle.path(),
                    dst.backend().location()
                )))?;
            whole.push(IndexPack { id: pack, blobs });
            report.packs_found += 1;
        } else if !partial.contains(&pack) {
            let bytes = src.backend().get(&handle).await?;
            let blobs = checked_pack(src, pack, &bytes).map_err(|reason| Error::Corrupt {
                object: format!("{} in {}", handle.path(), src.backend().location()),
                reason,
            })?;
            report.bytes_sent += bytes.len() as u64;
            dst.backend().put(&handle, bytes.into()).await?;
            whole.push(IndexPack { id: pack, blobs });
            report.packs_copied += 1;
        } else {
            blobs.sort_by_key(|(_, loc)| loc.offset);
            for (id, loc) in blobs {
                let sealed = src
                    .backend()
                    .get_range(&handle, loc.offset, u64::from(loc.length))
                    .await?;
                open_blob(src.keys(), &id, &loc, &sealed).map_err(|reason| Error::Corrupt {
                    object: format!("blob {} in {}", id.short(), handle.path()),
                    reason,
                })?;
                writer
                    .add_sealed(SealedBlob {
                        id,
                        kind: loc.kind,
                        raw_length: loc.raw_length,
                        compressed: loc.compressed,
                        bytes: sealed,
                    })
                    .await?;
            }
        }
    }
    let whole_copies = index_objects_to_copy(src, dst, &whole, &stored).await?;
    let named: HashSet<PackId> = whole_copies
        .iter()
        .flat_map(|(_, p)| p.iter().copied())
        .collect();
    for pack in whole.into_iter().filter(|p| !named.contains(&p.id)) {
        writer.add_stored_pack(pack).await?;
    }
    writer.finish_data().await?;
    for (id, _) in &whole_copies {
        copy_index_object(src, dst, *id, report).await?;
    }
    let written = writer.finish().await?;
    report.blobs_stored += written.blobs;
    report.bytes_sent += written.stored_bytes;
    for e in todo {
        let handle = Handle::new(FileType::Snapshot, e.id.to_hex());
        let bytes = src.backend().get(&handle).await?;
        if Id::of_stored(&bytes) != e.id.0 {
            return Err(Error::Corrupt {
                object: format!("{} in {}", handle.path(), src.backend().location()),
                reason: "altered or swapped since it was listed".into(),
            });
        }
        report.bytes_sent += bytes.len() as u64;
        dst.backend().put(&handle, bytes.into()).await?;
        report.copied.push((e.id, e.id));
    }
    Ok(())
}

/// The blobs below the snapshots' trees (the trees included) that the target's index
/// does not list. Each tree is read once, however many snapshots share it.
async fn missing_blobs(
    src: &Repository,
    src_index: &MasterIndex,
    dst_index: &MasterIndex,
    todo: &[SnapshotEntry],
) -> Result<HashSet<BlobId>> {
    let mut needed = HashSet::new();
    let mut walked = HashSet::new();
    let mut stack: Vec<(BlobId, SnapshotId)> =
        todo.iter().map(|e| (e.snapshot.tree, e.id)).collect();
    while let Some((t, snap)) = stack.pop() {
        if !walked.insert(t) {
            continue;
        }
        if !dst_index.contains(&t) {
            needed.insert(t);
        }
        let plain = src.read_blob(src_index, &t).await.map_err(|e| match e {
            Error::MissingBlob { blob, .. } => Error::MissingBlob {
                blob,
                referrer: format!(
                    "snapshot {} of {} (run `cairn check` there)",
                    snap.short(),
                    src.backend().location()
                ),
            },
            e => e,
        })?;
        let tree = decode(&plain, &t, Path::new(&format!("snapshot {}", snap.short())))?;
        for n in tree.nodes {
            needed.extend(n.content.into_iter().filter(|b| !dst_index.contains(b)));
            stack.extend(n.subtree.map(|sub| (sub, snap)));
        }
    }
    Ok(needed)
}

/// A whole pack's blobs, after checking it is the pack its name says and its header
/// opens and accounts for every byte.
fn checked_pack(
    src: &Repository,
    pack: PackId,
    bytes: &[u8],
) -> std::result::Result<Vec<PackedBlob>, String> {
    if Id::of_stored(bytes) != pack.0 {
        return Err("its content does not match its name (altered or truncated)".into());
    }
    let (offset, sealed) = match header_in_tail(bytes.len() as u64, bytes)? {
        HeaderAt::Inside { offset, sealed } => (offset, sealed),
        HeaderAt::Before { .. } => return Err("its header lies outside it".into()),
    };
    let plain = src
        .keys()
        .open(Purpose::PackHeader, sealed)
        .map_err(|e| format!("header: {e}"))?;
    decode_header(&plain, offset).map_err(|e| e.to_string())
}

/// The source index objects to copy whole, with the packs each names: those naming a
/// pack of `whole` (copied now, or by a run cut short) and only packs the target holds,
/// and not in the target yet.
async fn index_objects_to_copy(
    src: &Repository,
    dst: &Repository,
    whole: &[IndexPack],
    stored: &HashMap<PackId, u64>,
) -> Result<Vec<(IndexId, Vec<PackId>)>> {
    let fresh: HashSet<PackId> = whole.iter().map(|p| p.id).collect();
    let mut eligible = Vec::new();
    if whole.is_empty() {
        return Ok(eligible);
    }
    let listing = src.index_listing().await?;
    let there: HashSet<String> = dst
        .backend()
        .list(FileType::Index)
        .await?
        .into_iter()
        .map(|o| o.name)
        .collect();
    src.for_each_index_file(None, listing, |id, file| {
        // A damaged index object is simply not copied whole; the packs it names get a
        // new one.
        let Ok(file) = file else { return Ok(()) };
        let held = |p: &PackId| fresh.contains(p) || stored.contains_key(p);
        if !there.contains(&id.0.to_hex())
            && file.packs.iter().any(|p| fresh.contains(&p.id))
            && file.packs.iter().all(|p| held(&p.id))
        {
            eligible.push((id, file.packs.iter().map(|p| p.id).collect()));
        }
        Ok(())
    })
    .await?;
    Ok(eligible)
}

/// Copy one index object as stored, after checking it is the one its name says.
async fn copy_index_object(
    src: &Repository,
    dst: &Repository,
    id: IndexId,
    report: &mut CopyReport,
) -> Result<()> {
    let handle = Handle::new(FileType::Index, id.0.to_hex());
    let bytes = src.backend().get(&handle).await?;
    if Id::of_stored(&bytes) != id.0 {
        return Err(Error::Corrupt {
            object: format!("{} in {}", handle.path(), src.backend().location()),
            reason: "altered or swapped since it was read".into(),
        });
    }
    report.bytes_sent += bytes.len() as u64;
    dst.backend().put(&handle, bytes.into()).await?;
    report.index_objects_copied += 1;
    Ok(())
}
