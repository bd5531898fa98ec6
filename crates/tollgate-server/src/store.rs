//! Store selection: one enum over every store this binary can run on.
//!
//! Adding a backend (the Redis store of `tollgate-redis`) is one variant here plus one arm in
//! each `match`: the rest of the server only sees [`AnyStore`] through the [`Store`] trait.

use std::fmt;

use tollgate::memory::MemoryStore;
use tollgate::{Check, Clock, Mode, Store, StoreDecision, StoreError};

use crate::config::{StoreSettings, StoreUrl};

/// Why the configured store cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// A store kind this build does not contain.
    #[error(
        "store {url}: the Redis store is not built into this version of tollgate yet; use --store memory (or store.url: memory)"
    )]
    NotBuiltIn {
        /// The configured URL, password redacted.
        url: String,
    },
}

/// The store the server decides on.
#[derive(Debug)]
pub enum AnyStore {
    /// The in-process memory store.
    Memory(MemoryStore),
}

impl AnyStore {
    /// Open the store `settings` describe. Never falls back silently to another kind.
    pub fn open(settings: &StoreSettings) -> Result<AnyStore, OpenError> {
        match &settings.url {
            StoreUrl::Memory => Ok(AnyStore::Memory(MemoryStore::with_options(
                Clock::System,
                settings.max_keys,
            ))),
            url @ StoreUrl::Redis(_) => Err(OpenError::NotBuiltIn {
                url: url.to_string(),
            }),
        }
    }

    /// Drop expired state (the server calls it every second). A no-op for stores that expire
    /// state themselves.
    pub fn sweep(&self) -> usize {
        match self {
            AnyStore::Memory(memory) => memory.sweep(),
        }
    }

    /// Whether the store can answer now (`GET /ready`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            AnyStore::Memory(_) => Ok(()),
        }
    }

    /// The memory store, if that is what this is (for its gauges).
    pub fn as_memory(&self) -> Option<&MemoryStore> {
        match self {
            AnyStore::Memory(memory) => Some(memory),
        }
    }
}

impl fmt::Display for AnyStore {
    /// A one-line description for logs, without secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AnyStore::Memory(memory) => write!(f, "memory (max_keys {})", memory.max_keys()),
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
        }
    }

    async fn reset(&self, checks: &[Check<'_>]) -> Result<(), StoreError> {
        match self {
            AnyStore::Memory(memory) => memory.reset(checks).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_urls_fail_loudly() {
        let settings = StoreSettings {
            url: "redis://u:pw@127.0.0.1:6379".parse().unwrap(),
            ..StoreSettings::default()
        };
        let err = AnyStore::open(&settings).unwrap_err().to_string();
        assert!(err.contains("not built into"), "{err}");
        assert!(!err.contains("pw"), "{err}");
        let memory = AnyStore::open(&StoreSettings::default()).unwrap();
        assert!(memory.to_string().starts_with("memory"));
    }
}
