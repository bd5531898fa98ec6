//! A six-node Redis Cluster (three masters, three replicas), and a TLS-only one of three masters.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Certificates, Error};

use crate::node::{RedisNode, Role, TlsClient, info_field};

/// Nodes in the Cluster.
const NODES: usize = 6;

/// Nodes (all masters) in the TLS Cluster.
const TLS_MASTERS: usize = 3;

/// The name a TLS Cluster's nodes announce with [`TlsCluster::hostnames`].
const HOSTNAME: &str = "localhost";

/// How the nodes of a [`RedisCluster::start_tls`] present themselves.
#[derive(Debug, Clone, Copy, Default)]
pub struct TlsCluster {
    /// The nodes ask clients for a certificate of the CA (mutual TLS).
    pub clients_need_certs: bool,
    /// As managed Redis does, the nodes announce a hostname, `localhost`, where they would
    /// announce their IP (`cluster-announce-hostname`, `cluster-preferred-endpoint-type
    /// hostname`: `CLUSTER SLOTS` names them by it) and present a certificate for that name
    /// only, so clients must connect to them by name. The URL names them so too.
    pub hostnames: bool,
}

/// `cluster-node-timeout`: a master unreachable this long is failed over by its replica.
pub const NODE_TIMEOUT_MS: u64 = 1_000;

/// How long forming (or healing) the Cluster may take.
const FORM_TIMEOUT: Duration = Duration::from_secs(30);

/// A Cluster of `redis-server` processes formed with `redis-cli --cluster create`: six
/// (three masters, three replicas), or three masters that listen with TLS only.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisNode>,
    /// For a TLS Cluster, `redis-cli`'s TLS arguments.
    tls: Option<Vec<String>>,
}

/// Settings of every Cluster node.
fn cluster_config() -> Vec<(&'static str, String)> {
    vec![
        ("save", String::new()),
        ("appendonly", "no".into()),
        // Replicas sync at once instead of after the default 5 s wait for more replicas.
        ("repl-diskless-sync-delay", "0".into()),
        ("cluster-enabled", "yes".into()),
        ("cluster-config-file", "nodes.conf".into()),
        ("cluster-node-timeout", NODE_TIMEOUT_MS.to_string()),
        // Always let a replica take over, however long its master was gone.
        ("cluster-replica-validity-factor", "0".into()),
    ]
}

/// Attempts at forming a Cluster, each on fresh nodes: now and then (seen under load) a node
/// misses a `CLUSTER MEET`, the others never learn of it and the Cluster never forms.
const FORM_ATTEMPTS: usize = 3;

/// The first Cluster `attempt` forms, or the last attempt's error.
fn formed(attempt: impl Fn() -> Result<RedisCluster, Error>) -> Result<RedisCluster, Error> {
    let mut result = attempt();
    for _ in 1..FORM_ATTEMPTS {
        if result.is_ok() {
            break;
        }
        // The failed attempt's nodes stop as they drop.
        result = attempt();
    }
    result
}

impl RedisCluster {
    /// Start six nodes, form the Cluster and wait until every node reports `cluster_state:ok`
    /// and every replica is in sync with its master.
    pub fn start() -> Result<RedisCluster, Error> {
        formed(|| {
            let config = cluster_config();
            let nodes = (0..NODES)
                .map(|_| RedisNode::start(Role::Server, "cluster", &config))
                .collect::<Result<Vec<_>, _>>()?;
            let cluster = RedisCluster { nodes, tls: None };
            cluster.create(1)?;
            cluster.wait_healthy(FORM_TIMEOUT)?;
            Ok(cluster)
        })
    }

    /// Start three masters (no replicas) that listen with TLS only, with these certificates:
    /// `port 0` (no plain port), clients on the `tls-port`, and the Cluster bus over TLS too
    /// (`tls-cluster yes`, and `tls-replication yes` for replicas a test may add). Its
    /// [`url`](Self::url) is `rediss+cluster://...`; the testkit's own connections to its nodes
    /// trust the CA and present the client certificate.
    pub fn start_tls(certs: &Certificates, options: TlsCluster) -> Result<RedisCluster, Error> {
        let mut config = cluster_config();
        let (certificate, host) = if options.hostnames {
            config.extend([
                ("cluster-announce-hostname", HOSTNAME.into()),
                ("cluster-preferred-endpoint-type", "hostname".into()),
            ]);
            ("host", HOSTNAME)
        } else {
            ("server", "127.0.0.1")
        };
        config.extend(certs.server_config(certificate, options.clients_need_certs));
        config.extend([
            ("tls-cluster", "yes".into()),
            ("tls-replication", "yes".into()),
        ]);
        let client = TlsClient {
            certificates: certs.client()?,
            host,
        };
        formed(|| {
            let nodes = (0..TLS_MASTERS)
                .map(|_| RedisNode::start_tls_only("tls-cluster", &config, client.clone()))
                .collect::<Result<Vec<_>, _>>()?;
            let cluster = RedisCluster {
                nodes,
                tls: Some(certs.cli_args()),
            };
            cluster.create(0)?;
            cluster.wait_healthy(FORM_TIMEOUT)?;
            Ok(cluster)
        })
    }

    fn create(&self, replicas: usize) -> Result<(), Error> {
        let mut command = Command::new("redis-cli");
        command.args(self.tls.as_deref().unwrap_or_default());
        command.arg("--cluster").arg("create");
        for node in &self.nodes {
            command.arg(node.addr());
        }
        command
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child =
            crate::spawner::spawn(command).map_err(|e| Error::io("running redis-cli", e))?;
        // redis-cli waits without end for a node that missed its MEET: give up in time.
        let deadline = Instant::now() + FORM_TIMEOUT;
        let mut timed_out = false;
        while child
            .try_wait()
            .map_err(|e| Error::io("waiting for redis-cli", e))?
            .is_none()
        {
            if Instant::now() > deadline {
                let _ = child.kill();
                timed_out = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let output = child
            .wait_with_output()
            .map_err(|e| Error::io("waiting for redis-cli", e))?;
        if timed_out || !output.status.success() {
            return Err(Error::Start(format!(
                "redis-cli --cluster create failed or timed out: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )));
        }
        Ok(())
    }

    /// Wait until every running node reports `cluster_state:ok` with all slots served, sees the
    /// same masters, and every running replica is in sync.
    pub fn wait_healthy(&self, timeout: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.health() {
                Ok(()) => return Ok(()),
                Err(why) if Instant::now() > deadline => {
                    return Err(Error::Start(format!(
                        "cluster not healthy after {timeout:?}: {why}"
                    )));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    fn health(&self) -> Result<(), String> {
        let mut masters_seen: Option<Vec<u16>> = None;
        for node in self.nodes.iter().filter(|n| n.is_running()) {
            let info = node
                .query_string(&["CLUSTER", "INFO"])
                .map_err(|e| format!("{}: {e}", node.addr()))?;
            if info_field(&info, "cluster_state") != Some("ok")
                || info_field(&info, "cluster_slots_ok") != Some("16384")
            {
                return Err(format!("{} is not ok yet", node.addr()));
            }
            let mut masters = self.masters_seen_by(node)?;
            masters.sort_unstable();
            if masters_seen.get_or_insert_with(|| masters.clone()) != &masters {
                return Err("nodes disagree on the masters".into());
            }
            let replication = node
                .query_string(&["INFO", "replication"])
                .map_err(|e| e.to_string())?;
            if info_field(&replication, "role") == Some("slave")
                && info_field(&replication, "master_link_status") != Some("up")
            {
                return Err(format!("replica {} is not in sync", node.addr()));
            }
        }
        // Every master that serves slots must be a running node.
        let running: Vec<u16> = self.running_ports();
        match masters_seen {
            Some(masters) if masters.iter().all(|p| running.contains(p)) => Ok(()),
            Some(_) => Err("a dead master still owns slots".into()),
            None => Err("no node runs".into()),
        }
    }

    /// Ports of the masters that own slots, as `node` sees them.
    fn masters_seen_by(&self, node: &RedisNode) -> Result<Vec<u16>, String> {
        let text = node
            .query_string(&["CLUSTER", "NODES"])
            .map_err(|e| e.to_string())?;
        Ok(text
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split(' ').collect();
                let is_master = fields.get(2)?.split(',').any(|f| f == "master");
                let failed = fields.get(2)?.contains("fail");
                let owns_slots = fields.len() > 8;
                let port = fields.get(1)?.split(['@', ':']).nth(1)?.parse().ok()?;
                (is_master && !failed && owns_slots).then_some(port)
            })
            .collect())
    }

    fn running_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.is_running())
            .map(RedisNode::port)
            .collect()
    }

    /// `redis+cluster://127.0.0.1:p1,127.0.0.1:p2,...` over every node (`rediss+cluster://`
    /// for a TLS Cluster).
    pub fn url(&self) -> String {
        let addrs: Vec<String> = self
            .nodes
            .iter()
            .map(|node| format!("{}:{}", node.host(), node.port()))
            .collect();
        let scheme = if self.tls.is_some() {
            "rediss+cluster"
        } else {
            "redis+cluster"
        };
        format!("{scheme}://{}", addrs.join(","))
    }

    /// The nodes.
    pub fn nodes(&self) -> &[RedisNode] {
        &self.nodes
    }

    /// The index of the running node that is master of `key`'s slot.
    pub fn master_of(&self, key: &str) -> Result<usize, Error> {
        let probe = self
            .nodes
            .iter()
            .find(|n| n.is_running())
            .ok_or_else(|| Error::Start("no node runs".into()))?;
        let slot: i64 = probe.query(&["CLUSTER", "KEYSLOT", key])?;
        for (i, node) in self.nodes.iter().enumerate() {
            if !node.is_running() {
                continue;
            }
            let replication = node.query_string(&["INFO", "replication"])?;
            if info_field(&replication, "role") != Some("master") {
                continue;
            }
            let slots: redis::Value = node.query(&["CLUSTER", "SLOTS"])?;
            if slots_owner_port(&slots, slot) == Some(node.port()) {
                return Ok(i);
            }
        }
        Err(Error::Start(format!("no running master owns slot {slot}")))
    }

    /// The indexes of the running masters.
    pub fn masters(&self) -> Result<Vec<usize>, Error> {
        let mut masters = Vec::new();
        for (i, node) in self.nodes.iter().enumerate() {
            if !node.is_running() {
                continue;
            }
            let replication = node.query_string(&["INFO", "replication"])?;
            if info_field(&replication, "role") == Some("master") {
                masters.push(i);
            }
        }
        Ok(masters)
    }

    /// Move `slots` slots from the master at index `from` to the master at index `to` with
    /// `redis-cli --cluster reshard`: slot by slot, each opened (`MIGRATING`/`IMPORTING`), its
    /// keys moved with `MIGRATE`, then given to `to`, while clients go on (`ASK`, `TRYAGAIN`,
    /// then `MOVED`).
    pub fn reshard(&self, from: usize, to: usize, slots: u32) -> Result<(), Error> {
        let id = |index: usize| -> Result<String, Error> {
            self.nodes[index].query_string(&["CLUSTER", "MYID"])
        };
        let (from_id, to_id) = (id(from)?, id(to)?);
        let deadline = Instant::now() + FORM_TIMEOUT;
        loop {
            let mut command = Command::new("redis-cli");
            command
                .args(self.tls.as_deref().unwrap_or_default())
                .arg("--cluster")
                .arg("reshard")
                .arg(self.nodes[from].addr())
                .args(["--cluster-from", &from_id, "--cluster-to", &to_id])
                .args(["--cluster-slots", &slots.to_string(), "--cluster-yes"])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let child =
                crate::spawner::spawn(command).map_err(|e| Error::io("running redis-cli", e))?;
            let output = child
                .wait_with_output()
                .map_err(|e| Error::io("waiting for redis-cli", e))?;
            let stdout = String::from_utf8_lossy(&output.stdout);
            // Right after a reshard the nodes may not all know its new configuration yet:
            // redis-cli then refuses before it moves anything, so try again.
            if stdout.contains("Nodes don't agree about configuration") && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            // redis-cli exits 0 even when a MIGRATE failed; it then prints `[ERR]`.
            if !output.status.success() || stdout.contains("[ERR]") {
                return Err(Error::Start(format!(
                    "redis-cli --cluster reshard failed: {}{}",
                    stdout.lines().rev().take(5).collect::<Vec<_>>().join("\n"),
                    String::from_utf8_lossy(&output.stderr)
                )));
            }
            return Ok(());
        }
    }

    /// Kill (SIGKILL) the master of `key`'s slot and return its index; its replica takes over
    /// after about `cluster-node-timeout` (wait with [`Self::wait_healthy`]).
    pub fn kill_master_of(&self, key: &str) -> Result<usize, Error> {
        let index = self.master_of(key)?;
        self.nodes[index].kill();
        Ok(index)
    }
}

/// The port of the master serving `slot` in a `CLUSTER SLOTS` reply.
fn slots_owner_port(slots: &redis::Value, slot: i64) -> Option<u16> {
    let redis::Value::Array(ranges) = slots else {
        return None;
    };
    ranges.iter().find_map(|range| {
        let redis::Value::Array(fields) = range else {
            return None;
        };
        let (redis::Value::Int(start), redis::Value::Int(end)) = (fields.first()?, fields.get(1)?)
        else {
            return None;
        };
        if !(*start..=*end).contains(&slot) {
            return None;
        }
        let redis::Value::Array(master) = fields.get(2)? else {
            return None;
        };
        match master.get(1)? {
            redis::Value::Int(port) => u16::try_from(*port).ok(),
            _ => None,
        }
    })
}
