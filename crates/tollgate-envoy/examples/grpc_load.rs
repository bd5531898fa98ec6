//! Load generator: ShouldRateLimit decisions per second and latency percentiles over gRPC.
//!
//! ```sh
//! cargo run --release -p tollgate-envoy --example grpc_load              # in-process, memory store
//! cargo run --release -p tollgate-envoy --example grpc_load -- 127.0.0.1:8081 bench   # a running server, domain `bench`
//! ```
//! Options (environment): `SECONDS` (5), `CONNECTIONS` (4), `CONCURRENCY` per connection (16),
//! `KEYS` distinct users (10000). The in-process config limits `user` to 1,000,000 per minute,
//! so the numbers measure deciding, not rejecting. For a running server use a domain with a
//! `user` rule.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tollgate::MemoryStore;
use tollgate_envoy::envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use tollgate_envoy::envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use tollgate_envoy::envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use tollgate_envoy::envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use tollgate_envoy::{EnvoyOptions, EnvoyService};
use tonic::transport::Channel;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let seconds = env("SECONDS", 5);
    let connections = env("CONNECTIONS", 4);
    let concurrency = env("CONCURRENCY", 16);
    let keys = env("KEYS", 10_000).max(1);
    let mut args = std::env::args().skip(1);
    let (addr, domain, _dir) = match args.next() {
        Some(addr) => (addr, args.next().unwrap_or_else(|| "bench".into()), None),
        None => {
            let dir = tempfile::tempdir()?;
            std::fs::write(
                dir.path().join("bench.yaml"),
                "domain: bench\ndescriptors:\n  - key: user\n    rate_limit: { unit: minute, requests_per_unit: 1000000 }\n",
            )?;
            let service = EnvoyService::new(
                Arc::new(MemoryStore::new()),
                dir.path(),
                EnvoyOptions::default(),
            )?;
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?.to_string();
            tokio::spawn(async move { service.serve(listener, std::future::pending()).await });
            (addr, "bench".to_string(), Some(dir))
        }
    };
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut workers = Vec::new();
    for c in 0..connections {
        let channel = Channel::from_shared(format!("http://{addr}"))?
            .connect()
            .await?;
        for w in 0..concurrency {
            let mut client = RateLimitServiceClient::new(channel.clone());
            let domain = domain.clone();
            let mut key = (c * concurrency + w) * 7919;
            workers.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    key = (key + 1) % keys;
                    let request = RateLimitRequest {
                        domain: domain.clone(),
                        descriptors: vec![RateLimitDescriptor {
                            entries: vec![Entry {
                                key: "user".into(),
                                value: format!("u{key}"),
                            }],
                            ..RateLimitDescriptor::default()
                        }],
                        hits_addend: 0,
                    };
                    let started = Instant::now();
                    if client.should_rate_limit(request).await.is_err() {
                        return Err("ShouldRateLimit failed");
                    }
                    latencies.push(started.elapsed());
                }
                Ok(latencies)
            }));
        }
    }
    let started = Instant::now();
    let mut latencies = Vec::new();
    for worker in workers {
        latencies.extend(worker.await??);
    }
    let elapsed = started.elapsed().as_secs_f64().max(1e-9);
    if latencies.is_empty() {
        println!("no decisions were made");
        return Ok(());
    }
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    println!(
        "{} decisions in {elapsed:.1} s: {:.0}/s; latency p50 {:?}, p99 {:?}, max {:?} ({connections} connections x {concurrency} in flight)",
        latencies.len(),
        latencies.len() as f64 / elapsed,
        at(0.50),
        at(0.99),
        at(1.0),
    );
    Ok(())
}
