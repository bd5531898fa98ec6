//! Store selection: one enum over every store this binary can run on.
//!
//! Adding a backend (the Redis store of `tollgate-redis`) is one variant here plus one arm in
//! each `match`: the rest of the server only sees [`AnyStore`] through the [`Store`] trait.

use std::fmt;
use std::sync::Arc;

use tollgate::memory::MemoryStore;
use tollgate::{
    Check, Clock, Decision, LeaseOp, LeaseOutcome, Mode, Override, OverridePage, Policy,
    PolicyName, ResilienceConfig, Resilient, Store, StoreDecision, StoreError,
};
use tollgate_redis::{OverrideChange, RedisOptions, RedisStore, RedisStoreError, ReplicaAck};

use crate::config::{StoreSettings, StoreUrl};

/// Why the configured store cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The Redis URL or its options are invalid.
    #[error("store {url}: {source}")]
    Redis {
        /// The configured URL, password redacted.
        url: String,
        /// What is wrong.
        #[source]
        source: RedisStoreError,
    },
}

/// Keep this instance's over-limit cache in step with overrides set or deleted by any instance:
/// the rejections it cached for a key whose limit changed are forgotten at once, so the next
/// decision is the store's (docs/architecture.md §9).
fn forget_changed_overrides(redis: &Resilient<RedisStore>) {
    let Some(cache) = redis.over_limit_cache() else {
        return;
    };
    let cache = Arc::downgrade(cache);
    redis.inner().watch_override_changes(move |change| {
        let Some(cache) = cache.upgrade() else {
            return;
        };
        match change {
            OverrideChange::Changed { policy, key } => cache.forget(policy, key),
            OverrideChange::Resubscribed => cache.clear(),
        }
    });
}

/// `store.replica_ack` as the Redis store takes it: `WAIT` up to half the store timeout, so
/// that the acknowledgement can arrive before the call times out.
fn replica_ack(settings: &StoreSettings) -> Option<ReplicaAck> {
    (settings.replica_ack > 0).then(|| ReplicaAck {
        replicas: settings.replica_ack,
        timeout: (settings.timeout / 2).max(std::time::Duration::from_millis(1)),
    })
}

/// How often [`AnyStore::check_replicas`] tries a Redis that does not answer yet.
const REPLICA_CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// Redis could not be reached (yet), as opposed to answering with a refusal.
fn unreachable(error: &redis::RedisError) -> bool {
    error.is_io_error()
        || error.is_timeout()
        || error.is_connection_refusal()
        || error.is_connection_dropped()
        || error.kind() == redis::ErrorKind::ClusterConnectionNotFound
}

/// The store the server decides on.
#[derive(Debug)]
pub enum AnyStore {
    /// The in-process memory store.
    Memory(MemoryStore),
    /// Redis (standalone, Cluster or Sentinel) behind the timeout, circuit breaker, failure
    /// policy and over-limit cache of [`Resilient`].
    Redis(Resilient<RedisStore>),
}

impl AnyStore {
    /// Open the store `settings` describe. Never falls back silently to another kind. A Redis
    /// store connects lazily: the server starts while Redis is down (`/ready` says so) and the
    /// failure policy decides until it is back.
    pub fn open(settings: &StoreSettings) -> Result<AnyStore, OpenError> {
        match &settings.url {
            StoreUrl::Memory => Ok(AnyStore::Memory(MemoryStore::with_options(
                Clock::System,
                settings.max_keys,
            ))),
            url @ StoreUrl::Redis(raw) => {
                let options = RedisOptions {
                    prefix: settings.prefix.clone(),
                    replica_ack: replica_ack(settings),
                    ..RedisOptions::default()
                };
                let redis =
                    RedisStore::connect_lazy(raw, options).map_err(|source| OpenError::Redis {
                        url: url.to_string(),
                        source,
                    })?;
                let resilience = ResilienceConfig {
                    timeout: settings.timeout,
                    on_error: settings.on_error,
                    instances: settings.instances,
                    local_max_keys: settings.max_keys,
                    ..ResilienceConfig::default()
                };
                let redis = Resilient::new(redis, resilience);
                forget_changed_overrides(&redis);
                Ok(AnyStore::Redis(redis))
            }
        }
    }

    /// Drop expired state (the server calls it every second): the memory store's, or the local
    /// fallback's and over-limit cache's in front of Redis.
    pub fn sweep(&self) -> usize {
        match self {
            AnyStore::Memory(memory) => memory.sweep(),
            AnyStore::Redis(redis) => {
                redis.sweep();
                0
            }
        }
    }

    /// Whether the store can answer now (`GET /ready`): for Redis, the breaker is not open and
    /// a PING answers within the store timeout.
    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            AnyStore::Memory(_) => Ok(()),
            // The readiness PING is also the breaker's probe when one is due: an instance a
            // load balancer took out of rotation gets no decisions to probe with.
            AnyStore::Redis(redis) => redis.ready(async |store| store.ping().await).await,
        }
    }

    /// With `store.replica_ack` (`asked`), once Redis answers (it may be down at startup:
    /// tried every [`REPLICA_CHECK_EVERY`] until it is reached), warn about each master with
    /// fewer replicas than that: every consuming decision there goes to `on_error`. A refusal
    /// (an ACL without `+role`, a renamed `ROLE`) is said once and ends the check. On the
    /// memory store, which has no replicas, say that the setting does nothing.
    pub async fn check_replicas(&self, asked: u32) {
        let redis = match self {
            AnyStore::Memory(_) if asked > 0 => {
                tracing::warn!(
                    "store.replica_ack applies to Redis only: the memory store has no replicas"
                );
                return;
            }
            AnyStore::Memory(_) => return,
            AnyStore::Redis(redis) => redis,
        };
        let Some(ack) = redis.inner().replica_ack() else {
            return;
        };
        let wanted = usize::try_from(ack.replicas).unwrap_or(usize::MAX);
        let masters = loop {
            match redis.inner().masters().await {
                Ok(masters) => break masters,
                Err(error) if unreachable(&error) => {
                    tracing::debug!(%error, "store.replica_ack: replicas not checked yet");
                    tokio::time::sleep(REPLICA_CHECK_EVERY).await;
                }
                Err(error) => {
                    tracing::warn!(%error, "store.replica_ack: cannot count the masters' replicas (`ROLE`; an ACL needs +role)");
                    return;
                }
            }
        };
        for master in masters {
            match master.replicas {
                Some(replicas) if replicas >= wanted => {
                    tracing::info!(master = %master.master, replicas, "store.replica_ack: enough replicas");
                }
                Some(replicas) => tracing::warn!(
                    master = %master.master,
                    replicas,
                    replica_ack = ack.replicas,
                    "store.replica_ack asks for more replicas than this master has: every consuming decision on it goes to on_error"
                ),
                None => tracing::warn!(
                    master = %master.master,
                    "store.replica_ack: this server does not answer as a master (yet): consuming decisions go to on_error until it does"
                ),
            }
        }
    }

    /// `memory` or `redis`.
    pub fn kind(&self) -> &'static str {
        match self {
            AnyStore::Memory(_) => "memory",
            AnyStore::Redis(_) => "redis",
        }
    }

    /// The circuit breaker's state (`closed`, `open`, `half_open`), for a store behind one.
    pub fn breaker_state(&self) -> Option<&'static str> {
        self.resilience()
            .map(|redis| redis.breaker().state().name())
    }

    /// The memory store, if that is what this is (for its gauges).
    pub fn as_memory(&self) -> Option<&MemoryStore> {
        match self {
            AnyStore::Memory(memory) => Some(memory),
            AnyStore::Redis(_) => None,
        }
    }

    /// The resilience layer in front of a shared store (for its metrics).
    pub fn resilience(&self) -> Option<&Resilient<RedisStore>> {
        match self {
            AnyStore::Memory(_) => None,
            AnyStore::Redis(redis) => Some(redis),
        }
    }
}

impl fmt::Display for AnyStore {
    /// A one-line description for logs, without secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AnyStore::Memory(memory) => write!(f, "memory (max_keys {})", memory.max_keys()),
            AnyStore::Redis(redis) => {
                write!(
                    f,
                    "redis (prefix {}, timeout {:?}, on_error {}, instances {}",
                    redis.inner().prefix(),
                    redis.config().timeout,
                    redis.config().on_error.name(),
                    redis.config().instances
                )?;
                if let Some(ack) = redis.inner().replica_ack() {
                    write!(f, ", replica_ack {} within {:?}", ack.replicas, ack.timeout)?;
                }
                f.write_str(")")
            }
        }
    }
}

impl Store for AnyStore {
    async fn decide(
        &self,
        checks: &[Check<'_>],
        cost: u64,
        mode: Mode,
    ) -> Result<StoreDecision, StoreError> {
        match self {
            AnyStore::Memory(memory) => memory.decide(checks, cost, mode).await,
            // Boxed: awaited inline, its ~4 KB of state would be part of every caller's future,
            // memory-store requests included, and the server copies each request's future into
            // a box. One allocation beside a network round trip.
            AnyStore::Redis(redis) => Box::pin(redis.decide(checks, cost, mode)).await,
        }
    }

    async fn lease(&self, check: Check<'_>, op: LeaseOp) -> Result<LeaseOutcome, StoreError> {
        match self {
            AnyStore::Memory(memory) => memory.lease(check, op).await,
            AnyStore::Redis(redis) => Box::pin(redis.lease(check, op)).await,
        }
    }

    async fn adjust(&self, check: Check<'_>, delta: i64) -> Result<Decision, StoreError> {
        match self {
            AnyStore::Memory(memory) => memory.adjust(check, delta).await,
            AnyStore::Redis(redis) => Box::pin(redis.adjust(check, delta)).await,
        }
    }

    async fn reset(&self, checks: &[Check<'_>]) -> Result<(), StoreError> {
        match self {
            AnyStore::Memory(memory) => memory.reset(checks).await,
            AnyStore::Redis(redis) => redis.reset(checks).await,
        }
    }

    async fn set_override(&self, target: Check<'_>, value: &Override) -> Result<(), StoreError> {
        match self {
            AnyStore::Memory(memory) => memory.set_override(target, value).await,
            AnyStore::Redis(redis) => redis.set_override(target, value).await,
        }
    }

    async fn get_override(&self, target: Check<'_>) -> Result<Option<Override>, StoreError> {
        match self {
            AnyStore::Memory(memory) => memory.get_override(target).await,
            AnyStore::Redis(redis) => redis.get_override(target).await,
        }
    }

    async fn delete_override(&self, target: Check<'_>) -> Result<bool, StoreError> {
        match self {
            AnyStore::Memory(memory) => memory.delete_override(target).await,
            AnyStore::Redis(redis) => redis.delete_override(target).await,
        }
    }

    async fn list_overrides(
        &self,
        name: &PolicyName,
        policy: &Policy,
        after: Option<&str>,
        count: usize,
    ) -> Result<OverridePage, StoreError> {
        match self {
            AnyStore::Memory(memory) => memory.list_overrides(name, policy, after, count).await,
            AnyStore::Redis(redis) => redis.list_overrides(name, policy, after, count).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_redis_urls_fail_loudly_without_the_password() {
        let settings = StoreSettings {
            // Refused by the parser of config and flags too; built directly to test `open`.
            url: StoreUrl::Redis("redis://u:pw@127.0.0.1:notaport".into()),
            ..StoreSettings::default()
        };
        let err = AnyStore::open(&settings).unwrap_err().to_string();
        assert!(!err.contains("pw"), "{err}");
        let memory = AnyStore::open(&StoreSettings::default()).unwrap();
        assert!(memory.to_string().starts_with("memory"));
    }
}
