//! Every file under deploy/ is checked, not only written: the alert rules by promtool and their
//! unit tests, the Grafana dashboard and the alerts against the series a real server exports,
//! the Kubernetes overlays rendered by kustomize and validated against the Kubernetes API
//! schemas, the compose stack against the compose-spec schema (no container engine runs here, so
//! the stack itself is not started).

mod common;
#[path = "deploy/tools.rs"]
mod tools;

use serde_json::json;

use common::TestServer;
use tools::{promtool, repo_file, run_ok, script, venv_bin};

#[test]
fn alert_rules_pass_promtool_and_their_unit_tests() {
    let rules = repo_file("deploy/prometheus/alerts.yml");
    let out = run_ok(promtool().arg("check").arg("rules").arg(&rules));
    assert!(out.contains("SUCCESS"), "{out}");
    let out = run_ok(
        promtool()
            .arg("test")
            .arg("rules")
            .arg(repo_file("deploy/prometheus/alerts.test.yml")),
    );
    assert!(out.contains("SUCCESS"), "{out}");
}

/// The dashboard and the alert rules use only series that `/metrics` really exports, with label
/// values it really emits: read from two real servers, one per store kind (the memory store
/// and the Redis store export different series), the second with the Envoy gRPC service on.
#[tokio::test(flavor = "multi_thread")]
async fn dashboard_and_alerts_use_only_exported_series() {
    let scratch = tempfile::tempdir().unwrap();
    let rules_dir = scratch.path().join("ratelimit");
    std::fs::create_dir(&rules_dir).unwrap();
    std::fs::write(
        rules_dir.join("edge.yaml"),
        "domain: edge\ndescriptors:\n  - key: user_id\n    rate_limit: { unit: minute, requests_per_unit: 5 }\n",
    )
    .unwrap();
    let redis = tollgate_testkit::RedisServer::start().expect("redis-server starts");
    let policies = "policies:\n  api: { algorithm: token-bucket, rate: 3/min }\n";
    let configs = [
        format!("{policies}store: {{ url: memory }}\n"),
        format!(
            "{policies}store: {{ url: '{}' }}\ngrpc_listen: 127.0.0.1:0\nenvoy: {{ config_dir: '{}' }}\n",
            redis.node().url(),
            rules_dir.display()
        ),
    ];
    let mut metric_files = Vec::new();
    for (i, yaml) in configs.iter().enumerate() {
        let server = TestServer::start(yaml).await;
        for _ in 0..5 {
            server
                .check(json!({"policy": "api", "key": "user-1"}))
                .await;
        }
        server.peek("api", "user-1").await;
        server
            .check(json!({"policy": "nope", "key": "user-1"}))
            .await;
        let metrics = server
            .client
            .get(server.url("/metrics"))
            .send()
            .await
            .unwrap();
        let text = metrics.text().await.unwrap();
        assert!(text.contains("outcome=\"rejected\"} 2"), "{text}");
        let path = scratch.path().join(format!("metrics-{i}.prom"));
        std::fs::write(&path, text).unwrap();
        metric_files.push(path);
        server.stop().await;
    }

    let mut checker = std::process::Command::new(venv_bin("python"));
    checker.arg(script("promql_series.py"));
    for path in &metric_files {
        checker.arg("--metrics").arg(path);
    }
    checker
        .arg(repo_file("deploy/grafana/tollgate.json"))
        .arg(repo_file("deploy/prometheus/alerts.yml"));
    let out = run_ok(&mut checker);
    // Not vacuous: both sources were read and their selectors checked.
    assert!(
        out.contains("tollgate.json: ") && out.contains("alerts.yml: "),
        "{out}"
    );
    assert!(!out.contains(" 0 selectors"), "{out}");
}

/// Kubernetes version the rendered manifests are validated against.
const KUBERNETES_VERSION: &str = "1.33.0";

/// Render a kustomization (base or overlay) with kubectl's kustomize, then validate every
/// resource offline against the Kubernetes API schemas, rejecting unknown fields.
fn render_and_validate(dir: &str) -> String {
    let rendered = run_ok(
        std::process::Command::new(venv_bin("kubectl"))
            .arg("kustomize")
            .arg(repo_file(dir)),
    );
    let file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(file.path(), &rendered).unwrap();
    run_ok(
        std::process::Command::new(venv_bin("kubernetes-validate"))
            .args(["--strict", "--quiet", "-k", KUBERNETES_VERSION])
            .arg(file.path()),
    );
    rendered
}

/// The kinds and names of a rendered multi-document stream, as `Kind/name`.
fn resources(rendered: &str) -> Vec<String> {
    rendered
        .split("\n---\n")
        .filter_map(|doc| {
            let value: serde_json::Value = serde_saphyr::from_str(doc).ok()?;
            Some(format!(
                "{}/{}",
                value["kind"].as_str()?,
                value["metadata"]["name"].as_str()?
            ))
        })
        .collect()
}

#[test]
fn kubernetes_base_and_overlays_render_and_validate() {
    let base = render_and_validate("deploy/kubernetes/base");
    for wanted in [
        "Deployment/tollgate",
        "Service/tollgate",
        "PodDisruptionBudget/tollgate",
        "HorizontalPodAutoscaler/tollgate",
    ] {
        assert!(
            resources(&base).iter().any(|r| r == wanted),
            "{wanted} missing:\n{base}"
        );
    }
    for wanted in [
        "path: /health",
        "path: /ready",
        "name: grpc",
        "requests:",
        "tollgate-config-",
    ] {
        assert!(base.contains(wanted), "{wanted} missing:\n{base}");
    }

    let redis = resources(&render_and_validate("deploy/kubernetes/overlays/redis"));
    assert!(redis.contains(&"Deployment/redis".to_owned()), "{redis:?}");
    assert!(redis.contains(&"Service/redis".to_owned()), "{redis:?}");

    let cluster = render_and_validate("deploy/kubernetes/overlays/redis-cluster");
    assert!(resources(&cluster).contains(&"StatefulSet/redis-cluster".to_owned()));
    assert!(cluster.contains("replicas: 6"), "{cluster}");
    assert!(cluster.contains("redis+cluster://"), "{cluster}");

    let envoy = render_and_validate("deploy/kubernetes/overlays/envoy");
    assert!(resources(&envoy).contains(&"Deployment/envoy".to_owned()));
    for wanted in [
        "envoy.filters.http.ratelimit",
        "cluster_name: tollgate",
        "port_value: 8081",
    ] {
        assert!(envoy.contains(wanted), "{wanted} missing:\n{envoy}");
    }
}

/// The Envoy overlay's envoy.yaml is a valid bootstrap (field by field against Envoy's API
/// messages), and its rate limit filter asks the tollgate cluster for the domain that tollgate's
/// rules file defines.
#[test]
fn envoy_bootstrap_matches_envoys_api_and_tollgates_rules() {
    let out = run_ok(
        std::process::Command::new(venv_bin("python"))
            .arg(script("envoy_bootstrap.py"))
            .arg(repo_file("deploy/kubernetes/overlays/envoy/envoy.yaml")),
    );
    assert!(
        out.contains("ratelimit: domain=edge cluster=tollgate\n"),
        "{out}"
    );
    let rules =
        std::fs::read_to_string(repo_file("deploy/kubernetes/base/ratelimit/edge.yaml")).unwrap();
    assert!(rules.contains("\ndomain: edge\n"), "{rules}");
}

/// The tollgate configs that deploy/ ships pass `tollgate config check`.
#[test]
fn shipped_tollgate_configs_pass_config_check() {
    for path in [
        "deploy/kubernetes/base/tollgate.yaml",
        "deploy/compose/tollgate.yaml",
    ] {
        let out = run_ok(
            std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
                .args(["config", "check"])
                .arg(repo_file(path)),
        );
        assert!(out.starts_with("ok: "), "{out}");
    }
}

/// The compose stack passes the compose-spec schema, and its Prometheus config passes
/// `promtool check config` with the alert rules it mounts. No container engine runs here: the
/// stack itself is not started.
#[test]
fn compose_stack_passes_the_compose_schema_and_promtool() {
    let out = run_ok(
        std::process::Command::new(venv_bin("check-jsonschema"))
            .args(["--builtin-schema", "vendor.compose-spec"])
            .arg(repo_file("deploy/compose/compose.yaml")),
    );
    assert!(out.contains("validation done"), "{out}");

    let compose = std::fs::read_to_string(repo_file("deploy/compose/compose.yaml")).unwrap();
    for service in [
        "tollgate-1",
        "tollgate-2",
        "tollgate-3",
        "haproxy",
        "prometheus",
        "grafana",
    ] {
        assert!(
            compose.contains(&format!("\n  {service}:")),
            "{service} missing"
        );
    }
    for node in 1..=6 {
        assert!(
            compose.contains(&format!("\n  redis-{node}:")),
            "redis-{node} missing"
        );
    }

    // The rules path as the container sees it, pointed at the repository's file.
    let scratch = tempfile::tempdir().unwrap();
    let config = std::fs::read_to_string(repo_file("deploy/compose/prometheus.yml"))
        .unwrap()
        .replace(
            "/etc/prometheus/alerts.yml",
            &repo_file("deploy/prometheus/alerts.yml")
                .display()
                .to_string(),
        );
    let path = scratch.path().join("prometheus.yml");
    std::fs::write(&path, config).unwrap();
    let out = run_ok(promtool().args(["check", "config"]).arg(&path));
    assert!(out.contains("SUCCESS: 1 rule files found"), "{out}");
}
