//! `tollgate bench`: the load generator of `tollgate-bench` pointed at a store (the library path,
//! in-process), a running `tollgate serve` (HTTP) or an Envoy rate limit service (gRPC).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use clap::Args;
use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tollgate::memory::MemoryStore;
use tollgate::{Algorithm, Clock, Limiter, OnError, Policy, PolicyName, ResilienceConfig, Resilient};
use tollgate_bench::{CommandCounter, redis_command_counter, HttpTarget, Outcome, Report, StoreTarget, Target, TargetError, Workload, run};
use tollgate_envoy::envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use tollgate_envoy::envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use tollgate_envoy::envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use tollgate_envoy::envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use tollgate_redis::{RedisOptions, RedisStore};

use crate::config::StoreUrl;

/// Flags of `tollgate bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Decide in-process on this store: `memory` or a Redis URL [default: memory].
    #[arg(long, value_name = "URL", conflicts_with_all = ["http", "grpc"])]
    pub store: Option<StoreUrl>,
    /// Send `POST /v1/check` to a running `tollgate serve` at this base URL.
    #[arg(long, value_name = "URL", conflicts_with = "grpc")]
    pub http: Option<String>,
    /// Call an Envoy rate limit service (`ShouldRateLimit`) at this address (host:port).
    #[arg(long, value_name = "ADDR")]
    pub grpc: Option<String>,
    /// gRPC domain; each request sends one descriptor `key = <key>`.
    #[arg(long, default_value = "bench")]
    pub grpc_domain: String,
    /// Descriptor key of gRPC requests.
    #[arg(long, default_value = "key")]
    pub grpc_descriptor: String,
    /// HTTP/2 connections the gRPC requests are spread over [default: one per core, as Envoy
    /// keeps one per worker thread and runs a worker per core]. `--http` opens one connection
    /// per request in flight (HTTP/1.1).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub grpc_connections: Option<u64>,
    /// Policy name (for --http: the server's policy; for --store: the name of the one built
    /// from --algorithm/--limit/--period/--burst).
    #[arg(long, default_value = "bench")]
    pub policy: PolicyName,
    /// Algorithm of the in-process policy.
    #[arg(long, default_value = "gcra")]
    pub algorithm: Algorithm,
    /// Limit of the in-process policy.
    #[arg(long, default_value_t = 1_000_000)]
    pub limit: u64,
    /// Period of the in-process policy.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub period: Duration,
    /// Burst of the in-process policy (token bucket and GCRA).
    #[arg(long)]
    pub burst: Option<u64>,
    /// Distinct keys.
    #[arg(long, default_value_t = 10_000)]
    pub keys: usize,
    /// Key distribution: uniform, zipf or zipf:S.
    #[arg(long, default_value = "uniform")]
    pub distribution: tollgate_bench::Distribution,
    /// Requests in flight.
    #[arg(long, default_value_t = 50)]
    pub concurrency: usize,
    /// Timed requests.
    #[arg(long, default_value_t = 200_000)]
    pub requests: u64,
    /// Stop after this long even if requests remain (e.g. 10s).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Cost of each request.
    #[arg(long, default_value_t = 1)]
    pub cost: u64,
    /// Exhaust every key first, so the timed part measures rejections.
    #[arg(long)]
    pub exhaust_first: bool,
    /// Store timeout for Redis stores (the resilience layer's).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Keep the over-limit cache in front of Redis (the server's default); off measures every
    /// decision in Redis.
    #[arg(long, default_value = "on", value_parser = on_off, action = clap::ArgAction::Set)]
    pub over_limit_cache: bool,
    /// Key prefix of this run.
    #[arg(long, default_value = "bench:")]
    pub key_prefix: String,
    /// Label of the run in the report.
    #[arg(long)]
    pub variant: Option<String>,
    /// Print one JSON line instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Draw a progress bar on stderr.
    #[arg(long)]
    pub progress: bool,
}

fn on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" | "true" => Ok(true),
        "off" | "false" => Ok(false),
        other => Err(format!("expected on or off, got `{other}`")),
    }
}

/// Run the benchmark `args` describe and print its report.
pub async fn bench(args: BenchArgs) -> Result<(), String> {
    let workload = Workload {
        keys: args.keys,
        distribution: args.distribution,
        concurrency: args.concurrency,
        requests: args.requests,
        duration: args.duration,
        cost: args.cost,
        exhaust_first: args.exhaust_first,
        key_prefix: args.key_prefix.clone(),
        ..Workload::default()
    };
    let report = if let Some(base) = &args.http {
        let target =
            Arc::new(HttpTarget::new(base, args.policy.as_str()).map_err(|e| e.to_string())?);
        let variant = args
            .variant
            .clone()
            .unwrap_or_else(|| format!("http {}", args.policy));
        run(target, &workload, variant, args.progress, None).await
    } else if let Some(addr) = &args.grpc {
        let target = Arc::new(
            GrpcTarget::connect(
                addr,
                args.grpc_connections
                    .and_then(|n| usize::try_from(n).ok())
                    .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
                &args.grpc_domain,
                &args.grpc_descriptor,
            )
            .await?,
        );
        let variant = args
            .variant
            .clone()
            .unwrap_or_else(|| format!("grpc {}", args.grpc_domain));
        run(target, &workload, variant, args.progress, None).await
    } else {
        bench_store(&args, &workload).await?
    };
    if args.json {
        println!("{}", report.json_line());
    } else {
        print!("{report}");
    }
    if report.errors > 0 && report.allowed + report.rejected == 0 {
        return Err(format!(
            "every request failed: {}",
            report.first_error.unwrap_or_default()
        ));
    }
    Ok(())
}

/// The library path: a `Limiter` on the memory store or on Redis behind the resilience layer.
async fn bench_store(args: &BenchArgs, workload: &Workload) -> Result<Report, String> {
    let policy = Policy::new(args.algorithm, args.limit, args.period, args.burst)
        .map_err(|e| format!("policy: {e}"))?;
    let store = args.store.clone().unwrap_or(StoreUrl::Memory);
    let variant = args.variant.clone().unwrap_or_else(|| {
        let kind = match store {
            StoreUrl::Memory => "memory",
            StoreUrl::Redis(_) => "redis",
        };
        format!("{kind} {}", args.algorithm)
    });
    match &store {
        StoreUrl::Memory => {
            let limiter = Limiter::new(MemoryStore::with_options(Clock::System, usize::MAX))
                .with_named_policy(args.policy.clone(), policy);
            let target = Arc::new(StoreTarget::new(limiter, args.policy.as_str(), "memory"));
            Ok(run(target, workload, variant, args.progress, None).await)
        }
        StoreUrl::Redis(url) => {
            let redis = RedisStore::connect(url, RedisOptions::default())
                .await
                .map_err(|e| format!("store {store}: {e}"))?;
            let resilience = ResilienceConfig {
                timeout: args.timeout,
                on_error: OnError::Deny,
                over_limit_cache: if args.over_limit_cache { 100_000 } else { 0 },
                ..ResilienceConfig::default()
            };
            let limiter = Limiter::new(Resilient::new(redis, resilience))
                .with_named_policy(args.policy.clone(), policy);
            let target = Arc::new(StoreTarget::new(limiter, args.policy.as_str(), "redis"));
            let counter = command_counter(url);
            Ok(run(target, workload, variant, args.progress, counter).await)
        }
    }
}

/// Reads `INFO commandstats` of a standalone Redis (`redis://`, `rediss://`); other topologies
/// report no Redis counters.
fn command_counter(url: &str) -> Option<CommandCounter> {
    if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
        return None;
    }
    redis::Client::open(url).ok().map(redis_command_counter)
}

/// An Envoy rate limit service: one descriptor `descriptor = <key>` per request, spread over
/// `connections` HTTP/2 connections (Envoy keeps one per worker thread).
///
/// Each connection is hyper's HTTP/2 client as it is, the way [`HttpTarget`] uses hyper's
/// HTTP/1.1 client, and a call is one framed message each way
/// ([`tollgate_envoy::grpc::frame`], `unframe`): tonic's client would add a buffer task, a
/// streaming codec and a boxed body per call, which the client, sharing the cores with the
/// server, would pay for and the server's figure would show.
struct GrpcTarget {
    connections: Vec<SendRequest<Message>>,
    next: AtomicUsize,
    /// `http://host:port/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`.
    uri: http::Uri,
    domain: String,
    descriptor: String,
}

impl GrpcTarget {
    async fn connect(
        addr: &str,
        connections: usize,
        domain: &str,
        descriptor: &str,
    ) -> Result<GrpcTarget, String> {
        let origin: http::Uri = if addr.contains("://") {
            addr.parse()
        } else {
            format!("http://{addr}").parse()
        }
        .map_err(|e| format!("gRPC address {addr}: {e}"))?;
        let authority = origin
            .authority()
            .ok_or_else(|| format!("gRPC address {addr}: no host:port"))?
            .as_str()
            .to_owned();
        let uri = format!(
            "http://{authority}/{}/ShouldRateLimit",
            tollgate_envoy::RATE_LIMIT_SERVICE
        )
        .parse()
        .map_err(|e| format!("gRPC address {addr}: {e}"))?;
        let mut opened = Vec::with_capacity(connections);
        for _ in 0..connections {
            opened.push(
                connect_h2(&authority)
                    .await
                    .map_err(|e| format!("gRPC {addr}: {e}"))?,
            );
        }
        Ok(GrpcTarget {
            connections: opened,
            next: AtomicUsize::new(0),
            uri,
            domain: domain.to_owned(),
            descriptor: descriptor.to_owned(),
        })
    }
}

/// One HTTP/2 connection (hyper's client), shared by every request sent on it.
async fn connect_h2(authority: &str) -> Result<SendRequest<Message>, Box<dyn std::error::Error>> {
    let tcp = tokio::net::TcpStream::connect(authority).await?;
    // Decisions are small request/response pairs: never wait to coalesce them.
    tcp.set_nodelay(true)?;
    let (send, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            eprintln!("gRPC connection ended: {error}");
        }
    });
    Ok(send)
}

/// The call's `grpc-status` (in the trailers, or in the headers of a trailers-only answer) when
/// it is not OK, with its message.
fn grpc_error(headers: &http::HeaderMap, trailers: Option<&http::HeaderMap>) -> Option<String> {
    let status = trailers
        .and_then(|t| t.get("grpc-status"))
        .or_else(|| headers.get("grpc-status"));
    match status.map(http::HeaderValue::as_bytes) {
        Some(b"0") => None,
        Some(code) => {
            let message = trailers
                .and_then(|t| t.get("grpc-message"))
                .or_else(|| headers.get("grpc-message"))
                .map(|m| String::from_utf8_lossy(m.as_bytes()).into_owned())
                .unwrap_or_default();
            Some(format!(
                "grpc-status {}: {message}",
                String::from_utf8_lossy(code)
            ))
        }
        None => Some("no grpc-status in the answer".to_owned()),
    }
}

/// A unary call's body: one framed message, sent without `content-length` as Envoy's gRPC
/// client sends it (hyper writes the header for a body of known size, and a length that
/// changes with the key is HPACK-encoded afresh on every request).
struct Message(Option<Bytes>);

impl hyper::body::Body for Message {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Ready(self.0.take().map(|data| Ok(hyper::body::Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_none()
    }
}

impl Target for GrpcTarget {
    async fn decide(&self, key: &str, cost: u64) -> Result<Outcome, TargetError> {
        let request = RateLimitRequest {
            domain: self.domain.clone(),
            descriptors: vec![RateLimitDescriptor {
                entries: vec![Entry {
                    key: self.descriptor.clone(),
                    value: key.to_owned(),
                }],
                ..RateLimitDescriptor::default()
            }],
            hits_addend: u32::try_from(cost).unwrap_or(u32::MAX),
        };
        let call = http::Request::post(self.uri.clone())
            .header(http::header::CONTENT_TYPE, "application/grpc")
            .header(http::header::TE, "trailers")
            .body(Message(Some(tollgate_envoy::grpc::frame(&request))))
            .map_err(|e| TargetError::Answer(e.to_string()))?;
        let at = self.next.fetch_add(1, Ordering::Relaxed) % self.connections.len();
        let mut connection = self.connections[at].clone();
        let response = connection
            .send_request(call)
            .await
            .map_err(|e| TargetError::Answer(e.to_string()))?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| TargetError::Answer(e.to_string()))?;
        if let Some(error) = grpc_error(&parts.headers, body.trailers()) {
            return Err(TargetError::Answer(error));
        }
        let answer: RateLimitResponse = tollgate_envoy::grpc::unframe(&body.to_bytes())
            .map_err(|e| TargetError::Answer(e.to_string()))?;
        Ok(Outcome {
            allowed: answer.overall_code != Code::OverLimit as i32,
            degraded: false,
        })
    }

    fn label(&self) -> String {
        "grpc".into()
    }
}
