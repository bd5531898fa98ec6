//! Every scenario of `common/scenarios.rs` over the real gRPC server on the memory store.

mod common;

use std::sync::Arc;

use common::scenarios;
use tollgate::MemoryStore;

fn store() -> Arc<MemoryStore> {
    Arc::new(MemoryStore::new())
}

macro_rules! on_memory {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                scenarios::$name(store()).await;
            }
        )*
    };
}

on_memory!(
    exact_match,
    wildcard_and_key_only_precedence,
    nested_depth,
    shadow_mode,
    replaces,
    hits_addend,
    quota_flow,
    multi_service_quota,
    negative_hits,
    limit_override,
    several_descriptors,
    unknown_and_invalid,
    unlimited_and_zero,
    algorithm_extension,
    quota_mode,
    response_headers,
    reload,
    health,
    detailed_metrics,
);

/// All scenarios at once on one shared store: unique domains keep them apart.
#[tokio::test]
async fn scenarios_share_one_store() {
    let shared = store();
    scenarios::exact_match(shared.clone()).await;
    scenarios::exact_match(shared.clone()).await;
    scenarios::hits_addend(shared).await;
}

/// A store error that reaches the service is UNAVAILABLE (Envoy's `failure_mode_deny` then
/// decides). A memory store bounded to one identifier fails the second with `Full`.
#[tokio::test]
async fn store_errors_are_unavailable() {
    let bounded = Arc::new(MemoryStore::with_options(tollgate::Clock::System, 1));
    let h = common::start(
        bounded,
        &[("e.yaml", "domain: e-{d}\ndescriptors:\n  - key: k\n    rate_limit: { unit: hour, requests_per_unit: 5 }\n")],
        tollgate_envoy::EnvoyOptions::default(),
    )
    .await;
    let (_, first) = h.one("e", common::desc(&[("k", "a")])).await;
    assert_eq!(first.limit_remaining, 4);
    let second = h
        .call(common::request(
            &h.domain("e"),
            vec![common::desc(&[("k", "b")])],
            0,
        ))
        .await;
    assert_eq!(second.unwrap_err().code(), tonic::Code::Unavailable);
    assert_eq!(
        h.metric("tollgate_envoy_request_errors_total{kind=\"store\"}"),
        Some(1)
    );
}

/// One request cannot fan out into unbounded store calls.
#[tokio::test]
async fn too_many_descriptors_are_invalid() {
    let h = common::start(
        store(),
        &[("m.yaml", "domain: m-{d}\ndescriptors:\n  - key: k\n    rate_limit: { unit: hour, requests_per_unit: 5 }\n")],
        tollgate_envoy::EnvoyOptions::default(),
    )
    .await;
    let many = (0..=tollgate_envoy::service::MAX_DESCRIPTORS)
        .map(|i| common::desc(&[("k", &i.to_string())]))
        .collect();
    let answer = h.call(common::request(&h.domain("m"), many, 0)).await;
    assert_eq!(answer.unwrap_err().code(), tonic::Code::InvalidArgument);
}

/// What `serve` answers by itself, as tonic's server would: an unknown method of the rate limit
/// service and an unknown service are UNIMPLEMENTED, a message that is not a
/// `RateLimitRequest` is INTERNAL, and the connection keeps serving decisions after both.
#[tokio::test]
async fn unknown_methods_and_bad_messages_are_error_statuses() {
    use tollgate_envoy::envoy_types::pb::envoy::service::ratelimit::v3::{
        RateLimitRequest, RateLimitResponse,
    };
    use tonic::codegen::http::uri::PathAndQuery;
    use tonic_prost::ProstCodec;

    let h = common::start(
        store(),
        &[(
            "a.yaml",
            "domain: d-{d}\ndescriptors:\n  - key: k\n    rate_limit: { unit: minute, requests_per_unit: 5 }\n",
        )],
        tollgate_envoy::EnvoyOptions::default(),
    )
    .await;
    let mut grpc = tonic::client::Grpc::new(h.channel.clone());
    for path in [
        "/envoy.service.ratelimit.v3.RateLimitService/Nope",
        "/no.such.Service/ShouldRateLimit",
    ] {
        grpc.ready().await.expect("ready");
        let status = grpc
            .unary::<RateLimitRequest, RateLimitResponse, _>(
                tonic::Request::new(RateLimitRequest::default()),
                PathAndQuery::from_static(path),
                ProstCodec::default(),
            )
            .await
            .expect_err("unknown method");
        assert_eq!(status.code(), tonic::Code::Unimplemented, "{path}");
    }
    // Field 1 as a varint: a `RateLimitRequest`'s field 1 (`domain`) is a string.
    grpc.ready().await.expect("ready");
    let status = grpc
        .unary::<RateLimitResponse, RateLimitResponse, _>(
            tonic::Request::new(RateLimitResponse {
                overall_code: 2,
                ..RateLimitResponse::default()
            }),
            PathAndQuery::from_static(
                "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit",
            ),
            ProstCodec::default(),
        )
        .await
        .expect_err("not a RateLimitRequest");
    assert_eq!(status.code(), tonic::Code::Internal, "{status:?}");
    let (code, status) = h.one("d", common::desc(&[("k", "v")])).await;
    assert_eq!(
        code,
        tollgate_envoy::envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code::Ok
    );
    assert_eq!(status.limit_remaining, 4);
}
