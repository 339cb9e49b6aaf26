//! The `cairn` command line below `main`: one module per verb, each with its clap
//! arguments and the `run` that turns them into library calls and prints the results,
//! plus what the verbs share (opening the repository, passphrases, progress, output and
//! the exit code). `anyhow` lives only here.

pub mod args;
pub mod backup;
pub mod backup_args;
pub mod backup_select;
pub mod backup_stream;
pub mod backup_summary;
pub mod check;
pub mod common;
pub mod compression;
pub mod config_check;
pub mod copy;
pub mod daemon;
pub mod diff;
pub mod docs;
pub mod exit;
pub mod find;
pub mod forget;
pub mod init;
pub mod key;
pub mod ls;
pub mod notify;
pub mod output;
pub mod password;
pub mod progress;
pub mod prune;
pub mod restore;
pub mod rewrite;
pub mod select;
pub mod snapshots;
pub mod stats;
pub mod stdout;
pub mod tag;

pub use cairn::host::{hostname, now_rfc3339, username};
pub use common::RepoArgs;
pub use exit::{describe_error, opened};
