//! Which snapshots a verb works on: ids given on the command line, or every snapshot
//! that passes `--host`, `--tag` and `--path` (restic's filters, with restic's meaning),
//! shared by `forget`, `copy`, `tag` and `rewrite`.

use anyhow::Result;
use cairn::format::snapshot::Snapshot;
use cairn::repo::{Repository, SnapshotEntry};
use tokio::runtime::Runtime;

/// Snapshot filters.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SnapshotFilter {
    /// Only snapshots of this host (repeatable).
    #[arg(long = "host", value_name = "HOST")]
    pub hosts: Vec<String>,
    /// Only snapshots with these tags (comma-separated: all; repeatable: any; '' for
    /// snapshots without tags).
    #[arg(long = "tag", value_name = "TAGS")]
    pub tags: Vec<String>,
    /// Only snapshots that include this path (repeatable: all of them).
    #[arg(long = "path", value_name = "PATH")]
    pub paths: Vec<String>,
}

/// Comma-separated tag lists, as `--tag` and `--keep-tag` take them.
pub fn tag_lists(v: &[String]) -> Vec<Vec<String>> {
    v.iter()
        .map(|l| {
            l.split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(String::from)
                .collect()
        })
        .collect()
}

impl SnapshotFilter {
    /// Whether `s` passes every filter given.
    pub fn matches(&self, s: &Snapshot) -> bool {
        (self.hosts.is_empty() || self.hosts.contains(&s.hostname))
            && (self.tags.is_empty()
                || tag_lists(&self.tags).iter().any(|l| {
                    // `--tag ''` selects snapshots without tags, as in restic.
                    if l.is_empty() {
                        s.tags.is_empty()
                    } else {
                        l.iter().all(|t| s.tags.contains(t))
                    }
                }))
            && (self.paths.is_empty() || self.paths.iter().all(|p| s.paths.contains(p)))
    }

    /// Whether no filter is given.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty() && self.tags.is_empty() && self.paths.is_empty()
    }

    /// The snapshots named by `ids` (each as `latest`, `latest~N`, an id or a prefix),
    /// or when none are named every snapshot that passes the filters; oldest first, each
    /// once. Named ones are resolved among the snapshots the filters pass, as restic
    /// does: `--host web latest` is web's latest.
    pub fn select(
        &self,
        rt: &Runtime,
        repo: &Repository,
        ids: &[String],
    ) -> Result<Vec<SnapshotEntry>> {
        let passing: Vec<SnapshotEntry> = rt
            .block_on(repo.list_snapshots())?
            .into_iter()
            .filter(|e| self.matches(&e.snapshot))
            .collect();
        if ids.is_empty() {
            return Ok(passing);
        }
        let listed: Vec<_> = passing.iter().map(|e| e.id).collect();
        let mut wanted = std::collections::HashSet::new();
        for spec in ids {
            let found = rt
                .block_on(repo.find_snapshot_listed(spec, listed.clone()))
                .map_err(|e| {
                    if self.is_empty() {
                        anyhow::Error::from(e)
                    } else {
                        anyhow::anyhow!("{e} (among the snapshots --host, --tag and --path pass)")
                    }
                })?;
            wanted.insert(found.id);
        }
        Ok(passing
            .into_iter()
            .filter(|e| wanted.contains(&e.id))
            .collect())
    }
}
