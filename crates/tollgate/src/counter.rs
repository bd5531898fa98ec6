//! [`Counter`]: a statistics counter that many threads bump without sharing a cache line.
//!
//! The over-limit cache answers millions of decisions per second on every core, and the server
//! counts every request; one shared `AtomicU64` bumped by each of them bounces its cache line
//! between cores on every decision (measured: the flood rate on two threads). Used by the
//! resilience layer's statistics and the server's metrics. Each thread here bumps its own cell; reads sum the
//! cells, which only metrics and tests do.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Cells per counter: threads beyond this share cells (still correct, only less spread).
const CELLS: usize = 16;

/// One cell on its own cache line (128 bytes: adjacent-line prefetch pairs lines).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Cell(AtomicU64);

/// A monotonic counter: [`Counter::add`] from any thread, [`Counter::get`] the total.
#[derive(Debug, Default)]
pub struct Counter {
    cells: [Cell; CELLS],
}

impl Counter {
    /// Add `n`.
    #[inline]
    pub fn add(&self, n: u64) {
        self.cells[thread_cell()].0.fetch_add(n, Ordering::Relaxed);
    }

    /// The total so far (a sum of cells that may be bumped meanwhile: exact once they stop).
    pub fn get(&self) -> u64 {
        self.cells.iter().map(|c| c.0.load(Ordering::Relaxed)).sum()
    }
}

/// This thread's cell: threads take cells in turn as they first count.
#[inline]
fn thread_cell() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static CELL: usize = NEXT.fetch_add(1, Ordering::Relaxed) % CELLS;
    }
    CELL.with(|cell| *cell)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_from_every_thread() {
        let counter = Counter::default();
        std::thread::scope(|s| {
            for _ in 0..40 {
                s.spawn(|| {
                    for _ in 0..1000 {
                        counter.add(1);
                    }
                });
            }
        });
        counter.add(5);
        assert_eq!(counter.get(), 40_005);
    }
}
