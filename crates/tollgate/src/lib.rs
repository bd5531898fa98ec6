//! # tollgate
//!
//! Exact rate limiting for one process or many. Five rate algorithms — fixed window, sliding
//! log, sliding window counter, token bucket and GCRA (leaky bucket) — and concurrency limits
//! (leases, [`Limiter::acquire`]) are pure transitions over integer microseconds
//! ([`algorithm`]); a [`Store`] keeps their state and decides atomically:
//! the in-process [`MemoryStore`] here, a Redis store in `tollgate-redis`. A [`Limiter`] binds
//! named [`Policy`]s to a store.
//!
//! ```
//! use tollgate::{Algorithm, Limiter, MemoryStore, Policy};
//!
//! # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
//! # rt.block_on(async {
//! let limiter = Limiter::new(MemoryStore::new())
//!     .with_policy("login", Policy::builder(Algorithm::SlidingLog).rate("5/15m").build()?)?;
//! for _ in 0..5 {
//!     assert!(limiter.check("login", "alice").await?.allowed);
//! }
//! let sixth = limiter.check("login", "alice").await?;
//! assert!(!sixth.allowed);
//! assert!(sixth.retry_after_ms() > 0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
#![warn(missing_docs)]

pub mod algorithm;
mod bounded_map;
pub mod calendar;
pub mod clock;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod counter;
pub mod decision;
pub mod error;
pub mod headers;
pub mod lease;
pub mod limiter;
pub mod memory;
pub mod overrides;
pub mod policy;
pub mod policy_name;
pub mod resilience;
mod short_str;
pub mod store;
pub mod wait;

pub use algorithm::{Mode, State};
pub use clock::{Clock, ManualClock};
pub use decision::Decision;
pub use error::{LimitError, PolicyError, StoreError};
pub use lease::{Acquired, Lease, LeaseId, LeaseOp, LeaseOutcome, OwnedLease};
pub use limiter::{Limiter, MAX_KEY_LEN, Verdict, Waited};
pub use memory::MemoryStore;
pub use overrides::{Override, OverridePage, OverridePeriod, OverrideSpec};
pub use policy::{Algorithm, Policy, PolicyBuilder, Rate};
pub use policy_name::{MAX_POLICY_NAME_LEN, PolicyName, PolicyNameError};
pub use resilience::{OnError, ResilienceConfig, Resilient};
pub use store::{Check, Decisions, Store, StoreDecision};

/// The README's Rust examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
