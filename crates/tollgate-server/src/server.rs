//! Running the service: bind, serve until shutdown, sweep the memory store, drain connections.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::config::Settings;
use crate::health::ReadinessHealth;
use crate::service::Service;
use crate::store::{AnyStore, OpenError};
use tollgate_envoy::EnvoyService;

/// How often expired state is dropped from the memory store.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// How often the live stats sample the counters: their rates are per second.
pub const STATS_INTERVAL: Duration = Duration::from_secs(1);
/// How long shutdown waits for in-flight requests before exiting anyway.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// `grpc_listen` without `envoy.config_dir`: there would be no rules to serve.
    #[error(
        "grpc_listen {0}: the Envoy rate limit service (gRPC) needs envoy.config_dir (a directory of envoyproxy/ratelimit YAML files)"
    )]
    NoEnvoyConfigDir(SocketAddr),
    /// The Envoy config directory is invalid.
    #[error("envoy.config_dir: {0}")]
    Envoy(#[from] tollgate_envoy::EnvoyConfigError),
    /// The store cannot be opened.
    #[error(transparent)]
    Store(#[from] OpenError),
    /// The listen address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Serving failed.
    #[error("server error: {0}")]
    Serve(#[source] io::Error),
}

/// A bound, not yet running server.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    service: Arc<Service>,
    settings: Settings,
    /// The Envoy rate limit service and its listener, when `grpc_listen` is set.
    grpc: Option<(EnvoyService<AnyStore>, TcpListener)>,
}

impl Server {
    /// Open the store and bind the listen address of `settings`.
    pub async fn bind(settings: Settings) -> Result<Server, ServeError> {
        let store = Arc::new(AnyStore::open(&settings.store)?);
        let mut service = Service::new(&settings, store.clone());
        let grpc = match (settings.grpc_listen, &settings.envoy.config_dir) {
            (Some(addr), Some(dir)) => {
                let envoy = EnvoyService::new(
                    service.bare_limiter().clone(),
                    dir.clone(),
                    settings.envoy.options(),
                )?;
                let listener = TcpListener::bind(addr)
                    .await
                    .map_err(|source| ServeError::Bind { addr, source })?;
                service = service.with_envoy(envoy.clone());
                Some((envoy, listener))
            }
            (Some(addr), None) => return Err(ServeError::NoEnvoyConfigDir(addr)),
            (None, Some(dir)) => {
                tracing::warn!(
                    dir = %dir.display(),
                    "envoy.config_dir is set but grpc_listen is not: the Envoy rate limit service is off"
                );
                None
            }
            (None, None) => None,
        };
        let listener =
            TcpListener::bind(settings.listen)
                .await
                .map_err(|source| ServeError::Bind {
                    addr: settings.listen,
                    source,
                })?;
        Ok(Server {
            listener,
            service: Arc::new(service),
            settings,
            grpc,
        })
    }

    /// The gRPC address actually bound, when the Envoy service is on.
    pub fn grpc_local_addr(&self) -> Option<SocketAddr> {
        self.grpc
            .as_ref()
            .and_then(|(_, listener)| listener.local_addr().ok())
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The decision service.
    pub fn service(&self) -> &Arc<Service> {
        &self.service
    }

    /// Serve until `shutdown` completes, then stop accepting, let in-flight requests finish
    /// (at most [`DRAIN_TIMEOUT`]) and return.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let addr = self.local_addr().map_err(ServeError::Serve)?;
        // Before the startup line: from then on, SIGHUP reloads instead of ending the process.
        let reloader =
            crate::reload::spawn(self.service.clone(), self.settings.config_file.clone())
                .map_err(ServeError::Serve)?;
        let live = self.service.live();
        let policies: Vec<&str> = live.policies().map(|(name, _)| name).collect();
        tracing::info!(
            listen = %addr,
            store = %self.service.store(),
            on_error = %self.settings.store.on_error.name(),
            policies = %policies.join(","),
            config = %self.settings.config_file.as_ref().map_or("(none)".into(), |p| p.display().to_string()),
            "tollgate listening"
        );
        drop(live);
        let replicas = tokio::spawn({
            let (service, asked) = (self.service.clone(), self.settings.store.replica_ack);
            async move { service.store().check_replicas(asked).await }
        });
        let sweeper = tokio::spawn(sweep(self.service.clone()));
        let sampler = tokio::spawn(sample_stats(self.service.clone()));
        let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
        // Both front ends stop on the same signal.
        let (stop_grpc_tx, stop_grpc_rx) = tokio::sync::watch::channel(false);
        let grpc = match self.grpc {
            Some((envoy, listener)) => {
                let reloader = envoy.spawn_reloader()?;
                tracing::info!(
                    grpc_listen = %listener.local_addr().map_err(ServeError::Serve)?,
                    config_dir = %envoy.config_dir().display(),
                    "envoy rate limit service (gRPC) listening"
                );
                let mut stop = stop_grpc_rx;
                // The rate limit service beside a health service that follows `/ready`.
                let health = ReadinessHealth::server(self.service.clone());
                let task = tokio::spawn(async move {
                    let result = tollgate_envoy::grpc::serve(listener, envoy, health, async move {
                        let _ = stop.wait_for(|stopping| *stopping).await;
                        envoy_stopping().await;
                    })
                    .await;
                    if let Err(error) = result {
                        tracing::error!(%error, "gRPC server failed");
                    }
                });
                Some((task, reloader))
            }
            None => None,
        };
        let serve = crate::http::serve::serve(
            self.listener,
            crate::http::Api::new(self.service.clone()),
            async move {
                shutdown.await;
                tracing::info!("shutting down: finishing in-flight requests");
                let _ = stop_grpc_tx.send(true);
                let _ = stopping_tx.send(());
            },
        );
        let deadline = async {
            if stopping_rx.await.is_ok() {
                tokio::time::sleep(DRAIN_TIMEOUT).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        let result = tokio::select! {
            result = serve => result.map_err(ServeError::Serve),
            () = deadline => {
                tracing::warn!("connections still open after {DRAIN_TIMEOUT:?}; exiting");
                Ok(())
            }
        };
        sweeper.abort();
        replicas.abort();
        sampler.abort();
        reloader.abort();
        if let Some((task, reloader)) = grpc {
            drop(reloader);
            let _ = tokio::time::timeout(DRAIN_TIMEOUT, task).await;
        }
        tracing::info!("stopped");
        result
    }
}

/// Nothing more to do before the gRPC server stops accepting (a hook for symmetry with HTTP).
async fn envoy_stopping() {}

/// Drop expired memory-store state every [`SWEEP_INTERVAL`], off the request threads (a sweep
/// walks every key).
async fn sweep(service: Arc<Service>) {
    let mut interval = tokio::time::interval(SWEEP_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let service = service.clone();
        let _ = tokio::task::spawn_blocking(move || service.store().sweep()).await;
    }
}

/// Sample the counters for the live stats every [`STATS_INTERVAL`] (nothing to do when they
/// are off).
async fn sample_stats(service: Arc<Service>) {
    if !service.stats_on() {
        return;
    }
    let mut interval = tokio::time::interval(STATS_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick completes at once; the stats already hold the sample at start.
    interval.tick().await;
    loop {
        interval.tick().await;
        service.sample_stats();
    }
}

/// A future that completes on SIGINT (Ctrl-C) or SIGTERM. The handlers are installed by this
/// call, not when the future is first polled, so a signal arriving during startup is not lost
/// to the default action (killing the process). Call it inside the runtime.
#[cfg(unix)]
pub fn shutdown_signal() -> io::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => tracing::info!("SIGINT received"),
            _ = terminate.recv() => tracing::info!("SIGTERM received"),
        }
    })
}

/// A future that completes on Ctrl-C.
#[cfg(not(unix))]
pub fn shutdown_signal() -> io::Result<impl Future<Output = ()> + Send + 'static> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}
