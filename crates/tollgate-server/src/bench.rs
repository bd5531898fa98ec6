//! `tollgate bench`: the load generator of `tollgate-bench` pointed at a store (the library path,
//! in-process), a running `tollgate serve` (HTTP) or an Envoy rate limit service (gRPC).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use clap::Args;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tollgate::memory::MemoryStore;
use tollgate::{Algorithm, Clock, Limiter, OnError, Policy, PolicyName, ResilienceConfig, Resilient};
use tollgate_bench::{CommandCounter, redis_command_counter, HttpTarget, Outcome, Report, StoreTarget, Target, TargetError, Workload, run};
use tollgate_envoy::envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use tollgate_envoy::envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use tollgate_envoy::envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use tollgate_envoy::envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use tollgate_envoy::envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
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
/// HTTP/1.1 client: tonic's `Channel` would put a buffer task in front of it, one more task hop
/// per request that the client, sharing the cores with the server, would pay for.
struct GrpcTarget {
    clients: Vec<RateLimitServiceClient<H2Connection>>,
    next: AtomicUsize,
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
        let mut clients = Vec::with_capacity(connections);
        for _ in 0..connections {
            let connection = H2Connection::connect(&authority)
                .await
                .map_err(|e| format!("gRPC {addr}: {e}"))?;
            clients.push(RateLimitServiceClient::with_origin(
                connection,
                origin.clone(),
            ));
        }
        Ok(GrpcTarget {
            clients,
            next: AtomicUsize::new(0),
            domain: domain.to_owned(),
            descriptor: descriptor.to_owned(),
        })
    }
}

/// One HTTP/2 connection (hyper's client), shared by every request sent on it.
#[derive(Clone)]
struct H2Connection {
    send: hyper::client::conn::http2::SendRequest<tonic::body::Body>,
}

impl H2Connection {
    async fn connect(authority: &str) -> Result<H2Connection, Box<dyn std::error::Error>> {
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
        Ok(H2Connection { send })
    }
}

impl tonic::codegen::Service<http::Request<tonic::body::Body>> for H2Connection {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = hyper::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, hyper::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), hyper::Error>> {
        self.send.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(self.send.send_request(request))
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
        let at = self.next.fetch_add(1, Ordering::Relaxed) % self.clients.len();
        let answer = self.clients[at]
            .clone()
            .should_rate_limit(request)
            .await
            .map_err(|status| TargetError::Answer(status.to_string()))?
            .into_inner();
        Ok(Outcome {
            allowed: answer.overall_code != Code::OverLimit as i32,
            degraded: false,
        })
    }

    fn label(&self) -> String {
        "grpc".into()
    }
}
