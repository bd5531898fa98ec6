//! `grpc.health.v1.Health` for the gRPC listener: NOT_SERVING exactly when `GET /ready` answers
//! 503, because both ask [`Service::ready`] at the moment they are called (a `Check` pings the
//! store as `/ready` does; a `Watch` asks again every [`WATCH_EVERY`] and sends each change).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tollgate_envoy::grpc::{RATE_LIMIT_SERVICE, UPSTREAM_HEALTH_NAME};
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use crate::service::Service;

/// How often a `Watch` looks at readiness again.
pub const WATCH_EVERY: Duration = Duration::from_secs(1);

/// The names whose health is reported: the server as a whole (`""`), the rate limit service,
/// and envoyproxy/ratelimit's name for it.
const NAMES: [&str; 3] = ["", RATE_LIMIT_SERVICE, UPSTREAM_HEALTH_NAME];

/// The health service over `service`'s readiness.
#[derive(Debug, Clone)]
pub struct ReadinessHealth {
    service: Arc<Service>,
}

impl ReadinessHealth {
    /// The tonic service answering `grpc.health.v1.Health` for `service`.
    pub fn server(service: Arc<Service>) -> HealthServer<ReadinessHealth> {
        HealthServer::new(ReadinessHealth { service })
    }
}

/// SERVING when the store answers, NOT_SERVING when it does not.
async fn status(service: &Service) -> ServingStatus {
    match service.ready().await {
        Ok(()) => ServingStatus::Serving,
        Err(_) => ServingStatus::NotServing,
    }
}

fn answer(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse {
        status: status.into(),
    }
}

#[tonic::async_trait]
impl Health for ReadinessHealth {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let name = &request.get_ref().service;
        if !NAMES.contains(&name.as_str()) {
            return Err(Status::not_found(format!("unknown service {name:?}")));
        }
        Ok(Response::new(answer(status(&self.service).await)))
    }

    type WatchStream = ReceiverStream<Result<HealthCheckResponse, Status>>;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let known = NAMES.contains(&request.get_ref().service.as_str());
        let (sender, receiver) = mpsc::channel(1);
        let service = self.service.clone();
        tokio::spawn(async move {
            if !known {
                // The protocol's answer for a name the server does not know; the stream stays open.
                let _ = sender.send(Ok(answer(ServingStatus::ServiceUnknown))).await;
                sender.closed().await;
                return;
            }
            let mut last = None;
            loop {
                let now = status(&service).await;
                if last != Some(now) {
                    if sender.send(Ok(answer(now))).await.is_err() {
                        return;
                    }
                    last = Some(now);
                }
                tokio::select! {
                    () = tokio::time::sleep(WATCH_EVERY) => {}
                    () = sender.closed() => return,
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }
}
