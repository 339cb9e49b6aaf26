//! `cairn tag`: change snapshots' tags, as restic does. Snapshot objects are named by
//! their content, so a changed snapshot is stored anew (same time, tree and everything
//! else, its first id recorded as `original`) and the old object is removed after.

use super::common::{RepoArgs, open};
use super::forget::remove_snapshot;
use super::output;
use super::select::{SnapshotFilter, tag_lists};
use super::stdout::outln;
use anyhow::{Result, bail};
use cairn::format::snapshot::Snapshot;
use tokio::runtime::Runtime;

/// `cairn tag` arguments.
#[derive(Debug, clap::Args)]
pub struct TagArgs {
    /// Where the repository is and how to open it.
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Tags to add (comma-separated, repeatable).
    #[arg(long, value_name = "TAGS")]
    pub add: Vec<String>,
    /// Tags to remove (comma-separated, repeatable).
    #[arg(long, value_name = "TAGS")]
    pub remove: Vec<String>,
    /// Replace all tags with these (comma-separated, repeatable; `--set ''` removes all).
    #[arg(long, value_name = "TAGS", conflicts_with_all = ["add", "remove"])]
    pub set: Vec<String>,
    /// Which snapshots to change, when no ids are given.
    #[command(flatten)]
    pub filter: SnapshotFilter,
    /// Snapshots to change (ids, prefixes, `latest`); default: all that pass the filters.
    #[arg(value_name = "SNAPSHOT")]
    pub snapshots: Vec<String>,
}

/// The tags of a snapshot after `--set`, or `--add` and `--remove`: pure, for tests.
pub fn new_tags(
    old: &[String],
    set: Option<&[String]>,
    add: &[String],
    remove: &[String],
) -> Vec<String> {
    let mut tags: Vec<String> = match set {
        Some(s) => s.to_vec(),
        None => old.to_vec(),
    };
    for t in add {
        if !tags.contains(t) {
            tags.push(t.clone());
        }
    }
    tags.retain(|t| !remove.contains(t));
    let mut seen = std::collections::HashSet::new();
    tags.retain(|t| seen.insert(t.clone()));
    tags
}

/// `cairn tag`.
pub fn run(rt: &Runtime, args: &RepoArgs, a: &TagArgs, json: bool) -> Result<i32> {
    let flat = |v: &[String]| tag_lists(v).into_iter().flatten().collect::<Vec<_>>();
    let (add, remove, set) = (flat(&a.add), flat(&a.remove), flat(&a.set));
    if a.add.is_empty() && a.remove.is_empty() && a.set.is_empty() {
        bail!("nothing to do: give --add, --remove or --set TAGS");
    }
    let set = (!a.set.is_empty()).then_some(&set[..]);
    let repo = open(rt, args)?;
    let selected = a.filter.select(rt, &repo, &a.snapshots)?;
    let mut changed = Vec::new();
    for e in &selected {
        let tags = new_tags(&e.snapshot.tags, set, &add, &remove);
        if tags == e.snapshot.tags {
            continue;
        }
        let snap = Snapshot {
            tags,
            original: Some(e.snapshot.original.unwrap_or(e.id)),
            ..e.snapshot.clone()
        };
        // The new object is durable before the old one goes: a failure between the
        // two leaves both, never neither.
        let id = rt.block_on(repo.save_snapshot(&snap))?;
        let removed = remove_snapshot(rt, &repo, e)?;
        if json {
            outln!(
                "{}",
                serde_json::json!({
                    "message_type": "changed",
                    "old_snapshot_id": e.id.to_hex(),
                    "new_snapshot_id": id.to_hex(),
                    "old_removed": removed,
                    "tags": snap.tags,
                })
            )?;
        } else {
            outln!(
                "{} -> {}  {}  tags: {}",
                e.id.short(),
                id.short(),
                output::short_time(&snap.time),
                if snap.tags.is_empty() {
                    "(none)".to_string()
                } else {
                    snap.tags.join(",")
                }
            )?;
        }
        changed.push(id);
    }
    if json {
        outln!(
            "{}",
            serde_json::json!({
                "message_type": "summary",
                "changed_snapshots": changed.len(),
                "snapshots_considered": selected.len(),
            })
        )?;
    } else {
        outln!(
            "{} changed of {} considered",
            output::count(changed.len() as u64, "snapshot"),
            selected.len()
        )?;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::new_tags;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn add_remove_and_set_follow_restic() {
        let old = v(&["daily", "home"]);
        assert_eq!(
            new_tags(&old, None, &v(&["keep"]), &[]),
            v(&["daily", "home", "keep"])
        );
        assert_eq!(new_tags(&old, None, &v(&["home"]), &[]), old);
        assert_eq!(new_tags(&old, None, &[], &v(&["daily"])), v(&["home"]));
        assert_eq!(new_tags(&old, Some(&v(&["a", "a"])), &[], &[]), v(&["a"]));
        assert_eq!(new_tags(&old, Some(&[]), &[], &[]), Vec::<String>::new());
        assert_eq!(new_tags(&old, None, &v(&["x"]), &v(&["x"])), old);
    }
}
