//! Which repository each destination held when the daemon first reached it, remembered
//! in `<state_dir>/destinations/<name>.repository`.
//!
//! A destination that was reached once is never created again: from then on a missing
//! `config` there means the destination is unreachable (a backup disk that did not
//! mount, a bucket or prefix that is not what it was), not that it is empty. Creating a
//! repository there would give it fresh keys and a fresh history beside nothing, and
//! every later snapshot would go into it instead of the real one.

use crate::error::{Error, Result};
use crate::hash::Id;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Where the repository id of destination `name` is remembered.
pub fn record_path(state_dir: &Path, name: &str) -> PathBuf {
    state_dir
        .join("destinations")
        .join(format!("{name}.repository"))
}

/// The repository id remembered for destination `name`, if it was reached before. A
/// record that cannot be read or parsed is an error naming it: guessing "never reached"
/// would allow a new repository to be created.
pub fn recorded(state_dir: &Path, name: &str) -> Result<Option<Id>> {
    let path = record_path(state_dir, name);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("read the destination record", &path, e)),
    };
    Id::from_object_name(text.trim()).map(Some).ok_or_else(|| {
        Error::InvalidInput(format!(
            "the destination record {} does not hold a repository id: restore it from a backup of the state directory, or delete it only if the destination is meant to start over as a new repository",
            path.display()
        ))
    })
}

/// Whether destination `name` was reached before, and the repository id it held (hex)
/// as far as known: the record, or for a state directory from before records were kept,
/// a journal kept for it (`journal/<name>/<id>/`, written only once the repository was
/// opened). Either means the daemon once opened a repository there, so a missing
/// `config` is an unreachable destination, not an empty one.
pub fn reached_before(state_dir: &Path, name: &str) -> Result<Option<String>> {
    if let Some(id) = recorded(state_dir, name)? {
        return Ok(Some(id.to_hex()));
    }
    if let Ok(rd) = fs::read_dir(state_dir.join("journal").join(name)) {
        for e in rd.flatten() {
            if let Some(id) = e.file_name().to_str().and_then(Id::from_object_name) {
                return Ok(Some(id.to_hex()));
            }
        }
    }
    Ok(None)
}

/// Remember that destination `name` holds repository `id` (atomically and durably: a
/// crash leaves the old record or the new one).
pub fn record(state_dir: &Path, name: &str, id: &Id) -> Result<()> {
    let path = record_path(state_dir, name);
    let dir = state_dir.join("destinations");
    fs::create_dir_all(&dir).map_err(|e| Error::io("create", &dir, e))?;
    let tmp = dir.join(format!(".{name}.repository.tmp"));
    let write = || -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(format!("{}\n", id.to_hex()).as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, &path)?;
        File::open(&dir)?.sync_all()
    };
    write().map_err(|e| Error::io("write the destination record", &path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_and_a_missing_one_is_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(recorded(dir.path(), "nas").expect("read"), None);
        let id = Id([7; 32]);
        record(dir.path(), "nas", &id).expect("write");
        assert_eq!(recorded(dir.path(), "nas").expect("read"), Some(id));
        assert_eq!(recorded(dir.path(), "other").expect("read"), None);
    }

    #[test]
    fn a_damaged_record_is_an_error_not_never_reached() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(dir.path().join("destinations")).expect("mkdir");
        fs::write(record_path(dir.path(), "nas"), "not an id").expect("write");
        let err = recorded(dir.path(), "nas").expect_err("damaged");
        assert!(err.to_string().contains("nas.repository"), "{err}");
    }
}
