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

/// The repositories this process opened, so that what they skipped as damaged or
/// foreign reaches the exit code (3) once the command is done.
static OPENED: std::sync::Mutex<Vec<cairn::repo::Skipped>> = std::sync::Mutex::new(Vec::new());

/// Remember an opened repository's record of skipped objects (see [`skipped_objects`]).
pub fn opened(repo: &cairn::repo::Repository) {
    OPENED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(repo.skipped().clone());
}

/// Every object the repositories of this command skipped as damaged or foreign, with
/// why. A command that otherwise succeeded exits 3 when this is not empty.
pub fn skipped_objects() -> Vec<(String, String)> {
    let mut all: Vec<(String, String)> = OPENED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .flat_map(|s| s.list())
        .collect();
    all.sort();
    all.dedup();
    all
}

/// An error and its causes on one line, for the terminal. Library errors end their
/// message with their cause's text (so a log line with only the outer error still says
/// why) and also name it as their `source`; printing the chain as it is (`{:#}`) then
/// said every cause twice. A cause whose text already ends the line is left out.
pub fn describe_error(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if text.is_empty() || line.ends_with(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_line_says_each_cause_once() {
        let io = std::io::Error::other("answered 400 BadDigest");
        let backend = cairn::backend::BackendError::Io {
            op: "write",
            object: "data/ab".into(),
            location: "s3:http://h/b".into(),
            source: io,
            retryable: false,
        };
        let e = anyhow::Error::from(cairn::Error::from(backend)).context("destination \"nas\"");
        assert_eq!(
            describe_error(&e),
            "destination \"nas\": write data/ab in s3:http://h/b: answered 400 BadDigest"
        );
        // Causes that add something are all kept, in order, also one whose text
        // appears earlier on the line (here inside a path).
        let e = anyhow::anyhow!("disk full")
            .context("write index")
            .context("backup");
        assert_eq!(describe_error(&e), "backup: write index: disk full");
        let e = anyhow::anyhow!("timed out").context("read /srv/timed out/a");
        assert_eq!(describe_error(&e), "read /srv/timed out/a: timed out");
    }
}
