//! `tollgate bench`: drive decisions at a target and report rate, latency and outcomes.
//!
//! A [`Target`] makes one decision for one key: the library path on any [`tollgate::Store`]
//! ([`StoreTarget`]), a running `tollgate serve` over HTTP ([`HttpTarget`]), or the Envoy gRPC
//! service (in the server crate, which owns the protos). [`run`] keeps `concurrency` requests in
//! flight over a key sequence fixed by a seed, so every target sees the same keys in the same
//! order, and returns a [`Report`].

pub mod report;
pub mod runner;
pub mod target;
pub mod workload;

pub use report::Report;
pub use runner::{CommandCounter, RedisCounters, redis_command_counter, run};
pub use target::{HttpTarget, Outcome, StoreTarget, Target, TargetError};
pub use workload::{Distribution, Workload};
