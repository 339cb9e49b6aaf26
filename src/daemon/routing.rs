//! Which source a changed path belongs to: the sources as the daemon runs them (its own
//! folders excluded where they lie inside a source) and the routing of the watcher's
//! events to them.

use super::config::{DaemonConfig, SourceConfig};
use super::watch;
use crate::exclude::Excludes;
use std::path::{Path, PathBuf};

/// Directories the daemon writes to itself, which must never trigger or enter a backup.
pub(super) fn own_dirs(config: &DaemonConfig) -> Vec<PathBuf> {
    let mut dirs = vec![
        config.state_dir.clone(),
        config.cache_dir.clone(),
        config.socket.clone(),
    ];
    for d in &config.destinations {
        if let crate::backend::Location::Local(p) = &d.location {
            dirs.push(p.clone());
        }
    }
    dirs.retain(|d| d != Path::new("/"));
    dirs
}

/// The sources with the daemon's own directories excluded where they lie inside them.
pub(super) fn effective_sources(config: &DaemonConfig, own: &[PathBuf]) -> Vec<SourceConfig> {
    config
        .sources
        .iter()
        .map(|s| {
            let mut s = s.clone();
            // The watcher reports paths under the spelling it was given; use the same
            // clean spelling the backup records.
            s.paths = s
                .paths
                .iter()
                .map(|p| crate::backup::clean_absolute(p).unwrap_or_else(|_| p.clone()))
                .collect();
            for d in own {
                if s.paths.iter().any(|p| d.starts_with(p) && d != p) {
                    tracing::info!(
                        "{} lies inside the source {}; it is left out of backups",
                        d.display(),
                        s.paths[0].display()
                    );
                    s.excludes
                        .patterns
                        .push(globset::escape(&d.to_string_lossy()));
                }
            }
            s
        })
        .collect()
}

/// Which source a changed path belongs to, unless excluded there.
pub(super) struct Router {
    sources: Vec<(Vec<PathBuf>, Excludes)>,
    own: Vec<PathBuf>,
}

impl Router {
    /// A router over `sources` that drops anything inside the daemon's `own` folders.
    pub(super) fn new(sources: &[SourceConfig], own: Vec<PathBuf>) -> Self {
        Router {
            sources: sources
                .iter()
                .map(|s| {
                    let ex = Excludes::from_rules(&s.excludes).unwrap_or_default();
                    (s.paths.clone(), ex)
                })
                .collect(),
            own,
        }
    }

    /// The indexes of the sources `path` belongs to and is not excluded from.
    pub(super) fn route(&self, path: &Path) -> Vec<usize> {
        if watch::inside_any(path, &self.own) {
            return Vec::new();
        }
        let mut out = Vec::new();
        for (i, (roots, excludes)) in self.sources.iter().enumerate() {
            let Some(root) = roots.iter().find(|r| path.starts_with(r)) else {
                continue;
            };
            // A pattern on the path or a folder above it, or a marker file in a folder
            // above it (one look per folder, only when markers are configured): a cache
            // that changes all the time must not keep starting snapshots.
            let excluded = path
                .ancestors()
                .take_while(|a| a.starts_with(root) && *a != root.as_path())
                .any(|a| {
                    a.file_name().is_some_and(|n| {
                        excludes.matches(a, n)
                            || a.parent().is_some_and(|p| excludes.marks(p).excludes(n))
                    })
                });
            if !excluded {
                out.push(i);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_respects_sources_excludes_and_own_dirs() {
        let sources = vec![
            SourceConfig {
                paths: vec!["/srv/data".into()],
                excludes: crate::exclude::ExcludeRules {
                    patterns: vec!["*.tmp".into(), "/srv/data/cache".into()],
                    ..Default::default()
                },
                one_file_system: false,
                tags: vec![],
                allow_root_change: false,
                command: None,
                hooks: Default::default(),
            },
            SourceConfig {
                paths: vec!["/etc".into()],
                excludes: Default::default(),
                one_file_system: false,
                tags: vec![],
                allow_root_change: false,
                command: None,
                hooks: Default::default(),
            },
        ];
        let r = Router::new(&sources, vec!["/srv/data/.cairn-state".into()]);
        assert_eq!(r.route(Path::new("/srv/data/a.txt")), [0]);
        assert_eq!(r.route(Path::new("/etc/hosts")), [1]);
        assert!(r.route(Path::new("/srv/data/x.tmp")).is_empty());
        assert!(r.route(Path::new("/srv/data/cache/deep/file")).is_empty());
        assert!(
            r.route(Path::new("/srv/data/.cairn-state/cache/x"))
                .is_empty()
        );
        assert!(r.route(Path::new("/srv/database")).is_empty());
        // Excluded names apply at any depth, also to directories above the file.
        assert!(
            r.route(Path::new("/srv/data/build.tmp/inner.txt"))
                .is_empty()
        );
    }

    #[test]
    fn changes_inside_a_marked_folder_start_no_snapshot_but_the_marker_does() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("src");
        std::fs::create_dir_all(root.join("cache/deep")).expect("mkdir");
        std::fs::write(
            root.join("cache/CACHEDIR.TAG"),
            crate::exclude::CACHEDIR_SIGNATURE,
        )
        .expect("write");
        let source = SourceConfig {
            paths: vec![root.clone()],
            excludes: crate::exclude::ExcludeRules {
                if_present: vec![crate::exclude::Marker::cachedir()],
                ..Default::default()
            },
            one_file_system: false,
            tags: vec![],
            allow_root_change: false,
            command: None,
            hooks: Default::default(),
        };
        let r = Router::new(&[source], Vec::new());
        assert!(r.route(&root.join("cache/deep/x")).is_empty());
        assert!(r.route(&root.join("cache/y")).is_empty());
        assert_eq!(r.route(&root.join("cache/CACHEDIR.TAG")), [0]);
        assert_eq!(r.route(&root.join("other")), [0]);
    }
}
