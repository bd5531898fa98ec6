//! Errors raised while setting a [`RedisStore`](crate::RedisStore) up.

/// Why a [`RedisStore`](crate::RedisStore) could not be created or used.
#[derive(Debug, thiserror::Error)]
pub enum RedisStoreError {
    /// The URL is not one of the accepted forms.
    #[error("invalid Redis URL `{url}`: {reason}")]
    InvalidUrl {
        /// The URL given, with any password masked.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A key prefix containing `{` or `}` would move the Cluster hash tag. (Policy names cannot
    /// hold one: [`tollgate::PolicyName`].)
    #[error("`{0}` must not contain `{{` or `}}` (it would change the key's Cluster hash tag)")]
    Brace(String),
    /// A TLS certificate or key file could not be read.
    #[error("reading TLS file {path}: {source}")]
    TlsFile {
        /// The file.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The store was created outside a Tokio runtime, which its connections run on.
    #[error("a RedisStore must be created inside a Tokio runtime")]
    NoRuntime,
    /// Redis refused or failed the connection (or the first command on it).
    #[error("connecting to Redis at {url}: {source}")]
    Connect {
        /// The URL, with any password masked.
        url: String,
        /// The client's error.
        #[source]
        source: redis::RedisError,
    },
    /// A decision wrote, but fewer replicas than [`ReplicaAck::replicas`](crate::ReplicaAck)
    /// acknowledged the write in time: it is not reported as made by the shared store (it may
    /// still count there, and may be lost if the master fails now).
    #[error("the write reached {acked} of {wanted} replicas in time")]
    NotReplicated {
        /// Replicas that acknowledged.
        acked: u32,
        /// Replicas asked for.
        wanted: u32,
    },
}
