//! What every repository verb starts from: the repository options, the tokio
//! runtime, and the repository (and any copies to heal from) opened with them. A verb
//! turns its arguments into library calls; getting to an open repository happens here.

use super::{hostname, now_rfc3339, password, username};
use anyhow::{Context, Result, anyhow};
use cairn::backend::Backend;
use cairn::cache::MetadataCache;
use cairn::index::MasterIndex;
use cairn::repo::{InitOptions, Repository, read_config};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::runtime::Runtime;

/// Where the repository is and how to open it. Every verb that works on a repository
/// flattens this in, and no other verb offers it. The options are global below their
/// verb, so `cairn key add --repo R` works as well as `cairn key --repo R add`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RepoArgs {
    /// Repository location (else CAIRN_REPOSITORY); see --help for its forms.
    #[arg(
        short = 'r',
        long = "repo",
        value_name = "REPO",
        global = true,
        long_help = repo_long_help()
    )]
    pub repo: Option<String>,
    /// File whose first line is the passphrase (else CAIRN_PASSWORD_FILE,
    /// CAIRN_PASSWORD_COMMAND, CAIRN_PASSWORD, or a prompt on a terminal).
    #[arg(
        long = "password-file",
        value_name = "FILE",
        global = true,
        conflicts_with = "password_command"
    )]
    pub password_file: Option<PathBuf>,
    /// Command whose output's first line is the passphrase, e.g. "pass show backup/cairn";
    /// split into words as a shell would, run without one (else CAIRN_PASSWORD_COMMAND).
    #[arg(long = "password-command", value_name = "COMMAND", global = true)]
    pub password_command: Option<String>,
    /// Backend option (repeatable), e.g. -o s3.region=garage; see --help for every key.
    #[arg(
        short = 'o',
        long = "option",
        value_name = "KEY=VALUE",
        global = true,
        long_help = option_long_help()
    )]
    pub options: Vec<String>,
    /// Upload limit in KiB/s (restic's flag; the same as -o upload-limit=NKiB; 0: none).
    #[arg(long = "limit-upload", value_name = "KiB/s", global = true)]
    pub limit_upload: Option<u64>,
    /// Download limit in KiB/s (restic's flag; the same as -o download-limit=NKiB; 0: none).
    #[arg(long = "limit-download", value_name = "KiB/s", global = true)]
    pub limit_download: Option<u64>,
}

/// `--repo --help`: every location form the parser accepts, from its own list.
fn repo_long_help() -> String {
    let mut h = String::from("Repository location; when not given, $CAIRN_REPOSITORY. One of:\n");
    for (form, what) in cairn::backend::options::LOCATION_FORMS {
        h.push_str(&format!("  {form}\n      {what}\n"));
    }
    h.push_str(
        "S3 credentials come from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE or ~/.aws/credentials.",
    );
    h
}

/// `-o --help`: every key the parser accepts, from its own list
/// ([`cairn::backend::options::OPTION_KEYS`]).
fn option_long_help() -> String {
    let mut h =
        String::from("Backend option KEY=VALUE (repeatable; the last of a key wins). Keys:\n");
    for (key, form, what) in cairn::backend::options::OPTION_KEYS {
        h.push_str(&format!("  {key}={form}\n      {what}\n"));
    }
    h.push_str("SIZE is like 64MiB, 512K or 1GiB; DURATION like 30s, 5m or 30d.");
    h
}

impl RepoArgs {
    /// Backend options from the defaults and every `-o`, then `--limit-upload` and
    /// `--limit-download`, which win over `-o upload-limit` and `-o download-limit`.
    pub fn backend_options(&self) -> Result<cairn::backend::BackendOptions> {
        let mut o = cairn::backend::BackendOptions::default();
        o.apply(&self.options).map_err(anyhow::Error::msg)?;
        let per_second = |kib: u64| Some(kib.saturating_mul(1024)).filter(|n| *n > 0);
        if let Some(kib) = self.limit_upload {
            o.upload_limit = per_second(kib);
        }
        if let Some(kib) = self.limit_download {
            o.download_limit = per_second(kib);
        }
        Ok(o)
    }

    /// The repository passphrase, from the first source that is set
    /// ([`password::resolve`]).
    pub fn passphrase(&self) -> Result<password::Passphrase> {
        password::resolve(
            self.password_file.as_deref(),
            self.password_command.as_deref(),
        )
    }

    /// The repository location: `--repo`, else `$CAIRN_REPOSITORY`; refused when neither
    /// names one, so the message says how to give it.
    fn location(&self) -> Result<String> {
        self.repo
            .clone()
            .or_else(|| std::env::var("CAIRN_REPOSITORY").ok())
            .filter(|r| !r.is_empty())
            .ok_or_else(|| anyhow!("no repository given: pass --repo REPO or set CAIRN_REPOSITORY"))
    }
}

/// The runtime the repository verbs block on for storage I/O, with two worker threads
/// (the count the command line has always used).
pub(crate) fn runtime() -> Result<Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(2)
        .build()?)
}

/// What a new key or repository records about who made it: now, this host and this
/// user.
pub(super) fn init_options_here() -> InitOptions {
    InitOptions::new(now_rfc3339(), hostname(), username())
}

/// The storage stack for the repository the arguments name, not yet opened (init needs
/// it before there is a repository).
pub(super) fn backend(rt: &Runtime, args: &RepoArgs) -> Result<Arc<dyn Backend>> {
    let loc = args.location()?;
    let opts = args.backend_options()?;
    Ok(rt.block_on(cairn::backend::open(&loc, &opts))?)
}

/// Open the repository named by the arguments with the resolved passphrase.
pub(super) fn open(rt: &Runtime, args: &RepoArgs) -> Result<Repository> {
    let backend = backend(rt, args)?;
    let config = rt.block_on(read_config(backend.as_ref()))?;
    let pass = args.passphrase()?;
    open_with(rt, backend, config, &pass)
}

/// Open the repository whose storage is `backend` and `config` its configuration, with
/// `pass`: the passphrase is resolved once by the caller, so a password command runs
/// once however many repositories it opens.
fn open_with(
    rt: &Runtime,
    backend: Arc<dyn Backend>,
    config: cairn::format::config::ConfigFile,
    pass: &[u8],
) -> Result<Repository> {
    let cache = cache_root().map(|root| MetadataCache::new(&root, &config.body.id));
    let hint = cache.as_ref().and_then(MetadataCache::key_hint);
    let repo = rt.block_on(Repository::open_preferring(backend, config, pass, hint))?;
    if let Some(c) = cache.filter(|_| hint != Some(repo.key_id())) {
        c.put_key_hint(repo.key_id());
    }
    super::opened(&repo);
    Ok(repo)
}

/// The metadata cache a backup of `repo` keeps, unless `--no-cache`. The cache only saves
/// downloads: every entry is verified on use, and a cache that cannot be written is the
/// same as none.
pub(super) fn backup_cache(repo: &Repository, no_cache: bool) -> Option<MetadataCache> {
    cache_root()
        .filter(|_| !no_cache)
        .map(|root| MetadataCache::new(&root, &repo.config().id))
}

/// Where the CLI keeps its metadata cache: `$CAIRN_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/cairn`, else `~/.cache/cairn`; none when no home is known.
pub(super) fn cache_root() -> Option<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("CAIRN_CACHE_DIR")
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("cairn")))
        .or_else(|| var("HOME").map(|d| d.join(".cache").join("cairn")))
}

/// Where the copies to heal from come from, as `restore` and `check` take them.
pub(super) struct Copies<'a> {
    /// `--fallback-repo` (same passphrase and options as --repo).
    pub fallback_repos: &'a [String],
    /// `--destination`: use the daemon configuration instead.
    pub destination: Option<&'a str>,
    /// The daemon configuration.
    pub config: &'a Path,
}

/// The repository to work on and the copies (with their indexes) to heal from.
pub(super) fn open_with_copies(
    rt: &Runtime,
    args: &RepoArgs,
    c: &Copies<'_>,
) -> Result<(Repository, Vec<(Repository, MasterIndex)>)> {
    let (primary, copies) = match c.destination {
        Some(name) => super::daemon::open_configured(rt, c.config, name)?,
        None => {
            let backend = backend(rt, args)?;
            let config = rt.block_on(read_config(backend.as_ref()))?;
            let pass = args.passphrase()?;
            let primary = open_with(rt, backend, config, &pass)?;
            let mut copies = Vec::new();
            for spec in c.fallback_repos {
                let b = rt.block_on(cairn::backend::open(spec, &args.backend_options()?))?;
                let copy = rt
                    .block_on(Repository::open(b, &pass))
                    .with_context(|| format!("opening --fallback-repo {spec}"))?;
                super::opened(&copy);
                copies.push(copy);
            }
            (primary, copies)
        }
    };
    let mut out = Vec::new();
    for copy in copies {
        let index = rt
            .block_on(copy.load_index())
            .with_context(|| format!("loading the index of {}", copy.backend().location()))?;
        out.push((copy, index));
    }
    Ok((primary, out))
}
