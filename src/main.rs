//! The `cairn` command line: argument parsing, logging set-up and exit codes. Everything
//! else lives in the library.

mod cli;

use cairn::daemon::config;
use clap::{CommandFactory, Parser, Subcommand};
use cli::RepoArgs;
use cli::commands as cmd;
use cli::progress::Output;
use std::io::IsTerminal;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "cairn",
    version,
    about = "Encrypted, deduplicating backups to S3-compatible buckets"
)]
struct Cli {
    #[command(flatten)]
    repo: RepoArgs,
    /// More log output (repeat for more).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Machine-readable output: JSON lines (`status` lines while working, then results).
    #[arg(long, global = true)]
    json: bool,
    /// No progress display and no chatter: results, warnings and errors only.
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a new repository.
    Init {
        /// Target pack size in MiB (default 16).
        #[arg(long, conflicts_with = "from_repo")]
        pack_size: Option<u32>,
        /// Build on this existing repository's keys and chunker settings, so the two
        /// store identical data identically and can heal each other (a second copy).
        #[arg(long)]
        from_repo: Option<String>,
        /// Passphrase file of --from-repo (default: the new repository's passphrase).
        #[arg(long, requires = "from_repo")]
        from_password_file: Option<PathBuf>,
    },
    /// Back up files and directories into a new snapshot.
    Backup {
        /// Files and directories to back up.
        #[arg(required_unless_present = "now")]
        paths: Vec<PathBuf>,
        /// Ask the running daemon for a snapshot in every destination now, and wait.
        #[arg(long, conflicts_with_all = ["tags", "host", "time", "excludes", "one_file_system", "upload_concurrency"])]
        now: bool,
        /// Daemon configuration (with --now: where to find its control socket).
        #[arg(long, default_value = config::DEFAULT_CONFIG)]
        config: PathBuf,
        /// Control socket of the daemon (with --now), instead of the configuration's.
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Tag the snapshot (repeatable).
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// Host name to record instead of this machine's.
        #[arg(long)]
        host: Option<String>,
        /// Snapshot time to record, RFC 3339 (default: now).
        #[arg(long)]
        time: Option<String>,
        /// Exclude entries matching a glob (repeatable).
        #[arg(short = 'e', long = "exclude")]
        excludes: Vec<String>,
        /// Do not cross into other file systems below the given paths.
        #[arg(short = 'x', long)]
        one_file_system: bool,
        /// Keep no local metadata cache (by default trees and index objects are kept in
        /// $CAIRN_CACHE_DIR, else $XDG_CACHE_HOME/cairn or ~/.cache/cairn, so the next
        /// backup compares against its parent without downloading it).
        #[arg(long)]
        no_cache: bool,
        /// Pack uploads in flight at once (default 2). Each holds a pack in memory; more
        /// keep a distant or slow link busy. Past 8, raise `-o s3.connections` as well.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
        upload_concurrency: Option<u16>,
    },
    /// List snapshots.
    Snapshots,
    /// List the entries of a snapshot.
    Ls {
        /// Snapshot id, unique prefix, or `latest`.
        snapshot: String,
        /// Only this directory (and what it contains).
        path: Option<PathBuf>,
        /// Long listing with mode, owner, size and time.
        #[arg(short, long)]
        long: bool,
    },
    /// Restore a snapshot, or one file or directory of it, into a directory or to stdout.
    Restore {
        /// Snapshot id, unique prefix, or `latest`; `SNAPSHOT:PATH` restores only PATH,
        /// placed directly in the target (a file to stdout with `--target -`, a directory
        /// as a tar archive).
        snapshot: String,
        /// Directory to restore into, or `-` for stdout (with SNAPSHOT:PATH).
        #[arg(short, long)]
        target: PathBuf,
        /// Read every restored file back and compare it with the snapshot.
        #[arg(long)]
        verify: bool,
        /// Restore only this snapshot path and what it contains (repeatable).
        #[arg(short, long = "include")]
        include: Vec<PathBuf>,
        /// Restore into a non-empty target, replacing entries.
        #[arg(long)]
        overwrite: bool,
        /// Another copy of the repository (same keys: a second daemon destination with
        /// the same passphrase, or made with `init --from-repo`) to read blobs from when
        /// the main one is missing or damaged (repeatable).
        #[arg(long = "fallback-repo")]
        fallback_repos: Vec<String>,
        /// Restore from this destination of the daemon's configuration (instead of
        /// --repo), healing from the other destinations on the same keys.
        #[arg(long, conflicts_with = "fallback_repos")]
        destination: Option<String>,
        /// Daemon configuration for --destination.
        #[arg(long, default_value = config::DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Verify the repository: structure, and with --read-data every stored blob.
    Check {
        /// Read back and verify every blob.
        #[arg(long, conflicts_with = "read_data_subset")]
        read_data: bool,
        /// Read back a random share of the packs, e.g. 10%.
        #[arg(long, value_name = "N%")]
        read_data_subset: Option<String>,
        /// A copy on the same keys, to repair from (repeatable).
        #[arg(long = "fallback-repo")]
        fallback_repos: Vec<String>,
        /// Write good copies of damaged or missing blobs back from --fallback-repo (or
        /// from the other destinations, with --destination).
        #[arg(long)]
        repair: bool,
        /// Check this destination of the daemon's configuration (instead of --repo);
        /// the other destinations on the same keys are the copies to repair from.
        #[arg(long, conflicts_with = "fallback_repos")]
        destination: Option<String>,
        /// Daemon configuration for --destination.
        #[arg(long, default_value = config::DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Remove snapshots by id or by a retention policy (restic's --keep-* options).
    Forget(Box<cli::forget::ForgetArgs>),
    /// Remove data no snapshot needs: two-phase, safe with backups running elsewhere.
    Prune(cli::prune::PruneArgs),
    /// Manage the passphrases that open the repository.
    Key {
        #[command(subcommand)]
        action: KeyCommand,
    },
    /// Run the backup daemon: watch the sources, snapshot changes to every destination.
    Daemon {
        /// Configuration file.
        #[arg(long, default_value = config::DEFAULT_CONFIG)]
        config: PathBuf,
        /// Back this folder up continuously with no configuration file: to a local
        /// repository in the user's data directory ($XDG_DATA_HOME/cairn; if unset,
        /// ~/.local/share/cairn, or /var/lib/cairn as root), created with a generated passphrase kept beside the
        /// configuration it writes there. Repeat for several folders.
        #[arg(long, value_name = "DIR", conflicts_with = "config")]
        watch: Vec<PathBuf>,
    },
    /// Work with the daemon's configuration file.
    Config {
        #[command(subcommand)]
        action: ConfigCommand,
    },
    /// Show what changed between two snapshots: added (+), removed (-), modified (M),
    /// type changed (T) and, with --metadata, metadata-only (U) paths.
    Diff {
        /// The older snapshot (id, prefix or `latest`).
        first: String,
        /// The newer snapshot.
        second: String,
        /// Also list entries whose only change is metadata (mode, owner, times).
        #[arg(long)]
        metadata: bool,
    },
    /// Find which snapshots hold entries matching a glob: by name (`*.jpg`), or by path
    /// when the pattern has a `/` (`/home/*/notes.txt`).
    Find {
        /// Glob patterns (any may match).
        #[arg(required = true)]
        patterns: Vec<String>,
        /// Only these snapshots (repeatable; default: all).
        #[arg(short, long = "snapshot")]
        snapshots: Vec<String>,
        /// Only snapshots of this host.
        #[arg(long)]
        host: Option<String>,
    },
    /// Repository size, deduplication and compression ratios, and what each snapshot
    /// added.
    Stats,
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write man pages (cairn.1 and one per subcommand) into a directory.
    Man {
        /// Directory to write into (created if missing).
        dir: PathBuf,
    },
    /// Show what the running daemon is doing, per destination.
    Status {
        /// Daemon configuration (names the control socket).
        #[arg(long, default_value = config::DEFAULT_CONFIG)]
        config: PathBuf,
        /// Control socket, instead of the configuration's.
        #[arg(long)]
        socket: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Check a configuration: every problem with its line and the fix.
    Check {
        /// Configuration file.
        #[arg(long, default_value = config::DEFAULT_CONFIG)]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum KeyCommand {
    /// List keys; `*` marks the one in use.
    List,
    /// Add a key for another passphrase.
    Add {
        /// File holding the new passphrase.
        #[arg(long)]
        new_password_file: Option<PathBuf>,
    },
    /// Remove a key (not the one in use).
    Remove {
        /// Key id or unique prefix.
        id: String,
    },
    /// Change the passphrase of the key in use.
    Passwd {
        /// File holding the new passphrase.
        #[arg(long)]
        new_password_file: Option<PathBuf>,
    },
}

fn run(cli: Cli) -> anyhow::Result<i32> {
    let out = Output::new(cli.json, cli.quiet);
    let json = cli.json;
    if let Command::Completions { shell } = cli.command {
        let mut cmd = Cli::command();
        clap_complete::generate(shell, &mut cmd, "cairn", &mut std::io::stdout());
        return Ok(0);
    }
    if let Command::Man { dir } = &cli.command {
        return cli::docs::write_man_pages(Cli::command(), dir);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(2)
        .build()?;
    let r = &cli.repo;
    match cli.command {
        Command::Init {
            pack_size,
            from_repo,
            from_password_file,
        } => cmd::cmd_init(
            &rt,
            r,
            pack_size,
            from_repo.as_deref(),
            from_password_file.as_deref(),
            out,
        ),
        Command::Backup {
            now: true,
            config,
            socket,
            ..
        } => cli::daemon::cmd_backup_now(&config, socket.as_deref(), json),
        Command::Backup {
            paths,
            tags,
            host,
            time,
            excludes,
            one_file_system,
            no_cache,
            upload_concurrency,
            ..
        } => cmd::cmd_backup(
            &rt,
            r,
            cmd::BackupArgs {
                paths,
                tags,
                host,
                time,
                excludes,
                one_file_system,
                no_cache,
                upload_concurrency: upload_concurrency.map(usize::from),
            },
            out,
        ),
        Command::Snapshots => cmd::cmd_snapshots(&rt, r, json),
        Command::Ls {
            snapshot,
            path,
            long,
        } => cmd::cmd_ls(&rt, r, &snapshot, path.as_deref(), long, json),
        Command::Restore {
            snapshot,
            target,
            verify,
            include,
            overwrite,
            fallback_repos,
            destination,
            config,
        } => cmd::cmd_restore(
            &rt,
            r,
            &cmd::RestoreArgs {
                snapshot,
                target,
                includes: include,
                overwrite,
                verify,
            },
            &cmd::Copies {
                fallback_repos,
                destination,
                config,
            },
            out,
        ),
        Command::Check {
            read_data,
            read_data_subset,
            fallback_repos,
            repair,
            destination,
            config,
        } => cmd::cmd_check(
            &rt,
            r,
            read_data,
            read_data_subset.as_deref(),
            &cmd::Copies {
                fallback_repos,
                destination,
                config,
            },
            repair,
            out,
        ),
        Command::Forget(mut f) => {
            f.json = json;
            cli::forget::cmd_forget(&rt, r, &f)
        }
        Command::Prune(mut p) => {
            p.json = json;
            p.quiet = cli.quiet;
            cli::prune::cmd_prune(&rt, r, &p)
        }
        Command::Key { action } => match action {
            KeyCommand::List => cmd::cmd_key_list(&rt, r, json),
            KeyCommand::Add { new_password_file } => {
                cmd::cmd_key_add(&rt, r, new_password_file.as_deref(), json)
            }
            KeyCommand::Remove { id } => cmd::cmd_key_remove(&rt, r, &id, json),
            KeyCommand::Passwd { new_password_file } => {
                cmd::cmd_key_passwd(&rt, r, new_password_file.as_deref(), json)
            }
        },
        Command::Diff {
            first,
            second,
            metadata,
        } => cli::explore::cmd_diff(&rt, r, &first, &second, metadata, json),
        Command::Find {
            patterns,
            snapshots,
            host,
        } => cli::explore::cmd_find(&rt, r, &patterns, &snapshots, host.as_deref(), json),
        Command::Stats => cli::explore::cmd_stats(&rt, r, json),
        Command::Completions { .. } | Command::Man { .. } => Ok(0),
        Command::Daemon { config, watch } => {
            drop(rt);
            cli::daemon::cmd_daemon(&config, r.password_file.as_deref(), &watch)
        }
        Command::Config {
            action: ConfigCommand::Check { config },
        } => cli::daemon::cmd_config_check(&config, r.password_file.as_deref()),
        Command::Status { config, socket } => {
            cli::daemon::cmd_status(&config, socket.as_deref(), json)
        }
    }
}

/// Logging: warnings for commands, progress for the daemon; straight into the journal
/// (with levels as priorities) when systemd runs the daemon, else to stderr.
fn init_logging(verbose: u8, daemon: bool) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    // The AWS SDK logs its own recoverable trouble at warn; cairn reports what matters.
    let level = match (verbose, daemon) {
        (0, false) => "warn,aws_config=error,aws_smithy_runtime=error,aws_runtime=error",
        (0, true) | (1, _) => "info,aws_config=error,aws_smithy_runtime=error,aws_runtime=error",
        _ => "debug",
    };
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_env("CAIRN_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level))
    };
    if daemon
        && std::env::var_os("JOURNAL_STREAM").is_some()
        && let Ok(journald) = tracing_journald::layer()
    {
        tracing_subscriber::registry()
            .with(filter())
            .with(journald.with_syslog_identifier("cairn".into()))
            .init();
        return;
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter())
        .init();
}

/// Buffers of this size and more get their own mapping, returned to the system when
/// freed. glibc's default raises this limit as large buffers are freed (up to 32 MiB),
/// after which the chunks, sealed blobs and 16 MiB packs that pass between threads pile
/// up in per-thread heaps that are never trimmed. Measured on the benchmark corpus, first
/// backup to a local folder: default 205 MiB peak RSS; 256 KiB, 100 MiB but 860,000 page
/// faults and 25% slower, since every chunk got fresh pages; 4 MiB, 107-117 MiB at the
/// default's speed. To the loopback S3 server (backup / restore): 256 KiB 8.6 s, 119 MiB /
/// 6.6 s, 103 MiB; 1 MiB 8.1 s, 126 MiB / 6.4 s, 113 MiB; 4 MiB 8.1 s, 141 MiB / 6.0 s,
/// 127 MiB. 1 MiB (half the chunks mapped, packs and read ranges always) is the middle.
const MMAP_THRESHOLD: libc::c_int = 1024 * 1024;

/// Free memory at the top of a heap beyond this is returned to the system.
const TRIM_THRESHOLD: libc::c_int = 1024 * 1024;

/// At most this many malloc heaps. glibc's default (eight per core) gives each busy
/// thread a heap of its own, and memory freed there stays with that heap; the readers,
/// packer and uploads hand buffers from thread to thread, so freed memory is spread
/// over many heaps. Measured, first backup of the benchmark corpus to the loopback S3
/// server, alternating runs: default 99.5-108.5 MiB peak RSS (mean 103.6), 2 heaps
/// 95.9-98.6 (mean 97.2), 1 heap 93.6-96.8, at the same wall and CPU time (5.9-6.0 s,
/// 5.3-5.6 s user); a full restore peaks 1-3 MiB lower. Each thread still allocates
/// from its own cache first (glibc's tcache), so two heaps are seldom contended.
const ARENA_MAX: libc::c_int = 2;

fn main() {
    // SAFETY: mallopt only changes allocator tuning; it is called before any other
    // thread exists. On a libc without these options it returns 0 and changes nothing.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
        libc::mallopt(libc::M_ARENA_MAX, ARENA_MAX);
    }
    let cli = Cli::parse();
    init_logging(cli.verbose, matches!(cli.command, Command::Daemon { .. }));
    let code = match run(cli) {
        Ok(code) => {
            let skipped = cli::skipped_objects();
            for (object, reason) in &skipped {
                eprintln!("warning: {object} was skipped: it is damaged or foreign ({reason})");
            }
            if skipped.is_empty() {
                code
            } else {
                eprintln!(
                    "warning: {} damaged or foreign object(s) were skipped and everything else was done: run `cairn check`, then restore them from another copy (`cairn check --repair --fallback-repo REPO`) or remove them",
                    skipped.len()
                );
                if code == 0 { 3 } else { code }
            }
        }
        Err(e) => {
            let code = e
                .downcast_ref::<cairn::Error>()
                .map(cairn::Error::exit_code)
                .unwrap_or(1);
            eprintln!("error: {}", cli::describe_error(&e));
            code
        }
    };
    std::process::exit(code);
}
