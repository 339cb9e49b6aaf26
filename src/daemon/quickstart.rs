//! `cairn daemon --watch DIR` with no configuration file: the daemon's main job on an
//! embedded default. Everything lives in one data directory (`$XDG_DATA_HOME/cairn`; when
//! that is unset, `/var/lib/cairn` as root, else `~/.local/share/cairn`): the configuration written
//! from `config/quickstart.toml`, a generated passphrase (mode 600) beside it, the state
//! and the local repository. Because that passphrase is the only key to the backups and
//! the repository shares the machine's disk, the daemon says so loudly, in the log and
//! in `status`.

use crate::error::{Error, Result};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The embedded default configuration; each `{placeholder}` stands for a whole TOML string
/// and is filled in by [`render`].
const TEMPLATE: &str = include_str!("../../config/quickstart.toml");

/// What the environment says about where user data goes, passed in so the choice is a
/// plain function of it.
#[derive(Clone, Debug, Default)]
pub struct DataHome {
    /// Whether the daemon runs as root.
    pub root: bool,
    /// `$XDG_DATA_HOME`, if set and not empty.
    pub xdg_data_home: Option<PathBuf>,
    /// `$HOME`, if set and not empty.
    pub home: Option<PathBuf>,
}

impl DataHome {
    /// The environment of this process.
    pub fn of_process() -> Self {
        let var = |name| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        DataHome {
            // SAFETY: geteuid has no preconditions and cannot fail.
            root: unsafe { libc::geteuid() } == 0,
            xdg_data_home: var("XDG_DATA_HOME"),
            home: var("HOME"),
        }
    }

    /// The quick start's data directory: `$XDG_DATA_HOME/cairn` when that is set (for
    /// root too: it is set on purpose), else `/var/lib/cairn` as root (a service), else
    /// `$HOME/.local/share/cairn` (the XDG default). A relative `XDG_DATA_HOME` is
    /// ignored, as the XDG specification says.
    pub fn data_dir(&self) -> Result<PathBuf> {
        if let Some(x) = self.xdg_data_home.as_ref().filter(|x| x.is_absolute()) {
            return Ok(x.join("cairn"));
        }
        if self.root {
            return Ok(PathBuf::from("/var/lib/cairn"));
        }
        match self.home.as_ref().filter(|h| h.is_absolute()) {
            Some(h) => Ok(h.join(".local/share/cairn")),
            None => Err(Error::InvalidInput(
                "cannot tell where to keep the backups: neither XDG_DATA_HOME nor HOME is set to an absolute path; set one, or write a configuration and pass --config FILE".into(),
            )),
        }
    }
}

/// Where the quick start keeps its parts, all inside one data directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// The data directory.
    pub dir: PathBuf,
    /// The generated configuration.
    pub config: PathBuf,
    /// The generated passphrase, beside the configuration.
    pub passphrase: PathBuf,
    /// The local repository.
    pub repository: PathBuf,
    /// The daemon's state (journal, cache, control socket).
    pub state: PathBuf,
}

impl Layout {
    /// The parts' places inside `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        Layout {
            dir: dir.to_path_buf(),
            config: dir.join("cairn.toml"),
            passphrase: dir.join("passphrase"),
            repository: dir.join("repository"),
            state: dir.join("state"),
        }
    }

    /// What the daemon says at start and `status` shows for as long as it runs.
    pub fn notice(&self) -> String {
        format!(
            "backing up to the local repository {repo} with the passphrase generated in {pass}: KEEP A COPY OF THAT PASSPHRASE SOMEWHERE ELSE (a password manager, or paper); without it these backups cannot be read. A repository on this machine's disk does not survive the disk: add a destination elsewhere by copying {config} to /etc/cairn/cairn.toml and running `cairn daemon --config` with it",
            repo = self.repository.display(),
            pass = self.passphrase.display(),
            config = self.config.display(),
        )
    }
}

/// The configuration text for watching `paths` with `layout`: the template with each
/// `{placeholder}` replaced, in one pass, by a TOML string (so no folder name can end or
/// bend the string it is put in, and no inserted text is read as a placeholder).
pub fn render(layout: &Layout, paths: &[PathBuf]) -> Result<String> {
    let quoted = |p: &Path| -> Result<String> {
        let s = p.to_str().ok_or_else(|| {
            Error::InvalidInput(format!(
                "{} is not valid UTF-8: the quick start cannot write it into its configuration; write a configuration by hand and pass --config FILE",
                p.display()
            ))
        })?;
        Ok(toml::Value::String(s.to_string()).to_string())
    };
    let list = paths
        .iter()
        .map(|p| quoted(p))
        .collect::<Result<Vec<_>>>()?
        .join(", ");
    let values = [
        ("state_dir", quoted(&layout.state)?),
        ("password_file", quoted(&layout.passphrase)?),
        ("repository", quoted(&layout.repository)?),
        ("paths", list),
    ];
    let mut out = String::with_capacity(TEMPLATE.len() + 256);
    let mut rest = TEMPLATE;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let filled = after.find('}').and_then(|close| {
            let name = &after[..close];
            let value = values.iter().find(|(n, _)| *n == name)?;
            Some((&value.1, close))
        });
        match filled {
            Some((value, close)) => {
                out.push_str(value);
                rest = &after[close + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The quick start, set up and held: its layout, and the lock that keeps a second quick
/// start (or a configured daemon whose `state_dir` is the same folder) off it for as long
/// as this value lives.
pub struct Prepared {
    /// Where everything is.
    pub layout: Layout,
    /// Held for the daemon's life.
    _lock: super::state_lock::StateLock,
}

/// Set up the data directory `dir` for watching `paths`: the directory (mode 700) and its
/// lock, a new passphrase unless one is there, and the configuration (rewritten, so it
/// always names the folders of this start). The watched paths are made absolute against
/// `cwd` (a service runs in `/`) and, like the data directory, spelled without symbolic
/// links, so the daemon recognises its own folders inside a watched one.
pub fn prepare(dir: &Path, paths: &[PathBuf], cwd: &Path) -> Result<Prepared> {
    if paths.is_empty() {
        return Err(Error::InvalidInput(
            "--watch needs a folder to back up: cairn daemon --watch DIR".into(),
        ));
    }
    let paths: Vec<PathBuf> = paths
        .iter()
        .map(|p| {
            std::fs::canonicalize(cwd.join(p)).map_err(|e| {
                Error::InvalidInput(format!(
                    "--watch {}: {e}: name an existing folder to back up",
                    p.display()
                ))
            })
        })
        .collect::<Result<_>>()?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::io("create the data directory", dir, e))?;
    let dir =
        std::fs::canonicalize(dir).map_err(|e| Error::io("find the data directory", dir, e))?;
    // Before anything is written: a second quick start must not rewrite the running
    // one's configuration.
    let lock = super::state_lock::StateLock::acquire(&dir)?;
    let layout = Layout::in_dir(&dir);
    if !layout.passphrase.exists() {
        if layout.repository.join("config").exists() {
            return Err(Error::InvalidInput(format!(
                "{} holds a repository but its passphrase file {} is gone: put the passphrase back there (first line, chmod 600); a new one would not open it",
                layout.repository.display(),
                layout.passphrase.display()
            )));
        }
        write_new_passphrase(&layout.passphrase)?;
    }
    let text = render(&layout, &paths)?;
    let tmp = layout.dir.join(".cairn.toml.tmp");
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &layout.config)?;
        std::fs::File::open(&layout.dir)?.sync_all()
    };
    write().map_err(|e| Error::io("write the quick start's configuration", &layout.config, e))?;
    Ok(Prepared {
        layout,
        _lock: lock,
    })
}

/// A fresh random passphrase in a new file readable only by this user, written whole
/// and synced before anything relies on it (a repository created with a passphrase
/// that did not reach the disk could never be opened again).
fn write_new_passphrase(path: &Path) -> Result<()> {
    let mut raw = [0u8; 24];
    crate::crypto::random_bytes(&mut raw)
        .map_err(|e| Error::Internal(format!("no randomness for a passphrase: {e}")))?;
    let text = zeroize::Zeroizing::new(format!("{}\n", hex::encode(raw)));
    let tmp = path.with_extension(format!("new.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| Error::io("create the passphrase file", &tmp, e))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io("write the passphrase file", &tmp, e))?;
    // A link, not a rename: it never replaces a passphrase that appeared meanwhile.
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    linked.map_err(|e| Error::io("create the passphrase file", path, e))?;
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("sync the data directory", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_directory_follows_xdg_then_home_and_root_uses_var_lib() {
        let home = |xdg: Option<&str>, home: Option<&str>, root| DataHome {
            root,
            xdg_data_home: xdg.map(PathBuf::from),
            home: home.map(PathBuf::from),
        };
        let dir = |h: DataHome| h.data_dir().ok();
        assert_eq!(
            dir(home(Some("/x/data"), Some("/home/a"), false)),
            Some("/x/data/cairn".into())
        );
        assert_eq!(
            dir(home(None, Some("/home/a"), false)),
            Some("/home/a/.local/share/cairn".into())
        );
        assert_eq!(
            dir(home(Some("relative"), Some("/home/a"), false)),
            Some("/home/a/.local/share/cairn".into()),
            "a relative XDG_DATA_HOME is ignored"
        );
        assert_eq!(
            dir(home(None, Some("/root"), true)),
            Some("/var/lib/cairn".into())
        );
        assert_eq!(
            dir(home(Some("/x"), Some("/root"), true)),
            Some("/x/cairn".into()),
            "an XDG_DATA_HOME set on purpose wins, also for root"
        );
        assert_eq!(dir(home(None, None, false)), None);
    }

    #[test]
    fn the_rendered_configuration_is_accepted_and_names_every_part() {
        let layout = Layout::in_dir(Path::new("/home/a/.local/share/cairn"));
        // Quotes, a newline, a backslash and a placeholder's name in a folder's name.
        let odd = "/home/a/My \"Documents\"\n{paths}\\";
        let text = render(&layout, &[odd.into(), "/srv".into()]).expect("render");
        let cfg = crate::daemon::config::parse(&layout.config, &text).expect("parses");
        assert_eq!(cfg.state_dir, layout.state);
        assert_eq!(
            cfg.password,
            crate::daemon::config::PasswordSource::File(layout.passphrase.clone())
        );
        assert_eq!(cfg.sources[0].paths, [PathBuf::from(odd), "/srv".into()]);
        assert_eq!(
            cfg.destinations[0].location,
            crate::backend::Location::Local(layout.repository.clone())
        );
    }
}
