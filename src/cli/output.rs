//! Human and JSON renderings of snapshots, keys and listings. Counts read as English
//! ("1 file", "2 files": [`count`]) and times are UTC and say so ([`short_time`]).

use cairn::format::snapshot::Snapshot;
use cairn::format::tree::{Node, NodeKind};
use cairn::hash::SnapshotId;
use cairn::repo::SnapshotEntry;
use serde_json::{Value, json};
use std::path::Path;

pub use cairn::human::count;

/// One snapshot as restic's `snapshots --json` writes it, plus cairn's summary.
pub fn snapshot_json(id: &SnapshotId, s: &Snapshot) -> Value {
    let mut v = json!({
        "id": id.to_hex(),
        "short_id": id.short(),
        "time": s.time,
        "tree": s.tree.to_hex(),
        "paths": s.paths,
        "hostname": s.hostname,
        "username": s.username,
        "uid": s.uid,
        "gid": s.gid,
        "tags": s.tags,
        "program_version": s.program_version,
    });
    if let Some(p) = &s.parent {
        v["parent"] = json!(p.to_hex());
    }
    if let Some(sum) = &s.summary {
        v["summary"] = json!(sum);
    }
    if let Some(o) = &s.origin {
        v["origin"] = json!(o);
    }
    if let Some(o) = &s.original {
        v["original"] = json!(o.to_hex());
    }
    v
}

/// A snapshot's paths as the tables show them, with where a stream came from.
pub fn paths_shown(s: &Snapshot) -> String {
    match &s.origin {
        Some(o) => format!("{} (from {o})", s.paths.join(" ")),
        None => s.paths.join(" "),
    }
}

/// A snapshot time as the tables show it, in UTC and saying so
/// (`2026-01-31 14:00:00 UTC`): a snapshot records its time with an offset, and a bare
/// clock time would be read as local.
pub fn short_time(t: &str) -> String {
    cairn::human::utc_rfc3339(t)
}

/// The `snapshots` table.
pub fn snapshot_table(list: &[SnapshotEntry]) -> String {
    let mut out = format!(
        "{:<8}  {:<23}  {:<16}  {:<16}  {}\n",
        "ID", "Time", "Host", "Tags", "Paths"
    );
    out.push_str(&"-".repeat(80));
    out.push('\n');
    for e in list {
        let s = &e.snapshot;
        out.push_str(&format!(
            "{:<8}  {:<23}  {:<16}  {:<16}  {}\n",
            e.id.short(),
            short_time(&s.time),
            s.hostname,
            s.tags.join(","),
            paths_shown(s)
        ));
    }
    out.push_str(&format!("{}\n", count(list.len() as u64, "snapshot")));
    out
}

fn kind_char(k: NodeKind) -> char {
    match k {
        NodeKind::File => '-',
        NodeKind::Dir => 'd',
        NodeKind::Symlink => 'l',
        NodeKind::Fifo => 'p',
        NodeKind::Socket => 's',
        NodeKind::Chardev => 'c',
        NodeKind::Blockdev => 'b',
    }
}

fn mode_string(mode: u32) -> String {
    let mut s = String::new();
    for shift in [6, 3, 0] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

/// One `ls -l` line (its time in UTC, saying so).
pub fn long_line(path: &Path, n: &Node) -> String {
    let t = cairn::human::utc_unix(n.mtime);
    let mut line = format!(
        "{}{} {:>6} {:>6} {:>12} {} {}",
        kind_char(n.kind),
        mode_string(n.mode),
        n.uid,
        n.gid,
        n.size,
        t,
        path.display()
    );
    if let Some(target) = &n.link_target {
        line.push_str(&format!(" -> {}", target.lossy()));
    }
    line
}

/// One entry as a JSON line for `ls --json`.
pub fn node_json(path: &Path, n: &Node) -> Value {
    let mut v = json!({
        "path": path.to_string_lossy(),
        "name": n.name.lossy(),
        "type": format!("{:?}", n.kind).to_lowercase(),
        "mode": n.mode,
        "uid": n.uid,
        "gid": n.gid,
        "size": n.size,
        "mtime": n.mtime,
    });
    if let Some(t) = &n.link_target {
        v["link_target"] = t.lossy().into();
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_snapshot_table_says_utc_and_counts_in_english() {
        let snap = Snapshot {
            time: "2026-01-31T16:00:00+02:00".into(),
            parent: None,
            tree: cairn::hash::BlobId::default(),
            paths: vec!["/srv".into()],
            hostname: "h".into(),
            username: "u".into(),
            uid: 0,
            gid: 0,
            tags: vec![],
            program_version: "cairn test".into(),
            summary: None,
            origin: None,
            original: None,
        };
        let entry = SnapshotEntry {
            id: SnapshotId::default(),
            snapshot: snap,
        };
        let table = snapshot_table(std::slice::from_ref(&entry));
        assert!(table.contains("2026-01-31 14:00:00 UTC"), "{table}");
        assert!(table.ends_with("\n1 snapshot\n"), "{table}");
        let two = snapshot_table(&[entry.clone(), entry]);
        assert!(two.ends_with("\n2 snapshots\n"), "{two}");
    }
}
