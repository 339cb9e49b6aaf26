//! Writing results to stdout so that a reader going away (`cairn ls latest | head -1`)
//! ends the command quietly, as it ends other Unix tools.
//!
//! Rust ignores SIGPIPE, so a write to a closed pipe fails with `BrokenPipe`, and
//! `println!` panics on it. The verbs print through [`outln!`] and [`out!`] (or a
//! [`Stdout`] writer for long streams) instead: they return the write error, marked as
//! stdout's own with [`Closed`] so that it cannot be confused with a broken socket to a
//! server or to the daemon, and [`closed`] lets the exit handling (`cli::exit`) turn it
//! into a silent exit 0. A verb that walks a long listing stops at the first failed
//! write rather than walking on with nobody reading.

use std::error::Error as StdError;
use std::io::{self, Write};

/// The reader of stdout went away (a closed pipe): the payload of the `BrokenPipe`
/// errors this module returns, which is how [`closed`] tells them from other ones.
#[derive(Debug, thiserror::Error)]
#[error("the output was closed before everything was written")]
pub struct Closed;

/// `e`, marked as stdout's closed pipe when it is a `BrokenPipe`.
fn mark(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::BrokenPipe {
        io::Error::new(io::ErrorKind::BrokenPipe, Closed)
    } else {
        e
    }
}

/// Write `args` to stdout, and a newline when `newline`; what [`outln!`] and [`out!`]
/// call. Flushed, so that a closed pipe shows at the line that met it.
pub fn write(args: std::fmt::Arguments<'_>, newline: bool) -> io::Result<()> {
    let mut lock = io::stdout().lock();
    lock.write_fmt(args)
        .and_then(|()| {
            if newline {
                lock.write_all(b"\n")
            } else {
                Ok(())
            }
        })
        .and_then(|()| lock.flush())
        .map_err(mark)
}

/// Like `println!`, to stdout, but returns the write error instead of panicking (a
/// closed pipe is marked [`Closed`]).
macro_rules! outln {
    () => {
        $crate::cli::stdout::write(format_args!(""), true)
    };
    ($($arg:tt)*) => {
        $crate::cli::stdout::write(format_args!($($arg)*), true)
    };
}

/// Like `print!`, to stdout, but returns the write error instead of panicking (a closed
/// pipe is marked [`Closed`]).
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::stdout::write(format_args!($($arg)*), false)
    };
}

pub(crate) use {out, outln};

/// A buffered stdout for long streams (listings, file contents, tar archives) whose
/// errors are marked as [`write`]'s are.
pub struct Stdout {
    inner: io::BufWriter<io::StdoutLock<'static>>,
}

impl Stdout {
    /// Stdout, locked, behind a buffer of `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        Stdout {
            inner: io::BufWriter::with_capacity(capacity, io::stdout().lock()),
        }
    }

    /// Stdout, locked, behind a buffer of the default size.
    pub fn new() -> Self {
        Stdout::with_capacity(8 * 1024)
    }
}

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf).map_err(mark)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.inner.write_all(buf).map_err(mark)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush().map_err(mark)
    }
}

/// Whether `e`, or any of its causes, is stdout's reader going away ([`Closed`]).
/// io errors are looked into (their payload), since `io::Error::source` skips it.
pub fn closed(e: &(dyn StdError + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(cause) = next {
        if cause.is::<Closed>() {
            return true;
        }
        next = match cause.downcast_ref::<io::Error>() {
            Some(io) => io.get_ref().map(|inner| inner as &(dyn StdError + 'static)),
            None => cause.source(),
        };
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_marked_broken_pipe_is_a_closed_stdout() {
        let ours = mark(io::Error::from(io::ErrorKind::BrokenPipe));
        assert!(closed(&ours));
        // Found below library errors and anyhow contexts, as the exit handling meets it.
        let wrapped = anyhow::Error::from(cairn::Error::io(
            "write",
            std::path::Path::new("<output>"),
            mark(io::Error::from(io::ErrorKind::BrokenPipe)),
        ))
        .context("restore");
        assert!(wrapped.chain().any(closed));
        // A socket's broken pipe (to a server, to the daemon) is an error like any other.
        let socket = io::Error::from(io::ErrorKind::BrokenPipe);
        assert!(!closed(&socket));
        assert!(!closed(&mark(io::Error::other("disk full"))));
    }
}
