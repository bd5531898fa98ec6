//! The Redis store under load, in-process, and tollgate's own script for `redis-benchmark`.
//!
//! `scripts/bench.sh` uses it to hand `redis-benchmark` the exact script every decision runs,
//! and it is the quickest way to profile the library path (`perf record -g` on this binary)
//! without the `tollgate` binary around it:
//!
//! ```sh
//! cargo bench -p tollgate-redis --bench redis_load -- script > tollgate.lua   # the Lua source
//! cargo bench -p tollgate-redis --bench redis_load -- sha                     # its SHA-1
//! cargo bench -p tollgate-redis --bench redis_load -- load redis://127.0.0.1:6390 \
//!     [--algorithm gcra] [--limit 1000000] [--period-us 60000000] [--keys 10000] \
//!     [--concurrency 50] [--requests 200000] [--resilient] [--exhaust-first] [--current-thread]
//!     [--variant LABEL] [--replica-ack N] [--ack-timeout-ms MS]
//! ```
//!
//! `load` prints the same JSON line as `tollgate bench --json` (rps, p50/p99, outcomes, Redis
//! commands per decision and script CPU µs per call from `INFO commandstats`, summed over every
//! node of a `redis+cluster://` URL). `--resilient`
//! puts the server's wrapper in front (timeout, circuit breaker, over-limit cache), as
//! `tollgate serve` runs it; `--current-thread` runs the client on one thread instead of Tokio's
//! multi-thread runtime (no cross-thread wake-ups between the tasks and the connection).
//! `--replica-ack N` sets `RedisOptions::replica_ack` (every consuming decision waits for N
//! replicas, `WAIT` up to `--ack-timeout-ms`, 25 by default: half the server's default store
//! timeout, as `store.replica_ack` sets it); the server must have that many replicas.

use std::sync::Arc;
use std::time::Duration;

use tollgate::{Algorithm, Limiter, Policy, ResilienceConfig, Resilient, Store};
use tollgate_bench::{CommandCounter, RedisCounters, StoreTarget, Workload, run};
use tollgate_redis::script::Shape;
use tollgate_redis::{RedisOptions, RedisStore};

/// What `load` was asked to do.
struct LoadArgs {
    url: String,
    algorithm: Algorithm,
    limit: u64,
    period_us: u64,
    workload: Workload,
    resilient: bool,
    current_thread: bool,
    variant: Option<String>,
    /// The CA of a `rediss://` server's certificate.
    tls_ca: Option<std::path::PathBuf>,
    /// Where to read `INFO commandstats` when not at `url` (a Sentinel's master, a TLS server's
    /// plain port).
    stats_url: Option<String>,
    /// `RedisOptions::replica_ack`'s replicas (0: off) and `WAIT` timeout.
    replica_ack: u32,
    ack_timeout: Duration,
}

fn usage() -> ! {
    eprintln!(
        "usage: redis_load script ALGORITHM|several | sha ALGORITHM|several | load URL [--algorithm A] [--limit N] [--period-us N] \
         [--keys N] [--concurrency N] [--requests N] [--resilient] [--exhaust-first] \
         [--current-thread] [--variant LABEL] [--tls-ca FILE] [--stats-url URL] \
         [--replica-ack N] [--ack-timeout-ms MS]"
    );
    std::process::exit(2)
}

/// `several` or an algorithm's name: the script of that shape.
fn parse_shape(arg: Option<String>) -> Shape {
    match arg.as_deref() {
        Some("several") => Shape::SeveralPolicies,
        Some(name) => match name.parse::<Algorithm>() {
            Ok(algorithm) => Shape::OnePolicy(algorithm),
            Err(e) => {
                eprintln!("redis_load: {e}");
                usage()
            }
        },
        None => usage(),
    }
}

fn parse_load(mut args: impl Iterator<Item = String>) -> Result<LoadArgs, String> {
    let url = args.next().ok_or("load needs a Redis URL")?;
    let mut load = LoadArgs {
        url,
        algorithm: Algorithm::Gcra,
        limit: 1_000_000,
        period_us: 60_000_000,
        workload: Workload::default(),
        resilient: false,
        current_thread: false,
        variant: None,
        tls_ca: None,
        stats_url: None,
        replica_ack: 0,
        ack_timeout: Duration::from_millis(25),
    };
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        let number = |v: String| v.parse::<u64>().map_err(|e| format!("{flag} {v}: {e}"));
        match flag.as_str() {
            "--algorithm" => load.algorithm = value()?.parse().map_err(|e| format!("{e}"))?,
            "--limit" => load.limit = number(value()?)?,
            "--period-us" => load.period_us = number(value()?)?,
            "--keys" => load.workload.keys = number(value()?)? as usize,
            "--concurrency" => load.workload.concurrency = number(value()?)? as usize,
            "--requests" => load.workload.requests = number(value()?)?,
            "--resilient" => load.resilient = true,
            "--current-thread" => load.current_thread = true,
            "--exhaust-first" => load.workload.exhaust_first = true,
            "--variant" => load.variant = Some(value()?),
            "--tls-ca" => load.tls_ca = Some(value()?.into()),
            "--stats-url" => load.stats_url = Some(value()?),
            "--replica-ack" => {
                load.replica_ack = u32::try_from(number(value()?)?).map_err(|e| e.to_string())?
            }
            "--ack-timeout-ms" => load.ack_timeout = Duration::from_millis(number(value()?)?),
            // cargo bench appends --bench to the arguments.
            "--bench" => {}
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(load)
}

async fn drive<S: Store>(store: S, load: &LoadArgs, policy: Policy, counter: CommandCounter) {
    let label = load.variant.clone().unwrap_or_else(|| {
        format!(
            "redis {} c{}{}{}",
            load.algorithm.name(),
            load.workload.concurrency,
            if load.resilient { " resilient" } else { "" },
            if load.replica_ack > 0 { " ack" } else { "" }
        )
    });
    let limiter = Limiter::new(store).with_policy("bench", policy).unwrap();
    let target = Arc::new(StoreTarget::new(limiter, "bench", "redis"));
    let report = run(target, &load.workload, label, false, Some(counter)).await;
    println!("{}", report.json_line());
}

async fn load(load: LoadArgs) -> Result<(), String> {
    let burst = load.algorithm.has_burst().then_some(load.limit);
    let policy = Policy::new(
        load.algorithm,
        load.limit,
        Duration::from_micros(load.period_us),
        burst,
    )
    .map_err(|e| e.to_string())?;
    let options = RedisOptions {
        tls: load.tls_ca.clone().map(|ca_cert| tollgate_redis::TlsFiles {
            ca_cert: Some(ca_cert),
            client_cert: None,
            client_key: None,
        }),
        replica_ack: (load.replica_ack > 0).then_some(tollgate_redis::ReplicaAck {
            replicas: load.replica_ack,
            timeout: load.ack_timeout,
        }),
        ..RedisOptions::default()
    };
    let store = RedisStore::connect(&load.url, options)
        .await
        .map_err(|e| e.to_string())?;
    let counter = command_counter(load.stats_url.as_deref().unwrap_or(&load.url))?;
    if load.resilient {
        let store = Resilient::new(store, ResilienceConfig::default());
        drive(store, &load, policy, counter).await;
    } else {
        drive(store, &load, policy, counter).await;
    }
    Ok(())
}

/// Counts of `INFO commandstats` at `url`: of its one server, or summed over every node a
/// `redis+cluster://` URL names.
fn command_counter(url: &str) -> Result<CommandCounter, String> {
    let nodes: Vec<String> = match url.strip_prefix("redis+cluster://") {
        Some(hosts) => hosts.split(',').map(|h| format!("redis://{h}")).collect(),
        None => vec![url.to_owned()],
    };
    let counters = nodes
        .iter()
        .map(|node| {
            let client = redis::Client::open(node.as_str()).map_err(|e| e.to_string())?;
            Ok(tollgate_bench::redis_command_counter(client))
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Arc::new(move || {
        let counters = counters.clone();
        Box::pin(async move {
            let mut sum = RedisCounters::default();
            for counter in &counters {
                let node = counter().await?;
                sum.calls += node.calls;
                sum.script_calls += node.script_calls;
                sum.script_usec += node.script_usec;
            }
            Some(sum)
        })
    }))
}

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    match args.next().as_deref() {
        Some("script") => print!("{}", RedisStore::script_source(parse_shape(args.next()))),
        Some("sha") => println!("{}", RedisStore::script_sha(parse_shape(args.next()))),
        Some("load") => {
            let parsed = parse_load(args).unwrap_or_else(|e| {
                eprintln!("redis_load: {e}");
                usage()
            });
            let mut builder = if parsed.current_thread {
                tokio::runtime::Builder::new_current_thread()
            } else {
                tokio::runtime::Builder::new_multi_thread()
            };
            let runtime = builder.enable_all().build().unwrap_or_else(|e| {
                eprintln!("redis_load: tokio runtime: {e}");
                std::process::exit(1)
            });
            if let Err(e) = runtime.block_on(load(parsed)) {
                eprintln!("redis_load: {e}");
                std::process::exit(1);
            }
        }
        _ => usage(),
    }
}
