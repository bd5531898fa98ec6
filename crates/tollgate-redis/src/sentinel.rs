//! Following the master that the Sentinels name, across failovers.
//!
//! The `redis` crate's Sentinel client resolves the master once and never moves an existing
//! connection; it also reads `SENTINEL MASTERS`, which keeps naming the old master until a
//! failover has completely ended. Here every resolution asks each Sentinel in turn for
//! `SENTINEL GET-MASTER-ADDR-BY-NAME` (which names the promoted replica as soon as it is
//! promoted) and takes the first named node that says `ROLE` master. The resulting multiplexed
//! connection is kept until it fails (a connection error, or `READONLY`: the node was demoted)
//! or until a Sentinel announces a failover: one task per Sentinel subscribes to
//! `+switch-master` and, when it names this master, drops the connection, so the next call
//! connects to the announced master (after checking its `ROLE`). Without that, calls would
//! keep going to the old master until Sentinel demotes it, which can take seconds, and every
//! decision written there meanwhile would be lost when it resyncs as a replica. Between the
//! promotion and its announcement (about a second) calls fail fast rather than write to the old
//! master ([`watch_switches`]): the store's `on_error` decides them, and nothing is lost. A call refused with `READONLY`
//! wrote nothing, so it is retried once on the new master; a call that failed on a broken
//! connection may have run, so it is not retried.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::task::AbortHandle;

use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, ConnectionAddr, ErrorKind, FromRedisValue, IntoConnectionInfo,
    RedisConnectionInfo, RedisError, RedisResult, TlsCertificates, Value,
};

use crate::batch::{Answer, Wait};
use crate::connection::{ConnectOptions, MultiHost, Request};

/// The master in use, and the master a Sentinel announced last.
#[derive(Default)]
struct Current {
    master: Mutex<Master>,
    announced: Mutex<Option<(String, u16)>>,
}

/// The connection in use (with its generation), or until when calls wait out a failover in
/// progress: never both, so the common call finds its connection with one lock, and a pause
/// and the connection it forbids change together.
#[derive(Default)]
struct Master {
    connection: Option<(u64, MultiplexedConnection)>,
    paused_until: Option<Instant>,
}

impl Master {
    fn paused(&self) -> bool {
        self.paused_until
            .is_some_and(|until| Instant::now() < until)
    }
}

/// The longest a failover in progress holds calls back, should its end never be announced.
const FAILOVER_PAUSE: Duration = Duration::from_secs(10);

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
    connect_timeout: Duration,
    current: Arc<Current>,
    generation: AtomicU64,
    /// The `+switch-master` watchers, one per Sentinel, started with the first call.
    watchers: OnceLock<Vec<AbortHandle>>,
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
            connect_timeout: options.connect_timeout,
            current: Arc::new(Current::default()),
            generation: AtomicU64::new(0),
            watchers: OnceLock::new(),
            resolving: tokio::sync::Mutex::new(()),
        })
    }

    fn cached(&self) -> Option<(u64, MultiplexedConnection)> {
        lock(&self.current.master).connection.clone()
    }

    /// The current master's connection, resolving it when there is none. While a failover is
    /// in progress (see [`watch_switches`]) calls fail at once: the old master may still take
    /// writes that the new one will never see.
    async fn connection(&self) -> RedisResult<(u64, MultiplexedConnection)> {
        self.watchers.get_or_init(|| self.watch_switches());
        if let Some(current) = self.cached() {
            return Ok(current);
        }
        let _resolving = self.resolving.lock().await;
        if let Some(current) = self.cached() {
            return Ok(current);
        }
        if lock(&self.current.master).paused() {
            return Err(self.failing_over());
        }
        let connection = self.resolve().await?;
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let mut master = lock(&self.current.master);
        // A failover may have begun while this one resolved (the master it found is the old).
        if master.paused() {
            return Err(self.failing_over());
        }
        master.connection = Some((generation, connection.clone()));
        Ok((generation, connection))
    }

    fn failing_over(&self) -> RedisError {
        RedisError::from((
            ErrorKind::MasterNameNotFoundBySentinel,
            "a failover is in progress: decisions wait for the new master",
            self.master_name.clone(),
        ))
    }

    /// One task per Sentinel following `+switch-master` (see the module docs).
    fn watch_switches(&self) -> Vec<AbortHandle> {
        self.sentinels
            .iter()
            .map(|sentinel| {
                let watch = watch_switches(
                    sentinel.clone(),
                    self.master_name.clone(),
                    Arc::downgrade(&self.current),
                    self.connect_timeout,
                );
                tokio::spawn(watch).abort_handle()
            })
            .collect()
    }

    /// The master a Sentinel announced last, if it says `ROLE` master; else ask each Sentinel
    /// for the master and connect to the first named node that is master.
    async fn resolve(&self) -> RedisResult<MultiplexedConnection> {
        let announced = lock(&self.current.announced).take();
        if let Some((host, port)) = announced {
            if let Ok(connection) = self.connect_master(&host, port).await {
                return Ok(connection);
            }
        }
        let mut last_error = None;
        for sentinel in &self.sentinels {
            match self.named_by(sentinel).await {
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

    /// A client of the master the Sentinels name now, to subscribe with: no `ROLE` check (a
    /// replica repeats its master's messages too).
    pub(crate) async fn master_client(&self) -> RedisResult<redis::Client> {
        let mut last_error = None;
        for sentinel in &self.sentinels {
            match self.named_by(sentinel).await {
                Ok(Some((host, port))) => return self.client_of(&host, port),
                Ok(None) => {}
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| {
            RedisError::from((
                ErrorKind::MasterNameNotFoundBySentinel,
                "no Sentinel names the master",
            ))
        }))
    }

    /// The master `sentinel` names (`SENTINEL GET-MASTER-ADDR-BY-NAME`), if it knows it.
    async fn named_by(&self, sentinel: &redis::Client) -> RedisResult<Option<(String, u16)>> {
        let mut connection = sentinel
            .get_multiplexed_async_connection_with_config(&self.config)
            .await?;
        redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(&self.master_name)
            .query_async(&mut connection)
            .await
    }

    /// A client of the data node at `host:port`, with the URL's credentials, database and TLS.
    fn client_of(&self, host: &str, port: u16) -> RedisResult<redis::Client> {
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_owned()
        };
        let url = format!(
            "{}://{}{host}:{port}/{}",
            self.scheme, self.userinfo, self.db
        );
        match &self.certificates {
            Some(certs) => redis::Client::build_with_tls(url.as_str(), certs.clone()),
            None => redis::Client::open(url.as_str()),
        }
    }

    async fn connect_master(&self, host: &str, port: u16) -> RedisResult<MultiplexedConnection> {
        let client = self.client_of(host, port)?;
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
        let mut master = lock(&self.current.master);
        if master
            .connection
            .as_ref()
            .is_some_and(|(g, _)| *g == generation)
        {
            master.connection = None;
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
        Ok(self.answer(command.clone(), None).await?.value)
    }

    /// Run one command on the master, with `wait` behind it (see
    /// [`crate::connection::answer`]); after `READONLY` (the refused command wrote nothing),
    /// once more on the master the Sentinels name now.
    pub(crate) async fn answer(
        &self,
        command: redis::Cmd,
        wait: Option<Wait>,
    ) -> RedisResult<Answer> {
        let request = Request::new(command, wait);
        let (generation, mut connection) = self.connection().await?;
        let first = request.send(&mut connection).await;
        if let Err(e) = &first {
            if is_read_only(e) {
                self.invalidate(generation);
                let (_, mut connection) = self.connection().await?;
                return request.send(&mut connection).await;
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

impl Drop for SentinelMaster {
    fn drop(&mut self) {
        for watcher in self.watchers.get().into_iter().flatten() {
            watcher.abort();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Nothing under these locks leaves their value half changed.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Follow one Sentinel's failover events for `master_name`. From
/// `+failover-state-send-slaveof-noone` (the leader is about to promote a replica) calls fail
/// at once: until Sentinel announces the new master, the old one still takes writes, and every
/// decision written there would be lost when it resyncs (a second or so of them: Sentinel
/// notices the promotion at its next `INFO`). `+switch-master` (`<name> <old ip> <old port>
/// <new ip> <new port>`) drops the connection in use, remembers the new master and ends the
/// pause; an aborted or ended failover (`-failover-abort-*`, `+failover-end*`) ends it too, and
/// it never lasts past [`FAILOVER_PAUSE`]. Keeps resubscribing (once a second) while the
/// Sentinel is unreachable; ends with the store.
async fn watch_switches(
    sentinel: redis::Client,
    master_name: String,
    current: Weak<Current>,
    connect_timeout: Duration,
) {
    while current.strong_count() > 0 {
        let subscribed = async {
            let mut pubsub = sentinel.get_async_pubsub().await?;
            pubsub.subscribe("+switch-master").await?;
            pubsub.psubscribe("*failover*").await?;
            RedisResult::Ok(pubsub)
        };
        if let Ok(Ok(pubsub)) = tokio::time::timeout(connect_timeout, subscribed).await {
            let mut messages = pubsub.into_on_message();
            while let Some(message) = messages.next().await {
                let Some(current) = current.upgrade() else {
                    return;
                };
                let payload: String = message.get_payload().unwrap_or_default();
                let fields: Vec<&str> = payload.split(' ').collect();
                let event = message.get_channel_name();
                if event == "+switch-master" {
                    let [name, _, _, host, port] = fields[..] else {
                        continue;
                    };
                    if let (true, Ok(port)) = (name == master_name, port.parse::<u16>()) {
                        *lock(&current.announced) = Some((host.to_owned(), port));
                        *lock(&current.master) = Master::default();
                    }
                    continue;
                }
                // Instance details: `master <name> <ip> <port>`, or for the replica being
                // promoted `slave <ip:port> <ip> <port> @ <master name> <ip> <port>`.
                if !fields.contains(&master_name.as_str()) {
                    continue;
                }
                if event == "+failover-state-send-slaveof-noone" {
                    *lock(&current.master) = Master {
                        connection: None,
                        paused_until: Some(Instant::now() + FAILOVER_PAUSE),
                    };
                } else if event.starts_with("-failover-abort") || event.starts_with("+failover-end")
                {
                    lock(&current.master).paused_until = None;
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
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
