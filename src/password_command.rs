//! Passphrases printed by a program (`--password-command`, `CAIRN_PASSWORD_COMMAND`, the
//! daemon's `password_command`), so the passphrase can stay in a password manager or an
//! encrypted credential (`pass`, `secret-tool`, `systemd-creds`) instead of a file.
//!
//! As restic does, the command is an argument vector run without a shell (a command line
//! is split into words as a shell would, quotes and all, but no shell runs it). Its
//! standard output is captured and its first line, without the line ending, is the
//! passphrase, held in memory that is wiped on drop. Its error output goes where cairn's
//! goes, so a prompt or a failure is seen; its standard input is cairn's only when that is
//! a terminal (so a program may ask there), never data piped into cairn
//! (`cairn backup --stdin`), which it could otherwise swallow.

use crate::error::{Error, Result};
use crate::external::process::{PRIVATE_VARS, shown, status_words};
use std::io::{IsTerminal, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// Most output read from a password command: a passphrase is a line, not a document.
pub const MAX_OUTPUT: u64 = 64 * 1024;

/// How long the output may stay open after the command exited (a program it started in
/// the background holding it) before the read is given up.
const OUTPUT_CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Split the command line `line` of the setting `what` (`--password-command`,
/// `CAIRN_PASSWORD_COMMAND`) into words as a shell would, quotes and backslashes
/// included, for running without a shell. Refused, naming the setting, when it is empty
/// or its quotes do not close.
pub fn split(what: &str, line: &str) -> Result<Vec<String>> {
    match shlex::split(line) {
        Some(words) if !words.is_empty() => Ok(words),
        Some(_) => Err(Error::InvalidInput(format!(
            "{what} is empty: give the program that prints the passphrase and its arguments, e.g. \"pass show backup/cairn\""
        ))),
        None => Err(Error::InvalidInput(format!(
            "{what} {line:?} is not a command line (a quote is not closed): quote it as for a shell, e.g. \"secret-tool lookup service 'my backup'\""
        ))),
    }
}

/// Run the password command `argv` (of the setting `what`) and return the first line of
/// its standard output, without `\n` or `\r\n`. It fails, naming the command and the fix,
/// when the program cannot be started, exits non-zero or by a signal, prints nothing on
/// its first line, prints more than [`MAX_OUTPUT`], or runs longer than `limit` (`None`:
/// no limit, for a person at a terminal who may be asked for a PIN; the daemon has
/// nobody to wait for). cairn's own passphrase variables are not passed on to it, so a
/// script that runs cairn again cannot call itself without end.
pub fn run(what: &str, argv: &[String], limit: Option<Duration>) -> Result<Zeroizing<Vec<u8>>> {
    let shown_cmd = shown(argv);
    let fail = |why: String| Error::InvalidInput(format!("{what} `{shown_cmd}` {why}"));
    let Some((program, args)) = argv.split_first() else {
        return Err(Error::InvalidInput(format!(
            "{what} is empty: give the program that prints the passphrase and its arguments"
        )));
    };
    let mut cmd = Command::new(program);
    for var in PRIVATE_VARS {
        cmd.env_remove(var);
    }
    let stdin = if std::io::stdin().is_terminal() {
        Stdio::inherit()
    } else {
        Stdio::null()
    };
    cmd.args(args)
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = cmd.spawn().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            fail(format!(
                "cannot be run: `{program}` was not found; install it, or give its full path"
            ))
        } else {
            fail(format!(
                "cannot be run: {e}; check that `{program}` is an executable this user may run"
            ))
        }
    })?;
    let Some(out) = child.stdout.take() else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(fail("gave no output pipe to read".into()));
    };
    let reader = std::thread::spawn(move || {
        let mut bytes = Zeroizing::new(Vec::with_capacity(MAX_OUTPUT as usize + 1));
        let read = out.take(MAX_OUTPUT + 1).read_to_end(&mut bytes);
        read.map(|_| bytes)
    });
    let status = match wait(&mut child, limit) {
        Ok(Some(status)) => status,
        Ok(None) => {
            let _ = child.kill();
            let _ = child.wait();
            let secs = limit.map_or(0, |l| l.as_secs());
            return Err(fail(format!(
                "did not finish within {secs} s and was stopped: make it print the passphrase without waiting for input (nobody can answer a prompt here)"
            )));
        }
        Err(e) => return Err(fail(format!("could not be waited for: {e}"))),
    };
    let deadline = Instant::now() + OUTPUT_CLOSE_WAIT;
    while !reader.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    if !reader.is_finished() {
        return Err(fail(
            "exited, but a program it started in the background keeps its output open: make it end everything it starts".into(),
        ));
    }
    let bytes = match reader.join() {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(e)) => return Err(fail(format!("printed output that could not be read: {e}"))),
        Err(_) => {
            return Err(Error::Internal(
                "the password command's reader panicked".into(),
            ));
        }
    };
    if bytes.len() as u64 > MAX_OUTPUT {
        return Err(fail(format!(
            "printed more than {} KiB: it must print the passphrase on its first line, and little else",
            MAX_OUTPUT / 1024
        )));
    }
    if !status.success() {
        return Err(fail(format!(
            "{}: run it by hand to see why (its error output is above, or in the log), and make it print the passphrase and exit 0",
            status_words(status)
        )));
    }
    first_line(&bytes).ok_or_else(|| {
        fail("printed no passphrase (its first line is empty): make it print the passphrase on the first line of its standard output".into())
    })
}

/// Wait for `child` to exit, at most `limit`; `None` when it is still running then.
fn wait(
    child: &mut std::process::Child,
    limit: Option<Duration>,
) -> std::io::Result<Option<std::process::ExitStatus>> {
    let Some(limit) = limit else {
        return child.wait().map(Some);
    };
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The first line of `output` without its `\n` or `\r\n`; `None` when it is empty.
pub fn first_line(output: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let end = output
        .iter()
        .position(|b| *b == b'\n')
        .unwrap_or(output.len());
    let mut line = Zeroizing::new(output[..end].to_vec());
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    (!line.is_empty()).then_some(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Vec<String> {
        vec!["/bin/sh".into(), "-c".into(), script.into()]
    }

    #[test]
    fn the_first_line_of_what_it_prints_is_the_passphrase() {
        let p = run(
            "--password-command",
            &sh("printf 'pass word\\r\\nsecond\\n'"),
            None,
        )
        .expect("runs");
        assert_eq!(p.as_slice(), b"pass word");
        let p = run("--password-command", &sh("printf 'no newline'"), None).expect("runs");
        assert_eq!(p.as_slice(), b"no newline");
        let p = run(
            "password_command",
            &sh("echo from-daemon"),
            Some(Duration::from_secs(30)),
        )
        .expect("runs");
        assert_eq!(p.as_slice(), b"from-daemon");
        assert_eq!(first_line(b"\nsecond"), None);
        assert_eq!(
            first_line(b"a\r\n").as_deref().map(Vec::as_slice),
            Some(&b"a"[..])
        );
    }

    #[test]
    fn failures_name_the_command_and_the_fix() {
        let e = run("--password-command", &["false".to_string()], None)
            .expect_err("false fails")
            .to_string();
        assert!(
            e.starts_with("--password-command `false` exited with status 1"),
            "{e}"
        );
        let e = run("--password-command", &sh("echo pw; exit 3"), None)
            .expect_err("exit 3")
            .to_string();
        assert!(e.contains("exited with status 3"), "{e}");
        let e = run("--password-command", &sh("kill -9 $$"), None)
            .expect_err("killed")
            .to_string();
        assert!(e.contains("was killed by signal 9"), "{e}");
        let e = run(
            "CAIRN_PASSWORD_COMMAND",
            &["/nonexistent/cairn-pass".to_string(), "x".to_string()],
            None,
        )
        .expect_err("missing")
        .to_string();
        assert!(
            e.contains("CAIRN_PASSWORD_COMMAND `/nonexistent/cairn-pass x` cannot be run")
                && e.contains("was not found"),
            "{e}"
        );
        let e = run("--password-command", &sh("true"), None)
            .expect_err("silent")
            .to_string();
        assert!(e.contains("printed no passphrase"), "{e}");
        let e = run("--password-command", &sh("echo; echo late"), None)
            .expect_err("first line empty")
            .to_string();
        assert!(e.contains("printed no passphrase"), "{e}");
        let e = run("--password-command", &sh("head -c 70000 /dev/zero"), None)
            .expect_err("too much")
            .to_string();
        assert!(e.contains("more than 64 KiB"), "{e}");
        let e = run(
            "password_command",
            &sh("sleep 5; echo late"),
            Some(Duration::from_millis(200)),
        )
        .expect_err("too slow")
        .to_string();
        assert!(e.contains("did not finish within"), "{e}");
        let e = run("--password-command", &[], None).expect_err("empty");
        assert!(e.to_string().contains("is empty"), "{e}");
    }

    #[test]
    fn command_lines_split_as_a_shell_would_without_running_one() {
        assert_eq!(
            split(
                "--password-command",
                "secret-tool lookup service 'my backup'"
            )
            .expect("ok"),
            ["secret-tool", "lookup", "service", "my backup"]
        );
        assert_eq!(
            split("--password-command", "echo $HOME;").expect("ok"),
            ["echo", "$HOME;"]
        );
        let e = split("CAIRN_PASSWORD_COMMAND", "pass show 'x").expect_err("open quote");
        assert!(e.to_string().contains("CAIRN_PASSWORD_COMMAND"), "{e}");
        assert!(split("--password-command", "  ").is_err());
    }
}
