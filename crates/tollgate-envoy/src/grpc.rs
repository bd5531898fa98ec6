//! The gRPC face of the service: `envoy.service.ratelimit.v3.RateLimitService` and
//! `grpc.health.v1.Health`, and ways to mount both on a tonic server or to serve them
//! ([`serve`]).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::time::Duration;

use bytes::Bytes;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::{
    RateLimitService, RateLimitServiceServer,
};
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use futures_util::FutureExt as _;
use futures_util::future::{Either, Ready};
use http::{Request, Response};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::pin::Pin;
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
        serve(listener, self.clone(), self.health_server(), shutdown).await
    }
}

/// Serve the rate limit service of `envoy` and the health service `health` (gRPC: HTTP/2
/// only, no TLS) on `listener` until `shutdown` completes; then stop accepting, tell every
/// connection to go away (GOAWAY) and return once their calls in flight have finished.
///
/// Each connection is hyper's HTTP/2 server handing each call straight to what its path names,
/// and `ShouldRateLimit` is decoded and answered here. A tonic `Router`
/// and the generated service would first match the path in an axum router (parameters decoded
/// and stored per call), pass the call through a boxed stack of layers, and decode and encode
/// through tonic's streaming codec (an 8 KiB buffer each way); together these were a fifth of
/// the server's user-space instructions per decision (bench/HISTORY.md). What is not done here
/// that tonic's server did: the `grpc-timeout` of a call is not enforced by the server (Envoy
/// enforces its own timeout and resets the stream, which ends the call here), and no
/// connection info is attached to requests (nothing reads it).
pub async fn serve<S, H>(
    listener: TcpListener,
    envoy: EnvoyService<S>,
    health: H,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()>
where
    S: Store,
    H: GrpcService,
{
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    // As tonic's server did: no bound on streams per connection (Envoy bounds its own). No
    // `date` header: gRPC clients do not read it, and a value that changes every second is
    // HPACK-encoded afresh on every response.
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(None)
        .auto_date_header(false);
    let graceful = GracefulShutdown::new();
    let routes = Routes { envoy, health };
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
/// The rule of every accept loop of tollgate (this one and `tollgate serve`'s HTTP listener).
pub async fn accept_failed(error: io::Error) {
    if matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(%error, "cannot accept a connection; retrying in 1 s");
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
struct Routes<S, H> {
    envoy: EnvoyService<S>,
    health: H,
}

impl<S, H: Clone> Clone for Routes<S, H> {
    fn clone(&self) -> Self {
        Routes {
            envoy: self.envoy.clone(),
            health: self.health.clone(),
        }
    }
}

/// The service and method of a gRPC path: `("envoy.service.ratelimit.v3.RateLimitService",
/// "ShouldRateLimit")` of `/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`.
fn service_and_method(path: &str) -> (&str, &str) {
    let path = path.strip_prefix('/').unwrap_or(path);
    path.split_once('/').unwrap_or((path, ""))
}

/// What a connection answers: a unary answer made here, or a tonic service's body.
type AnyBody = http_body_util::Either<WithTrailers, Body>;

impl<S: Store, H: GrpcService> hyper::service::Service<Request<Incoming>> for Routes<S, H> {
    type Response = Response<AnyBody>;
    type Error = Infallible;
    type Future = Either<
        Pin<Box<dyn Future<Output = Result<Response<AnyBody>, Infallible>> + Send>>,
        Either<MapOk<H::Future>, Ready<Result<Response<AnyBody>, Infallible>>>,
    >;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let (service, method) = service_and_method(request.uri().path());
        if service == RATE_LIMIT_SERVICE && method == "ShouldRateLimit" {
            let envoy = self.envoy.clone();
            Either::Left(Box::pin(async move {
                Ok(should_rate_limit(&envoy, request).await)
            }))
        } else if service == H::NAME {
            // The generated services are always ready (`poll_ready` is `Ready(Ok)`), so a
            // call needs no readiness check.
            Either::Right(Either::Left(MapOk(self.health.clone().call(request))))
        } else {
            Either::Right(Either::Right(futures_util::future::ready(Ok(
                status_response(tonic::Status::unimplemented("")),
            ))))
        }
    }
}

/// A tonic service's response, its body as [`AnyBody`].
#[pin_project::pin_project]
struct MapOk<F>(#[pin] F);

impl<F> Future for MapOk<F>
where
    F: Future<Output = Result<Response<Body>, Infallible>>,
{
    type Output = Result<Response<AnyBody>, Infallible>;

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        self.project()
            .0
            .poll(cx)
            .map(|result| result.map(|response| response.map(http_body_util::Either::Right)))
    }
}

/// The largest request message accepted (tonic's default): a `ShouldRateLimit` request is a
/// few hundred bytes.
pub const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// The length prefix of a gRPC message: a compression flag and a big-endian length.
const PREFIX: usize = 5;

/// `message` as a unary call's body: one length-prefixed, uncompressed gRPC message.
pub fn frame(message: &impl prost::Message) -> Bytes {
    let len = message.encoded_len();
    let mut bytes = Vec::with_capacity(PREFIX + len);
    bytes.push(0);
    // Encoded lengths of rate limit messages are far below 4 GiB.
    bytes.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
    // Encoding into a Vec grows it as needed: it cannot run out of room.
    let _ = message.encode(&mut bytes);
    Bytes::from(bytes)
}

/// Why a unary call's body held no message ([`unframe`]).
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// Fewer than the five bytes of a prefix.
    #[error("Missing request message.")]
    Missing,
    /// The compression flag is set (no compression is offered).
    #[error(
        "protocol error: received message with compressed-flag but no grpc-encoding was specified"
    )]
    Compressed,
    /// A compression flag other than 0 or 1.
    #[error(
        "protocol error: received message with invalid compression flag: {0} (valid flags are 0 and 1), while sending request"
    )]
    InvalidFlag(u8),
    /// The body ends before the length the prefix gives.
    #[error("Unexpected EOF decoding stream.")]
    Truncated,
    /// The message is not one of the expected type.
    #[error("{0}")]
    Decode(#[from] prost::DecodeError),
}

/// The message of a unary call's body (one length-prefixed, uncompressed message). The error
/// messages are tonic's, so a client sees what it would from a tonic server.
pub fn unframe<M: prost::Message + Default>(body: &[u8]) -> Result<M, FrameError> {
    let (prefix, message) = body.split_at_checked(PREFIX).ok_or(FrameError::Missing)?;
    match prefix[0] {
        0 => {}
        1 => return Err(FrameError::Compressed),
        flag => return Err(FrameError::InvalidFlag(flag)),
    }
    let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
    // One message: a unary call sends exactly one.
    let message = message.get(..len).ok_or(FrameError::Truncated)?;
    Ok(M::decode(message)?)
}

/// `ShouldRateLimit`, decoded and answered without tonic's streaming codec: the request is one
/// length-prefixed message in one or a few DATA frames, the answer one message and the trailer
/// `grpc-status: 0`. Errors are answered as tonic answers them (a trailers-only response).
async fn should_rate_limit<S: Store>(
    envoy: &EnvoyService<S>,
    request: Request<Incoming>,
) -> Response<AnyBody> {
    match decode_and_check(envoy, request).await {
        Ok(answer) => {
            let mut response = Response::new(http_body_util::Either::Left(WithTrailers::new(
                frame(&answer),
            )));
            response
                .headers_mut()
                .insert(http::header::CONTENT_TYPE, GRPC_CONTENT_TYPE);
            response
        }
        Err(status) => status_response(status),
    }
}

/// A trailers-only response carrying `status`, as tonic answers an error.
fn status_response(status: tonic::Status) -> Response<AnyBody> {
    status
        .into_http::<Body>()
        .map(http_body_util::Either::Right)
}

const GRPC_CONTENT_TYPE: http::HeaderValue = http::HeaderValue::from_static("application/grpc");

/// Read the request message of a `ShouldRateLimit` call and answer it.
async fn decode_and_check<S: Store>(
    envoy: &EnvoyService<S>,
    request: Request<Incoming>,
) -> Result<RateLimitResponse, tonic::Status> {
    // No compression is offered; `identity` is no compression.
    if let Some(encoding) = request.headers().get("grpc-encoding")
        && encoding.as_bytes() != b"identity"
    {
        let mut status = tonic::Status::unimplemented(format!(
            "Content is compressed with `{}` which isn't supported",
            String::from_utf8_lossy(encoding.as_bytes())
        ));
        status.metadata_mut().insert(
            "grpc-accept-encoding",
            tonic::metadata::MetadataValue::from_static("identity"),
        );
        return Err(status);
    }
    let body = http_body_util::Limited::new(request.into_body(), PREFIX + MAX_REQUEST_BYTES);
    let bytes = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            return Err(tonic::Status::out_of_range(format!(
                "Error, decoded message length too large: the limit is: {MAX_REQUEST_BYTES} bytes"
            )));
        }
        Err(error) => {
            return Err(tonic::Status::internal(format!(
                "reading the request: {error}"
            )));
        }
    };
    let request: RateLimitRequest =
        unframe(&bytes).map_err(|error| tonic::Status::internal(error.to_string()))?;
    envoy.check(&request).await
}

/// One DATA frame, then the trailers `grpc-status: 0`.
struct WithTrailers {
    data: Option<Bytes>,
    trailers: bool,
}

impl WithTrailers {
    fn new(data: Bytes) -> WithTrailers {
        WithTrailers {
            data: Some(data),
            trailers: true,
        }
    }
}

impl http_body::Body for WithTrailers {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        if let Some(data) = self.data.take() {
            return std::task::Poll::Ready(Some(Ok(http_body::Frame::data(data))));
        }
        if std::mem::take(&mut self.trailers) {
            let mut trailers = http::HeaderMap::with_capacity(1);
            trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
            return std::task::Poll::Ready(Some(Ok(http_body::Frame::trailers(trailers))));
        }
        std::task::Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && !self.trailers
    }
}

#[cfg(test)]
mod tests {
    use super::service_and_method;

    #[test]
    fn a_path_is_service_and_method() {
        assert_eq!(
            service_and_method("/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"),
            (
                "envoy.service.ratelimit.v3.RateLimitService",
                "ShouldRateLimit"
            )
        );
        assert_eq!(
            service_and_method("/grpc.health.v1.Health/Check"),
            ("grpc.health.v1.Health", "Check")
        );
        assert_eq!(service_and_method("/"), ("", ""));
        assert_eq!(service_and_method("/only"), ("only", ""));
    }
}
