//! `tollgate serve` with `grpc_listen`: the Envoy rate limit service beside the HTTP API, on the
//! same store, through a real gRPC client.

use std::net::SocketAddr;
use std::time::Duration;

use tollgate_envoy::envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use tollgate_envoy::envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use tollgate_envoy::envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use tollgate_envoy::envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use tollgate_envoy::envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use tollgate_server::config::{FileConfig, Overrides, Settings};
use tollgate_server::server::{ServeError, Server};

fn settings(yaml: &str) -> Settings {
    let file = FileConfig::parse(yaml, "test.yaml").expect("test config is valid");
    let overrides = Overrides {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        grpc_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..Overrides::default()
    };
    Settings::merge(file, None, overrides)
}

/// `tollgate serve` running in a task until [`Running::stop`].
struct Running {
    http: SocketAddr,
    grpc: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), ServeError>>,
}

impl Running {
    async fn start(yaml: &str) -> Running {
        let server = Server::bind(settings(yaml)).await.expect("binds");
        let http = server.local_addr().unwrap();
        let grpc = server.grpc_local_addr().expect("gRPC is on");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        Running {
            http,
            grpc,
            stop,
            task,
        }
    }

    /// Stop it and wait for a clean exit.
    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .expect("server stops")
            .expect("task")
            .expect("clean exit");
    }
}

#[tokio::test]
async fn envoy_service_answers_over_grpc_and_reports_metrics() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("edge.yaml"),
        "domain: edge\ndescriptors:\n  - key: remote_address\n    rate_limit: { unit: minute, requests_per_unit: 2 }\n",
    )
    .unwrap();
    let yaml = format!("envoy:\n  config_dir: {}\n", dir.path().display());
    let server = Running::start(&yaml).await;
    let http = server.http;
    let grpc = server.grpc;

    let mut client = RateLimitServiceClient::connect(format!("http://{grpc}"))
        .await
        .expect("gRPC connects");
    let request = || RateLimitRequest {
        domain: "edge".into(),
        descriptors: vec![RateLimitDescriptor {
            entries: vec![Entry {
                key: "remote_address".into(),
                value: "10.0.0.1".into(),
            }],
            ..RateLimitDescriptor::default()
        }],
        hits_addend: 0,
    };
    let mut codes = Vec::new();
    for _ in 0..3 {
        let answer = client.should_rate_limit(request()).await.expect("answers");
        codes.push(answer.into_inner().overall_code);
    }
    assert_eq!(
        codes,
        vec![Code::Ok as i32, Code::Ok as i32, Code::OverLimit as i32]
    );

    let metrics = reqwest::get(format!("http://{http}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("tollgate_envoy_"), "{metrics}");

    server.stop().await;
}

#[tokio::test]
async fn grpc_listen_without_a_config_dir_is_an_error() {
    let err = Server::bind(settings("{}\n")).await.unwrap_err();
    assert!(matches!(err, ServeError::NoEnvoyConfigDir(_)), "{err}");
}

/// gRPC health says NOT_SERVING exactly while `/ready` answers 503: with Redis up, killed and
/// back.
#[tokio::test]
async fn grpc_health_follows_ready() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    let redis = tollgate_testkit::RedisServer::start().expect("redis-server starts");
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "store:\n  url: {}\n  timeout: 200ms\nenvoy:\n  config_dir: {}\n",
        redis.url(),
        dir.path().display()
    );
    let server = Running::start(&yaml).await;
    let http = server.http;
    let grpc = server.grpc;
    let channel = tonic::transport::Channel::from_shared(format!("http://{grpc}"))
        .unwrap()
        .connect()
        .await
        .expect("gRPC connects");
    let mut health = HealthClient::new(channel);

    // One observation: what /ready answers, then what gRPC health answers for every name.
    let mut observe = async || {
        let ready = reqwest::get(format!("http://{http}/ready"))
            .await
            .unwrap()
            .status()
            .as_u16();
        let mut statuses = Vec::new();
        for name in [
            "",
            "envoy.service.ratelimit.v3.RateLimitService",
            "ratelimit",
        ] {
            let answer = health
                .check(HealthCheckRequest {
                    service: name.into(),
                })
                .await
                .expect("health answers");
            statuses.push(answer.into_inner().status);
        }
        (ready, statuses)
    };
    let serving = vec![ServingStatus::Serving as i32; 3];
    let not_serving = vec![ServingStatus::NotServing as i32; 3];
    let (ready, statuses) = observe().await;
    assert_eq!((ready, statuses), (200, serving.clone()));

    // What both say once `/ready` answers `status`, or after 30 s.
    let mut settled = async |status: u16| {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let seen = observe().await;
            if seen.0 == status || tokio::time::Instant::now() > deadline {
                break seen;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };

    redis.kill();
    let (ready, statuses) = settled(503).await;
    assert_eq!(ready, 503, "/ready notices the dead store");
    assert_eq!(statuses, not_serving, "gRPC health agrees with /ready");

    redis.restart().expect("redis-server restarts");
    let (ready, statuses) = settled(200).await;
    assert_eq!((ready, statuses), (200, serving), "both recover");

    let unknown = health
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);

    server.stop().await;
}

/// Upstream's quota example as a new user tries it: envoyproxy/ratelimit's example config
/// (`service_2`: `quota_mode: true`, 2 a minute) and its `/tokenquota` route, whose requests
/// call with `hits_addend` 0 when they start and 1 when their stream is done
/// (`apply_on_stream_done`; Envoy sends that call for refused requests too). `tollgate serve` on a
/// real Redis answers every call as upstream does: requests 1 to 3 start, the third one's
/// completion goes over, and from the fourth on every start is refused.
#[tokio::test]
async fn upstream_quota_example_request_then_stream_done() {
    use tollgate_envoy::envoy_types::pb::google::protobuf::UInt64Value;

    let redis = tollgate_testkit::RedisServer::start().expect("redis-server starts");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("example.yaml"),
        "domain: rl
descriptors:
  - key: service
    value: service_1
    quota_mode: true
    rate_limit:
      unit: minute
      requests_per_unit: 1
    metadata:
      service_with_quota:
        name: \"service_1\"
  - key: service
    value: service_2
    quota_mode: true
    rate_limit:
      unit: minute
      requests_per_unit: 2
    metadata:
      service_with_quota:
        name: \"service_2\"
",
    )
    .unwrap();
    let yaml = format!(
        "store:\n  url: {}\nenvoy:\n  config_dir: {}\n",
        redis.url(),
        dir.path().display()
    );
    let server = Running::start(&yaml).await;
    let grpc = server.grpc;
    let mut client = RateLimitServiceClient::connect(format!("http://{grpc}"))
        .await
        .expect("gRPC connects");
    let call = |hits: u64| RateLimitRequest {
        domain: "rl".into(),
        descriptors: vec![RateLimitDescriptor {
            entries: vec![Entry {
                key: "service".into(),
                value: "service_2".into(),
            }],
            hits_addend: Some(UInt64Value { value: hits }),
            ..RateLimitDescriptor::default()
        }],
        hits_addend: 0,
    };

    // The ten calls take milliseconds; start them well inside one minute window.
    let into_minute = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        % 60;
    if into_minute >= 50 {
        tokio::time::sleep(Duration::from_secs(61 - into_minute)).await;
    }
    let mut answers = Vec::new();
    for _ in 0..5 {
        for hits in [0, 1] {
            let answer = client.should_rate_limit(call(hits)).await.expect("answers");
            let answer = answer.into_inner();
            let status = &answer.statuses[0];
            let limit = status.current_limit.as_ref().expect("the rule's limit");
            assert_eq!((limit.requests_per_unit, limit.unit), (2, 2), "2 a minute");
            let reset = status
                .duration_until_reset
                .as_ref()
                .map_or(0, |d| d.seconds);
            assert!(
                (1..=60).contains(&reset),
                "time to the minute's end: {reset}"
            );
            answers.push((hits, answer.overall_code, status.limit_remaining));
        }
    }
    let (ok, over) = (Code::Ok as i32, Code::OverLimit as i32);
    assert_eq!(
        answers,
        [
            (0, ok, 2),
            (1, ok, 1),
            (0, ok, 1),
            (1, ok, 0),
            (0, ok, 0),
            (1, over, 0),
            (0, over, 0),
            (1, over, 0),
            (0, over, 0),
            (1, over, 0),
        ]
    );

    server.stop().await;
}

/// `envoy:` options in the config file reach the service: with `response_dynamic_metadata` and
/// `response_headers` on, an answer carries the rule's `metadata:` and RateLimit headers; with
/// neither (the defaults), it carries none.
#[tokio::test]
async fn envoy_options_from_the_config_file_shape_the_answer() {
    use tollgate_envoy::envoy_types::pb::google::protobuf::value::Kind;

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("edge.yaml"),
        "domain: edge\ndescriptors:\n  - key: service\n    value: search\n    rate_limit: { unit: minute, requests_per_unit: 5 }\n    metadata:\n      route_to: { pool: blue }\n",
    )
    .unwrap();
    let request = RateLimitRequest {
        domain: "edge".into(),
        descriptors: vec![RateLimitDescriptor {
            entries: vec![Entry {
                key: "service".into(),
                value: "search".into(),
            }],
            ..RateLimitDescriptor::default()
        }],
        hits_addend: 1,
    };
    for on in [true, false] {
        let options = if on {
            "  response_dynamic_metadata: true\n  response_headers: draft\n"
        } else {
            ""
        };
        let yaml = format!("envoy:\n  config_dir: {}\n{options}", dir.path().display());
        let server = Running::start(&yaml).await;
        let grpc = server.grpc;
        let mut client = RateLimitServiceClient::connect(format!("http://{grpc}"))
            .await
            .expect("gRPC connects");
        let answer = client
            .should_rate_limit(request.clone())
            .await
            .expect("answers")
            .into_inner();
        assert_eq!(answer.overall_code, Code::Ok as i32);
        if on {
            let metadata = answer.dynamic_metadata.expect("dynamic metadata");
            let pool = metadata
                .fields
                .get("metadata")
                .and_then(|v| match &v.kind {
                    Some(Kind::StructValue(s)) => s.fields.get("route_to"),
                    _ => None,
                })
                .and_then(|v| match &v.kind {
                    Some(Kind::StructValue(s)) => s.fields.get("pool"),
                    _ => None,
                })
                .and_then(|v| match &v.kind {
                    Some(Kind::StringValue(s)) => Some(s.as_str()),
                    _ => None,
                });
            assert_eq!(pool, Some("blue"), "{metadata:?}");
            let headers: Vec<_> = answer
                .response_headers_to_add
                .iter()
                .map(|h| h.key.to_ascii_lowercase())
                .collect();
            assert!(
                headers.contains(&"ratelimit".to_owned())
                    && headers.contains(&"ratelimit-policy".to_owned()),
                "{headers:?}"
            );
        } else {
            assert!(answer.dynamic_metadata.is_none());
            assert!(answer.response_headers_to_add.is_empty());
        }
        server.stop().await;
    }
}
