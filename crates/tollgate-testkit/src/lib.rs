//! # tollgate-testkit
//!
//! Real Redis for tests, without Docker and without the machine's own Redis: `redis-server`
//! processes on free loopback ports, each in its own scratch directory, stopped by pid.
//!
//! - [`RedisServer`]: one standalone server (`--save "" --appendonly no`);
//!   [`RedisServer::start_replicated`]: a master and a replica that acknowledges its writes.
//! - [`RedisCluster`]: six nodes, three masters and three replicas, formed with
//!   `redis-cli --cluster create`, with a short `cluster-node-timeout` so failovers are quick.
//! - [`RedisSentinel`]: a master, a replica and three Sentinels.
//! - [`RedisServer::start_tls`]: a server listening with TLS too, with [`Certificates`] of a
//!   private CA made by `openssl`.
//! - [`RedisCluster::start_tls`]: three Cluster masters that listen with TLS only (no plain
//!   port, the Cluster bus over TLS), with the same [`Certificates`]; optionally asking for
//!   client certificates, and announcing a hostname with a certificate for that name only.
//!
//! Every process is killed when its handle is dropped (even while a test panics), and — because
//! children are spawned with `PR_SET_PDEATHSIG` from a thread that never exits — when the test
//! binary itself exits, however it exits. That makes per-binary shared instances safe:
//! [`shared_standalone`] and [`shared_cluster`] start one of each on first use and keep it until
//! the binary ends.
//!
//! ```no_run
//! let server = tollgate_testkit::RedisServer::start().unwrap();
//! let pong: String = server.query(&["PING"]).unwrap();
//! assert_eq!(pong, "PONG");
//! ```
#![warn(missing_docs)]

mod cluster;
mod node;
mod ports;
mod sentinel;
mod server;
mod spawner;
mod tls;

use std::sync::OnceLock;

pub use cluster::{RedisCluster, TlsCluster};
pub use node::{RedisNode, info_field};
pub use ports::free_port;
pub use sentinel::RedisSentinel;
pub use server::RedisServer;
pub use spawner::spawn;
pub use tls::Certificates;

/// Why a Redis process could not be started or inspected.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A process did not start, or a topology did not form in time.
    #[error("{0}")]
    Start(String),
    /// A command to a node failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

impl Error {
    pub(crate) fn io(what: &'static str, source: std::io::Error) -> Error {
        Error::Io { what, source }
    }
}

static STANDALONE: OnceLock<RedisServer> = OnceLock::new();
static CLUSTER: OnceLock<RedisCluster> = OnceLock::new();

/// One standalone server per test binary, started on first use. Tests sharing it must keep
/// their keys apart (a prefix per test) and must not stop it.
///
/// # Panics
/// If the server cannot start (the test cannot run without it).
pub fn shared_standalone() -> &'static RedisServer {
    STANDALONE.get_or_init(|| RedisServer::start().expect("starting the shared redis-server"))
}

/// One six-node Cluster per test binary, started on first use. Tests sharing it must keep their
/// keys apart and must not kill its nodes (start a private [`RedisCluster`] for that).
///
/// # Panics
/// If the Cluster cannot form.
pub fn shared_cluster() -> &'static RedisCluster {
    CLUSTER.get_or_init(|| RedisCluster::start().expect("starting the shared redis cluster"))
}
