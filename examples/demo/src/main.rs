//! `demo`: one instance of an axum app whose `/api/data` is limited to 10 requests a minute per
//! `X-User-ID`. Run three against one Redis (`scripts/demo.sh`, or `docker compose up`) and
//! they share that limit: the eleventh request is refused whichever instance receives it.
//!
//! ```text
//! PORT=8081 REDIS_URL=redis://127.0.0.1:6379 cargo run -p tollgate-demo
//! curl -i -H 'X-User-ID: alice' 127.0.0.1:8081/api/data
//! ```
//!
//! Environment: `PORT` (default 8081), `HOST` (default 127.0.0.1; 0.0.0.0 in a container),
//! `REDIS_URL` (default redis://127.0.0.1:6379), `REDIS_PASSWORD` (optional, put into the
//! URL), `INSTANCE` (the name it answers with; default the listen address), `RUST_LOG`
//! (default `info`). Logs are JSON lines on stdout. SIGINT or SIGTERM stops it gracefully.

mod app;
mod config;

use std::future::Future;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use tollgate::{Limiter, PolicyError, PolicyNameError};
use tollgate_redis::{RedisOptions, RedisStore, RedisStoreError};
use tollgate_tower::BuildError;

use crate::config::{ConfigError, Settings};

/// How long shutdown waits for in-flight requests before exiting anyway.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the demo could not start or serve.
#[derive(Debug, thiserror::Error)]
enum DemoError {
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("cannot install signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    #[error("rate-limit policy: {0}")]
    Policy(#[from] PolicyError),
    #[error("rate-limit policy: {0}")]
    PolicyName(#[from] PolicyNameError),
    #[error("{0} (is Redis running? set REDIS_URL / REDIS_PASSWORD)")]
    Redis(#[from] RedisStoreError),
    #[error("rate-limit layer: {0}")]
    Layer(#[from] BuildError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("serving: {0}")]
    Serve(#[source] std::io::Error),
}

#[tokio::main]
async fn main() -> ExitCode {
    init_logging();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %error, "demo stopped");
            match error {
                DemoError::Config(_) => ExitCode::from(2),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

/// Start, serve until SIGINT or SIGTERM, drain, return.
async fn run() -> Result<(), DemoError> {
    let settings = Settings::from_env()?;
    // Installed before anything slow, so a signal during start-up is not the default action
    // (an abrupt exit) but a clean stop.
    let shutdown = shutdown_signal().map_err(DemoError::Signals)?;

    let store = RedisStore::connect(&settings.redis_url, RedisOptions::default()).await?;
    let limiter = Limiter::new(store).with_policy(app::POLICY, app::policy()?)?;
    let router = app::router(limiter, settings.instance.clone())?;

    let listener = tokio::net::TcpListener::bind(settings.addr)
        .await
        .map_err(|source| DemoError::Bind {
            addr: settings.addr,
            source,
        })?;
    tracing::info!(
        instance = app::name_of(&settings.instance),
        listen = %settings.addr,
        redis = %tollgate_redis::redact(&settings.redis_url),
        policy = app::POLICY,
        "demo listening"
    );

    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    // Connect info gives the layer the socket peer, the key for callers without X-User-ID.
    let serve = axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.await;
        tracing::info!("shutting down: finishing in-flight requests");
        let _ = stopping_tx.send(());
    });
    let drain_deadline = async {
        match stopping_rx.await {
            Ok(()) => tokio::time::sleep(DRAIN_TIMEOUT).await,
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        result = serve => result.map_err(DemoError::Serve)?,
        () = drain_deadline => tracing::warn!("connections still open after {DRAIN_TIMEOUT:?}; exiting"),
    }
    tracing::info!("stopped");
    Ok(())
}

/// JSON lines on stdout; levels from `RUST_LOG` (default `info`).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_env_filter(filter)
        .with_writer(std::io::stdout)
        .init();
}

/// A future that completes on SIGINT (Ctrl-C) or SIGTERM (`docker stop`, `kill`). The handlers
/// are installed by this call, not when the future is first polled.
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => tracing::info!(signal = "SIGINT", "signal received"),
            _ = terminate.recv() => tracing::info!(signal = "SIGTERM", "signal received"),
        }
    })
}
