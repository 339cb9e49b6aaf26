//! The `cairn` command line: the top-level parser with its global options, the verbs,
//! logging and allocator set-up, dispatch and the exit code. Each verb's arguments and
//! work live in `cli/`; everything else lives in the library.

mod cli;

use clap::{CommandFactory, Parser, Subcommand};
use cli::RepoArgs;
use cli::progress::Output;
use std::io::IsTerminal;

#[derive(Parser)]
#[command(
    name = "cairn",
    version,
    about = "Encrypted, deduplicating backups to S3-compatible buckets"
)]
struct Cli {
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
    Init(cli::init::InitArgs),
    /// Back up files and directories into a new snapshot.
    Backup(cli::backup::BackupArgs),
    /// List snapshots.
    Snapshots(RepoArgs),
    /// List the entries of a snapshot.
    Ls(cli::ls::LsArgs),
    /// Restore a snapshot, or one file or directory of it, into a directory or to stdout.
    Restore(cli::restore::RestoreArgs),
    /// Verify the repository: structure, and with --read-data every stored blob.
    Check(cli::check::CheckArgs),
    /// Remove snapshots by id or by a retention policy (restic's --keep-* options).
    Forget(Box<cli::forget::ForgetArgs>),
    /// Remove data no snapshot needs: two-phase, safe with backups running elsewhere.
    Prune(cli::prune::PruneArgs),
    /// Manage the passphrases that open the repository.
    Key(cli::key::KeyArgs),
    /// Show or set how backups compress by default: `cairn compression max` records it
    /// in the repository (format version 3), `cairn compression auto` removes it.
    Compression(cli::compression::CompressionArgs),
    /// Run the backup daemon: watch the sources, snapshot changes to every destination.
    Daemon(cli::daemon::DaemonArgs),
    /// Work with the daemon's configuration file.
    Config(cli::daemon::ConfigArgs),
    /// Show what changed between two snapshots: added (+), removed (-), modified (M),
    /// type changed (T) and, with --metadata, metadata-only (U) paths.
    Diff(cli::diff::DiffArgs),
    /// Find which snapshots hold entries matching a glob: by name (`*.jpg`), or by path
    /// when the pattern has a `/` (`/home/*/notes.txt`).
    Find(cli::find::FindArgs),
    /// Repository size, deduplication and compression ratios, and for each snapshot
    /// what it added and its compression ratio.
    Stats(RepoArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(cli::docs::CompletionsArgs),
    /// Write man pages (cairn.1 and one per subcommand) into a directory.
    Man(cli::docs::ManArgs),
    /// Show what the running daemon is doing, per destination.
    Status(cli::daemon::StatusArgs),
    /// Check the daemon's alert notifiers: `cairn notify test` sends a test event to
    /// every [[notify]] and says which were delivered.
    Notify(cli::notify::NotifyArgs),
    /// Copy snapshots from another repository (--from-repo) into this one: on the same
    /// keys the stored objects as they are, on other keys re-encrypted; only what is
    /// missing is sent.
    Copy(cli::copy::CopyArgs),
    /// Add, remove or set snapshot tags (each changed snapshot gets a new id).
    Tag(cli::tag::TagArgs),
    /// Write new snapshots without the entries matching --exclude patterns (--forget
    /// removes the originals; prune then frees the space).
    Rewrite(cli::rewrite::RewriteArgs),
}

/// Run the verb the command line names; its exit code on success.
fn run(cli: Cli) -> anyhow::Result<i32> {
    let out = Output::new(cli.json, cli.quiet);
    let json = cli.json;
    match &cli.command {
        Command::Completions(a) => return cli::docs::completions(Cli::command(), a),
        Command::Man(a) => return cli::docs::man(Cli::command(), a),
        _ => {}
    }
    let rt = cli::common::runtime()?;
    match cli.command {
        Command::Init(a) => cli::init::run(&rt, &a.repo, &a, out),
        Command::Backup(a) => cli::backup::run(&rt, &a.repo, &a, out),
        Command::Snapshots(r) => cli::snapshots::run(&rt, &r, json),
        Command::Ls(a) => cli::ls::run(&rt, &a.repo, &a, json),
        Command::Restore(a) => cli::restore::run(&rt, &a.repo, &a, out),
        Command::Check(a) => cli::check::run(&rt, &a.repo, &a, out),
        Command::Forget(mut f) => {
            f.json = json;
            cli::forget::run(&rt, &f.repo, &f)
        }
        Command::Prune(mut p) => {
            p.json = json;
            p.quiet = cli.quiet;
            cli::prune::run(&rt, &p.repo, &p)
        }
        Command::Key(a) => cli::key::run(&rt, &a.repo, &a, json),
        Command::Compression(a) => cli::compression::run(&rt, &a.repo, &a, json),
        Command::Diff(a) => cli::diff::run(&rt, &a.repo, &a, json),
        Command::Find(a) => cli::find::run(&rt, &a.repo, &a, json),
        Command::Stats(r) => cli::stats::run(&rt, &r, json),
        Command::Copy(a) => cli::copy::run(&rt, &a.repo, &a, json),
        Command::Tag(a) => cli::tag::run(&rt, &a.repo, &a, json),
        Command::Rewrite(a) => cli::rewrite::run(&rt, &a.repo, &a, json),
        Command::Completions(_) | Command::Man(_) => Ok(0),
        Command::Daemon(a) => {
            drop(rt);
            cli::daemon::run_daemon(&a)
        }
        Command::Config(a) => cli::daemon::run_config(&a),
        Command::Status(a) => cli::daemon::run_status(&a, json),
        Command::Notify(a) => cli::notify::run(&a, json),
    }
}

/// Logging: warnings for commands, progress for the daemon; straight into the journal
/// (with levels as priorities) when systemd runs the daemon, else to stderr.
fn init_logging(verbose: u8, daemon: bool) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    // The AWS SDK and the HTTP stack below it log their own trouble, some at warn and
    // as debug structures; cairn reports what matters in its own words. Their targets
    // are prefixes (`aws_smithy` covers every aws_smithy_* crate, `hyper` hyper_util).
    // CAIRN_LOG or RUST_LOG, or -vv, shows them.
    const QUIET_SDK: &str =
        "aws_config=error,aws_runtime=error,aws_smithy=off,hyper=off,rustls=off,h2=off,tower=off";
    let level = match (verbose, daemon) {
        (0, false) => format!("warn,{QUIET_SDK}"),
        (0, true) | (1, _) => format!("info,{QUIET_SDK}"),
        _ => "debug".to_string(),
    };
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_env("CAIRN_LOG")
            .or_else(|_| tracing_subscriber::EnvFilter::try_from_env("RUST_LOG"))
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&level))
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
/// up in per-thread heaps that are never trimmed. A lower limit saves memory but gives
/// every chunk fresh pages (page faults, slower); a higher one holds more. 1 MiB (half the
/// chunks mapped, packs and read ranges always) is the middle; the measurements are in
/// docs/PERFORMANCE.md ("Memory held by the allocator").
const MMAP_THRESHOLD: libc::c_int = 1024 * 1024;

/// Free memory at the top of a heap beyond this is returned to the system.
const TRIM_THRESHOLD: libc::c_int = 1024 * 1024;

/// At most this many malloc heaps. glibc's default (eight per core) gives each busy
/// thread a heap of its own, and memory freed there stays with that heap; the readers,
/// packer and uploads hand buffers from thread to thread, so freed memory is spread
/// over many heaps. Two heaps lower the peak memory of a backup and a restore at the
/// same wall and CPU time (see docs/PERFORMANCE.md). Each thread still allocates from
/// its own cache first (glibc's tcache), so two heaps are seldom contended.
const ARENA_MAX: libc::c_int = 2;

fn main() {
    // SAFETY: mallopt only changes allocator tuning; it is called before any other
    // thread exists. On a libc without these options it returns 0 and changes nothing.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
        libc::mallopt(libc::M_ARENA_MAX, ARENA_MAX);
    }
    let cli: Cli = cli::args::parse();
    init_logging(cli.verbose, matches!(cli.command, Command::Daemon(_)));
    let code = cli::exit::settle(run(cli));
    std::process::exit(code);
}
