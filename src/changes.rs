//! The set of paths known to have changed since the last snapshot, as the watcher reports
//! them. A backup given such a set re-reads only directories on the way to a changed path
//! and everything below a changed path; every other entry is carried over from the parent
//! snapshot without even a `stat`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Changed absolute paths, kept minimal: a path below another one in the set adds nothing
/// (everything below a changed directory is walked) and is dropped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChangedPaths {
    paths: BTreeSet<PathBuf>,
}

impl ChangedPaths {
    /// Empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Record a changed path (a file or directory that was created, written, removed,
    /// renamed or had its metadata changed).
    pub fn insert(&mut self, path: &Path) {
        if self.covers(path) {
            return;
        }
        // Drop entries below the new one.
        let below: Vec<PathBuf> = self
            .paths
            .range(path.to_path_buf()..)
            .take_while(|p| p.starts_with(path))
            .cloned()
            .collect();
        for p in below {
            self.paths.remove(&p);
        }
        self.paths.insert(path.to_path_buf());
    }

    /// Add every path of another set.
    pub fn merge(&mut self, other: &ChangedPaths) {
        for p in &other.paths {
            self.insert(p);
        }
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// Number of paths held.
    pub fn len(&self) -> usize {
        self.paths.len()
    }

    /// The paths, sorted.
    pub fn iter(&self) -> impl Iterator<Item = &Path> {
        self.paths.iter().map(PathBuf::as_path)
    }

    /// Whether `path` or one of its ancestors is in the set: everything at `path` must
    /// be read again.
    pub fn covers(&self, path: &Path) -> bool {
        path.ancestors().any(|a| self.paths.contains(a))
    }

    /// Whether the entry at `path` must be looked at: it changed, lies below a change, or
    /// a change lies below it.
    pub fn touches(&self, path: &Path) -> bool {
        if self.covers(path) {
            return true;
        }
        self.paths
            .range(path.to_path_buf()..)
            .next()
            .is_some_and(|p| p.starts_with(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(paths: &[&str]) -> ChangedPaths {
        let mut s = ChangedPaths::new();
        for p in paths {
            s.insert(Path::new(p));
        }
        s
    }

    #[test]
    fn nested_paths_collapse_into_their_ancestor() {
        let s = set(&["/a/b/c", "/a/b/d", "/a/b", "/x"]);
        let v: Vec<_> = s.iter().collect();
        assert_eq!(v, [Path::new("/a/b"), Path::new("/x")]);
        let s = set(&["/a/b", "/a/b/c"]);
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn touches_ancestors_descendants_and_itself_only() {
        let s = set(&["/src/docs/report.txt", "/src/new"]);
        for yes in [
            "/",
            "/src",
            "/src/docs",
            "/src/docs/report.txt",
            "/src/new",
            "/src/new/deep/file",
        ] {
            assert!(s.touches(Path::new(yes)), "{yes}");
        }
        for no in [
            "/src/doc",
            "/src/docs2",
            "/src/docs/report.txt2",
            "/src/newer",
            "/other",
            "/src/docs/other.txt",
        ] {
            assert!(!s.touches(Path::new(no)), "{no}");
        }
    }

    #[test]
    fn sibling_with_common_prefix_is_not_a_descendant() {
        // "/a/b-c" sorts between "/a/b" and "/a/b/..." byte-wise; it must not hide them.
        let s = set(&["/a/b/x"]);
        assert!(s.touches(Path::new("/a/b")));
        let s = set(&["/a/b-c", "/a/b/x"]);
        assert!(s.touches(Path::new("/a/b")));
        assert!(!s.touches(Path::new("/a/b-")));
    }

    #[test]
    fn merge_unions() {
        let mut a = set(&["/a/1"]);
        a.merge(&set(&["/a", "/b/2"]));
        assert_eq!(a, set(&["/a", "/b/2"]));
    }
}
