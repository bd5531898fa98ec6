//! A standalone server.

use std::ops::Deref;

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
