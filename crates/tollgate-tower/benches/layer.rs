//! What the layer adds to a request, in process (no network): untouched, allowed, rejected,
//! with a client IP behind trusted proxies, and holding a lease of a `concurrency` policy, next
//! to the bare service.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::Full;
use tollgate::{Algorithm, Limiter, MemoryStore, Policy};
use tollgate_tower::{Key, RateLimitLayer};
use tower::{Layer, Service, ServiceExt, service_fn};

fn handler() -> impl Service<
    Request<()>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send,
> + Clone
+ Send
+ 'static {
    service_fn(|_req: Request<()>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
    })
}

fn request(path: &str, headers: &[(&str, &str)]) -> Request<()> {
    let mut req = Request::builder().uri(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut req = req.body(()).unwrap();
    req.extensions_mut()
        .insert("10.0.0.2:4000".parse::<SocketAddr>().unwrap());
    req
}

fn layer(limit: u64, key: Key) -> RateLimitLayer<MemoryStore> {
    let policy = Policy::builder(Algorithm::FixedWindow)
        .limit(limit)
        .period(Duration::from_secs(3600))
        .build()
        .unwrap();
    RateLimitLayer::builder(
        Limiter::new(MemoryStore::new())
            .with_policy("api", policy)
            .unwrap(),
    )
    .key(key)
    .trusted_proxies(["10.0.0.0/8"])
    .exclude("/health")
    .route("/api/**", "api")
    .build()
    .unwrap()
}

/// `layer`'s rule on `api` plus a `concurrency` policy: each request also leases a unit, given
/// back when its response body is dropped.
fn leasing_layer() -> RateLimitLayer<MemoryStore> {
    let api = Policy::builder(Algorithm::FixedWindow)
        .limit(u64::MAX >> 12)
        .period(Duration::from_secs(3600))
        .build()
        .unwrap();
    let limiter = Limiter::new(MemoryStore::new())
        .with_policy("api", api)
        .unwrap()
        .with_policy(
            "in-flight",
            Policy::concurrency(1000, Duration::from_secs(60)).unwrap(),
        )
        .unwrap();
    RateLimitLayer::builder(limiter)
        .key(Key::header("x-user-id"))
        .route("/api/**", ["api", "in-flight"])
        .build()
        .unwrap()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("layer");
    let user = [("x-user-id", "alice")];

    let bare = handler();
    group.bench_function("bare service", |b| {
        b.to_async(&rt)
            .iter(|| bare.clone().oneshot(request("/api/data", &user)))
    });

    let allowed = layer(u64::MAX >> 12, Key::header("x-user-id")).layer(handler());
    group.bench_function("excluded path", |b| {
        b.to_async(&rt)
            .iter(|| allowed.clone().oneshot(request("/health", &user)))
    });
    group.bench_function("allowed (header key)", |b| {
        b.to_async(&rt)
            .iter(|| allowed.clone().oneshot(request("/api/data", &user)))
    });

    let rejected = layer(1, Key::header("x-user-id")).layer(handler());
    group.bench_function("rejected 429", |b| {
        b.to_async(&rt)
            .iter(|| rejected.clone().oneshot(request("/api/data", &user)))
    });

    let by_ip = layer(u64::MAX >> 12, Key::client_ip()).layer(handler());
    let xff = [("x-forwarded-for", "198.51.100.7, 203.0.113.9, 10.1.1.1")];
    group.bench_function("allowed (client ip via 2 proxies)", |b| {
        b.to_async(&rt)
            .iter(|| by_ip.clone().oneshot(request("/api/data", &xff)))
    });

    // Both drop the response and then yield, so that the lease's release (spawned when its
    // body is dropped) runs within the iteration.
    group.bench_function("allowed, then yield", |b| {
        b.to_async(&rt).iter(|| async {
            drop(allowed.clone().oneshot(request("/api/data", &user)).await);
            tokio::task::yield_now().await;
        })
    });
    let leasing = leasing_layer().layer(handler());
    group.bench_function(
        "allowed + lease (acquire, release on drop), then yield",
        |b| {
            b.to_async(&rt).iter(|| async {
                let response = leasing.clone().oneshot(request("/api/data", &user)).await;
                assert_eq!(response.as_ref().map(|r| r.status().as_u16()), Ok(200));
                drop(response);
                tokio::task::yield_now().await;
            })
        },
    );
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
