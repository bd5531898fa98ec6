//! What a benchmark drives: one decision for one key.

use std::future::Future;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tollgate::{LimitError, Limiter, Store};

/// The outcome of one decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Allowed.
    pub allowed: bool,
    /// Decided without the shared store.
    pub degraded: bool,
}

/// A decision that did not come back.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The limiter refused the call.
    #[error(transparent)]
    Limit(#[from] LimitError),
    /// HTTP transport failure.
    #[error("http: {0}")]
    Http(String),
    /// The service answered something unexpected.
    #[error("unexpected answer: {0}")]
    Answer(String),
}

/// Something that decides.
pub trait Target: Send + Sync + 'static {
    /// One decision of `cost` for `key`.
    fn decide(
        &self,
        key: &str,
        cost: u64,
    ) -> impl Future<Output = Result<Outcome, TargetError>> + Send;

    /// A label for reports (`memory`, `redis`, `http`…).
    fn label(&self) -> String;
}

/// The library path: `Limiter::check_all` on a store, in-process.
pub struct StoreTarget<S> {
    limiter: Limiter<S>,
    policy: String,
    label: String,
}

impl<S: Store> StoreTarget<S> {
    /// Decide `policy` on `limiter`.
    pub fn new(limiter: Limiter<S>, policy: impl Into<String>, label: impl Into<String>) -> Self {
        StoreTarget {
            limiter,
            policy: policy.into(),
            label: label.into(),
        }
    }
}

impl<S: Store> Target for StoreTarget<S> {
    async fn decide(&self, key: &str, cost: u64) -> Result<Outcome, TargetError> {
        let verdict = self.limiter.check_all(&[&self.policy], key, cost).await?;
        Ok(Outcome {
            allowed: verdict.allowed(),
            degraded: verdict.degraded,
        })
    }

    fn label(&self) -> String {
        self.label.clone()
    }
}

/// A running `tollgate serve`: `POST {base}/v1/check`.
pub struct HttpTarget {
    client: Client<HttpConnector, Full<Bytes>>,
    uri: hyper::Uri,
    policy: String,
}

impl HttpTarget {
    /// Target the service at `base` (e.g. `http://127.0.0.1:8080`), checking `policy`.
    pub fn new(base: &str, policy: impl Into<String>) -> Result<HttpTarget, TargetError> {
        let uri = format!("{}/v1/check", base.trim_end_matches('/'))
            .parse()
            .map_err(|e| TargetError::Http(format!("bad URL {base}: {e}")))?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(usize::MAX)
            .build(connector);
        Ok(HttpTarget {
            client,
            uri,
            policy: policy.into(),
        })
    }
}

#[derive(serde::Serialize)]
struct CheckBody<'a> {
    policy: &'a str,
    key: &'a str,
    cost: u64,
}

#[derive(serde::Deserialize)]
struct CheckAnswer {
    allowed: bool,
    #[serde(default)]
    degraded: bool,
}

impl Target for HttpTarget {
    async fn decide(&self, key: &str, cost: u64) -> Result<Outcome, TargetError> {
        let body = serde_json::to_vec(&CheckBody {
            policy: &self.policy,
            key,
            cost,
        })
        .map_err(|e| TargetError::Http(e.to_string()))?;
        let request = hyper::Request::post(self.uri.clone())
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| TargetError::Http(e.to_string()))?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| TargetError::Http(e.to_string()))?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| TargetError::Http(e.to_string()))?
            .to_bytes();
        if !status.is_success() {
            return Err(TargetError::Answer(format!(
                "{status}: {}",
                String::from_utf8_lossy(&bytes)
            )));
        }
        let answer: CheckAnswer =
            serde_json::from_slice(&bytes).map_err(|e| TargetError::Answer(e.to_string()))?;
        Ok(Outcome {
            allowed: answer.allowed,
            degraded: answer.degraded,
        })
    }

    fn label(&self) -> String {
        "http".into()
    }
}
