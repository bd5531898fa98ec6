//! # tollgate-envoy
//!
//! An Envoy rate limit service (`envoy.service.ratelimit.v3.RateLimitService`, gRPC) on a
//! tollgate [`Store`](tollgate::Store), reading envoyproxy/ratelimit's YAML config files.
//! Decisions are atomic in the store (one decision per descriptor, no read-then-write race),
//! and any tollgate algorithm can be chosen per rule.
//!
//! - [`config`]: loading and validating the config directory into a rule tree;
//! - [`matching`]: finding a descriptor's rule with upstream's precedence;
//! - [`keys`]: the tollgate policy name and identifier of a matched descriptor;
//! - [`service`]: `ShouldRateLimit` itself, [`EnvoyService`];
//! - [`grpc`]: the tonic services (rate limit and `grpc.health.v1`) and how to serve them;
//! - [`metadata`]: the response's dynamic metadata, when asked for;
//! - [`reload`]: the directory watcher; [`stats`]: per-rule counters as Prometheus text.
//!
//! ```no_run
//! use std::sync::Arc;
//! use tollgate::MemoryStore;
//! use tollgate_envoy::{EnvoyOptions, EnvoyService};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let store = Arc::new(MemoryStore::new());
//! let service = EnvoyService::new(store, "./ratelimit", EnvoyOptions::default())?;
//! let _reloader = service.spawn_reloader()?; // reload on change; stops when dropped
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8081").await?;
//! service.serve(listener, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

pub mod config;
pub mod grpc;
pub mod headers;
pub mod keys;
pub mod matching;
pub mod metadata;
pub mod reload;
pub mod service;
pub mod stats;
pub mod unit;
mod yaml;

pub use config::EnvoyConfigError;
pub use grpc::{RATE_LIMIT_SERVICE, UPSTREAM_HEALTH_NAME};
pub use headers::ResponseHeaders;
pub use reload::Reloader;
pub use service::{EnvoyOptions, EnvoyService};
pub use unit::Unit;

/// The generated Envoy types this service speaks, for clients and tests.
pub use envoy_types;
