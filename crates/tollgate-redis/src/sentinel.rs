//! Following the master that the Sentinels name, across failovers.
//!
//! The `redis` crate's Sentinel client resolves the master once and never moves an existing
//! connection; it also reads `SENTINEL MASTERS`, which keeps naming the old master until a
//! failover has completely ended. Here every resolution asks each Sentinel in turn for
//! `SENTINEL GET-MASTER-ADDR-BY-NAME` (which names the promoted replica as soon as it is
//! promoted) and takes the first named node that says `ROLE` master. The resulting multiplexed
//! connection is kept until it fails: on a connection error or `READONLY` (the node was demoted)
//! that connection is dropped and the next call resolves again. A call refused with `READONLY`
//! wrote nothing, so it is retried once on the new master; a call that failed on a broken
//! connection may have run, so it is not retried.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, ConnectionAddr, ErrorKind, FromRedisValue, IntoConnectionInfo,
    RedisConnectionInfo, RedisError, RedisResult, TlsCertificates, Value,
};

use crate::connection::{ConnectOptions, MultiHost, reply};

/// A multiplexed connection to the current Sentinel-named master.
pub(crate) struct SentinelMaster {
    sentinels: Vec<redis::Client>,
    master_name: String,
    /// `redis` or `rediss`.
    scheme: &'static str,
    /// `user:password@` exactly as given in the URL (still percent-encoded), or empty.
    userinfo: String,
    db: i64,
    certificates: Option<TlsCertificates>,
    config: AsyncConnectionConfig,
    current: Mutex<Option<(u64, MultiplexedConnection)>>,
    generation: AtomicU64,
    /// Held while resolving, so concurrent callers resolve once.
    resolving: tokio::sync::Mutex<()>,
}

impl SentinelMaster {
    /// From the part of a `redis+sentinel://` URL after the scheme:
    /// `[user:pass@]host:port,host:port/<master-name>[/db]`.
    pub(crate) fn build(
        rest: &str,
        tls: bool,
        certificates: Option<TlsCertificates>,
        options: &ConnectOptions,
    ) -> Result<Self, String> {
        let multi = MultiHost::parse(rest)?;
        let mut path = multi.path.trim_start_matches('/').split('/');
        let master_name = path
            .next()
            .filter(|m| !m.is_empty())
            .ok_or("missing the master name: redis+sentinel://host:port,.../<master-name>")?;
        let db = match path.next() {
            Some(db) if !db.is_empty() => db
                .parse::<i64>()
                .map_err(|_| format!("database `{db}` is not a number"))?,
            _ => 0,
        };
        if path.next().is_some() {
            return Err("expected /<master-name>[/db] after the Sentinels".into());
        }
        // Checked here so a bad password encoding fails at startup, not at the first failover.
        multi.credentials()?;
        let mut sentinel_settings = RedisConnectionInfo::default();
        if let Some(user) = &options.sentinel_username {
            sentinel_settings = sentinel_settings.set_username(user);
        }
        if let Some(password) = &options.sentinel_password {
            sentinel_settings = sentinel_settings.set_password(password);
        }
        let sentinels = multi
            .hosts
            .iter()
            .map(|host| {
                let (h, p) = host
                    .rsplit_once(':')
                    .ok_or_else(|| format!("sentinel `{host}` needs a port"))?;
                let port = p
                    .parse::<u16>()
                    .map_err(|_| format!("bad port in `{host}`"))?;
                let host = h.trim_start_matches('[').trim_end_matches(']').to_owned();
                let addr = if tls {
                    ConnectionAddr::TcpTls {
                        host,
                        port,
                        insecure: false,
                        tls_params: None,
                    }
                } else {
                    ConnectionAddr::Tcp(host, port)
                };
                let info = addr
                    .into_connection_info()
                    .map_err(|e| e.to_string())?
                    .set_redis_settings(sentinel_settings.clone());
                match &certificates {
                    Some(certs) => redis::Client::build_with_tls(info, certs.clone()),
                    None => redis::Client::open(info),
                }
                .map_err(|e| e.to_string())
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(SentinelMaster {
            sentinels,
            master_name: master_name.to_owned(),
            scheme: if tls { "rediss" } else { "redis" },
            userinfo: multi.userinfo.to_owned(),
            db,
            certificates,
            config: AsyncConnectionConfig::new()
                .set_connection_timeout(Some(options.connect_timeout))
                .set_response_timeout(Some(options.response_timeout)),
            current: Mutex::new(None),
            generation: AtomicU64::new(0),
            resolving: tokio::sync::Mutex::new(()),
        })
    }

    fn cached(&self) -> Option<(u64, MultiplexedConnection)> {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The current master's connection, resolving it when there is none.
    async fn connection(&self) -> RedisResult<(u64, MultiplexedConnection)> {
        if let Some(current) = self.cached() {
            return Ok(current);
        }
        let _resolving = self.resolving.lock().await;
        if let Some(current) = self.cached() {
            return Ok(current);
        }
        let connection = self.resolve().await?;
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((generation, connection.clone()));
        Ok((generation, connection))
    }

    /// Ask each Sentinel for the master; connect to the first named node that is master.
    async fn resolve(&self) -> RedisResult<MultiplexedConnection> {
        let mut last_error = None;
        for sentinel in &self.sentinels {
            let named = async {
                let mut connection = sentinel
                    .get_multiplexed_async_connection_with_config(&self.config)
                    .await?;
                redis::cmd("SENTINEL")
                    .arg("GET-MASTER-ADDR-BY-NAME")
                    .arg(&self.master_name)
                    .query_async::<Option<(String, u16)>>(&mut connection)
                    .await
            };
            match named.await {
                Ok(Some((host, port))) => match self.connect_master(&host, port).await {
                    Ok(connection) => return Ok(connection),
                    Err(e) => last_error = Some(e),
                },
                Ok(None) => {
                    last_error = Some(RedisError::from((
                        ErrorKind::MasterNameNotFoundBySentinel,
                        "a Sentinel does not know the master",
                        self.master_name.clone(),
                    )))
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| {
            RedisError::from((ErrorKind::MasterNameNotFoundBySentinel, "no Sentinel given"))
        }))
    }

    async fn connect_master(&self, host: &str, port: u16) -> RedisResult<MultiplexedConnection> {
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_owned()
        };
        let url = format!(
            "{}://{}{host}:{port}/{}",
            self.scheme, self.userinfo, self.db
        );
        let client = match &self.certificates {
            Some(certs) => redis::Client::build_with_tls(url.as_str(), certs.clone()),
            None => redis::Client::open(url.as_str()),
        }?;
        let mut connection = client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await?;
        let role: Vec<Value> = redis::cmd("ROLE").query_async(&mut connection).await?;
        let is_master = match role.first() {
            Some(Value::BulkString(bytes)) => bytes == b"master",
            Some(Value::SimpleString(text)) => text == "master",
            _ => false,
        };
        if is_master {
            Ok(connection)
        } else {
            Err(RedisError::from((
                ErrorKind::MasterNameNotFoundBySentinel,
                "the node a Sentinel names is not master (failover in progress)",
                format!("{host}:{port}"),
            )))
        }
    }

    /// Forget the connection of `generation` if it is still the current one.
    fn invalidate(&self, generation: u64) {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if current.as_ref().is_some_and(|(g, _)| *g == generation) {
            *current = None;
        }
    }

    /// Run one command on the master.
    pub(crate) async fn query<T: FromRedisValue>(&self, command: &redis::Cmd) -> RedisResult<T> {
        Ok(T::from_redis_value(
            self.reply(command).await?.extract_error()?,
        )?)
    }

    /// Run one command on the master: its reply as sent (see [`crate::connection::reply`]).
    pub(crate) async fn reply(&self, command: &redis::Cmd) -> RedisResult<Value> {
        let (generation, mut connection) = self.connection().await?;
        let first = reply(&mut connection, command).await;
        if let Err(e) = &first {
            if is_read_only(e) {
                self.invalidate(generation);
                let (_, mut connection) = self.connection().await?;
                return reply(&mut connection, command).await;
            }
            if is_connection_error(e) {
                self.invalidate(generation);
            }
        }
        first
    }

    /// Run a pipeline on the master (retried once on a new master after `READONLY`, like
    /// [`Self::query`]: the refused script wrote nothing).
    pub(crate) async fn pipeline<T: FromRedisValue>(
        &self,
        pipeline: &redis::Pipeline,
    ) -> RedisResult<T> {
        let (generation, mut connection) = self.connection().await?;
        let first = pipeline.query_async(&mut connection).await;
        if let Err(e) = &first {
            if is_read_only(e) {
                self.invalidate(generation);
                let (_, mut connection) = self.connection().await?;
                return pipeline.query_async(&mut connection).await;
            }
            if is_connection_error(e) {
                self.invalidate(generation);
            }
        }
        first
    }
}

/// A write refused by a replica: the master moved.
fn is_read_only(e: &RedisError) -> bool {
    e.kind() == ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
        // A script's error keeps the code of the command that failed inside it.
        || e.code() == Some("READONLY")
}

/// The connection is unusable: resolve the master again next time.
fn is_connection_error(e: &RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout()
}
