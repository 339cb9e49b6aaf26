//! One function per subcommand. Each returns the process exit code.

use super::progress::{Output, Reporter, bytes};
use super::{RepoArgs, hostname, now_rfc3339, output, password, username};
use anyhow::{Context, Result, anyhow, bail};
use cairn::backend::Backend;
use cairn::backup::{BackupContext, BackupOptions, backup_with, clean_absolute};
use cairn::cache::MetadataCache;
use cairn::crypto::KdfParams;
use cairn::format::config::DEFAULT_PACK_SIZE;
use cairn::repo::{InitOptions, Repository, init, read_config};
use cairn::restore::RestoreOptions;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use tokio::runtime::Runtime;

/// Exit code for "snapshot made, but some files could not be stored".
pub const EXIT_WARNINGS: i32 = 3;

fn location(args: &RepoArgs) -> Result<String> {
    args.repo
        .clone()
        .filter(|r| !r.is_empty())
        .ok_or_else(|| anyhow!("no repository given: pass --repo REPO or set CAIRN_REPOSITORY"))
}

fn who() -> InitOptions {
    InitOptions::new(now_rfc3339(), hostname(), username())
}

/// The storage stack for the repository the arguments name.
fn backend(rt: &Runtime, args: &RepoArgs) -> Result<Arc<dyn Backend>> {
    let loc = location(args)?;
    let opts = args.backend_options()?;
    Ok(rt.block_on(cairn::backend::open(&loc, &opts))?)
}

/// Open the repository named by the arguments with the resolved passphrase.
pub fn open(rt: &Runtime, args: &RepoArgs) -> Result<Repository> {
    let backend = backend(rt, args)?;
    let config = rt.block_on(read_config(backend.as_ref()))?;
    let pass = password::resolve(args.password_file.as_deref())?;
    let cache = cache_root().map(|root| MetadataCache::new(&root, &config.body.id));
    let hint = cache.as_ref().and_then(MetadataCache::key_hint);
    let repo = rt.block_on(Repository::open_preferring(backend, config, &pass, hint))?;
    if let Some(c) = cache.filter(|_| hint != Some(repo.key_id())) {
        c.put_key_hint(repo.key_id());
    }
    super::opened(&repo);
    Ok(repo)
}

/// `cairn init`.
pub fn cmd_init(
    rt: &Runtime,
    args: &RepoArgs,
    pack_size_mib: Option<u32>,
    from_repo: Option<&str>,
    from_password_file: Option<&Path>,
    out: Output,
) -> Result<i32> {
    let backend = backend(rt, args)?;
    let has_source = args.password_file.is_some()
        || std::env::var_os("CAIRN_PASSWORD_FILE").is_some_and(|v| !v.is_empty())
        || std::env::var_os("CAIRN_PASSWORD").is_some_and(|v| !v.is_empty());
    let pass = if has_source {
        password::resolve(args.password_file.as_deref())?
    } else {
        password::resolve_new(None)?
    };
    let mut opts = who();
    opts.pack_size = pack_size_mib
        .map(|m| m.saturating_mul(1024 * 1024))
        .unwrap_or(DEFAULT_PACK_SIZE);
    let sibling = match from_repo {
        Some(spec) => {
            let b = rt.block_on(cairn::backend::open(spec, &args.backend_options()?))?;
            let from_pass = match from_password_file {
                Some(f) => password::read_file(f)?,
                None => pass.clone(),
            };
            let sibling = rt
                .block_on(Repository::open(b, &from_pass))
                .with_context(|| format!("opening --from-repo {spec}"))?;
            opts = opts.sharing_keys_with(&sibling);
            Some(sibling)
        }
        None => None,
    };
    let repo = rt.block_on(init(backend, &pass, &opts))?;
    if out.json() {
        let v = serde_json::json!({
            "message_type": "initialized",
            "id": repo.config().id.to_hex(),
            "repository": repo.backend().location(),
        });
        println!("{v}");
        return Ok(0);
    }
    println!(
        "created cairn repository {} at {}",
        repo.config().id.short(),
        repo.backend().location()
    );
    if let Some(s) = sibling {
        println!(
            "it shares keys and chunking with {}: the two can heal each other",
            s.backend().location()
        );
    }
    eprintln!("Keep the passphrase safe: without it the data in this repository cannot be read.");
    Ok(0)
}

/// Arguments of `cairn backup`.
pub struct BackupArgs {
    pub paths: Vec<PathBuf>,
    pub tags: Vec<String>,
    pub host: Option<String>,
    pub time: Option<String>,
    pub excludes: Vec<String>,
    pub one_file_system: bool,
    pub no_cache: bool,
    /// Pack uploads in flight; `None` keeps the library's default.
    pub upload_concurrency: Option<usize>,
}

/// Where the CLI keeps its metadata cache: `$CAIRN_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/cairn`, else `~/.cache/cairn`; none when no home is known.
fn cache_root() -> Option<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("CAIRN_CACHE_DIR")
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("cairn")))
        .or_else(|| var("HOME").map(|d| d.join(".cache").join("cairn")))
}

/// Normalise a user-given RFC 3339 time.
fn parse_time(t: &str) -> Result<String> {
    use time::format_description::well_known::Rfc3339;
    let parsed = time::OffsetDateTime::parse(t, &Rfc3339).with_context(|| {
        format!("--time {t:?} is not an RFC 3339 time: write it like 2026-01-31T14:00:00Z")
    })?;
    Ok(parsed.format(&Rfc3339)?)
}

/// `cairn backup`.
pub fn cmd_backup(rt: &Runtime, args: &RepoArgs, b: BackupArgs, out: Output) -> Result<i32> {
    let started = Instant::now();
    let time = match &b.time {
        Some(t) => parse_time(t)?,
        None => now_rfc3339(),
    };
    let excludes = cairn::exclude::Excludes::new(&b.excludes).map_err(anyhow::Error::msg)?;
    // The disk reads the sources' metadata while the key is derived and the index loaded,
    // from the same roots (absolute and clean, as excludes expect) the backup walks.
    let _read_ahead = cairn::backup::snapshot_paths(&b.paths)
        .ok()
        .map(|roots| cairn::warm::ReadAhead::start(roots, excludes.clone(), b.one_file_system));
    let repo = open(rt, args)?;
    let mut opts = BackupOptions::new(b.paths, b.host.unwrap_or_else(hostname), username(), time);
    opts.read_ahead = false;
    opts.excludes = b.excludes;
    opts.tags = b.tags;
    opts.one_file_system = b.one_file_system;
    if let Some(n) = b.upload_concurrency {
        opts.max_uploads = n;
    }
    // The cache only saves downloads: every entry is verified on use, and a cache that
    // cannot be written is the same as none.
    let cache = cache_root()
        .filter(|_| !b.no_cache)
        .map(|root| MetadataCache::new(&root, &repo.config().id));
    let mut ctx = BackupContext::new(cache);
    // A path that cannot be read fails before anything is fetched.
    let roots = cairn::backup::prepare_roots(&opts.paths)?;
    // The index (from the cache, and what it lacks from the bucket) and the snapshots at
    // once, each a few round trips; the parent is the latest of this host and paths. The
    // listings' order does not matter here, unlike for a restore: an unchanged file keeps
    // its parent's content only if the index holds all of it, and is read otherwise.
    let (_, snapshots) = rt.block_on(async {
        futures_util::future::try_join(ctx.refresh(&repo), repo.list_snapshots()).await
    })?;
    let parent = cairn::backup::parent_in(snapshots, &opts.hostname, &roots);
    opts.find_parent = false;
    if let Some((id, snap)) = parent {
        opts.parent = Some(id);
        opts.parent_snapshot = Some(snap);
    }
    let progress = opts.control.progress.clone();
    let reporter = Reporter::start("backup", "files", progress.clone(), out);
    let done = AtomicBool::new(false);
    let result = std::thread::scope(|s| {
        if out.shows_progress() {
            let (paths, progress, done) = (&opts.paths, &progress, &done);
            s.spawn(move || {
                cairn::scan::count_totals(paths, &excludes, opts.one_file_system, progress, &|| {
                    done.load(Ordering::Relaxed)
                })
            });
        }
        let r = backup_with(&repo, rt.handle(), &opts, &mut ctx);
        done.store(true, Ordering::Relaxed);
        r
    });
    reporter.finish();
    let report = result?;
    let sum = report.snapshot.summary.clone().unwrap_or_default();
    let seconds = started.elapsed().as_secs_f64();
    if out.json() {
        // The summary's fields, then the id and the skipped paths themselves in place of
        // their count.
        let mut v = serde_json::to_value(&sum)?;
        v["message_type"] = "summary".into();
        v["snapshot_id"] = report.id.to_hex().into();
        v["total_duration"] = ((seconds * 1000.0).round() / 1000.0).into();
        v["warnings"] = report
            .warnings
            .iter()
            .map(|w| {
                serde_json::json!({
                    "path": w.path.to_string_lossy(),
                    "reason": w.reason,
                    "stored": w.stored,
                })
            })
            .collect();
        println!("{v}");
    } else {
        eprintln!(
            "Files:   {} new, {} changed, {} unmodified ({} directories)",
            sum.files_new, sum.files_changed, sum.files_unmodified, sum.dirs_processed
        );
        eprintln!(
            "Added:   {} ({} stored after compression and encryption) in {} blobs",
            bytes(sum.data_added),
            bytes(sum.data_added_packed),
            sum.data_blobs + sum.tree_blobs,
        );
        eprintln!(
            "Total:   {} files, {}; read {} in {:.1} s",
            sum.total_files_processed,
            bytes(sum.total_bytes_processed),
            bytes(sum.data_read),
            seconds
        );
        println!("snapshot {} saved", report.id.to_hex());
    }
    if report.warnings.is_empty() {
        return Ok(0);
    }
    let (changing, skipped): (Vec<_>, Vec<_>) = report.warnings.iter().partition(|w| w.stored);
    if !skipped.is_empty() {
        eprintln!(
            "warning: {} path(s) could not be stored (the snapshot has everything else):",
            skipped.len()
        );
        for w in skipped {
            eprintln!("  {}: {}", w.path.display(), w.reason);
        }
    }
    if !changing.is_empty() {
        eprintln!(
            "warning: {} file(s) never stood still and are stored as read, marked as changing (a restore names them):",
            changing.len()
        );
        for w in changing {
            eprintln!("  {}: {}", w.path.display(), w.reason);
        }
    }
    Ok(EXIT_WARNINGS)
}

/// `cairn snapshots`.
pub fn cmd_snapshots(rt: &Runtime, args: &RepoArgs, json: bool) -> Result<i32> {
    let repo = open(rt, args)?;
    let list = rt.block_on(repo.list_snapshots())?;
    if json {
        let arr: Vec<_> = list
            .iter()
            .map(|e| output::snapshot_json(&e.id, &e.snapshot))
            .collect();
        println!("{}", serde_json::Value::Array(arr));
    } else {
        print!("{}", output::snapshot_table(&list));
    }
    Ok(0)
}

/// `cairn ls`.
pub fn cmd_ls(
    rt: &Runtime,
    args: &RepoArgs,
    snapshot: &str,
    path: Option<&Path>,
    long: bool,
    json: bool,
) -> Result<i32> {
    let repo = open(rt, args)?;
    let (entry, index) =
        rt.block_on(repo.snapshots_with_index(|ids| repo.find_snapshot_listed(snapshot, ids)))?;
    let under = match path {
        Some(p) => clean_absolute(p)?,
        None => PathBuf::from("/"),
    };
    use std::io::Write;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut write_err = None;
    cairn::ls::walk(
        &repo,
        rt.handle(),
        &index,
        &entry.snapshot.tree,
        &under,
        &mut |p, n| {
            let line = if json {
                output::node_json(p, n).to_string()
            } else if long {
                output::long_line(p, n)
            } else {
                p.display().to_string()
            };
            if let Err(e) = writeln!(out, "{line}") {
                write_err.get_or_insert(e);
            }
        },
    )?;
    out.flush()?;
    if let Some(e) = write_err {
        return Err(e.into());
    }
    Ok(0)
}

/// Arguments of `cairn restore`.
pub struct RestoreArgs {
    /// `SNAPSHOT` or `SNAPSHOT:PATH`.
    pub snapshot: String,
    /// Directory, or `-` for stdout.
    pub target: PathBuf,
    /// `--include` paths.
    pub includes: Vec<PathBuf>,
    /// `--overwrite`.
    pub overwrite: bool,
    /// `--verify`.
    pub verify: bool,
}

/// `cairn restore`.
pub fn cmd_restore(
    rt: &Runtime,
    args: &RepoArgs,
    ra: &RestoreArgs,
    sources: &Copies,
    out: Output,
) -> Result<i32> {
    let (spec, sub) = match ra.snapshot.split_once(':') {
        Some((s, p)) => (s, Some(clean_absolute(Path::new(p))?)),
        None => (ra.snapshot.as_str(), None),
    };
    let to_stdout = ra.target == Path::new("-");
    if sub.is_some() && !ra.includes.is_empty() {
        bail!("give either SNAPSHOT:PATH or --include, not both");
    }
    if to_stdout && sub.is_none() {
        bail!(
            "--target - writes one file (or a tar archive of one directory) to stdout: name it as SNAPSHOT:PATH, e.g. `cairn restore latest:/etc/hosts --target -`"
        );
    }
    if to_stdout && ra.verify {
        bail!("--verify re-reads restored files; it cannot with --target -");
    }
    let (repo, copies) = open_with_copies(rt, args, sources)?;
    let (entry, index) =
        rt.block_on(repo.snapshots_with_index(|ids| repo.find_snapshot_listed(spec, ids)))?;
    let reader = cairn::heal::BlobReader::new(
        cairn::heal::Copy {
            repo: &repo,
            index: &index,
        },
        copies
            .iter()
            .map(|(repo, index)| cairn::heal::Copy { repo, index })
            .collect(),
    )?;
    // What to restore: the whole tree (maybe narrowed by --include), or the one entry
    // SNAPSHOT:PATH names, placed directly in the target.
    let mut root = entry.snapshot.tree;
    let mut includes = ra
        .includes
        .iter()
        .map(|p| clean_absolute(p))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(path) = &sub
        && path != Path::new("/")
    {
        // Through the reader, so a damaged tree on the path heals from a copy as the
        // rest of the restore would; dropped before the dump or restore (which load
        // their own), since it holds the trees it read.
        let trees = cairn::tree_loader::TreeLoader::new(&reader);
        let found = cairn::ls::lookup(&trees, rt.handle(), &root, path)?;
        drop(trees);
        let Some((node, parent)) = found else {
            bail!(
                "{} is not in snapshot {}: list it with `cairn ls {} {}`",
                path.display(),
                entry.id.short(),
                entry.id.short(),
                path.parent().unwrap_or(Path::new("/")).display()
            );
        };
        if to_stdout {
            return dump(&reader, rt, &node, path);
        }
        match (node.kind, node.subtree) {
            (cairn::format::tree::NodeKind::Dir, Some(t)) => root = t,
            _ => {
                root = parent;
                includes = vec![Path::new("/").join(node.name.to_os())];
            }
        }
    } else if to_stdout {
        bail!("--target - needs a file or directory below /, not the whole snapshot");
    }
    let progress = Arc::new(cairn::progress::Progress::default());
    if includes.is_empty()
        && sub.is_none()
        && let Some(sum) = &entry.snapshot.summary
    {
        progress
            .files_total
            .store(sum.total_files_processed, Ordering::Relaxed);
        progress
            .bytes_total
            .store(sum.total_bytes_processed, Ordering::Relaxed);
    }
    let opts = RestoreOptions {
        target: ra.target.clone(),
        includes: includes.clone(),
        overwrite: ra.overwrite,
        progress: progress.clone(),
    };
    if out.chatty() {
        eprintln!(
            "restoring snapshot {}{} to {}",
            entry.id.short(),
            sub.as_ref()
                .map(|p| format!(":{}", p.display()))
                .unwrap_or_default(),
            ra.target.display()
        );
    }
    let started = Instant::now();
    let reporter = Reporter::start("restore", "files", progress.clone(), out);
    let result = cairn::restore::restore_with(&reader, rt.handle(), &root, &opts);
    reporter.finish();
    let report = result?;
    let seconds = started.elapsed().as_secs_f64();
    let verified = if ra.verify {
        let vp = Arc::new(cairn::progress::Progress::default());
        vp.bytes_total.store(report.bytes, Ordering::Relaxed);
        vp.files_total.store(report.files, Ordering::Relaxed);
        let reporter = Reporter::start("verify", "files", vp.clone(), out);
        let v =
            cairn::verify::verify_restored(&reader, rt.handle(), &root, &includes, &ra.target, &vp);
        reporter.finish();
        Some(v?)
    } else {
        None
    };
    let failed =
        !report.errors.is_empty() || verified.as_ref().is_some_and(|v| !v.problems.is_empty());
    if out.json() {
        let mut v = serde_json::json!({
            "message_type": "summary",
            "snapshot_id": entry.id.to_hex(),
            "files_restored": report.files,
            "bytes_restored": report.bytes,
            "dirs_restored": report.dirs,
            "others_restored": report.others,
            "total_duration": (seconds * 1000.0).round() / 1000.0,
            "errors": report.errors.iter().map(|(p, e)| serde_json::json!({"path": p.to_string_lossy(), "error": e})).collect::<Vec<_>>(),
            "healed": report.healed,
            "changing": report.changing.iter().map(|p| p.to_string_lossy()).collect::<Vec<_>>(),
        });
        if let Some(vr) = &verified {
            v["verify"] = serde_json::to_value(vr)?;
        }
        println!("{v}");
        return Ok(if failed { 1 } else { 0 });
    }
    // Said even when quiet: these files are not what a clean backup would have stored.
    if !report.changing.is_empty() {
        eprintln!(
            "warning: {} file(s) never stood still while they were backed up and are restored as read then (they may mix older and newer bytes):",
            report.changing.len()
        );
        for p in report.changing.iter().take(50) {
            eprintln!("  {}", p.display());
        }
        if report.changing.len() > 50 {
            eprintln!("  ... and {} more", report.changing.len() - 50);
        }
    }
    if !out.chatty() && !failed {
        return Ok(0);
    }
    eprintln!(
        "restored {} files ({}), {} directories, {} other entries in {:.1} s",
        report.files,
        bytes(report.bytes),
        report.dirs,
        report.others,
        seconds
    );
    if let Some(v) = &verified {
        if v.problems.is_empty() {
            eprintln!(
                "verified: {} files ({}) read back match the snapshot",
                v.files,
                bytes(v.bytes)
            );
        } else {
            eprintln!(
                "error: {} of {} restored files differ from the snapshot (restore them again; check the target disk):",
                v.problems.len(),
                v.files
            );
            for (p, why) in v.problems.iter().take(50) {
                eprintln!("  {}: {why}", p.display());
            }
        }
    }
    // Blobs the primary did not serve for want of an answer (or a transient error) are
    // not damage there: no repair to suggest.
    let (damaged, unread): (Vec<_>, Vec<_>) = report.healed.iter().partition(|h| h.damaged);
    for (healed, what) in [(&unread, "could not be read"), (&damaged, "is damaged")] {
        if healed.is_empty() {
            continue;
        }
        eprintln!(
            "warning: {} {what}: {} blob(s) were read from another copy instead:",
            repo.backend().location(),
            healed.len()
        );
        for h in healed.iter().take(20) {
            eprintln!("  blob {} from {}: {}", &h.blob[..12], h.from, h.problem);
        }
        if healed.len() > 20 {
            eprintln!("  ... and {} more", healed.len() - 20);
        }
    }
    if !damaged.is_empty() {
        eprintln!("  repair it with: cairn check --repair --fallback-repo REPO");
    }
    if !report.errors.is_empty() {
        eprintln!(
            "error: {} entries could not be restored:",
            report.errors.len()
        );
        for (p, e) in &report.errors {
            eprintln!("  {}: {e}", p.display());
        }
        eprintln!(
            "`cairn check --read-data` names all damage; `--fallback-repo REPO` reads what is damaged or cannot be read here from another copy on the same keys"
        );
    }
    Ok(if failed { 1 } else { 0 })
}

/// `restore SNAPSHOT:PATH --target -`: a file's bytes, or a directory as tar, to stdout.
fn dump(
    reader: &cairn::heal::BlobReader<'_>,
    rt: &Runtime,
    node: &cairn::format::tree::Node,
    path: &Path,
) -> Result<i32> {
    use cairn::format::tree::NodeKind;
    use std::io::Write;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
    match node.kind {
        NodeKind::File => {
            if node.changing {
                eprintln!(
                    "warning: {} never stood still while it was backed up and is written as read then (it may mix older and newer bytes)",
                    path.display()
                );
            }
            cairn::dump::dump_file(reader, rt.handle(), node, &mut out)?;
        }
        NodeKind::Dir => {
            let name = path.file_name().map(PathBuf::from).unwrap_or_default();
            cairn::dump::dump_tar(reader, rt.handle(), node, &name, &mut out)?;
        }
        _ => bail!(
            "{} is not a file or directory: restore it into a directory with --target DIR",
            path.display()
        ),
    }
    out.flush()?;
    Ok(0)
}

/// `cairn key list`.
pub fn cmd_key_list(rt: &Runtime, args: &RepoArgs, json: bool) -> Result<i32> {
    let repo = open(rt, args)?;
    let keys = rt.block_on(repo.list_keys())?;
    if json {
        let arr: Vec<_> = keys
            .iter()
            .map(|k| {
                serde_json::json!({
                    "id": k.id.to_hex(), "current": k.current, "userName": k.file.username,
                    "hostName": k.file.hostname, "created": k.file.created,
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(arr));
        return Ok(0);
    }
    println!(" {:<8}  {:<16}  {:<20}  Created", "ID", "User", "Host");
    println!("{}", "-".repeat(72));
    for k in keys {
        println!(
            "{}{:<8}  {:<16}  {:<20}  {}",
            if k.current { "*" } else { " " },
            k.id.short(),
            k.file.username,
            k.file.hostname,
            k.file.created
        );
    }
    Ok(0)
}

/// The one result line of a key command, as text or JSON.
fn key_done(json: bool, action: &str, id: &str, text: &str) {
    if json {
        println!(
            "{}",
            serde_json::json!({"message_type": "summary", "action": action, "key_id": id})
        );
    } else {
        println!("{text} {id}");
    }
}

/// `cairn key add`.
pub fn cmd_key_add(
    rt: &Runtime,
    args: &RepoArgs,
    new_file: Option<&Path>,
    json: bool,
) -> Result<i32> {
    let repo = open(rt, args)?;
    let new = password::resolve_new(new_file)?;
    let id = rt.block_on(repo.add_key(&new, KdfParams::DEFAULT, &who()))?;
    key_done(json, "added", &id.to_hex(), "saved new key");
    Ok(0)
}

/// `cairn key remove`.
pub fn cmd_key_remove(rt: &Runtime, args: &RepoArgs, id: &str, json: bool) -> Result<i32> {
    let repo = open(rt, args)?;
    let key = rt.block_on(repo.find_key(id))?;
    rt.block_on(repo.remove_key(key))?;
    key_done(json, "removed", &key.to_hex(), "removed key");
    Ok(0)
}

/// `cairn key passwd`.
pub fn cmd_key_passwd(
    rt: &Runtime,
    args: &RepoArgs,
    new_file: Option<&Path>,
    json: bool,
) -> Result<i32> {
    let mut repo = open(rt, args)?;
    let new = password::resolve_new(new_file)?;
    if new.is_empty() {
        bail!("the new passphrase is empty");
    }
    let id = rt.block_on(repo.change_passphrase(&new, KdfParams::DEFAULT, &who()))?;
    key_done(json, "changed", &id.to_hex(), "changed passphrase; new key");
    Ok(0)
}

/// Where the copies to heal from come from.
pub struct Copies {
    /// `--fallback-repo` (same passphrase and options as --repo).
    pub fallback_repos: Vec<String>,
    /// `--destination`: use the daemon configuration instead.
    pub destination: Option<String>,
    /// The daemon configuration.
    pub config: PathBuf,
}

/// The repository to work on and the copies (with their indexes) to heal from.
fn open_with_copies(
    rt: &Runtime,
    args: &RepoArgs,
    c: &Copies,
) -> Result<(Repository, Vec<(Repository, cairn::index::MasterIndex)>)> {
    let (primary, copies) = match &c.destination {
        Some(name) => super::daemon::open_configured(rt, &c.config, name)?,
        None => {
            let primary = open(rt, args)?;
            let mut copies = Vec::new();
            for spec in &c.fallback_repos {
                let b = rt.block_on(cairn::backend::open(spec, &args.backend_options()?))?;
                let pass = password::resolve(args.password_file.as_deref())?;
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

/// `cairn check`.
pub fn cmd_check(
    rt: &Runtime,
    args: &RepoArgs,
    read_data: bool,
    subset: Option<&str>,
    sources: &Copies,
    repair: bool,
    out: Output,
) -> Result<i32> {
    let json = out.json();
    use cairn::check::{ReadData, check};
    let mode = match (read_data, subset) {
        (true, _) => ReadData::All,
        (false, Some(s)) => {
            let pct = s
                .trim()
                .strip_suffix('%')
                .and_then(|n| n.trim().parse::<f64>().ok())
                .filter(|p| *p > 0.0 && *p <= 100.0)
                .with_context(|| {
                    format!("--read-data-subset {s:?}: write a percentage like 10%")
                })?;
            ReadData::Subset(pct / 100.0)
        }
        (false, None) => ReadData::None,
    };
    if repair && sources.destination.is_none() && sources.fallback_repos.is_empty() {
        anyhow::bail!(
            "--repair needs copies to repair from: give --fallback-repo REPO, or --destination NAME to use the daemon's other destinations"
        );
    }
    let (repo, copies) = open_with_copies(rt, args, sources)?;
    let location = repo.backend().location();
    if out.chatty() {
        eprintln!("checking {location}...");
    }
    let progress = Arc::new(cairn::progress::Progress::default());
    let reporter = Reporter::start("check", "packs", progress.clone(), out);
    let first = cairn::check::check_with(&repo, rt.handle(), mode, &progress);
    reporter.finish();
    let mut report = first?;
    let mut repaired = None;
    if repair && !report.is_healthy() {
        let refs: Vec<cairn::heal::Copy<'_>> = copies
            .iter()
            .map(|(repo, index)| cairn::heal::Copy { repo, index })
            .collect();
        let r = cairn::check::repair(&repo, rt.handle(), &report, &refs)?;
        if !json {
            eprintln!(
                "repair: wrote {} blob(s) back from the copies, dropped {} damaged location(s) from the index{}",
                r.restored_blobs,
                r.dropped_locations,
                if r.unrepairable.is_empty() {
                    String::new()
                } else {
                    format!("; {} blob(s) are intact in no copy", r.unrepairable.len())
                }
            );
            eprintln!("checking again...");
        }
        repaired = Some(r);
        report = check(&repo, rt.handle(), mode)?;
    }
    if json {
        let mut v = serde_json::to_value(&report)?;
        v["message_type"] = "summary".into();
        v["healthy"] = report.is_healthy().into();
        if let Some(r) = &repaired {
            v["repair"] = serde_json::to_value(r)?;
        }
        println!("{v}");
    } else {
        println!(
            "{} snapshot(s), {} pack(s), {} blob(s); read back {} pack(s), {} bytes",
            report.snapshots, report.packs, report.blobs, report.packs_read, report.bytes_read
        );
        if report.is_healthy() {
            println!("no problems found");
        } else {
            println!("{} problem(s):", report.problems.len());
            for p in &report.problems {
                println!("  {}: {}", p.object, p.message);
            }
            if !report.affected.is_empty() {
                println!("files and directories that cannot be restored intact:");
                for a in report.affected.iter().take(100) {
                    println!(
                        "  snapshot {}: {} (blob {})",
                        a.snapshot,
                        a.path,
                        &a.blob[..12]
                    );
                }
                if report.affected.len() > 100 {
                    println!("  ... and {} more", report.affected.len() - 100);
                }
            }
            if !repair {
                println!(
                    "if another destination holds a copy on the same keys: cairn check --repair --fallback-repo REPO"
                );
            }
        }
    }
    Ok(if report.is_healthy() { 0 } else { 1 })
}
