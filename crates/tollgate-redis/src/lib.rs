//! # tollgate-redis
//!
//! A [`tollgate::Store`] in Redis, so any number of instances share one limit per identifier.
//! Each decision is one `EVALSHA` of one Lua script (the algorithm's own for a one-policy
//! check; sent again as `EVAL` with its source after `NOSCRIPT`; one-policy checks that queue
//! together share one such call, on a Cluster per node) that runs the same integer
//! transitions as the core, reads time from Redis (`TIME`), decides every policy of a check
//! atomically (all-or-nothing), writes only when it consumes, and sets a TTL on every key it
//! writes.
//!
//! Works on standalone Redis (and Valkey), Redis Cluster and Sentinel; see [`RedisStore::connect`]
//! for the URLs and the crate README for the key layout, TTLs and memory per key.
//!
//! ```no_run
//! use tollgate::{Algorithm, Limiter, Policy};
//! use tollgate_redis::{RedisOptions, RedisStore};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let store = RedisStore::connect("redis+cluster://10.0.0.1:7000,10.0.0.2:7000", RedisOptions::default()).await?;
//! let limiter = Limiter::new(store)
//!     .with_policy("login", Policy::builder(Algorithm::SlidingLog).rate("5/15m").build()?)?;
//! if !limiter.check("login", "alice").await?.allowed {
//!     println!("too many attempts");
//! }
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

mod arguments;
mod batch;
mod cluster;
mod connection;
mod error;
pub mod keys;
mod overrides;
pub mod script;
mod sentinel;
mod store;

pub use connection::{TlsFiles, Topology, check_url, redact};
pub use error::RedisStoreError;
pub use overrides::OverrideChange;
pub use store::{DEFAULT_PREFIX, MasterReplicas, RedisOptions, RedisStore, ReplicaAck};
