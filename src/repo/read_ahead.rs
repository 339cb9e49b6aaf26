//! Reading listed metadata objects several at a time, handed on in listing order, with
//! the bytes held bounded as well as the number of reads.
//!
//! Index objects and deletion records are applied in listing order (so which copy of a
//! blob is found first does not depend on timing), and a read that finishes ahead of its
//! turn waits in memory. A count alone cannot bound that memory: most index objects are a
//! few MB, but one a prune writes can hold a thousand packs' entries and tens of MB. The
//! listing gives each object's stored size, so reads start while both the count and the
//! bytes allow, and an object larger than the byte bound is read on its own.

use futures_util::future::{Join, Ready, join, ready};
use futures_util::stream::{self, FuturesOrdered, Stream, StreamExt};
use std::future::Future;

/// How far ahead of the one being applied listed objects may be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadAhead {
    /// Reads started and not yet handed on, at most.
    pub reads: usize,
    /// Their listed (stored) bytes, at most, unless a single object is larger.
    pub bytes: u64,
}

impl ReadAhead {
    /// Whether a read of `next` bytes may start while `reads` reads holding `held` bytes
    /// have started and not been handed on. With none, it always may: an object larger
    /// than the bound is still read, alone.
    pub fn may_start(self, reads: usize, held: u64, next: u64) -> bool {
        reads == 0 || (reads < self.reads && held.saturating_add(next) <= self.bytes)
    }
}

/// What the stream keeps between items.
struct InOrder<T, F, Fut: Future> {
    waiting: std::vec::IntoIter<(T, u64)>,
    /// Reads started and not yet handed on, each with its listed size.
    started: FuturesOrdered<Join<Ready<u64>, Fut>>,
    held: u64,
    limits: ReadAhead,
    fetch: F,
}

impl<T, F: FnMut(T) -> Fut, Fut: Future> InOrder<T, F, Fut> {
    /// Start every read the limits allow, in listing order.
    fn start_reads(&mut self) {
        while let Some(&(_, next)) = self.waiting.as_slice().first() {
            if !self.limits.may_start(self.started.len(), self.held, next) {
                break;
            }
            let Some((item, size)) = self.waiting.next() else {
                break;
            };
            self.held = self.held.saturating_add(size);
            self.started
                .push_back(join(ready(size), (self.fetch)(item)));
        }
    }
}

/// `fetch` of every `(item, listed size)`, several at once within `limits`, yielded in
/// the order given. Reads progress while the stream is polled, as with
/// [`StreamExt::buffered`].
pub fn in_order<T, F, Fut>(
    items: Vec<(T, u64)>,
    limits: ReadAhead,
    fetch: F,
) -> impl Stream<Item = Fut::Output>
where
    F: FnMut(T) -> Fut,
    Fut: Future,
{
    let state = InOrder {
        waiting: items.into_iter(),
        started: FuturesOrdered::new(),
        held: 0,
        limits,
        fetch,
    };
    stream::unfold(state, |mut state| async move {
        state.start_reads();
        let (size, out) = state.started.next().await?;
        state.held = state.held.saturating_sub(size);
        Some((out, state))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;
    use std::time::Duration;

    const LIMITS: ReadAhead = ReadAhead {
        reads: 4,
        bytes: 100,
    };

    #[test]
    fn a_read_starts_only_within_both_bounds() {
        assert!(LIMITS.may_start(0, 0, 10));
        assert!(LIMITS.may_start(3, 90, 10));
        assert!(!LIMITS.may_start(4, 0, 1), "four reads is the count bound");
        assert!(
            !LIMITS.may_start(1, 90, 11),
            "101 bytes is over the byte bound"
        );
        assert!(
            !LIMITS.may_start(1, u64::MAX, 1),
            "no overflow past the bound"
        );
    }

    #[test]
    fn an_object_larger_than_the_bound_is_read_alone() {
        assert!(LIMITS.may_start(0, 0, 1_000));
        assert!(!LIMITS.may_start(1, 1_000, 1));
        assert!(!LIMITS.may_start(1, 1, 1_000));
    }

    /// Runs `in_order` over `sizes` with reads that finish in reverse order of size, and
    /// returns what came out and the most bytes and reads ever started at once.
    async fn run(sizes: &[u64]) -> (Vec<usize>, u64, usize) {
        let held = Rc::new(Cell::new(0u64));
        let reads = Rc::new(Cell::new(0usize));
        let peak = Rc::new(Cell::new((0u64, 0usize)));
        let items: Vec<(usize, u64)> = sizes.iter().copied().enumerate().collect();
        let out: Vec<usize> = {
            let (held, reads, peak) = (held.clone(), reads.clone(), peak.clone());
            in_order(items.clone(), LIMITS, move |i| {
                let size = sizes[i];
                held.set(held.get() + size);
                reads.set(reads.get() + 1);
                let (b, r) = peak.get();
                peak.set((b.max(held.get()), r.max(reads.get())));
                let (held, reads) = (held.clone(), reads.clone());
                async move {
                    // Small objects take longer, so later reads finish first.
                    tokio::time::sleep(Duration::from_millis(200 - size.min(199))).await;
                    (i, held, reads, size)
                }
            })
            .map(|(i, held, reads, size)| {
                // Handed on: its bytes are no longer held.
                held.set(held.get() - size);
                reads.set(reads.get() - 1);
                i
            })
            .collect()
            .await
        };
        let (bytes, count) = peak.get();
        (out, bytes, count)
    }

    #[tokio::test(start_paused = true)]
    async fn objects_come_out_in_listing_order_within_the_bounds() {
        let (out, bytes, reads) = run(&[10, 20, 30, 5, 5, 60, 40, 1, 1, 1, 1, 1]).await;
        assert_eq!(out, (0..12).collect::<Vec<_>>());
        assert!(bytes <= 100, "held {bytes} bytes");
        assert_eq!(reads, 4, "four reads at once where the bytes allow");
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_listed_reads_nothing_and_a_large_first_object_is_read() {
        let (out, bytes, reads) = run(&[]).await;
        assert!(out.is_empty() && bytes == 0 && reads == 0);
        let (out, bytes, reads) = run(&[300, 10]).await;
        assert_eq!(out, vec![0, 1]);
        assert_eq!(
            (bytes, reads),
            (300, 1),
            "the small one waited for the large one"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_large_object_waits_for_the_others_and_holds_its_turn_alone() {
        let (out, bytes, reads) = run(&[10, 500, 10, 10]).await;
        assert_eq!(out, vec![0, 1, 2, 3]);
        assert_eq!(
            bytes, 500,
            "the large object was read with nothing else held"
        );
        assert_eq!(reads, 2, "the two after it were read together");
    }
}
