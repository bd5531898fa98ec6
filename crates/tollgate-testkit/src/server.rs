//! A standalone server.

use std::ops::Deref;
use std::time::{Duration, Instant};

use crate::Error;
use crate::node::{RedisNode, Role};

/// One standalone `redis-server` that keeps nothing on disk. Derefs to its [`RedisNode`] for
/// `url()`, `pause()`, `kill()`, `restart()` and the rest.
#[derive(Debug)]
pub struct RedisServer {
    node: RedisNode,
}

impl RedisServer {
    /// Start a server on a free loopback port.
    pub fn start() -> Result<RedisServer, Error> {
        RedisServer::start_with(&[])
    }

    /// Start a server with extra configuration (`("requirepass", "secret".into())`, TLS
    /// settings, ...), given as `redis-server --name value` pairs.
    pub fn start_with(config: &[(&str, String)]) -> Result<RedisServer, Error> {
        let mut settings = vec![("save", String::new()), ("appendonly", "no".into())];
        settings.extend(config.iter().cloned());
        Ok(RedisServer {
            node: RedisNode::start(Role::Server, "standalone", &settings)?,
        })
    }

    /// Start a master and one replica of it, both on free loopback ports, and return them once
    /// the replica acknowledges the master's writes (`WAIT 1` answers 1): after a diskless sync
    /// the master streams writes to a new replica only from its first acknowledgement, up to
    /// 1 s later, so a replica merely connected may not acknowledge yet. Blocks the calling
    /// thread up to 20 s.
    pub fn start_replicated() -> Result<(RedisServer, RedisServer), Error> {
        let master = RedisServer::start_with(&[("repl-diskless-sync-delay", "0".into())])?;
        let replica = RedisServer::start_with(&[
            ("replicaof", format!("127.0.0.1 {}", master.port())),
            ("repl-diskless-sync-delay", "0".into()),
        ])?;
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut connection = master.connection()?;
        loop {
            // WAIT counts the replicas holding the writes of its own connection.
            let (_, acked): (String, i64) = redis::pipe()
                .cmd("SET")
                .arg("testkit:replicated")
                .arg(1)
                .cmd("WAIT")
                .arg(1)
                .arg(100)
                .query(&mut connection)?;
            if acked == 1 {
                return Ok((master, replica));
            }
            if Instant::now() > deadline {
                return Err(Error::Start(format!(
                    "the replica never acknowledged: {}",
                    replica.log_tail()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process handle.
    pub fn node(&self) -> &RedisNode {
        &self.node
    }
}

impl Deref for RedisServer {
    type Target = RedisNode;

    fn deref(&self) -> &RedisNode {
        &self.node
    }
}
