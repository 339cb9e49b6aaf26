//! Command implementations for the `cairn` binary: each turns parsed arguments into
//! library calls and prints results. `anyhow` lives only here.

pub mod commands;
pub mod daemon;
pub mod docs;
pub mod explore;
pub mod forget;
pub mod output;
pub mod password;
pub mod progress;
pub mod prune;

use std::path::PathBuf;

/// Options every repository command shares.
#[derive(Debug, Clone, clap::Args)]
pub struct RepoArgs {
    /// Repository location: a path or local:PATH.
    #[arg(short = 'r', long = "repo", env = "CAIRN_REPOSITORY", global = true)]
    pub repo: Option<String>,
    /// File whose first line is the passphrase.
    #[arg(long = "password-file", global = true)]
    pub password_file: Option<PathBuf>,
    /// Backend option KEY=VALUE, e.g. -o s3.region=garage (repeatable; see README).
    #[arg(short = 'o', long = "option", global = true)]
    pub options: Vec<String>,
}

impl RepoArgs {
    /// Backend options from the defaults and every `-o`.
    pub fn backend_options(&self) -> anyhow::Result<cairn::backend::BackendOptions> {
        let mut o = cairn::backend::BackendOptions::default();
        o.apply(&self.options).map_err(anyhow::Error::msg)?;
        Ok(o)
    }
}

pub use cairn::host::{hostname, now_rfc3339, username};
