//! How a command's outcome reaches the user last: the one-line error, the warning about
//! objects the repositories skipped as damaged or foreign, and the process exit code.
//! Every verb returns its own code; this module settles what the process exits with.
//! A reader of stdout that went away (`cairn ls latest | head -1`) is no failure: the
//! command ends quietly with 0, as other Unix tools do.

pub(crate) use cairn::error::{EXIT_FAILURE, EXIT_WARNINGS};

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
fn skipped_objects() -> Vec<(String, String)> {
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

/// The process exit code for a command's result, after saying on stderr what went wrong
/// or what was skipped: a library error keeps its own code, any other error is 1, and a
/// success that skipped objects becomes [`EXIT_WARNINGS`]. A closed stdout
/// ([`super::stdout::Closed`]) ends quietly with 0: whoever closed it has what they
/// wanted.
pub(crate) fn settle(result: anyhow::Result<i32>) -> i32 {
    match result {
        Err(e) if e.chain().any(super::stdout::closed) => 0,
        Ok(code) => {
            let skipped = skipped_objects();
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
                if code == 0 { EXIT_WARNINGS } else { code }
            }
        }
        Err(e) => {
            let code = e
                .downcast_ref::<cairn::Error>()
                .map(cairn::Error::exit_code)
                .unwrap_or(EXIT_FAILURE);
            eprintln!("error: {}", describe_error(&e));
            code
        }
    }
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
