//! Reloading `policies:` of the config file in a running `tollgate serve` (the built binary):
//! under load, on SIGHUP, and refusing bad files.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::process::{Running, tollgate};
use serde_json::{Value, json};

/// How soon a changed file must be in force.
const WITHIN: Duration = Duration::from_secs(2);

/// Write `text` to `file` the way editors and `kubectl` do: a new file renamed over the old.
fn replace(file: &Path, text: &str) {
    let next = file.with_extension("yaml.next");
    std::fs::write(&next, text).unwrap();
    std::fs::rename(&next, file).unwrap();
}

fn serve(dir: &Path) -> Running {
    Running::spawn({
        let mut c = tollgate(dir);
        c.args([
            "serve",
            "--config",
            "tollgate.yaml",
            "--listen",
            "127.0.0.1:0",
        ]);
        c
    })
}

/// `tollgate_config_reloads_total` by result: (ok, error).
async fn reloads(client: &reqwest::Client, server: &Running) -> (u64, u64) {
    let text = client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let count = |result: &str| -> u64 {
        let series = format!("tollgate_config_reloads_total{{result=\"{result}\"}} ");
        text.lines()
            .find_map(|line| line.strip_prefix(&series))
            .unwrap_or_else(|| panic!("no {series} in /metrics"))
            .parse()
            .unwrap()
    };
    (count("ok"), count("error"))
}

async fn check(
    client: &reqwest::Client,
    server: &Running,
    policy: &str,
    key: &str,
) -> (u16, Value) {
    let response = client
        .post(server.url("/v1/check"))
        .json(&json!({"policy": policy, "key": key}))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

/// `GET /v1/policies` as (name, limit) pairs.
async fn policies(client: &reqwest::Client, server: &Running) -> Vec<(String, u64)> {
    let body: Value = client
        .get(server.url("/v1/policies"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_owned(),
                p["limit"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn config(limit: u64) -> String {
    format!("policies:\n  api: {{ algorithm: fixed-window, limit: {limit}, period: 1h }}\n")
}

/// One answered check of a client: when it was sent and the limit it reported.
struct Answer {
    client: usize,
    sent: Instant,
    limit: u64,
}

/// 32 clients check `api` without pause while its limit is changed twice in the file, by
/// rename and then in place: each new limit is in force within 2 s, every request is answered
/// 200 with the old or the new limit (never a failure, never a third value), and no client
/// sees the old limit again once it has seen the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_limit_is_used_within_2s_and_no_request_fails_under_load() {
    const CLIENTS: usize = 32;
    let limits = [1_000_000, 2_000_000, 3_000_000];
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tollgate.yaml");
    std::fs::write(&file, config(limits[0])).unwrap();
    let server = serve(dir.path());
    let url = Arc::new(server.url("/v1/check"));
    let client = reqwest::Client::new();
    assert_eq!(
        reloads(&client, &server).await,
        (0, 0),
        "exported from start"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (url, client, stop) = (url.clone(), client.clone(), stop.clone());
            tokio::spawn(async move {
                let mut answers = Vec::new();
                let mut failures = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let sent = Instant::now();
                    let result = client
                        .post(url.as_str())
                        .json(&json!({"policy": "api", "key": format!("client-{i}")}))
                        .send()
                        .await;
                    match result {
                        Ok(response) if response.status() == 200 => {
                            let body: Value = response.json().await.unwrap();
                            let limit = body["limit"].as_u64().unwrap();
                            answers.push(Answer {
                                client: i,
                                sent,
                                limit,
                            });
                        }
                        Ok(response) => failures.push(format!("status {}", response.status())),
                        Err(error) => failures.push(format!("{error}")),
                    }
                }
                (answers, failures)
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_secs(1)).await;
    let by_rename = Instant::now();
    replace(&file, &config(limits[1]));
    tokio::time::sleep(WITHIN + Duration::from_millis(500)).await;
    let in_place = Instant::now();
    std::fs::write(&file, config(limits[2])).unwrap();
    tokio::time::sleep(WITHIN + Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);

    let mut answers = Vec::new();
    for task in tasks {
        let (mine, failures) = task.await.unwrap();
        assert!(failures.is_empty(), "failed requests: {failures:?}");
        answers.extend(mine);
    }
    let phase = |limit: u64| limits.iter().position(|&l| l == limit);
    for answer in &answers {
        assert!(phase(answer.limit).is_some(), "limit {}", answer.limit);
    }
    for (changed, old, new) in [(by_rename, 0, 1), (in_place, 1, 2)] {
        let after = changed + WITHIN;
        let settled = || answers.iter().filter(|a| a.sent >= after);
        let late: Vec<u64> = settled()
            .filter(|a| a.sent < after + Duration::from_millis(500))
            .filter(|a| a.limit != limits[new])
            .map(|a| a.limit)
            .collect();
        assert!(
            late.is_empty(),
            "sent 2 s after the change, answered {late:?}"
        );
        assert!(settled().count() > CLIENTS, "too few requests to tell");
        let before = answers.iter().filter(|a| a.sent < changed);
        assert!(before.clone().count() > CLIENTS, "too few requests to tell");
        assert!(before.clone().all(|a| a.limit <= limits[old]));
        let first = answers
            .iter()
            .filter(|a| a.limit == limits[new])
            .map(|a| a.sent)
            .min()
            .unwrap();
        eprintln!(
            "limit {} first answered {:?} after the change",
            limits[new],
            first.saturating_duration_since(changed)
        );
    }
    // Each client's own requests follow one another: once a new table answered, no old one does.
    for i in 0..CLIENTS {
        let seen: Vec<usize> = answers
            .iter()
            .filter(|a| a.client == i)
            .map(|a| phase(a.limit).unwrap())
            .collect();
        assert!(seen.is_sorted(), "client {i} went back to an old limit");
    }
    assert_eq!(
        policies(&client, &server).await,
        [("api".to_owned(), limits[2])]
    );
    // Two changes, two reloads; a file caught half written in place was never applied.
    assert_eq!(reloads(&client, &server).await, (2, 0));
}

/// Bad files (YAML that does not parse, a limit of 0) keep the running policies, are counted
/// and logged with file, line and field; a good one then adds, removes and changes policies
/// (the state of a changed one stays); SIGHUP reloads the file at once.
#[tokio::test]
async fn bad_files_keep_the_running_policies_and_sighup_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tollgate.yaml");
    std::fs::write(
        &file,
        "policies:\n  api: { algorithm: fixed-window, limit: 5, period: 1h }\n  gone: { algorithm: gcra, rate: 10/s }\n",
    )
    .unwrap();
    let server = serve(dir.path());
    let client = reqwest::Client::new();
    for _ in 0..3 {
        let (status, body) = check(&client, &server, "api", "k").await;
        assert_eq!((status, body["allowed"].as_bool()), (200, Some(true)));
    }
    let running = vec![("api".to_owned(), 5), ("gone".to_owned(), 10)];
    let response = client
        .put(server.url("/v1/overrides"))
        .json(&json!({"policy": "api", "key": "vip", "limit": 50}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    for (bad, logged, errors) in [
        (
            "policies:\n  api: { algorithm: fixed-window, limit: 9, period: 1h }}\n",
            "tollgate.yaml:2: policies: misplaced bracket",
            1,
        ),
        (
            "policies:\n  api:\n    algorithm: fixed-window\n    limit: 0\n    period: 1h\n",
            "tollgate.yaml:4: policies.api.limit: must be at least 1",
            2,
        ),
    ] {
        replace(&file, bad);
        let line = server.log_line("config reload failed", WITHIN);
        assert!(line.contains(logged), "{line}");
        assert_eq!(reloads(&client, &server).await, (0, errors));
        assert_eq!(policies(&client, &server).await, running);
        let (_, body) = check(&client, &server, "gone", "k").await;
        assert_eq!(body["limit"], 10);
    }

    // Limit raised, `gone` removed, `fresh` added, and a key only a restart applies.
    replace(
        &file,
        "store:\n  timeout: 80ms\npolicies:\n  api: { algorithm: fixed-window, limit: 7, period: 1h }\n  fresh: { algorithm: gcra, rate: 2/s }\n",
    );
    let line = server.log_line("config reloaded", WITHIN);
    assert!(
        line.contains("added=fresh")
            && line.contains("removed=gone")
            && line.contains("changed=api"),
        "{line}"
    );
    assert_eq!(reloads(&client, &server).await, (1, 2));
    assert_eq!(
        policies(&client, &server).await,
        [("api".to_owned(), 7), ("fresh".to_owned(), 2)]
    );
    // Three of the old five were taken in this window; they still count against the new seven.
    let (_, body) = check(&client, &server, "api", "k").await;
    assert_eq!(
        (body["limit"].as_u64(), body["remaining"].as_u64()),
        (Some(7), Some(3)),
        "{body}"
    );
    // The override set before the reload stands after it.
    let (_, body) = check(&client, &server, "api", "vip").await;
    assert_eq!(body["limit"], 50, "{body}");
    let (status, body) = check(&client, &server, "gone", "k").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("unknown_policy"))
    );
    let (status, body) = check(&client, &server, "fresh", "k").await;
    assert_eq!((status, body["limit"].as_u64()), (200, Some(2)), "{body}");

    // SIGHUP reloads the file as it is, unchanged; the key needing a restart is named again.
    server.signal(libc::SIGHUP);
    server.log_line("SIGHUP received", WITHIN);
    let line = server.log_line("apply only at restart", WITHIN);
    assert!(line.contains("keys=store"), "{line}");
    server.log_line("config reloaded", WITHIN);
    assert_eq!(reloads(&client, &server).await, (2, 2));
    assert_eq!(server.terminate().code(), Some(0));
}

/// Without a config file there is nothing to reload: SIGHUP says so and the server goes on.
#[tokio::test]
async fn sighup_without_a_config_file_does_not_stop_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = Running::spawn({
        let mut c = tollgate(dir.path());
        c.args(["serve", "--listen", "127.0.0.1:0"]);
        c
    });
    server.signal(libc::SIGHUP);
    server.log_line("no config file to reload", WITHIN);
    let client = reqwest::Client::new();
    let (status, _) = check(&client, &server, "default", "k").await;
    assert_eq!(status, 200);
    assert_eq!(reloads(&client, &server).await, (0, 0));
    assert_eq!(server.terminate().code(), Some(0));
}

/// On Redis, a reload leaves the store alone: a policy whose limit changes keeps the count of
/// its window and its overrides (same keys), read under the new limit.
#[tokio::test(flavor = "multi_thread")]
async fn on_redis_a_changed_policy_keeps_its_state_and_overrides() {
    use tollgate_server::config::{Overrides, Settings, StoreUrl};
    let redis = tollgate_testkit::RedisServer::start().expect("redis-server starts");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tollgate.yaml");
    // A store timeout no busy test machine reaches: a degraded decision would not read Redis.
    let config = |limit| format!("store: {{ timeout: 5s }}\n{}", config(limit));
    std::fs::write(&file, config(5)).unwrap();
    let settings = Settings::load(Overrides {
        config: Some(file.clone()),
        listen: Some("127.0.0.1:0".parse().unwrap()),
        store_url: Some(StoreUrl::Redis(redis.node().url())),
        ..Overrides::default()
    })
    .unwrap();
    let server = common::TestServer::start_with(settings).await;
    for _ in 0..3 {
        let reply = server.check(json!({"policy": "api", "key": "k"})).await;
        assert_eq!(reply.json["allowed"], true, "{:?}", reply.json);
    }
    let response = server
        .client
        .put(server.url("/v1/overrides"))
        .json(&json!({"policy": "api", "key": "vip", "limit": 50}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    replace(&file, &config(7));
    let deadline = Instant::now() + WITHIN;
    loop {
        let reply = server.get("/v1/policies").await;
        if reply.json["policies"][0]["limit"] == 7 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "limit 7 not in force: {:?}",
            reply.json
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let reply = server.check(json!({"policy": "api", "key": "k"})).await;
    assert_eq!(
        (
            reply.json["limit"].as_u64(),
            reply.json["remaining"].as_u64()
        ),
        (Some(7), Some(3)),
        "{:?}",
        reply.json
    );
    let reply = server.check(json!({"policy": "api", "key": "vip"})).await;
    assert_eq!(reply.json["limit"], 50, "{:?}", reply.json);
    server.stop().await;
}
