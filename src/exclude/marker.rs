//! Marker files (`--exclude-if-present FILE[:HEADER]`, and `--exclude-caches`, which is
//! the marker `CACHEDIR.TAG` with the signature of the Cache Directory Tagging
//! Specification, <https://bford.info/cachedir/>). As in restic, a directory holding a
//! marker keeps itself and the marker file in the snapshot, and everything else in it is
//! left out: a restore shows that something was there and why it is empty.

use std::ffi::OsStr;
use std::fs;
use std::io::{ErrorKind, Read};
use std::path::Path;

/// The file that marks a cache directory.
pub const CACHEDIR_TAG: &str = "CACHEDIR.TAG";

/// What a `CACHEDIR.TAG` must start with to count (any other content is not a tag: a
/// program's own file that happens to have the name).
pub const CACHEDIR_SIGNATURE: &str = "Signature: 8a477f597d28d172789f06886806bc55";

/// A file whose presence in a directory leaves the directory's contents out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Marker {
    /// The file's name in the directory.
    pub file: String,
    /// What the file must start with; empty: its presence is enough.
    pub header: String,
}

/// What one directory's marker file turned out to be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MarkerCheck {
    /// There is no such file.
    Absent,
    /// It is there (and starts with the header, if one is asked for).
    Present,
    /// It is there but does not count, and why (a wrong signature, unreadable): the
    /// directory is stored, and the reason logged, as restic warns.
    Invalid(String),
}

impl Marker {
    /// `--exclude-caches`: `CACHEDIR.TAG` with its signature.
    pub fn cachedir() -> Marker {
        Marker {
            file: CACHEDIR_TAG.into(),
            header: CACHEDIR_SIGNATURE.into(),
        }
    }

    /// Read `FILE[:HEADER]` (restic's form; the header is everything after the first
    /// `:`). The file is a name in the directory, not a path.
    pub fn parse(spec: &str) -> Result<Marker, String> {
        let (file, header) = spec.split_once(':').unwrap_or((spec, ""));
        if file.is_empty() {
            return Err(format!(
                "exclude-if-present {spec:?} names no file: write it as FILE or FILE:HEADER, e.g. .nobackup or CACHEDIR.TAG:Signature"
            ));
        }
        if file.contains('/') || file == "." || file == ".." {
            return Err(format!(
                "exclude-if-present {spec:?}: {file:?} is not a file name; give the name the marker file has in each directory, e.g. .nobackup"
            ));
        }
        Ok(Marker {
            file: file.into(),
            header: header.into(),
        })
    }

    /// The marker as restic writes it (`FILE` or `FILE:HEADER`).
    pub fn spec(&self) -> String {
        if self.header.is_empty() {
            self.file.clone()
        } else {
            format!("{}:{}", self.file, self.header)
        }
    }

    /// Whether `dir` holds this marker.
    pub fn check(&self, dir: &Path) -> MarkerCheck {
        let path = dir.join(&self.file);
        match fs::symlink_metadata(&path) {
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
                return MarkerCheck::Absent;
            }
            Err(e) => {
                return MarkerCheck::Invalid(format!(
                    "cannot look at the exclusion marker {}: {e}",
                    path.display()
                ));
            }
        }
        if self.header.is_empty() {
            return MarkerCheck::Present;
        }
        let mut start = vec![0u8; self.header.len()];
        let read = fs::File::open(&path).and_then(|mut f| f.read_exact(&mut start));
        match read {
            Ok(()) if start == self.header.as_bytes() => MarkerCheck::Present,
            Ok(()) => MarkerCheck::Invalid(format!(
                "{} does not start with {:?}: its folder is backed up",
                path.display(),
                self.header
            )),
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => MarkerCheck::Invalid(format!(
                "{} is shorter than its signature {:?}: its folder is backed up",
                path.display(),
                self.header
            )),
            Err(e) => MarkerCheck::Invalid(format!(
                "cannot read the exclusion marker {}: {e}; its folder is backed up",
                path.display()
            )),
        }
    }
}

/// The markers found in one directory: every entry of it is left out except a marker
/// file itself (with several markers present, restic keeps only what every one of them
/// spares, which is nothing unless they share a name).
#[derive(Debug, Default)]
pub struct DirMarks<'a> {
    found: Vec<&'a str>,
    /// Marker files present but not counted, with why (for the log).
    pub problems: Vec<String>,
}

impl<'a> DirMarks<'a> {
    /// Look for each of `markers` in `dir`.
    pub fn of(markers: &'a [Marker], dir: &Path) -> Self {
        let mut marks = DirMarks::default();
        for m in markers {
            match m.check(dir) {
                MarkerCheck::Absent => {}
                MarkerCheck::Present => marks.found.push(&m.file),
                MarkerCheck::Invalid(why) => marks.problems.push(why),
            }
        }
        marks
    }

    /// Whether a marker was found.
    pub fn is_marked(&self) -> bool {
        !self.found.is_empty()
    }

    /// Whether the entry `name` of the directory is left out.
    pub fn excludes(&self, name: &OsStr) -> bool {
        self.found.iter().any(|m| OsStr::new(m) != name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_like_restics() {
        assert_eq!(
            Marker::parse(".nobackup").expect("plain"),
            Marker {
                file: ".nobackup".into(),
                header: String::new()
            }
        );
        let m = Marker::parse("CACHEDIR.TAG:Signature: 8a47").expect("with header");
        assert_eq!(m.file, "CACHEDIR.TAG");
        assert_eq!(m.header, "Signature: 8a47");
        assert_eq!(m.spec(), "CACHEDIR.TAG:Signature: 8a47");
        for bad in ["", ":x", "a/b", ".."] {
            let e = Marker::parse(bad).expect_err(bad);
            assert!(e.contains("exclude-if-present"), "{e}");
        }
    }

    #[test]
    fn a_cache_tag_counts_only_with_its_signature() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tag = dir.path().join(CACHEDIR_TAG);
        let m = Marker::cachedir();
        assert_eq!(m.check(dir.path()), MarkerCheck::Absent);
        fs::write(
            &tag,
            format!("{CACHEDIR_SIGNATURE}\n# This file is a cache directory tag.\n"),
        )
        .expect("write");
        assert_eq!(m.check(dir.path()), MarkerCheck::Present);
        fs::write(&tag, "Signature: 0000000000000000000000000000000000\n").expect("write");
        assert!(
            matches!(m.check(dir.path()), MarkerCheck::Invalid(w) if w.contains("does not start"))
        );
        fs::write(&tag, "Sig").expect("write");
        assert!(matches!(m.check(dir.path()), MarkerCheck::Invalid(w) if w.contains("shorter")));
        // Without a header, any file of that name marks.
        let plain = Marker::parse(CACHEDIR_TAG).expect("plain");
        assert_eq!(plain.check(dir.path()), MarkerCheck::Present);
        // A file where a directory is expected is simply no directory with a marker.
        assert_eq!(m.check(&tag), MarkerCheck::Absent);
    }

    #[test]
    fn a_marked_directory_keeps_only_its_marker() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join(".nobackup"), "").expect("write");
        let markers = [
            Marker::parse(".nobackup").expect("m"),
            Marker::parse(".other").expect("m"),
        ];
        let marks = DirMarks::of(&markers, dir.path());
        assert!(marks.is_marked());
        assert!(!marks.excludes(OsStr::new(".nobackup")));
        assert!(marks.excludes(OsStr::new("data")));
        assert!(marks.excludes(OsStr::new(".other")));
        let none = DirMarks::of(&markers[1..], dir.path());
        assert!(!none.is_marked() && !none.excludes(OsStr::new("data")));
    }
}
