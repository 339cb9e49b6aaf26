//! Large buffers shared by many threads, so that memory follows the number of buffers
//! rather than the number of threads.
//!
//! A backup reads many files at once to keep a cold disk busy, but only a file of several
//! chunks needs a full read window (one and a half chunks' worth); they are lent from a
//! [`BufferSet`] and the rest of the readers make do with small buffers.

use crossbeam_channel::{Receiver, Sender, bounded};

/// A fixed number of large buffers, lent one at a time. A borrower waits while all are
/// out, so the set bounds how many memory-hungry jobs (reading a file of many chunks,
/// which needs a full read window) run at once, however many threads there are.
#[derive(Debug)]
pub struct BufferSet {
    tx: Sender<Vec<u8>>,
    rx: Receiver<Vec<u8>>,
}

impl BufferSet {
    /// A set of `n` buffers (at least one), allocated as they are first used.
    pub fn new(n: usize) -> Self {
        let n = n.max(1);
        let (tx, rx) = bounded(n);
        for _ in 0..n {
            // Cannot fail: the channel has room for all of them.
            let _ = tx.send(Vec::new());
        }
        BufferSet { tx, rx }
    }

    /// A buffer, waiting until one is free; it goes back when the loan is dropped
    /// (unwinding included).
    pub fn lend(&self) -> Loan<'_> {
        // The set holds both ends, so the channel never closes while it exists.
        let buf = self.rx.recv().unwrap_or_default();
        Loan {
            set: self,
            buf: Some(buf),
        }
    }
}

/// A buffer borrowed from a [`BufferSet`].
#[derive(Debug)]
pub struct Loan<'a> {
    set: &'a BufferSet,
    buf: Option<Vec<u8>>,
}

impl Loan<'_> {
    /// Take the buffer out to use it; [`Loan::put`] it back before the loan ends to keep
    /// its allocation (otherwise an empty one goes back).
    pub fn take(&mut self) -> Vec<u8> {
        self.buf.take().unwrap_or_default()
    }

    /// Put the buffer back into the loan.
    pub fn put(&mut self, buf: Vec<u8>) {
        self.buf = Some(buf);
    }
}

impl Drop for Loan<'_> {
    fn drop(&mut self) {
        let _ = self.set.tx.send(self.buf.take().unwrap_or_default());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_lends_each_buffer_once_at_a_time_and_gets_it_back() {
        let set = BufferSet::new(2);
        let mut a = set.lend();
        let b = set.lend();
        assert!(set.rx.is_empty(), "both buffers are out");
        let mut buf = a.take();
        buf.resize(4096, 7);
        a.put(buf);
        drop(a);
        let mut c = set.lend();
        assert_eq!(
            c.take().len(),
            4096,
            "the returned buffer keeps its allocation"
        );
        drop(b);
        drop(c);
        assert_eq!(
            set.rx.len(),
            2,
            "every loan went back, a taken-out one as empty"
        );
    }

    #[test]
    fn a_borrower_waits_until_a_buffer_comes_back() {
        let set = BufferSet::new(1);
        let held = set.lend();
        std::thread::scope(|s| {
            let waiter = s.spawn(|| {
                let _loan = set.lend();
            });
            std::thread::sleep(std::time::Duration::from_millis(50));
            assert!(!waiter.is_finished(), "no buffer is free yet");
            drop(held);
            waiter
                .join()
                .expect("the waiter gets the buffer once it is back");
        });
    }
}
