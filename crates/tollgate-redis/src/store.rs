//! [`RedisStore`]: the `Store` whose state and decisions live in Redis.

use std::sync::Arc;
use std::time::Duration;

use tollgate::{
    Check, Decision, Decisions, LeaseOp, LeaseOutcome, ManualClock, Mode, Override, OverridePage,
    Policy, PolicyName, Store, StoreDecision, StoreError,
};

use crate::batch::Wait;
use crate::connection::{ConnectOptions, Connection, TlsFiles, redact};
use crate::error::RedisStoreError;
use crate::keys;
use crate::overrides;
use crate::script::{self, LeaseCall, Op, ScriptCall, Shape};

/// Default key prefix.
pub const DEFAULT_PREFIX: &str = "tollgate";

/// Settings of a [`RedisStore`] besides its URL.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// First part of every key (default `tollgate`); must not contain `{` or `}`.
    pub prefix: String,
    /// Time allowed to open a connection (default 1 s).
    pub connect_timeout: Duration,
    /// Time allowed for a reply (default 1 s). On a plain-TCP standalone connection it is
    /// the connection's: when calls have waited this long with no reply at all, the
    /// connection is closed, its calls fail, and the next call opens a new one (calls that
    /// have to connect first also wait up to `connect_timeout`). The limiter's own, shorter,
    /// store timeout applies on top of this.
    pub response_timeout: Duration,
    /// CA and client certificates for `rediss` URLs (default: the system's roots, no client
    /// certificate).
    pub tls: Option<TlsFiles>,
    /// Username for the Sentinels themselves (the URL's credentials are the master's).
    pub sentinel_username: Option<String>,
    /// Password for the Sentinels themselves.
    pub sentinel_password: Option<String>,
    /// **Tests only.** Send this clock's time with every call instead of letting the script
    /// read Redis `TIME`. Production must leave it `None`: Redis time is what keeps instances
    /// with skewed clocks in agreement.
    pub clock_override: Option<ManualClock>,
    /// Count a decision that writes only once this many replicas hold the write (default: off).
    /// See [`ReplicaAck`].
    pub replica_ack: Option<ReplicaAck>,
    /// **Tests only.** Send every one-policy check in the batch form of its script, even alone,
    /// so that sequential tests (the conformance suite) run what batches run. Production leaves
    /// it `false`: a check alone is cheaper in the single form.
    pub batch_always: bool,
}

/// Acknowledgement by replicas before a consuming decision counts: the script call and
/// `WAIT <replicas> <timeout>` go in one pipeline on one connection (still one round trip).
/// Consuming decisions still batch: a batch's script call is followed by one `WAIT`, which
/// covers every write of the batch, and each decision of the batch is answered after it. A
/// decision that wrote but reached fewer replicas in time fails with
/// [`RedisStoreError::NotReplicated`] (the limiter's failure policy then decides it, marked
/// degraded). So every decision reported as made by Redis survives a failover that promotes a
/// replica that acknowledged it (with one replica per master, as Sentinel and Cluster pick the
/// most up-to-date one: any failover).
///
/// The price: a replica round trip per batch of consuming decisions (Redis holds the
/// connection's later commands meanwhile), and a master left without enough replicas (after a
/// failover, until the old master is back as a replica) answers no consuming decision at all.
/// Keep `timeout` well under the limiter's store timeout (and under
/// [`RedisOptions::response_timeout`]), or calls time out before `WAIT` can answer. Redis ends
/// a `WAIT` it cannot satisfy only at its first event-loop tick after `timeout` (on a quiet
/// master up to `1000 / hz` ms later: 100 ms at the default `hz 10`): count that in too.
/// [`RedisStore::masters`] says whether each master has the replicas asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaAck {
    /// Replicas that must acknowledge (1 for the usual one replica per master).
    pub replicas: u32,
    /// Longest wait for them (rounded up to whole milliseconds, at least 1).
    pub timeout: Duration,
}

/// One master of a [`RedisStore`] and its replicas, from [`RedisStore::masters`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterReplicas {
    /// A Cluster master's address, or the store's URL (password redacted) for its one master.
    pub master: String,
    /// Replicas connected to it now; `None` when the server did not answer as a master (a
    /// replica that Sentinel has not yet promoted, say).
    pub replicas: Option<usize>,
}

/// The replicas in a `ROLE` reply: `["master", offset, [[host, port, offset], ...]]`.
fn replicas_of(role: &redis::Value) -> Option<usize> {
    use redis::Value::{Array, BulkString, SimpleString};
    let Array(fields) = role else {
        return None;
    };
    let is_master = match fields.first() {
        Some(BulkString(name)) => name.as_slice() == b"master",
        Some(SimpleString(name)) => name == "master",
        _ => false,
    };
    match (is_master, fields.get(2)) {
        (true, Some(Array(replicas))) => Some(replicas.len()),
        _ => None,
    }
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            prefix: DEFAULT_PREFIX.to_owned(),
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(1),
            tls: None,
            sentinel_username: None,
            sentinel_password: None,
            clock_override: None,
            replica_ack: None,
            batch_always: false,
        }
    }
}

/// A [`Store`] in Redis: every decision is one `EVALSHA` of one Lua script that reads Redis
/// `TIME`, runs the same transitions as the core, writes only when it consumes, and sets a TTL
/// on every key it writes. A check over several policies is one call and all-or-nothing.
/// One-policy checks of one algorithm that queue while such a call is unanswered share the
/// next call, each decided in turn as if alone (on a Cluster, the checks of one node).
///
/// Cheap to clone: clones share the connection, so concurrent decisions pipeline on it.
///
/// ```no_run
/// use tollgate::{Algorithm, Limiter, Policy};
/// use tollgate_redis::{RedisOptions, RedisStore};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let store = RedisStore::connect("redis://127.0.0.1:6379", RedisOptions::default()).await?;
/// let limiter = Limiter::new(store)
///     .with_policy("api", Policy::builder(Algorithm::Gcra).rate("100/min").build()?)?;
/// let decision = limiter.check("api", "user-123").await?;
/// println!("allowed: {}, remaining: {}", decision.allowed, decision.remaining);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    connection: Connection,
    prefix: String,
    clock: Option<ManualClock>,
    url: String,
    replica_ack: Option<ReplicaAck>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.inner.url)
            .field("prefix", &self.inner.prefix)
            .field("clock_override", &self.inner.clock.is_some())
            .finish()
    }
}

impl RedisStore {
    /// Connect to `url` and check that Redis answers (`PING`).
    ///
    /// URLs: `redis://[user:pass@]host:port[/db]`, `rediss://...` (TLS), `valkey://`,
    /// `valkeys://`, `redis+cluster://host:port,host:port,...`,
    /// `redis+sentinel://[user:pass@]host:port,host:port/<master-name>[/db]` (and `rediss+`
    /// forms of the last two). Must be called inside a Tokio runtime.
    pub async fn connect(url: &str, options: RedisOptions) -> Result<RedisStore, RedisStoreError> {
        let store = RedisStore::connect_lazy(url, options)?;
        store
            .ping()
            .await
            .map_err(|source| RedisStoreError::Connect {
                url: redact(url),
                source,
            })?;
        Ok(store)
    }

    /// Like [`Self::connect`], but without contacting Redis: the first call connects, and a
    /// Redis that is down now is used as soon as it is up. Fails only on a malformed URL,
    /// prefix or TLS file, or outside a Tokio runtime.
    pub fn connect_lazy(url: &str, options: RedisOptions) -> Result<RedisStore, RedisStoreError> {
        // The connections spawn tasks: without a runtime they would panic.
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(RedisStoreError::NoRuntime);
        }
        if !keys::is_brace_free(&options.prefix) {
            return Err(RedisStoreError::Brace(options.prefix));
        }
        let connect = ConnectOptions {
            connect_timeout: options.connect_timeout,
            response_timeout: options.response_timeout,
            tls: options.tls,
            sentinel_username: options.sentinel_username,
            sentinel_password: options.sentinel_password,
            batch_always: options.batch_always,
        };
        let connection = Connection::open(url, &connect)?;
        Ok(RedisStore {
            inner: Arc::new(Inner {
                connection,
                prefix: options.prefix,
                clock: options.clock_override,
                url: redact(url),
                replica_ack: options.replica_ack,
            }),
        })
    }

    /// `PING` the server (a Cluster: one node): for readiness probes.
    pub async fn ping(&self) -> Result<(), redis::RedisError> {
        let _: String = self.inner.connection.query(&redis::cmd("PING")).await?;
        Ok(())
    }

    /// The replica acknowledgement its decisions wait for, if any.
    pub fn replica_ack(&self) -> Option<ReplicaAck> {
        self.inner.replica_ack
    }

    /// Each master this store writes to, with the replicas connected to it now (`ROLE`): what
    /// [`ReplicaAck`] can count on. A master with fewer replicas than `replica_ack` asks for
    /// answers no consuming decision, so a program can check this once it has connected. On a
    /// Cluster: the masters redis-rs is connected to (all of them, once it has connected).
    pub async fn masters(&self) -> Result<Vec<MasterReplicas>, redis::RedisError> {
        let roles = self.inner.connection.roles().await?;
        Ok(roles
            .into_iter()
            .map(|(address, role)| MasterReplicas {
                master: address.unwrap_or_else(|| self.inner.url.clone()),
                replicas: replicas_of(&role),
            })
            .collect())
    }

    /// The Lua source a check of this shape runs (for `redis-benchmark` and inspection).
    pub fn script_source(shape: Shape) -> &'static str {
        shape.source()
    }

    /// That script's SHA-1, as `EVALSHA` takes it.
    pub fn script_sha(shape: Shape) -> &'static str {
        shape.script().get_hash()
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The Redis key holding `check`'s state: `<prefix>:<policy>:<algorithm>:{<identifier>}`.
    pub fn key(&self, check: &Check<'_>) -> String {
        keys::key(
            &self.inner.prefix,
            check.name,
            check.policy.algorithm(),
            check.key,
        )
    }

    /// The script call deciding `checks`: `EVALSHA <sha>`, or with `by_source` `EVAL <source>`
    /// (after `NOSCRIPT`: it runs the script and caches it on that node); with `ack`, the
    /// `WAIT` for replicas behind it.
    fn script_call<'a>(
        &'a self,
        checks: &'a [Check<'a>],
        op: Op,
        by_source: bool,
        ack: Option<ReplicaAck>,
    ) -> ScriptCall<'a> {
        ScriptCall {
            prefix: &self.inner.prefix,
            checks,
            op,
            now_us: self.inner.clock.as_ref().map(ManualClock::now_us),
            by_source,
            wait: ack.map(ReplicaAck::wait),
        }
    }

    /// Follow the changes of overrides made by any instance sharing this Redis and prefix:
    /// `on_change` hears each set or delete as it happens, and
    /// [`OverrideChange::Resubscribed`](crate::OverrideChange::Resubscribed) after each (re)connection of the subscription (changes
    /// made meanwhile were missed). A background task on the current runtime; it ends with the
    /// store. What a front end caches about a key (rejections, say) should be forgotten there.
    pub fn watch_override_changes(
        &self,
        on_change: impl Fn(crate::OverrideChange<'_>) + Send + Sync + 'static,
    ) -> tokio::task::AbortHandle {
        let watch = overrides::watch_changes(
            Arc::downgrade(&self.inner),
            |inner: &Inner| &inner.connection,
            self.inner.prefix.clone(),
            on_change,
        );
        tokio::spawn(watch).abort_handle()
    }

    /// Run the script of `checks` for `op` (`EVALSHA`, then `EVAL` after `NOSCRIPT`), through
    /// the batching layer (with `ack`, each call or batch followed by its `WAIT`), and read its
    /// decisions, under [`acknowledged`]'s rule with `ack`.
    async fn run_script(
        &self,
        checks: &[Check<'_>],
        op: Op,
        ack: Option<ReplicaAck>,
    ) -> Result<Decisions, StoreError> {
        let connection = &self.inner.connection;
        let call = |by_source| self.script_call(checks, op, by_source, ack);
        let answer = match connection.eval(&call(false)).await {
            Err(e) if is_noscript(&e) => connection.eval(&call(true)).await,
            other => other,
        }
        .map_err(backend)?;
        let decisions = script::parse_reply(&answer.value, checks.iter().map(|c| c.policy))
            .map_err(StoreError::Protocol)?;
        if let Some(ack) = ack {
            // An adjustment always writes; a decision only when every policy allowed.
            let wrote = matches!(op, Op::Adjust { .. }) || decisions.iter().all(|d| d.allowed);
            acknowledged(wrote, answer.acked, ack)?;
        }
        Ok(decisions)
    }

    /// Run the lease script for `check` (`EVALSHA`, then `EVAL` after `NOSCRIPT`). Under
    /// `replica_ack` an acquire or a renew waits for replicas as a consuming decision does, by
    /// the same rule ([`acknowledged`]): a lease granted or extended on a master whose replicas
    /// did not take it could be handed out again after a failover. A release is not waited for:
    /// losing it only keeps the unit taken until the lease expires.
    async fn lease_call(&self, check: Check<'_>, op: LeaseOp) -> Result<LeaseOutcome, StoreError> {
        let ack = self
            .inner
            .replica_ack
            .filter(|_| !matches!(op, LeaseOp::Release(_)));
        let call = |by_source| LeaseCall {
            prefix: &self.inner.prefix,
            check,
            op,
            now_us: self.inner.clock.as_ref().map(ManualClock::now_us),
            by_source,
            wait: ack.map(ReplicaAck::wait),
        };
        let connection = &self.inner.connection;
        let answer = match connection.eval(&call(false)).await {
            Err(e) if is_noscript(&e) => connection.eval(&call(true)).await,
            other => other,
        }
        .map_err(backend)?;
        let outcome =
            script::parse_lease_reply(&answer.value, check.policy).map_err(StoreError::Protocol)?;
        if let Some(ack) = ack {
            acknowledged(outcome.decision.allowed, answer.acked, ack)?;
        }
        Ok(outcome)
    }

    /// The keys of `checks`, for commands other than the script.
    fn keys_of(&self, checks: &[Check<'_>]) -> Vec<String> {
        checks.iter().map(|check| self.key(check)).collect()
    }
}

/// The rule of [`ReplicaAck`], for a call alone and for each decision of a batch alike: a call
/// that `wrote` (a decision whose policies all allowed, a granted or renewed lease, an
/// adjustment) counts only when at least `ack.replicas` replicas acknowledged its write
/// (`acked`, from the `WAIT` behind its call or batch; none known counts as none); otherwise it
/// fails with `NotReplicated`. A call that wrote nothing (a rejection) needs no acknowledgement.
fn acknowledged(wrote: bool, acked: Option<u32>, ack: ReplicaAck) -> Result<(), StoreError> {
    let acked = acked.unwrap_or(0);
    if wrote && acked < ack.replicas {
        return Err(StoreError::Backend(Box::new(
            RedisStoreError::NotReplicated {
                acked,
                wanted: ack.replicas,
            },
        )));
    }
    Ok(())
}

impl ReplicaAck {
    /// The `WAIT` that asks for this acknowledgement: the timeout rounded up to whole
    /// milliseconds, at least 1 (`WAIT` with 0 waits forever).
    fn wait(self) -> Wait {
        let micros = self.timeout.as_micros().div_ceil(1000);
        Wait {
            replicas: self.replicas,
            timeout_ms: u64::try_from(micros).unwrap_or(u64::MAX).max(1),
        }
    }
}

/// The node does not have the script (restarted, newly promoted, or `SCRIPT FLUSH`).
fn is_noscript(e: &redis::RedisError) -> bool {
    e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
}

fn backend(e: redis::RedisError) -> StoreError {
    StoreError::Backend(Box::new(e))
}

impl Store for RedisStore {
    async fn decide(
        &self,
        checks: &[Check<'_>],
        cost: u64,
        mode: Mode,
    ) -> Result<StoreDecision, StoreError> {
        if checks.is_empty() {
            return Ok(StoreDecision {
                decisions: Decisions::new(),
                degraded: false,
            });
        }
        if let Some(check) = checks
            .iter()
            .find(|c| c.policy.algorithm().is_concurrency())
        {
            // Callers validate costs (a concurrency policy takes none); a caller that did not
            // gets an error, never a script of another algorithm.
            return Err(StoreError::Protocol(format!(
                "policy `{}` is a concurrency policy: it is acquired, not checked",
                check.name
            )));
        }
        // A peek writes nothing: it waits for no replica.
        let ack = self
            .inner
            .replica_ack
            .filter(|_| matches!(mode, Mode::Consume));
        let decisions = self
            .run_script(checks, Op::Decide { cost, mode }, ack)
            .await?;
        Ok(StoreDecision {
            decisions,
            degraded: false,
        })
    }

    async fn adjust(&self, check: Check<'_>, delta: i64) -> Result<Decision, StoreError> {
        if check.policy.algorithm().is_concurrency() {
            return Err(StoreError::Protocol(format!(
                "policy `{}` is a concurrency policy: its leases are released, not adjusted",
                check.name
            )));
        }
        // Waits for replicas under `replica_ack`: a charge lost in a failover would be given
        // back to the key.
        let decisions = self
            .run_script(&[check], Op::Adjust { delta }, self.inner.replica_ack)
            .await?;
        decisions
            .first()
            .copied()
            .ok_or_else(|| StoreError::Protocol("no decision for an adjustment".into()))
    }

    async fn lease(&self, check: Check<'_>, op: LeaseOp) -> Result<LeaseOutcome, StoreError> {
        self.lease_call(check, op).await
    }

    async fn reset(&self, checks: &[Check<'_>]) -> Result<(), StoreError> {
        let keys = self.keys_of(checks);
        // Keys of one identifier share a slot: one DEL. Others are deleted one by one, which a
        // Cluster also accepts.
        let one_identifier = checks.windows(2).all(|w| w[0].key == w[1].key);
        let groups: Vec<&[String]> = if one_identifier {
            vec![&keys[..]]
        } else {
            keys.chunks(1).collect()
        };
        for group in groups.into_iter().filter(|g| !g.is_empty()) {
            let _: i64 = self
                .inner
                .connection
                .query(redis::cmd("DEL").arg(group))
                .await
                .map_err(backend)?;
        }
        Ok(())
    }

    async fn set_override(&self, target: Check<'_>, value: &Override) -> Result<(), StoreError> {
        overrides::set(&self.inner.connection, &self.inner.prefix, &target, value).await
    }

    async fn get_override(&self, target: Check<'_>) -> Result<Option<Override>, StoreError> {
        overrides::get(&self.inner.connection, &self.inner.prefix, &target).await
    }

    async fn delete_override(&self, target: Check<'_>) -> Result<bool, StoreError> {
        overrides::delete(&self.inner.connection, &self.inner.prefix, &target).await
    }

    async fn list_overrides(
        &self,
        name: &PolicyName,
        policy: &Policy,
        after: Option<&str>,
        count: usize,
    ) -> Result<OverridePage, StoreError> {
        let connection = &self.inner.connection;
        overrides::list(connection, &self.inner.prefix, name, policy, after, count).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn not_replicated(result: Result<(), StoreError>) -> Option<(u32, u32)> {
        match result {
            Err(StoreError::Backend(e)) => match e.downcast_ref::<RedisStoreError>() {
                Some(RedisStoreError::NotReplicated { acked, wanted }) => Some((*acked, *wanted)),
                _ => None,
            },
            _ => None,
        }
    }

    #[test]
    fn a_write_counts_only_once_enough_replicas_hold_it() {
        let ack = ReplicaAck {
            replicas: 2,
            timeout: Duration::from_millis(5),
        };
        assert!(acknowledged(true, Some(2), ack).is_ok());
        assert!(acknowledged(true, Some(3), ack).is_ok());
        assert_eq!(
            not_replicated(acknowledged(true, Some(1), ack)),
            Some((1, 2))
        );
        // No count known (a reply without its WAIT) is no acknowledgement.
        assert_eq!(not_replicated(acknowledged(true, None, ack)), Some((0, 2)));
        // A rejection (some policy refused: nothing was written) needs none.
        assert!(acknowledged(false, Some(0), ack).is_ok());
    }

    #[test]
    fn the_wait_timeout_is_rounded_up_to_whole_milliseconds() {
        let wait = |timeout| {
            ReplicaAck {
                replicas: 1,
                timeout,
            }
            .wait()
        };
        assert_eq!(wait(Duration::from_millis(25)).timeout_ms, 25);
        assert_eq!(wait(Duration::from_micros(25_001)).timeout_ms, 26);
        assert_eq!(
            wait(Duration::ZERO).timeout_ms,
            1,
            "WAIT 0 would wait forever"
        );
        assert_eq!(wait(Duration::MAX).timeout_ms, u64::MAX);
    }
}
