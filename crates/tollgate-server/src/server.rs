//! Running the service: bind, serve until shutdown, sweep the memory store, drain connections.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;

use crate::config::Settings;
use crate::service::Service;
use crate::store::{AnyStore, OpenError};

/// How often expired state is dropped from the memory store.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// How long shutdown waits for in-flight requests before exiting anyway.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// `grpc_listen` was asked for; this build has no gRPC server yet.
    #[error(
        "grpc_listen {0}: the gRPC (Envoy rate limit service) server is not built into this version of tollgate yet; remove --grpc-listen, TOLLGATE_GRPC_LISTEN or grpc_listen"
    )]
    GrpcNotBuiltIn(SocketAddr),
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
}

impl Server {
    /// Open the store and bind the listen address of `settings`.
    pub async fn bind(settings: Settings) -> Result<Server, ServeError> {
        if let Some(addr) = settings.grpc_listen {
            return Err(ServeError::GrpcNotBuiltIn(addr));
        }
        let store = AnyStore::open(&settings.store)?;
        let service = Arc::new(Service::new(&settings, store));
        let listener =
            TcpListener::bind(settings.listen)
                .await
                .map_err(|source| ServeError::Bind {
                    addr: settings.listen,
                    source,
                })?;
        Ok(Server {
            listener,
            service,
            settings,
        })
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
        let policies: Vec<&str> = self.service.policies().iter().map(|p| &*p.name).collect();
        tracing::info!(
            listen = %addr,
            store = %self.service.store(),
            on_error = %self.settings.store.on_error.name(),
            policies = %policies.join(","),
            config = %self.settings.config_file.as_ref().map_or("(none)".into(), |p| p.display().to_string()),
            "tollgate listening"
        );
        let sweeper = tokio::spawn(sweep(self.service.clone()));
        let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
        let listener = self.listener.tap_io(|tcp| {
            // Decisions are small request/response pairs: never wait to coalesce them.
            let _ = tcp.set_nodelay(true);
        });
        let serve = axum::serve(listener, crate::http::router(self.service.clone()))
            .with_graceful_shutdown(async move {
                shutdown.await;
                tracing::info!("shutting down: finishing in-flight requests");
                let _ = stopping_tx.send(());
            });
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
        tracing::info!("stopped");
        result
    }
}

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
