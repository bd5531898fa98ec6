//! The same scenarios as `memory.rs`, over the real gRPC server on a real Redis (one
//! redis-server per test binary, started by the testkit; unique domains keep tests apart).

mod common;

use std::sync::Arc;

use common::scenarios;
use tollgate_redis::{RedisOptions, RedisStore};

async fn store() -> Arc<RedisStore> {
    let redis = tollgate_testkit::shared_standalone();
    Arc::new(
        RedisStore::connect(&redis.url(), RedisOptions::default())
            .await
            .expect("the testkit's Redis answers"),
    )
}

macro_rules! on_redis {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                scenarios::$name(store().await).await;
            }
        )*
    };
}

on_redis!(
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
    detailed_metrics,
);
