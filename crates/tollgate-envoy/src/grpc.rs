//! The gRPC face of the service: `envoy.service.ratelimit.v3.RateLimitService` and
//! `grpc.health.v1.Health`, and ways to mount both on a tonic server.

use std::future::Future;

use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::{
    RateLimitService, RateLimitServiceServer,
};
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use futures_util::FutureExt as _;
use tokio::net::TcpListener;
use tollgate::Store;
use tonic::transport::server::{Router, TcpIncoming};
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

    /// Serve both services on `listener` until `shutdown` completes (in-flight calls finish).
    pub async fn serve(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), tonic::transport::Error> {
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        self.router()
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
    }
}
