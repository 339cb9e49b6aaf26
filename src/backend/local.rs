//! A repository in a local directory (or a mounted file system).
//!
//! Writes are atomic and durable: the bytes go to a temporary file in the destination
//! folder, which is fsynced, renamed over the final name, and the folder fsynced, so a
//! crash leaves either no object or the whole object. Temporary files start with `.tmp-`
//! and are never listed.

use super::{Backend, BackendError, FileType, Handle, ObjectInfo};
use async_trait::async_trait;
use bytes::Bytes;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Prefix of in-progress writes.
const TMP_PREFIX: &str = ".tmp-";

/// A local-directory backend rooted at a path.
#[derive(Debug, Clone)]
pub struct LocalBackend {
    root: PathBuf,
    /// Refuse to create folders for content objects under a root without `config`.
    guarded: bool,
}

impl LocalBackend {
    /// A backend for the repository at `root` (which need not exist yet).
    /// A relative `root` is made absolute against the current directory now, so that
    /// walking up its parents (to make new folders durable) never reaches an empty path.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        let root = std::path::absolute(&root).unwrap_or(root);
        LocalBackend {
            root,
            guarded: true,
        }
    }

    /// A backend for a folder that holds repository objects without being a repository
    /// of its own (a daemon's journal, which has no `config`): content objects are
    /// written even though `config` is absent.
    pub fn without_config(root: impl Into<PathBuf>) -> Self {
        LocalBackend {
            guarded: false,
            ..LocalBackend::new(root)
        }
    }

    /// Content objects (packs, index objects, snapshots, deletion records) go only into
    /// a repository: where `config` is absent, the repository is not there (a backup disk
    /// that did not mount leaves its empty mount point), and writing into it would build
    /// a second, partial repository that nobody can open. `config` and keys are what
    /// `init` writes, so they are allowed.
    fn check_repository_present(&self, h: &Handle) -> Result<(), BackendError> {
        if !self.guarded || matches!(h.kind, FileType::Config | FileType::Key) {
            return Ok(());
        }
        match fs::symlink_metadata(self.root.join("config")) {
            Ok(m) if m.is_file() => Ok(()),
            _ => Err(BackendError::Io {
                op: "write",
                object: h.path(),
                location: self.location(),
                source: io::Error::new(
                    io::ErrorKind::NotFound,
                    "the repository is not there (no `config` at its root): is the disk that holds it mounted? Nothing is written into a location without a repository",
                ),
                // The disk may come back: the daemon journals and tries again.
                retryable: true,
            }),
        }
    }

    /// The repository folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path_of(&self, h: &Handle) -> PathBuf {
        self.root.join(h.path())
    }

    fn io_err(&self, op: &'static str, object: String, source: io::Error) -> BackendError {
        if source.kind() == io::ErrorKind::NotFound {
            return BackendError::NotFound {
                object,
                location: self.location(),
            };
        }
        let retryable = matches!(
            source.kind(),
            io::ErrorKind::Interrupted | io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
        );
        BackendError::Io {
            op,
            object,
            location: self.location(),
            source,
            retryable,
        }
    }

    fn put_sync(&self, h: &Handle, data: &[u8]) -> Result<(), BackendError> {
        let dest = self.path_of(h);
        let dir = dest.parent().unwrap_or(&self.root).to_path_buf();
        let e = |s| self.io_err("write", h.path(), s);
        // Checked on every content object, not only when a folder is created: one stat
        // beside the writes and fsyncs of an object.
        self.check_repository_present(h)?;
        if !dir.is_dir() {
            fs::create_dir_all(&dir).map_err(e)?;
            // Make the new folders' own entries durable too: fsync each parent up to (and
            // including) the parent of the repository root.
            let stop = self.root.parent().unwrap_or(&self.root).to_path_buf();
            let mut p = dir.parent();
            while let Some(parent) = p {
                File::open(parent).and_then(|f| f.sync_all()).map_err(e)?;
                if parent == stop || !parent.starts_with(&stop) {
                    break;
                }
                p = parent.parent();
            }
        }
        let mut rnd = [0u8; 8];
        crate::crypto::random_bytes(&mut rnd).map_err(|x| e(io::Error::other(x.to_string())))?;
        let tmp = dir.join(format!("{TMP_PREFIX}{}", hex::encode(rnd)));
        let result = (|| {
            let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
            f.write_all(data)?;
            f.sync_all()?;
            drop(f);
            fs::rename(&tmp, &dest)?;
            File::open(&dir)?.sync_all()
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map_err(e)
    }

    /// Open an object for reading: only a regular file, never through a symlink, and
    /// without blocking on a FIFO (a repository folder is storage, and what lies in it
    /// is not trusted). Checked on the open descriptor, so nothing can be swapped in
    /// between the check and the read.
    fn open_object(&self, h: &Handle) -> Result<(File, u64), BackendError> {
        use std::os::unix::fs::OpenOptionsExt;
        let e = |s| self.io_err("read", h.path(), s);
        let f = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(self.path_of(h))
            .map_err(|err| match err.raw_os_error() {
                Some(libc::ELOOP) => {
                    self.invalid(h, "a symbolic link (repository objects are regular files)")
                }
                _ => e(err),
            })?;
        let meta = f.metadata().map_err(e)?;
        if !meta.is_file() {
            return Err(self.invalid(h, "not a regular file (repository objects are)"));
        }
        Ok((f, meta.len()))
    }

    fn invalid(&self, h: &Handle, reason: impl Into<String>) -> BackendError {
        BackendError::Invalid {
            object: h.path(),
            location: self.location(),
            reason: reason.into(),
        }
    }

    fn get_sync(&self, h: &Handle) -> Result<Vec<u8>, BackendError> {
        let e = |s| self.io_err("read", h.path(), s);
        let (f, len) = self.open_object(h)?;
        let limit = h.kind.max_stored_len();
        let too_large = |len: u64| {
            self.invalid(
                h,
                format!(
                    "{len} bytes or more, where an object of its kind has at most {limit} (docs/FORMAT.md, section 17)"
                ),
            )
        };
        if len > limit {
            return Err(too_large(len));
        }
        let mut buf = Vec::with_capacity(len as usize);
        f.take(limit + 1).read_to_end(&mut buf).map_err(e)?;
        if buf.len() as u64 > limit {
            return Err(too_large(buf.len() as u64));
        }
        Ok(buf)
    }

    fn get_range_sync(
        &self,
        h: &Handle,
        offset: u64,
        length: u64,
        mut buf: Vec<u8>,
    ) -> Result<Vec<u8>, BackendError> {
        let e = |s| self.io_err("read", h.path(), s);
        let (mut f, _) = self.open_object(h)?;
        f.seek(SeekFrom::Start(offset)).map_err(e)?;
        let cap = usize::try_from(length).map_err(|_| e(io::Error::other("range too large")))?;
        buf.clear();
        buf.reserve(cap.min(64 * 1024 * 1024));
        f.take(length).read_to_end(&mut buf).map_err(e)?;
        if (buf.len() as u64) < length {
            return Err(BackendError::Truncated {
                object: h.path(),
                location: self.location(),
                offset,
                wanted: length,
                got: buf.len() as u64,
            });
        }
        Ok(buf)
    }

    fn list_dir(
        &self,
        dir: &Path,
        out: &mut Vec<ObjectInfo>,
        kind: FileType,
    ) -> Result<(), BackendError> {
        let e = |s| self.io_err("list", kind.dir().to_string(), s);
        let entries = match fs::read_dir(dir) {
            Ok(x) => x,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(err) => return Err(e(err)),
        };
        for entry in entries {
            let entry = entry.map_err(e)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let meta = entry.metadata().map_err(e)?;
            if meta.is_dir() {
                if kind == FileType::Pack {
                    self.list_dir(&entry.path(), out, kind)?;
                }
                continue;
            }
            out.push(ObjectInfo {
                name,
                size: meta.len(),
                modified: meta.modified().ok(),
            });
        }
        Ok(())
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, BackendError> + Send + 'static,
) -> Result<T, BackendError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|join| {
        Err(BackendError::Io {
            op: "run",
            object: String::new(),
            location: String::new(),
            source: io::Error::other(join.to_string()),
            retryable: false,
        })
    })
}

#[async_trait]
impl Backend for LocalBackend {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    async fn put(&self, handle: &Handle, data: Bytes) -> Result<(), BackendError> {
        let (me, h, d) = (self.clone(), handle.clone(), data);
        blocking(move || me.put_sync(&h, &d)).await
    }

    async fn get(&self, handle: &Handle) -> Result<Vec<u8>, BackendError> {
        let (me, h) = (self.clone(), handle.clone());
        blocking(move || me.get_sync(&h)).await
    }

    async fn get_range_into(
        &self,
        handle: &Handle,
        offset: u64,
        length: u64,
        buf: Vec<u8>,
    ) -> Result<Vec<u8>, BackendError> {
        let (me, h) = (self.clone(), handle.clone());
        blocking(move || me.get_range_sync(&h, offset, length, buf)).await
    }

    async fn stat(&self, handle: &Handle) -> Result<u64, BackendError> {
        let (me, h) = (self.clone(), handle.clone());
        blocking(move || {
            fs::metadata(me.path_of(&h))
                .map(|m| m.len())
                .map_err(|s| me.io_err("stat", h.path(), s))
        })
        .await
    }

    async fn list(&self, kind: FileType) -> Result<Vec<ObjectInfo>, BackendError> {
        let me = self.clone();
        blocking(move || {
            let mut out = Vec::new();
            if kind == FileType::Config {
                if let Ok(m) = fs::metadata(me.root.join("config")) {
                    out.push(ObjectInfo {
                        name: String::new(),
                        size: m.len(),
                        modified: m.modified().ok(),
                    });
                }
                return Ok(out);
            }
            me.list_dir(&me.root.join(kind.dir()), &mut out, kind)?;
            Ok(out)
        })
        .await
    }

    async fn delete(&self, handle: &Handle) -> Result<(), BackendError> {
        let (me, h) = (self.clone(), handle.clone());
        blocking(move || {
            let path = me.path_of(&h);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(me.io_err("delete", h.path(), e)),
            }
            // The removal is durable only once the folder is: a prune deletes packs
            // only after its deletion record is durable, and a removal undone by a power
            // cut must not reappear after a later step that relied on it.
            let dir = path.parent().unwrap_or(&me.root);
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| me.io_err("delete", h.path(), e))
        })
        .await
    }
}
