//! A quick count of what a backup will look at, run beside it so a progress display can
//! show "of total" and an ETA. Only `lstat`s, no reads; the backup never waits for it,
//! and its figures are an estimate (the tree may change while both run).

use crate::exclude::Excludes;
use crate::progress::Progress;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;

/// Count the regular files and their bytes under `paths` (honouring the excludes, size
/// limit and marker files included, and the one-file-system rule as the backup does) into `progress.files_total`/`bytes_total`,
/// then mark the totals final. Returns early once `stop` returns true.
pub fn count_totals(
    paths: &[PathBuf],
    excludes: &Excludes,
    one_file_system: bool,
    progress: &Progress,
    stop: &dyn Fn() -> bool,
) {
    for root in paths {
        let Ok(meta) = fs::symlink_metadata(root) else {
            continue;
        };
        if excludes.excludes_root(root, &meta) {
            continue;
        }
        let dev = meta.dev();
        let mut stack = vec![(root.clone(), meta)];
        while let Some((path, meta)) = stack.pop() {
            if stop() {
                return;
            }
            if meta.is_file() {
                if excludes.too_large(meta.size()) {
                    continue;
                }
                Progress::add(&progress.files_total, 1);
                Progress::add(&progress.bytes_total, meta.size());
                continue;
            }
            if !meta.is_dir() || (one_file_system && meta.dev() != dev) {
                continue;
            }
            let Ok(rd) = fs::read_dir(&path) else {
                continue;
            };
            let marks = excludes.marks(&path);
            for entry in rd.flatten() {
                let p = entry.path();
                let name = entry.file_name();
                if marks.excludes(&name) || excludes.matches(&p, &name) {
                    continue;
                }
                if let Ok(m) = entry.metadata() {
                    stack.push((p, m));
                }
            }
        }
    }
    progress.totals_final.store(true, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_files_and_bytes_minus_excludes() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir(dir.path().join("sub")).expect("mkdir");
        fs::write(dir.path().join("a"), vec![1u8; 100]).expect("write");
        fs::write(dir.path().join("sub/b"), vec![1u8; 50]).expect("write");
        fs::write(dir.path().join("sub/c.tmp"), vec![1u8; 7]).expect("write");
        std::os::unix::fs::symlink("a", dir.path().join("link")).expect("symlink");
        let p = Progress::default();
        let ex = Excludes::new(&["*.tmp".into()]).expect("excludes");
        count_totals(&[dir.path().to_path_buf()], &ex, false, &p, &|| false);
        assert_eq!(Progress::get(&p.files_total), 2);
        assert_eq!(Progress::get(&p.bytes_total), 150);
        assert!(p.totals_final.load(Ordering::Relaxed));
    }

    #[test]
    fn files_over_the_size_limit_and_marked_folders_are_not_counted() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir(dir.path().join("cache")).expect("mkdir");
        fs::write(dir.path().join("cache/.nobackup"), b"").expect("write");
        fs::write(dir.path().join("cache/x"), vec![1u8; 10]).expect("write");
        fs::write(dir.path().join("big"), vec![1u8; 2000]).expect("write");
        fs::write(dir.path().join("small"), vec![1u8; 5]).expect("write");
        let rules = crate::exclude::ExcludeRules {
            larger_than: Some(1024),
            if_present: vec![crate::exclude::Marker::parse(".nobackup").expect("marker")],
            ..Default::default()
        };
        let ex = Excludes::from_rules(&rules).expect("excludes");
        let p = Progress::default();
        count_totals(&[dir.path().to_path_buf()], &ex, false, &p, &|| false);
        // `small` and the marker itself.
        assert_eq!(Progress::get(&p.files_total), 2);
        assert_eq!(Progress::get(&p.bytes_total), 5);
    }
}
