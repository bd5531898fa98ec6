//! docs/openapi.yaml describes the API the server really serves: every route of the server is
//! in the document, and real responses of each (successes and errors) match it, checked by
//! openapi-core (which also validates the document itself).
//!
//! Paths the document has but this build does not serve yet are skipped; their cases are here
//! already and run as soon as the route exists.

mod common;
#[path = "deploy/tools.rs"]
mod tools;

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::{Value, json};
use tollgate_server::http::route::Route;

use common::TestServer;
use tools::{repo_file, run, script, venv_bin};

const TOKEN: &str = "openapi-test-token";

/// One request to send: method, path, query, JSON body, whether to send the admin token.
struct Case {
    method: Method,
    path: &'static str,
    query: &'static [(&'static str, &'static str)],
    body: Option<Value>,
    admin: bool,
}

fn case(method: Method, path: &'static str) -> Case {
    Case {
        method,
        path,
        query: &[],
        body: None,
        admin: false,
    }
}

impl Case {
    fn query(mut self, query: &'static [(&'static str, &'static str)]) -> Case {
        self.query = query;
        self
    }
    fn body(mut self, body: Value) -> Case {
        self.body = Some(body);
        self
    }
    fn admin(mut self) -> Case {
        self.admin = true;
        self
    }
}

/// Requests for every path of the document: successes and the errors each can give.
fn cases() -> Vec<Case> {
    use Method as M;
    let check = json!({"policy": "api", "key": "user-1"});
    vec![
        case(M::POST, "/v1/check").body(check.clone()),
        case(M::POST, "/v1/check").body(json!({"policies": ["api", "login"], "key": "user-1", "cost": 2})),
        case(M::POST, "/v1/check").body(json!({"policy": "api", "key": "user-1", "cost": 5})),
        case(M::POST, "/v1/check").body(json!({"policy": "api", "key": "user-2", "max_wait_ms": 50})),
        case(M::POST, "/v1/check").body(json!({"policy": "api", "key": "user-2", "max_wait_ms": 60001})),
        case(M::POST, "/v1/check").body(json!({"policy": "api"})),
        case(M::POST, "/v1/check").body(json!({"policy": "nope", "key": "k"})),
        case(M::GET, "/v1/check"),
        case(M::GET, "/v1/peek").query(&[("policy", "api"), ("key", "user-1")]),
        case(M::GET, "/v1/peek").query(&[("policy", "api")]),
        case(M::GET, "/v1/peek").query(&[("policy", "nope"), ("key", "k")]),
        case(M::POST, "/v1/reset").body(check.clone()).admin(),
        case(M::POST, "/v1/reset").body(check.clone()),
        case(M::POST, "/v1/reset").body(json!({"policy": "nope", "key": "k"})).admin(),
        case(M::POST, "/v1/adjust").body(json!({"policy": "api", "key": "user-1", "delta": -1})),
        case(M::POST, "/v1/adjust").body(json!({"policy": "api", "key": "user-1", "delta": 9})),
        case(M::POST, "/v1/adjust").body(json!({"policy": "login", "key": "user-1", "delta": -1})),
        case(M::POST, "/v1/adjust").body(json!({"policy": "nope", "key": "user-1", "delta": 1})),
        case(M::POST, "/v1/adjust").body(json!({"policy": "api", "key": "user-1"})),
        case(M::GET, "/v1/policies"),
        case(M::POST, "/v1/policies"),
        case(M::GET, "/health"),
        case(M::GET, "/ready"),
        case(M::GET, "/metrics"),
        case(M::PUT, "/v1/overrides")
            .body(json!({"policy": "api", "key": "tenant-7", "limit": 50, "period": "1m", "expires_in_ms": 60000}))
            .admin(),
        case(M::GET, "/v1/overrides").query(&[("policy", "api"), ("key", "tenant-7")]).admin(),
        case(M::GET, "/v1/overrides").query(&[("policy", "api")]).admin(),
        case(M::GET, "/v1/overrides").query(&[("policy", "api"), ("key", "nobody")]).admin(),
        case(M::DELETE, "/v1/overrides").query(&[("policy", "api"), ("key", "tenant-7")]).admin(),
        case(M::GET, "/v1/overrides").query(&[("policy", "api")]),
        case(M::POST, "/v1/acquire").body(json!({"policy": "jobs", "key": "tenant-7"})),
        case(M::POST, "/v1/renew").body(json!({"policy": "jobs", "key": "tenant-7", "lease": LAST_LEASE})),
        case(M::POST, "/v1/release").body(json!({"policy": "jobs", "key": "tenant-7", "lease": LAST_LEASE})),
        case(M::POST, "/v1/renew").body(json!({"policy": "jobs", "key": "tenant-7", "lease": LAST_LEASE})),
        case(M::POST, "/v1/renew").body(json!({"policy": "jobs", "key": "tenant-7", "lease": "unknown"})),
        case(M::POST, "/v1/release").body(json!({"policy": "jobs", "key": "tenant-7", "lease": "unknown"})),
        case(M::GET, "/v1/stats").admin(),
        case(M::GET, "/v1/stats"),
        case(M::GET, "/dashboard").admin(),
        case(M::GET, "/dashboard"),
    ]
}

/// A `lease` field of this value stands for the lease the last acquire returned (lease ids are
/// random, so a case cannot name one).
const LAST_LEASE: &str = "$last-lease";

/// Send each case whose path the server serves; record the exchange for the validator.
async fn record(server: &TestServer, cases: &[Case], exchanges: &mut Vec<Value>) {
    let mut last_lease = Value::Null;
    for case in cases {
        let mut url = server.url(case.path);
        if !case.query.is_empty() {
            url = format!("{url}?{}", serde_urlencoded::to_string(case.query).unwrap());
        }
        let mut request = server.client.request(case.method.clone(), url);
        if let Some(body) = &case.body {
            let mut body = body.clone();
            if body["lease"] == LAST_LEASE {
                body["lease"] = last_lease.clone();
            }
            request = request.json(&body);
        }
        if case.admin {
            request = request.bearer_auth(TOKEN);
        }
        let response = request.send().await.expect("the server answers");
        let status = response.status().as_u16();
        let headers: serde_json::Map<String, Value> = response
            .headers()
            .iter()
            .filter_map(|(name, value)| Some((name.to_string(), json!(value.to_str().ok()?))))
            .collect();
        let content_type = headers.get("content-type").cloned().unwrap_or(json!(""));
        let body = response.text().await.unwrap();
        if case.path == "/v1/acquire"
            && let Ok(answer) = serde_json::from_str::<Value>(&body)
        {
            last_lease = answer["lease"].clone();
        }
        exchanges.push(json!({
            "method": case.method.as_str(),
            "path": case.path,
            "query": case.query.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "status": status,
            "content_type": content_type,
            "headers": headers,
            "body": body,
        }));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn real_responses_of_every_served_path_match_the_openapi_document() {
    let served = |path: &str| Route::of(path).is_some();
    let mut policies = String::from(
        "policies:\n  api: { algorithm: token-bucket, rate: 3/min }\n  login: { algorithm: sliding-log, limit: 5, period: 15m }\n",
    );
    if served("/v1/acquire") {
        policies.push_str("  jobs: { algorithm: concurrency, limit: 2, lease: 60s }\n");
    }
    let cases: Vec<Case> = cases().into_iter().filter(|c| served(c.path)).collect();
    let mut exchanges = Vec::new();

    // A healthy server with an admin token.
    let server = TestServer::start(&format!("admin_token: {TOKEN}\n{policies}")).await;
    record(&server, &cases, &mut exchanges).await;
    server.stop().await;
    // A server whose Redis cannot be reached: /ready and reset answer 503.
    let down = TestServer::start(&format!(
        "admin_token: {TOKEN}\nstore: {{ url: 'redis://127.0.0.1:1', timeout: 50ms }}\n{policies}"
    ))
    .await;
    let unreachable: Vec<Case> = cases
        .into_iter()
        .filter(|c| c.path == "/ready" || (c.path == "/v1/reset" && c.admin))
        .collect();
    record(&down, &unreachable, &mut exchanges).await;
    down.stop().await;

    let statuses: BTreeSet<(String, u64)> = exchanges
        .iter()
        .map(|e| {
            (
                e["path"].as_str().unwrap().to_owned(),
                e["status"].as_u64().unwrap(),
            )
        })
        .collect();
    for route in Route::ALL {
        assert!(
            statuses
                .iter()
                .any(|(path, status)| path == route.path() && *status < 300),
            "no successful exchange for {}: add a case for it in cases()",
            route.path()
        );
    }
    assert!(
        statuses.contains(&("/ready".to_owned(), 503)),
        "{statuses:?}"
    );

    let scratch = tempfile::tempdir().unwrap();
    let file = scratch.path().join("exchanges.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&exchanges).unwrap()).unwrap();
    let output = run(std::process::Command::new(venv_bin("python"))
        .arg(script("openapi_responses.py"))
        .arg(repo_file("docs/openapi.yaml"))
        .arg(&file));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "responses do not match docs/openapi.yaml:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        stdout.matches("\nok: ").count(),
        exchanges.len(),
        "{stdout}"
    );

    // Every path the server serves is documented.
    let documented: BTreeSet<&str> = stdout
        .lines()
        .find_map(|line| line.strip_prefix("paths: "))
        .expect("the validator lists the document's paths")
        .split(' ')
        .collect();
    for route in Route::ALL {
        assert!(
            documented.contains(route.path()),
            "the server serves {} but docs/openapi.yaml lacks it",
            route.path()
        );
    }
}
