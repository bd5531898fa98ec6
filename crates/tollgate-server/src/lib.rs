//! # tollgate-server
//!
//! The `tollgate` binary's parts, as a library so tests and benchmarks reuse them: [`config`] (YAML, flags > env > file > defaults), [`store`] (the
//! store the server decides on), [`service`] (the decision engine), [`http`] (the HTTP API of
//! docs/architecture.md §6), [`metrics`], [`reload`] (the config file's policies, reloaded
//! while serving) and [`server`] (bind, serve, shut down).
//!
//! ```no_run
//! use tollgate_server::{config::Settings, server::{Server, shutdown_signal}};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let mut settings = Settings::default(); // memory store, policy `default` (gcra, 100/min)
//! settings.listen = "127.0.0.1:0".parse()?;
//! let server = Server::bind(settings).await?;
//! println!("listening on {}", server.local_addr()?);
//! server.run(shutdown_signal()?).await?;
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

pub mod bench;
pub mod cli;
pub mod config;
pub mod health;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod reload;
pub mod server;
pub mod service;
pub mod stats;
pub mod store;

pub use config::Settings;
pub use server::{ServeError, Server};
pub use service::Service;
