//! Connections: one multiplexed connection per topology, reconnecting on its own.
//!
//! - standalone over plain TCP (`redis://`, `valkey://`): [`TcpConnection`], which pipelines
//!   concurrent calls on one socket with no task hand-off on the way out (see `tcp.rs`), and
//!   reconnects on the next call after a failure;
//! - standalone over TLS (`rediss://`, `valkeys://`) or with `?protocol=resp3`: a
//!   [`ConnectionManager`], which pipelines concurrent calls on one socket and reconnects in
//!   the background;
//! - Cluster (`redis+cluster://`, `rediss+cluster://`): the async cluster client, which
//!   follows `MOVED`/`ASK` and refreshes its slot map after failovers;
//! - Sentinel (`redis+sentinel://`, `rediss+sentinel://`): [`SentinelMaster`], a multiplexed
//!   connection to the master the Sentinels name, resolved again after connection or
//!   `READONLY` errors.
//!
//! Every topology connects lazily: a store can be built while Redis is down and starts working
//! when it comes up.

use std::path::PathBuf;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{ConnectionAddr, FromRedisValue, ProtocolVersion, RedisResult, TlsCertificates, Value};

use crate::arguments::Resp;
use crate::error::RedisStoreError;
use crate::script::ScriptCall;
use crate::sentinel::SentinelMaster;
use crate::tcp::{Endpoint, TcpConnection};

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
}

/// A connection to whichever topology the URL names.
pub(crate) enum Connection {
    Tcp(TcpConnection),
    Single(ConnectionManager),
    Cluster(LazyCluster),
    Sentinel(SentinelMaster),
}

impl Connection {
    /// Parse `url` and prepare a lazy connection.
    pub(crate) fn open(url: &str, options: &ConnectOptions) -> Result<Self, RedisStoreError> {
        let invalid = |reason: String| RedisStoreError::InvalidUrl {
            url: redact(url),
            reason,
        };
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| invalid("expected scheme://...".into()))?;
        let certificates = options.tls.as_ref().map(read_tls_files).transpose()?;
        if scheme.starts_with("rediss") {
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
                if let Some(endpoint) = plain_tcp(client.get_connection_info()) {
                    return Ok(Connection::Tcp(TcpConnection::new(
                        endpoint,
                        options.connect_timeout,
                        options.response_timeout,
                    )));
                }
                // Few retries per reconnection: every call that finds the connection broken
                // starts another, so a long retry series would only make failures slow.
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(options.connect_timeout))
                    .set_response_timeout(Some(options.response_timeout))
                    .set_number_of_retries(1)
                    .set_min_delay(Duration::from_millis(50))
                    .set_max_delay(Duration::from_millis(500));
                let manager = ConnectionManager::new_lazy_with_config(client, config)
                    .map_err(|e| invalid(e.to_string()))?;
                Ok(Connection::Single(manager))
            }
            "redis+cluster" | "rediss+cluster" => {
                let multi = MultiHost::parse(rest).map_err(invalid)?;
                if !matches!(multi.path, "" | "/" | "/0") {
                    return Err(invalid("a Cluster has no database number".into()));
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
                let mut builder = ClusterClientBuilder::new(nodes)
                    .connection_timeout(options.connect_timeout)
                    .response_timeout(options.response_timeout);
                if let Some(certs) = certificates {
                    builder = builder.certs(certs);
                }
                let client = builder.build().map_err(|e| invalid(e.to_string()))?;
                Ok(Connection::Cluster(LazyCluster {
                    client,
                    connection: tokio::sync::OnceCell::new(),
                }))
            }
            "redis+sentinel" | "rediss+sentinel" => {
                let tls = scheme == "rediss+sentinel";
                let master =
                    SentinelMaster::build(rest, tls, certificates, options).map_err(invalid)?;
                Ok(Connection::Sentinel(master))
            }
            other => Err(invalid(format!(
                "unknown scheme `{other}` (expected redis, rediss, valkey, valkeys, \
                 redis+cluster, rediss+cluster, redis+sentinel or rediss+sentinel)"
            ))),
        }
    }

    /// Run a pipeline on one connection (on a Cluster: to the node of its keys' slot).
    pub(crate) async fn pipeline<T: FromRedisValue>(
        &self,
        pipeline: &redis::Pipeline,
    ) -> RedisResult<T> {
        match self {
            Connection::Tcp(tcp) => Ok(T::from_redis_value(tcp.pipeline(pipeline).await?)?),
            Connection::Single(manager) => pipeline.query_async(&mut manager.clone()).await,
            Connection::Cluster(cluster) => {
                pipeline.query_async(&mut cluster.connection().await?).await
            }
            Connection::Sentinel(sentinel) => sentinel.pipeline(pipeline).await,
        }
    }

    /// Run one script call (its reply, a server error as `Err`).
    pub(crate) async fn eval(&self, call: &ScriptCall<'_>) -> RedisResult<Value> {
        match self {
            Connection::Tcp(tcp) => match call.batch() {
                Some(batch) => {
                    tcp.batched(batch, |keys, arguments| call.write_batched(keys, arguments))
                        .await
                }
                None => {
                    tcp.command_with(|out| {
                        let mut resp = Resp::new(out, call.count());
                        call.write(&mut resp);
                        resp.finish();
                    })
                    .await
                }
            },
            _ => self.query(&call.to_cmd()).await,
        }
    }

    /// Run one command.
    pub(crate) async fn query<T: FromRedisValue>(&self, command: &redis::Cmd) -> RedisResult<T> {
        match self {
            Connection::Tcp(tcp) => Ok(T::from_redis_value(tcp.command(command).await?)?),
            Connection::Single(manager) => command.query_async(&mut manager.clone()).await,
            Connection::Cluster(cluster) => {
                command.query_async(&mut cluster.connection().await?).await
            }
            Connection::Sentinel(sentinel) => sentinel.query(command).await,
        }
    }
}

/// Where a plain-TCP RESP2 URL points, for [`TcpConnection`]; `None` for TLS and RESP3.
fn plain_tcp(info: &redis::ConnectionInfo) -> Option<Endpoint> {
    let ConnectionAddr::Tcp(host, port) = info.addr() else {
        return None;
    };
    let settings = info.redis_settings();
    if settings.protocol() != ProtocolVersion::RESP2 {
        return None;
    }
    Some(Endpoint {
        host: host.clone(),
        port: *port,
        username: settings.username().map(str::to_owned),
        password: settings.password().map(str::to_owned),
        db: settings.db(),
    })
}

/// The async cluster connection, opened on first use (and again while that fails).
pub(crate) struct LazyCluster {
    client: redis::cluster::ClusterClient,
    connection: tokio::sync::OnceCell<ClusterConnection>,
}

impl LazyCluster {
    async fn connection(&self) -> RedisResult<ClusterConnection> {
        self.connection
            .get_or_try_init(|| self.client.get_async_connection())
            .await
            .cloned()
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

    #[tokio::test]
    async fn bad_urls_are_typed_errors() {
        let options = ConnectOptions {
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(1),
            tls: None,
            sentinel_username: None,
            sentinel_password: None,
        };
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
}
