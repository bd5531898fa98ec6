//! Test harness: the real tonic server on 127.0.0.1:0 over any store, a real gRPC client, and
//! a temporary config directory. Generic over `S: Store` so the scenarios in `scenarios.rs`
//! run on the memory store here and on other stores elsewhere.
#![allow(dead_code)]

pub mod scenarios;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tollgate::Store;
use tollgate_envoy::envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use tollgate_envoy::envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::{
    Entry, RateLimitOverride,
};
use tollgate_envoy::envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{
    Code, DescriptorStatus,
};
use tollgate_envoy::envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use tollgate_envoy::envoy_types::pb::envoy::service::ratelimit::v3::{
    RateLimitRequest, RateLimitResponse,
};
use tollgate_envoy::envoy_types::pb::google::protobuf::UInt64Value;
use tollgate_envoy::{EnvoyOptions, EnvoyService, Reloader};
use tonic::transport::Channel;

/// A running server and a client connected to it.
pub struct Harness<S: Store> {
    /// The service (for metrics, reloads).
    pub service: EnvoyService<S>,
    /// A gRPC client connected to the server.
    pub client: RateLimitServiceClient<Channel>,
    /// The client channel (for other services such as health).
    pub channel: Channel,
    /// The server's address.
    pub addr: SocketAddr,
    /// The config directory.
    pub dir: tempfile::TempDir,
    /// The unique domain suffix of this harness (see [`unique`]).
    pub suffix: String,
    reloader: Option<Reloader>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<()>,
}

impl<S: Store> Drop for Harness<S> {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.server.abort();
    }
}

/// A suffix unique to this process and call, so runs against a shared store never meet old
/// counters: domains in scenario configs are written `{d}` and replaced by `name-suffix`.
pub fn unique() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{nanos:x}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Write `files` (name, YAML with `{d}` for the unique domain suffix) into `dir`.
pub fn write_files(dir: &Path, suffix: &str, files: &[(&str, &str)]) {
    for (name, text) in files {
        std::fs::write(dir.join(name), text.replace("{d}", suffix)).expect("write config file");
    }
}

/// Start a server on `store` with `files` in a fresh config directory.
pub async fn start<S: Store>(
    store: Arc<S>,
    files: &[(&str, &str)],
    options: EnvoyOptions,
) -> Harness<S> {
    let dir = tempfile::tempdir().expect("tempdir");
    let suffix = unique();
    write_files(dir.path(), &suffix, files);
    let service = EnvoyService::new(store, dir.path(), options).expect("valid config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = service.clone();
    let server = tokio::spawn(async move {
        let _ = serving
            .serve(listener, async {
                let _ = stopped.await;
            })
            .await;
    });
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("connect");
    Harness {
        service,
        client: RateLimitServiceClient::new(channel.clone()),
        channel,
        addr,
        dir,
        suffix,
        reloader: None,
        stop: Some(stop),
        server,
    }
}

impl<S: Store> Harness<S> {
    /// The unique domain of `name`: `name-<suffix>`.
    pub fn domain(&self, name: &str) -> String {
        format!("{name}-{}", self.suffix)
    }

    /// Watch the config directory.
    pub fn watch(&mut self) {
        self.reloader = Some(self.service.spawn_reloader().expect("watcher"));
    }

    /// Replace (or add) a config file.
    pub fn write(&self, name: &str, text: &str) {
        write_files(self.dir.path(), &self.suffix, &[(name, text)]);
    }

    /// Call ShouldRateLimit.
    pub async fn call(
        &self,
        request: RateLimitRequest,
    ) -> Result<RateLimitResponse, tonic::Status> {
        let mut client = self.client.clone();
        client
            .should_rate_limit(request)
            .await
            .map(tonic::Response::into_inner)
    }

    /// Call ShouldRateLimit for one descriptor in domain `name` and return its status and the
    /// overall code.
    pub async fn one(
        &self,
        name: &str,
        descriptor: RateLimitDescriptor,
    ) -> (Code, DescriptorStatus) {
        let response = self
            .call(request(&self.domain(name), vec![descriptor], 0))
            .await
            .expect("ShouldRateLimit");
        assert_eq!(response.statuses.len(), 1);
        (code(response.overall_code), response.statuses[0].clone())
    }

    /// The Prometheus text of the service.
    pub fn metrics(&self) -> String {
        let mut out = String::new();
        self.service.render_metrics(&mut out);
        out
    }

    /// The value of a metric line starting with `series` (name and labels), if present.
    pub fn metric(&self, series: &str) -> Option<u64> {
        self.metrics().lines().find_map(|line| {
            let rest = line.strip_prefix(series)?.strip_prefix(' ')?;
            rest.parse().ok()
        })
    }
}

/// A request.
pub fn request(
    domain: &str,
    descriptors: Vec<RateLimitDescriptor>,
    hits_addend: u32,
) -> RateLimitRequest {
    RateLimitRequest {
        domain: domain.to_owned(),
        descriptors,
        hits_addend,
    }
}

/// A descriptor of `(key, value)` entries.
pub fn desc(entries: &[(&str, &str)]) -> RateLimitDescriptor {
    RateLimitDescriptor {
        entries: entries
            .iter()
            .map(|(key, value)| Entry {
                key: (*key).to_owned(),
                value: (*value).to_owned(),
            })
            .collect(),
        limit: None,
        hits_addend: None,
        is_negative_hits: false,
    }
}

/// A descriptor with its own `hits_addend`.
pub fn desc_hits(entries: &[(&str, &str)], hits: u64) -> RateLimitDescriptor {
    RateLimitDescriptor {
        hits_addend: Some(UInt64Value { value: hits }),
        ..desc(entries)
    }
}

/// A descriptor giving hits back (`is_negative_hits`), with its own `hits_addend` if `Some`.
pub fn desc_refund(entries: &[(&str, &str)], hits: Option<u64>) -> RateLimitDescriptor {
    RateLimitDescriptor {
        hits_addend: hits.map(|value| UInt64Value { value }),
        is_negative_hits: true,
        ..desc(entries)
    }
}

/// A descriptor with a limit override (`unit` as the proto enum value).
pub fn desc_override(
    entries: &[(&str, &str)],
    requests_per_unit: u32,
    unit: i32,
) -> RateLimitDescriptor {
    RateLimitDescriptor {
        limit: Some(RateLimitOverride {
            requests_per_unit,
            unit,
        }),
        ..desc(entries)
    }
}

/// The code of a proto enum value.
pub fn code(value: i32) -> Code {
    Code::try_from(value).expect("a known code")
}

/// The `requests_per_unit` of a status's limit, if it has one.
pub fn rpu(status: &DescriptorStatus) -> Option<u32> {
    status.current_limit.as_ref().map(|l| l.requests_per_unit)
}
