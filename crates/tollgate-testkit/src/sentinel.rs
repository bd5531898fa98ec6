//! A Sentinel deployment: one master, one replica, three Sentinels.

use std::time::{Duration, Instant};

use crate::Error;
use crate::node::{RedisNode, Role, info_field};

/// The name the Sentinels monitor the master under.
pub const MASTER_NAME: &str = "tollgate";

/// A master unreachable this long is subjectively down.
pub const DOWN_AFTER_MS: u64 = 1_000;

/// Sentinel's failover timeout (also the pause between two failover attempts).
pub const FAILOVER_TIMEOUT_MS: u64 = 3_000;

/// How long the deployment may take to settle.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Two data nodes (a master and its replica) watched by three Sentinels with quorum 2.
#[derive(Debug)]
pub struct RedisSentinel {
    data: Vec<RedisNode>,
    sentinels: Vec<RedisNode>,
}

impl RedisSentinel {
    /// Start the master, the replica and three Sentinels; wait until the replica is in sync
    /// and every Sentinel knows the replica and the two other Sentinels.
    pub fn start() -> Result<RedisSentinel, Error> {
        let base = [
            ("save", String::new()),
            ("appendonly", "no".into()),
            // Replicas sync at once instead of after the default 5 s wait for more replicas.
            ("repl-diskless-sync-delay", "0".into()),
        ];
        let master = RedisNode::start(Role::Server, "sentinel-master", &base)?;
        let mut replica_config = base.to_vec();
        replica_config.push(("replicaof", format!("127.0.0.1 {}", master.port())));
        let replica = RedisNode::start(Role::Server, "sentinel-replica", &replica_config)?;
        wait_for("the replica to sync", || {
            let info = replica.query_string(&["INFO", "replication"])?;
            Ok(info_field(&info, "master_link_status") == Some("up"))
        })?;

        let sentinel_config = [
            (
                "sentinel",
                format!("monitor {MASTER_NAME} 127.0.0.1 {} 2", master.port()),
            ),
            (
                "sentinel",
                format!("down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}"),
            ),
            (
                "sentinel",
                format!("failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}"),
            ),
            ("sentinel", format!("parallel-syncs {MASTER_NAME} 1")),
        ];
        let sentinels = (0..3)
            .map(|_| RedisNode::start(Role::Sentinel, "sentinel", &sentinel_config))
            .collect::<Result<Vec<_>, _>>()?;
        let deployment = RedisSentinel {
            data: vec![master, replica],
            sentinels,
        };
        wait_for("the sentinels to discover each other", || {
            for sentinel in &deployment.sentinels {
                let others: Vec<redis::Value> =
                    sentinel.query(&["SENTINEL", "SENTINELS", MASTER_NAME])?;
                let replicas: Vec<redis::Value> =
                    sentinel.query(&["SENTINEL", "REPLICAS", MASTER_NAME])?;
                if others.len() < 2 || replicas.is_empty() {
                    return Ok(false);
                }
            }
            Ok(true)
        })?;
        Ok(deployment)
    }

    /// `redis+sentinel://127.0.0.1:s1,127.0.0.1:s2,127.0.0.1:s3/<master name>`.
    pub fn url(&self) -> String {
        let addrs: Vec<String> = self.sentinels.iter().map(RedisNode::addr).collect();
        format!("redis+sentinel://{}/{MASTER_NAME}", addrs.join(","))
    }

    /// The name the master is monitored under.
    pub fn master_name(&self) -> &'static str {
        MASTER_NAME
    }

    /// The two data nodes (index 0 started as master, 1 as replica).
    pub fn data_nodes(&self) -> &[RedisNode] {
        &self.data
    }

    /// The three Sentinels.
    pub fn sentinels(&self) -> &[RedisNode] {
        &self.sentinels
    }

    /// The port of the master according to the first Sentinel that answers.
    pub fn master_port(&self) -> Result<u16, Error> {
        let mut last = None;
        for sentinel in self.sentinels.iter().filter(|s| s.is_running()) {
            match sentinel.query::<(String, u16)>(&[
                "SENTINEL",
                "GET-MASTER-ADDR-BY-NAME",
                MASTER_NAME,
            ]) {
                Ok((_, port)) => return Ok(port),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::Start("no sentinel runs".into())))
    }

    /// The index (into [`Self::data_nodes`]) of the current master.
    pub fn master_index(&self) -> Result<usize, Error> {
        let port = self.master_port()?;
        self.data
            .iter()
            .position(|n| n.port() == port)
            .ok_or_else(|| Error::Start(format!("sentinels name an unknown master :{port}")))
    }

    /// Kill the current master and return its index.
    pub fn kill_master(&self) -> Result<usize, Error> {
        let index = self.master_index()?;
        self.data[index].kill();
        Ok(index)
    }

    /// Wait until the Sentinels name a running master other than `old` that says it is master.
    pub fn wait_failover(&self, old: usize) -> Result<usize, Error> {
        let mut new = old;
        wait_for("sentinel failover", || {
            new = self.master_index()?;
            if new == old || !self.data[new].is_running() {
                return Ok(false);
            }
            let info = self.data[new].query_string(&["INFO", "replication"])?;
            Ok(info_field(&info, "role") == Some("master"))
        })?;
        Ok(new)
    }
}

/// Poll `ready` every 50 ms until it says yes; errors count as "not yet".
fn wait_for(what: &str, mut ready: impl FnMut() -> Result<bool, Error>) -> Result<(), Error> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let last = match ready() {
            Ok(true) => return Ok(()),
            Ok(false) => "not yet".to_string(),
            Err(e) => e.to_string(),
        };
        if Instant::now() > deadline {
            return Err(Error::Start(format!(
                "timed out waiting for {what} ({last})"
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
