//! The gRPC face of the service: `envoy.service.ratelimit.v3.RateLimitService` and
//! `grpc.health.v1.Health`, and ways to mount both on a tonic server or to serve them
//! ([`serve`]).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::time::Duration;

use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::{
    RateLimitService, RateLimitServiceServer,
};
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use futures_util::FutureExt as _;
use futures_util::future::{Either, Ready};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tollgate::Store;
use tonic::body::Body;
use tonic::codegen::Service;
use tonic::server::NamedService;
use tonic::transport::server::Router;
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::HealthService;

use crate::service::EnvoyService;

/// The gRPC service name Envoy calls.
pub const RATE_LIMIT_SERVICE: &str = "envoy.service.ratelimit.v3.RateLimitService";

/// The health service name upstream registers; kept so existing health checks keep working.
pub const UPSTREAM_HEALTH_NAME: &str = "ratelimit";

/// The names whose health is reported: the server as a whole (`""`), the rate limit service,
/// and upstream's name.
const HEALTH_NAMES: [&str; 3] = ["", RATE_LIMIT_SERVICE, UPSTREAM_HEALTH_NAME];

#[tonic::async_trait]
impl<S: Store> RateLimitService for EnvoyService<S> {
    async fn should_rate_limit(
        &self,
        request: tonic::Request<RateLimitRequest>,
    ) -> Result<tonic::Response<RateLimitResponse>, tonic::Status> {
        self.check(request.get_ref())
            .await
            .map(tonic::Response::new)
    }
}

impl<S: Store> EnvoyService<S> {
    /// Mark every health name SERVING (at construction).
    pub(crate) fn init_health(&self) {
        for name in HEALTH_NAMES {
            // The reporter was just created: its lock is free, so this completes at once.
            let done = self
                .shared
                .health
                .set_service_status(name, ServingStatus::Serving)
                .now_or_never();
            if done.is_none() {
                tracing::warn!(name, "could not set the initial gRPC health status");
            }
        }
    }

    /// Report every health name SERVING or NOT_SERVING (e.g. NOT_SERVING when shutting down,
    /// so load balancers stop sending before connections close).
    pub async fn set_serving(&self, serving: bool) {
        let status = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        for name in HEALTH_NAMES {
            self.shared.health.set_service_status(name, status).await;
        }
    }

    /// The tonic service for `envoy.service.ratelimit.v3.RateLimitService`.
    pub fn rate_limit_server(&self) -> RateLimitServiceServer<EnvoyService<S>> {
        RateLimitServiceServer::new(self.clone())
    }

    /// The tonic service for `grpc.health.v1.Health`.
    pub fn health_server(&self) -> HealthServer<HealthService> {
        HealthServer::new(HealthService::from_health_reporter(
            self.shared.health.clone(),
        ))
    }

    /// Add both services to a tonic router.
    pub fn add_to<L>(&self, router: Router<L>) -> Router<L> {
        router
            .add_service(self.rate_limit_server())
            .add_service(self.health_server())
    }

    /// A tonic router with both services.
    pub fn router(&self) -> Router {
        let mut server = tonic::transport::Server::builder();
        server
            .add_service(self.rate_limit_server())
            .add_service(self.health_server())
    }

    /// Serve both services on `listener` until `shutdown` completes (in-flight calls finish);
    /// see [`serve`].
    pub async fn serve(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()> {
        serve(
            listener,
            self.rate_limit_server(),
            self.health_server(),
            shutdown,
        )
        .await
    }
}

/// Serve the rate limit service `rate_limit` and the health service `health` (gRPC: HTTP/2
/// only, no TLS) on `listener` until `shutdown` completes; then stop accepting, tell every
/// connection to go away (GOAWAY) and return once their calls in flight have finished.
///
/// Each connection is hyper's HTTP/2 server handing each call straight to the service its
/// path names. A tonic `Router` would first match the path in an axum router (parameters
/// decoded and stored per call) and pass each call through a boxed stack of layers, which
/// together cost several percent of the server's CPU per decision (bench/HISTORY.md). What
/// those layers did that is not done here: the `grpc-timeout` of a call is not enforced by the
/// server (Envoy enforces its own timeout and resets the stream, which ends the call here), and
/// no connection info is attached to requests (nothing reads it).
pub async fn serve<R, H>(
    listener: TcpListener,
    rate_limit: R,
    health: H,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()>
where
    R: GrpcService,
    H: GrpcService,
{
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    // As tonic's server did: no bound on streams per connection (Envoy bounds its own).
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(None);
    let graceful = GracefulShutdown::new();
    let routes = Routes { rate_limit, health };
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _peer)) => tcp,
                Err(error) => {
                    accept_failed(error).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Decisions are small request/response pairs: never wait to coalesce them.
        let _ = tcp.set_nodelay(true);
        let connection =
            graceful.watch(builder.serve_connection(TokioIo::new(tcp), routes.clone()));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "gRPC connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// A failed `accept`: a connection that died before it was accepted is nothing to wait for;
/// anything else (out of file descriptors, most likely) gets a pause, so the loop does not spin.
async fn accept_failed(error: io::Error) {
    if matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(%error, "cannot accept a gRPC connection; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// A tonic-generated gRPC service, as [`serve`] mounts it.
pub trait GrpcService:
    Service<
        Request<Incoming>,
        Response = Response<Body>,
        Error = Infallible,
        Future: Send + 'static,
    > + NamedService
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S> GrpcService for S where
    S: Service<
            Request<Incoming>,
            Response = Response<Body>,
            Error = Infallible,
            Future: Send + 'static,
        > + NamedService
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// The two services of a connection, found by the service name that starts a call's path
/// (`/<package.Service>/<Method>`).
#[derive(Clone)]
struct Routes<R, H> {
    rate_limit: R,
    health: H,
}

/// The first segment of a gRPC path: `envoy.service.ratelimit.v3.RateLimitService` of
/// `/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`.
fn service_name(path: &str) -> &str {
    let path = path.strip_prefix('/').unwrap_or(path);
    path.split_once('/').map_or(path, |(service, _)| service)
}

impl<R: GrpcService, H: GrpcService> hyper::service::Service<Request<Incoming>> for Routes<R, H> {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Either<R::Future, Either<H::Future, Ready<Result<Response<Body>, Infallible>>>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        // The generated services are always ready (`poll_ready` is `Ready(Ok)`), so a call
        // needs no readiness check.
        let service = service_name(request.uri().path());
        if service == R::NAME {
            Either::Left(self.rate_limit.clone().call(request))
        } else if service == H::NAME {
            Either::Right(Either::Left(self.health.clone().call(request)))
        } else {
            Either::Right(Either::Right(futures_util::future::ready(Ok(
                tonic::Status::unimplemented("").into_http(),
            ))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::service_name;

    #[test]
    fn the_service_is_the_first_path_segment() {
        assert_eq!(
            service_name("/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"),
            "envoy.service.ratelimit.v3.RateLimitService"
        );
        assert_eq!(
            service_name("/grpc.health.v1.Health/Check"),
            "grpc.health.v1.Health"
        );
        assert_eq!(service_name("/"), "");
        assert_eq!(service_name("/only"), "only");
    }
}
