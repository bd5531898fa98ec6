//! Connections: one multiplexed redis-rs connection per topology, reconnecting on its own,
//! with the batching rule (`batch.rs`) in front of it.
//!
//! - standalone (`redis://`, `valkey://`, over TLS `rediss://`, `valkeys://`, RESP2 or
//!   `?protocol=resp3`): a [`ConnectionManager`], which pipelines concurrent calls on one
//!   socket and reconnects in the background;
//! - Cluster (`redis+cluster://`, `rediss+cluster://`): [`Cluster`], the async cluster
//!   client (which follows `MOVED`/`ASK` and refreshes its slot map after failovers) and a map
//!   of which node serves which slot, so that batches go per node;
//! - Sentinel (`redis+sentinel://`, `rediss+sentinel://`): [`SentinelMaster`], a multiplexed
//!   connection to the master the Sentinels name, resolved again after connection or
//!   `READONLY` errors.
//!
//! Script calls of one policy go through the batching rule on every topology.
//!
//! Every topology connects lazily: a store can be built while Redis is down and starts working
//! when it comes up.

use std::path::PathBuf;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::{FromRedisValue, RedisResult, TlsCertificates, Value};
use std::sync::Arc;

use crate::batch::{Answer, Batchable, Batcher, Lane, Link, Wait};
use crate::cluster::Cluster;
use crate::error::RedisStoreError;
use crate::sentinel::SentinelMaster;

/// Files for TLS beyond the system's root certificates.
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    /// PEM file of the CA that signed the server certificate (default: the system roots).
    pub ca_cert: Option<PathBuf>,
    /// PEM client certificate, for servers that require mutual TLS (with `client_key`).
    pub client_cert: Option<PathBuf>,
    /// PEM private key of `client_cert`.
    pub client_key: Option<PathBuf>,
}

/// How to connect, besides the URL.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Time allowed to open a connection.
    pub connect_timeout: Duration,
    /// Time allowed for a reply before the call fails.
    pub response_timeout: Duration,
    /// Extra TLS files (used by `rediss` URLs).
    pub tls: Option<TlsFiles>,
    /// Credentials for the Sentinels themselves, when they require them (the URL's user and
    /// password are for the master).
    pub sentinel_username: Option<String>,
    /// See `sentinel_username`.
    pub sentinel_password: Option<String>,
    /// **Tests only**: every batchable call in the batch form, even alone.
    pub batch_always: bool,
}

/// One second to connect and one to answer, no extra TLS files or Sentinel credentials (as
/// [`crate::RedisOptions::default`]).
impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(1),
            tls: None,
            sentinel_username: None,
            sentinel_password: None,
            batch_always: false,
        }
    }
}

/// Milliseconds a Cluster call waits before it is retried (after `TRYAGAIN`, `CLUSTERDOWN`):
/// from the first, doubling up to the last.
const CLUSTER_RETRY_WAIT_MS: std::ops::Range<u64> = 5..100;

/// A connection to whichever topology the URL names, with the batching rule in front.
pub(crate) struct Connection {
    client: Arc<Client>,
    batcher: Arc<Batcher>,
    listen: Listen,
}

/// Where to subscribe to the store's own notifications (`overrides.rs`): any node hears a
/// `PUBLISH`, since a Cluster broadcasts it to every node and a replica repeats its master's.
enum Listen {
    /// The server of a standalone URL, or each node of a Cluster URL, in turn.
    Nodes(Vec<redis::Client>),
    /// The master the Sentinels name.
    Sentinel,
}

/// The redis-rs connection of a topology. One per store, behind an `Arc`: the size of its
/// largest variant costs nothing per call.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Client {
    Single(ConnectionManager),
    Cluster(Arc<Cluster>),
    Sentinel(SentinelMaster),
}

impl Connection {
    /// Parse `url` and prepare a lazy connection.
    pub(crate) fn open(url: &str, options: &ConnectOptions) -> Result<Self, RedisStoreError> {
        let (client, listen) = Client::open(url, options)?;
        Ok(Connection {
            client: Arc::new(client),
            batcher: Arc::new(Batcher::new(options.batch_always)),
            listen,
        })
    }

    /// A client to subscribe with, on the `attempt`-th try (each try the next node).
    pub(crate) async fn listener(&self, attempt: usize) -> RedisResult<redis::Client> {
        match (&self.listen, &*self.client) {
            (Listen::Nodes(nodes), _) if !nodes.is_empty() => {
                Ok(nodes[attempt % nodes.len()].clone())
            }
            (_, Client::Sentinel(master)) => master.master_client().await,
            _ => Err(redis::RedisError::from((
                redis::ErrorKind::Client,
                "no node to subscribe to",
            ))),
        }
    }

    /// Run a pipeline on one connection (on a Cluster: to the node of its keys' slot).
    pub(crate) async fn pipeline<T: FromRedisValue>(
        &self,
        pipeline: &redis::Pipeline,
    ) -> RedisResult<T> {
        match &*self.client {
            Client::Single(manager) => pipeline.query_async(&mut manager.clone()).await,
            Client::Cluster(cluster) => {
                pipeline.query_async(&mut cluster.connection().await?).await
            }
            Client::Sentinel(sentinel) => sentinel.pipeline(pipeline).await,
        }
    }

    /// Run one script call (its reply, a server error as `Err`, and the replicas that
    /// acknowledged it when it waits for them) through the batching rule.
    pub(crate) async fn eval(&self, call: &impl Batchable) -> RedisResult<Answer> {
        self.batcher.run(&self.client, call).await
    }

    /// Run one command.
    pub(crate) async fn query<T: FromRedisValue>(&self, command: &redis::Cmd) -> RedisResult<T> {
        self.client.query(command).await
    }

    /// `ROLE` of every master this connection writes to: the one master of a standalone or
    /// Sentinel URL (named `None`), each master of a Cluster by its address.
    pub(crate) async fn roles(&self) -> RedisResult<Vec<(Option<String>, Value)>> {
        let role = redis::cmd("ROLE");
        match &*self.client {
            Client::Cluster(cluster) => cluster.on_every_master(role).await,
            client => Ok(vec![(None, client.query(&role).await?)]),
        }
    }
}

impl Link for Client {
    async fn run(&self, command: redis::Cmd, wait: Option<Wait>) -> RedisResult<Answer> {
        match self {
            Client::Single(manager) => answer(&mut manager.clone(), command, wait).await,
            Client::Cluster(cluster) => {
                answer(&mut cluster.connection().await?, command, wait).await
            }
            Client::Sentinel(sentinel) => sentinel.answer(command, wait).await,
        }
    }

    /// On a Cluster, the node that serves `slot` (by the slot map), or the slot itself until
    /// the map is known or where nodes refuse cross-slot scripts.
    fn lane(&self, slot: impl FnOnce() -> u16) -> Lane {
        match self {
            Client::Cluster(cluster) => {
                let slot = slot();
                cluster.node_of(slot).map_or(Lane::Slot(slot), Lane::Node)
            }
            Client::Single(_) | Client::Sentinel(_) => Lane::Connection,
        }
    }

    async fn run_on(
        &self,
        slot: u16,
        command: redis::Cmd,
        wait: Option<Wait>,
    ) -> RedisResult<Answer> {
        match self {
            Client::Cluster(cluster) => cluster.run_on(slot, command, wait).await,
            _ => self.run(command, wait).await,
        }
    }

    fn misrouted(&self) {
        if let Client::Cluster(cluster) = self {
            cluster.refresh();
        }
    }

    fn refuse_cross_slot(&self) {
        if let Client::Cluster(cluster) = self {
            cluster.refuse_cross_slot();
        }
    }
}

/// A command's reply as Redis sent it: only an error in its place is an `Err`; errors inside
/// an array (one call of a batch that failed) stay values.
pub(crate) async fn reply(
    connection: &mut impl redis::aio::ConnectionLike,
    command: &redis::Cmd,
) -> RedisResult<Value> {
    match connection.req_packed_command(command).await? {
        Value::ServerError(error) => Err(error.into()),
        value => Ok(value),
    }
}

/// `command`'s reply as [`reply`] gives it; with `wait`, `command` and the `WAIT` go as one
/// pipeline on `connection`, so that the `WAIT` counts the replicas holding its writes.
pub(crate) async fn answer(
    connection: &mut impl redis::aio::ConnectionLike,
    command: redis::Cmd,
    wait: Option<Wait>,
) -> RedisResult<Answer> {
    Request::new(command, wait).send(connection).await
}

/// A command ready to be sent (and sent again, after `READONLY`): alone, or with its `WAIT`.
pub(crate) enum Request {
    Alone(redis::Cmd),
    Acknowledged(redis::Pipeline),
}

impl Request {
    pub(crate) fn new(command: redis::Cmd, wait: Option<Wait>) -> Self {
        match wait {
            None => Request::Alone(command),
            Some(wait) => Request::Acknowledged(wait.after(command)),
        }
    }

    /// Send it on `connection`: see [`answer`].
    pub(crate) async fn send(
        &self,
        connection: &mut impl redis::aio::ConnectionLike,
    ) -> RedisResult<Answer> {
        match self {
            Request::Alone(command) => reply(connection, command).await.map(Answer::alone),
            Request::Acknowledged(pipeline) => {
                acknowledged(connection.req_packed_commands(pipeline, 0, 2).await?)
            }
        }
    }
}

/// The replies of a command and the `WAIT` behind it ([`Wait::after`]): the command's reply
/// (its server error as `Err`), and the count of replicas. A `WAIT` that failed fails the
/// call: its writes may have happened, unacknowledged.
pub(crate) fn acknowledged(replies: Vec<Value>) -> RedisResult<Answer> {
    let mut replies = replies.into_iter();
    let (Some(value), Some(acked), None) = (replies.next(), replies.next(), replies.next()) else {
        return Err(redis::RedisError::from((
            redis::ErrorKind::Parse,
            "expected two replies to a command and WAIT",
        )));
    };
    let value = match value {
        Value::ServerError(error) => return Err(error.into()),
        value => value,
    };
    let acked = match acked {
        // More replicas than `u32` holds acknowledged at least as many as asked.
        Value::Int(count) => u32::try_from(count.max(0)).unwrap_or(u32::MAX),
        Value::ServerError(error) => return Err(error.into()),
        other => {
            return Err(redis::RedisError::from((
                redis::ErrorKind::Parse,
                "WAIT answered with no count",
                format!("{other:?}"),
            )));
        }
    };
    Ok(Answer {
        value,
        acked: Some(acked),
    })
}

/// The topology a store URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// `redis://`, `rediss://`, `valkey://`, `valkeys://`.
    Standalone,
    /// `redis+cluster://`, `rediss+cluster://`.
    Cluster,
    /// `redis+sentinel://`, `rediss+sentinel://`.
    Sentinel,
}

/// Check a store URL without connecting: the one parser of the URLs
/// [`RedisStore::connect`](crate::RedisStore::connect) accepts, for programs that take URLs
/// from users (a config file, a flag) and want to refuse a bad one early. Accepts exactly what
/// `connect` accepts.
pub fn check_url(url: &str) -> Result<Topology, RedisStoreError> {
    let invalid = |reason: String| RedisStoreError::InvalidUrl {
        url: redact(url),
        reason,
    };
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| invalid("expected scheme://...".into()))?;
    // redis-rs reads `#insecure` as "skip certificate verification", which this build leaves
    // out: such a URL would parse and then fail every connection. Any fragment is refused, by
    // its name; it is looked for after the credentials only, so no password is ever echoed.
    let after_credentials = rest.rsplit_once('@').map_or(rest, |(_, hosts)| hosts);
    if let Some((_, fragment)) = after_credentials.split_once('#') {
        return Err(invalid(format!(
            "URL fragment `#{fragment}` is not supported: certificate verification cannot be \
             turned off; trust a private CA instead (SSL_CERT_FILE, or RedisOptions::tls)"
        )));
    }
    match scheme {
        "redis" | "rediss" | "valkey" | "valkeys" => {
            redis::Client::open(url).map_err(|e| invalid(e.to_string()))?;
            Ok(Topology::Standalone)
        }
        "redis+cluster" | "rediss+cluster" => {
            cluster_nodes(scheme, rest).map_err(invalid)?;
            Ok(Topology::Cluster)
        }
        "redis+sentinel" | "rediss+sentinel" => {
            let options = ConnectOptions::default();
            SentinelMaster::build(rest, scheme == "rediss+sentinel", None, &options)
                .map_err(invalid)?;
            Ok(Topology::Sentinel)
        }
        other => Err(invalid(format!(
            "unknown scheme `{other}` (expected redis, rediss, valkey, valkeys, \
             redis+cluster, rediss+cluster, redis+sentinel or rediss+sentinel)"
        ))),
    }
}

/// The node URLs of a `redis+cluster://` (or `rediss+cluster://`) URL's `rest`.
fn cluster_nodes(scheme: &str, rest: &str) -> Result<Vec<String>, String> {
    let multi = MultiHost::parse(rest)?;
    if !matches!(multi.path, "" | "/" | "/0") {
        return Err("a Cluster has no database number".into());
    }
    let node_scheme = if scheme == "rediss+cluster" {
        "rediss"
    } else {
        "redis"
    };
    let nodes: Vec<String> = multi
        .hosts
        .iter()
        .map(|host| format!("{node_scheme}://{}{host}", multi.userinfo))
        .collect();
    for node in &nodes {
        redis::Client::open(node.as_str()).map_err(|e| e.to_string())?;
    }
    Ok(nodes)
}

impl Client {
    /// Parse `url` and prepare a lazy connection, with where to subscribe.
    fn open(url: &str, options: &ConnectOptions) -> Result<(Self, Listen), RedisStoreError> {
        let invalid = |reason: String| RedisStoreError::InvalidUrl {
            url: redact(url),
            reason,
        };
        check_url(url)?;
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| invalid("expected scheme://...".into()))?;
        let certificates = options.tls.as_ref().map(read_tls_files).transpose()?;
        if scheme.starts_with("rediss") || scheme.starts_with("valkeys") {
            // rustls needs a process-wide crypto provider; another crate may have installed one.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        match scheme {
            "redis" | "rediss" | "valkey" | "valkeys" => {
                let client = match certificates {
                    Some(certs) => redis::Client::build_with_tls(url, certs),
                    None => redis::Client::open(url),
                }
                .map_err(|e| invalid(e.to_string()))?;
                // Few retries per reconnection: every call that finds the connection broken
                // starts another, so a long retry series would only make failures slow.
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(options.connect_timeout))
                    .set_response_timeout(Some(options.response_timeout))
                    .set_number_of_retries(1)
                    .set_min_delay(Duration::from_millis(50))
                    .set_max_delay(Duration::from_millis(500));
                let listen = Listen::Nodes(vec![client.clone()]);
                let manager = ConnectionManager::new_lazy_with_config(client, config)
                    .map_err(|e| invalid(e.to_string()))?;
                Ok((Client::Single(manager), listen))
            }
            "redis+cluster" | "rediss+cluster" => {
                let nodes = cluster_nodes(scheme, rest).map_err(invalid)?;
                let listen = nodes
                    .iter()
                    .map(|node| match &certificates {
                        Some(certs) => redis::Client::build_with_tls(node.as_str(), certs.clone()),
                        None => redis::Client::open(node.as_str()),
                    })
                    .collect::<RedisResult<Vec<_>>>()
                    .map_err(|e| invalid(e.to_string()))?;
                // Short waits before a retry (TRYAGAIN while a slot's keys move, CLUSTERDOWN
                // during a failover): those last milliseconds, and redis-rs's default first
                // wait (1.28 s) outlasts a decision's whole response timeout.
                let mut builder = ClusterClientBuilder::new(nodes)
                    .connection_timeout(options.connect_timeout)
                    .response_timeout(options.response_timeout)
                    .min_retry_wait(CLUSTER_RETRY_WAIT_MS.start)
                    .max_retry_wait(CLUSTER_RETRY_WAIT_MS.end);
                if let Some(certs) = certificates {
                    builder = builder.certs(certs);
                }
                let client = builder.build().map_err(|e| invalid(e.to_string()))?;
                Ok((
                    Client::Cluster(Arc::new(Cluster::new(client))),
                    Listen::Nodes(listen),
                ))
            }
            "redis+sentinel" | "rediss+sentinel" => {
                let tls = scheme == "rediss+sentinel";
                let master =
                    SentinelMaster::build(rest, tls, certificates, options).map_err(invalid)?;
                Ok((Client::Sentinel(master), Listen::Sentinel))
            }
            // `check_url` refused every other scheme above.
            other => Err(invalid(format!("unknown scheme `{other}`"))),
        }
    }

    /// Run one command.
    async fn query<T: FromRedisValue>(&self, command: &redis::Cmd) -> RedisResult<T> {
        match self {
            Client::Single(manager) => command.query_async(&mut manager.clone()).await,
            Client::Cluster(cluster) => command.query_async(&mut cluster.connection().await?).await,
            Client::Sentinel(sentinel) => sentinel.query(command).await,
        }
    }
}

/// `[user[:password]@]host:port,host:port[/path]` of the multi-host schemes.
pub(crate) struct MultiHost<'a> {
    /// `user:password@` as given (empty when absent), prefixed to each node URL.
    pub(crate) userinfo: &'a str,
    pub(crate) hosts: Vec<&'a str>,
    pub(crate) path: &'a str,
}

impl<'a> MultiHost<'a> {
    pub(crate) fn parse(rest: &'a str) -> Result<Self, String> {
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let (userinfo, hosts) = match authority.rfind('@') {
            Some(i) => (&authority[..=i], &authority[i + 1..]),
            None => ("", authority),
        };
        let hosts: Vec<&str> = hosts.split(',').filter(|h| !h.is_empty()).collect();
        if hosts.is_empty() {
            return Err("expected at least one host:port".into());
        }
        Ok(MultiHost {
            userinfo,
            hosts,
            path,
        })
    }

    /// User and password from the userinfo, percent-decoded.
    pub(crate) fn credentials(&self) -> Result<(Option<String>, Option<String>), String> {
        let info = self.userinfo.trim_end_matches('@');
        if info.is_empty() {
            return Ok((None, None));
        }
        let (user, password) = match info.split_once(':') {
            Some((u, p)) => (u, Some(p)),
            None => (info, None),
        };
        let user = Some(percent_decode(user)?).filter(|u| !u.is_empty());
        let password = password.map(percent_decode).transpose()?;
        Ok((user, password))
    }
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("bad percent-encoding in the credentials")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "credentials are not UTF-8".into())
}

fn read_tls_files(files: &TlsFiles) -> Result<TlsCertificates, RedisStoreError> {
    let read = |path: &PathBuf| {
        std::fs::read(path).map_err(|source| RedisStoreError::TlsFile {
            path: path.display().to_string(),
            source,
        })
    };
    let root_cert = files.ca_cert.as_ref().map(read).transpose()?;
    let client_tls = match (&files.client_cert, &files.client_key) {
        (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
            client_cert: read(cert)?,
            client_key: read(key)?,
        }),
        _ => None,
    };
    Ok(TlsCertificates {
        client_tls,
        root_cert,
    })
}

/// `url` with the password replaced by `***`, for error messages and logs.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    // The last `@` of the whole URL ends the userinfo: a password may itself contain `/` or `@`
    // (an unparseable URL is still printed in errors), and hosts never contain `@`.
    match rest.rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            let masked = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                "***".to_owned()
            };
            format!("{scheme}://{masked}{}", &rest[at..])
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_with_slashes_are_masked_too() {
        let shown = redact("redis://:ab/cd@host:6379");
        assert!(
            !shown.contains("ab/cd") && !shown.contains("cd@"),
            "{shown}"
        );
        assert_eq!(redact("redis://u:p/q@h:1/2"), "redis://u:***@h:1/2");
    }

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact("redis://app:s3cret@127.0.0.1:6379/2"),
            "redis://app:***@127.0.0.1:6379/2"
        );
        assert_eq!(redact("rediss://:s3cret@h:1"), "rediss://:***@h:1");
        assert_eq!(redact("redis://h:1"), "redis://h:1");
        assert_eq!(
            redact("redis+sentinel://u:p@a:1,b:2/mymaster"),
            "redis+sentinel://u:***@a:1,b:2/mymaster"
        );
    }

    #[test]
    fn multi_host_urls_parse() {
        let m = MultiHost::parse("u:p%40ss@a:1,b:2/mymaster/3").unwrap();
        assert_eq!(m.hosts, ["a:1", "b:2"]);
        assert_eq!(m.path, "/mymaster/3");
        assert_eq!(
            m.credentials().unwrap(),
            (Some("u".into()), Some("p@ss".into()))
        );
        assert!(MultiHost::parse("/x").is_err());
    }

    #[test]
    fn a_command_and_its_wait_answer_together_or_fail() {
        let error = |text: &str| redis::parse_redis_value(text.as_bytes()).unwrap();
        let reply = Value::BulkString(b"decisions".to_vec());
        assert_eq!(
            acknowledged(vec![reply.clone(), Value::Int(2)]).unwrap(),
            Answer {
                value: reply.clone(),
                acked: Some(2)
            }
        );
        // The script failed: its error, whatever the WAIT said.
        let noscript = acknowledged(vec![
            error("-NOSCRIPT No matching script\r\n"),
            Value::Int(1),
        ]);
        assert_eq!(
            noscript.unwrap_err().kind(),
            redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
        );
        // The WAIT failed, or answered no count: the writes are unacknowledged, the call fails.
        for wait in [
            error("-ERR WAIT cannot be used with replica instances\r\n"),
            Value::Nil,
        ] {
            assert!(acknowledged(vec![reply.clone(), wait]).is_err());
        }
        assert!(acknowledged(vec![reply.clone()]).is_err());
        assert!(acknowledged(vec![reply.clone(), Value::Int(1), Value::Int(1)]).is_err());
        // A negative count (never sent by Redis) is none.
        assert_eq!(
            acknowledged(vec![reply, Value::Int(-1)]).unwrap().acked,
            Some(0)
        );
    }

    #[tokio::test]
    async fn bad_urls_are_typed_errors() {
        let options = ConnectOptions::default();
        for url in [
            "127.0.0.1:6379",
            "http://127.0.0.1",
            "redis+cluster://",
            "redis+cluster://a:1/2",
            "redis+sentinel://a:1",
            "redis+sentinel://a/master",
            "redis+sentinel://a:1/master/x",
        ] {
            assert!(
                matches!(
                    Connection::open(url, &options),
                    Err(RedisStoreError::InvalidUrl { .. })
                ),
                "{url}"
            );
        }
    }

    /// `#insecure` would parse and then fail every connection (this build cannot skip
    /// certificate checks): refused up front, by name, on every scheme; a password keeps its
    /// `#` percent-encoded.
    #[test]
    fn url_fragments_are_refused_by_name() {
        for url in [
            "rediss://127.0.0.1:6380/#insecure",
            "valkeys://h:1#insecure",
            "rediss+cluster://a:1,b:2#insecure",
            "rediss+sentinel://a:1/mymaster#insecure",
            "redis://h:1/0#x",
        ] {
            let error = check_url(url).unwrap_err().to_string();
            assert!(error.contains("URL fragment `#"), "{url}: {error}");
            assert!(error.contains("SSL_CERT_FILE"), "{url}: {error}");
        }
        assert!(check_url("redis://user:pa%23ss@h:1").is_ok());
    }
}
