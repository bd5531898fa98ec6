//! Waiting instead of rejecting ([`crate::Limiter::check_wait`]): one FIFO turnstile per
//! identifier, so callers that wait on the same key are served in the order they came, and a
//! bound on how many wait at once, so a flood of waiters costs memory and tasks only up to it.
//!
//! Within one instance only: instances do not queue for each other. Across instances the store
//! stays the one judge of every decision, so waiting never admits more than the limit; it only
//! orders this instance's waiters among themselves.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// How many callers may wait at once in one limiter unless set otherwise
/// ([`crate::Limiter::with_max_waiters`]).
pub const DEFAULT_MAX_WAITERS: usize = 10_000;

/// The turnstiles of the identifiers someone waits on, and the count of waiters.
#[derive(Debug)]
pub(crate) struct WaitQueues {
    /// One fair (FIFO) lock per identifier waited on; dropped with its last waiter.
    queues: Mutex<HashMap<Box<str>, Arc<tokio::sync::Mutex<()>>>>,
    waiters: AtomicUsize,
    max_waiters: usize,
}

impl WaitQueues {
    pub(crate) fn new(max_waiters: usize) -> WaitQueues {
        WaitQueues {
            queues: Mutex::new(HashMap::new()),
            waiters: AtomicUsize::new(0),
            max_waiters,
        }
    }

    /// Join the queue of `queue` (an identifier with its policies), or `None` when
    /// `max_waiters` already wait.
    pub(crate) fn join(self: &Arc<Self>, queue: &str) -> Option<Place> {
        let joined = self
            .waiters
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |waiting| {
                (waiting < self.max_waiters).then_some(waiting + 1)
            });
        if joined.is_err() {
            return None;
        }
        let turnstile = self
            .queues
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(queue.into())
            .or_default()
            .clone();
        Some(Place {
            queues: self.clone(),
            queue: queue.into(),
            turnstile,
        })
    }

    /// How many callers wait now.
    pub(crate) fn waiting(&self) -> usize {
        self.waiters.load(Ordering::Acquire)
    }
}

/// A caller's place in one identifier's queue: [`Place::turn`] resolves when every caller
/// that joined before has left. Leaving (dropping it) frees the place and, for the last
/// waiter, the queue.
pub(crate) struct Place {
    queues: Arc<WaitQueues>,
    queue: Box<str>,
    turnstile: Arc<tokio::sync::Mutex<()>>,
}

impl Place {
    /// Wait for this caller's turn (tokio's mutex hands its lock out in the order asked).
    pub(crate) async fn turn(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.turnstile.lock().await
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut queues = self
            .queues
            .queues
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Two holders left (the table and this place): no one else waits here.
        if Arc::strong_count(&self.turnstile) == 2 {
            queues.remove(&self.queue);
        }
        drop(queues);
        self.queues.waiters.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_counts_places_and_queues_go_with_their_last_waiter() {
        let queues = Arc::new(WaitQueues::new(2));
        let a = queues.join("k").expect("room");
        let b = queues.join("k").expect("room");
        assert!(queues.join("other").is_none(), "over the bound");
        assert_eq!(queues.waiting(), 2);
        drop(a);
        assert_eq!(queues.queues.lock().unwrap().len(), 1);
        drop(b);
        assert_eq!(queues.waiting(), 0);
        assert!(queues.queues.lock().unwrap().is_empty());
        assert!(queues.join("other").is_some());
    }
}
