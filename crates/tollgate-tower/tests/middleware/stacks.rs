//! The same layer under plain hyper and under tonic, not only axum.

use std::convert::Infallible;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tollgate_tower::{Key, MissingKey, Quota, RateLimitLayer};
use tonic::service::Routes;
use tonic::transport::server::{TcpConnectInfo, TcpIncoming};
use tower::ServiceBuilder;

use crate::common::{Server, limiter};

#[tokio::test]
async fn hyper_with_a_socket_addr_extension() {
    let layer = RateLimitLayer::builder(limiter(&[("api", 2)]))
        .key(Key::client_ip())
        .on_missing_key(MissingKey::Reject)
        .default_policies("api")
        .build()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let (stream, peer) = listener.accept().await.unwrap();
            let service = ServiceBuilder::new()
                .map_request(move |mut req: Request<Incoming>| {
                    req.extensions_mut().insert(peer);
                    req
                })
                .layer(layer.clone())
                .service_fn(|req: Request<Incoming>| async move {
                    let key = req.extensions().get::<Quota>().map_or("none", |q| q.key());
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(key.to_owned()))))
                });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service)),
            );
        }
    });
    let server = Server::from_task(addr, task, false);
    for _ in 0..2 {
        let reply = server.get("/", &[]).await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (StatusCode::OK, "ip:127.0.0.1")
        );
        assert_eq!(reply.policies(), [("api".to_owned(), 2, 3600)]);
    }
    let reply = server.get("/", &[]).await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(reply.json()["error"]["code"], "rate_limited");
}

#[tokio::test]
async fn tonic_with_tcp_connect_info() {
    let layer = RateLimitLayer::builder(limiter(&[("grpc", 2)]))
        .key(Key::client_ip())
        .peer_ip(|ext| ext.get::<TcpConnectInfo>()?.remote_addr().map(|a| a.ip()))
        // Without the peer address the request would be refused: proves `peer_ip` is read.
        .on_missing_key(MissingKey::Reject)
        .default_policies("grpc")
        .build()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .layer(layer)
            .add_routes(Routes::default())
            .serve_with_incoming(TcpIncoming::from(listener))
            .await
            .unwrap();
    });
    let server = Server::from_task(addr, task, true);
    let grpc = [("content-type", "application/grpc"), ("te", "trailers")];
    for _ in 0..2 {
        let reply = server.send(Method::POST, "/demo.Echo/Say", &grpc).await;
        // No such gRPC service: tonic answers UNIMPLEMENTED, after the layer let it through.
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.header("grpc-status"), Some("12"));
        assert_eq!(reply.policies(), [("grpc".to_owned(), 2, 3600)]);
    }
    let reply = server.send(Method::POST, "/demo.Echo/Say", &grpc).await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(reply.header("retry-after").is_some());
}
