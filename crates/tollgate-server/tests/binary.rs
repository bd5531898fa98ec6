//! The built `tollgate` binary: CLI, config precedence, config check, signals.

mod common;

use std::net::TcpListener;
use std::process::{Command, Output};
use std::time::Duration;

use common::process::{Running, tollgate, wait};
use serde_json::{Value, json};

/// Ports free right now (held together so they differ).
fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    std::array::from_fn(|i| listeners[i].local_addr().unwrap().port())
}

fn run(command: &mut Command) -> Output {
    command.output().expect("tollgate runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn blocking_client() -> BlockingClient {
    BlockingClient(
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap(),
        reqwest::Client::new(),
    )
}

/// A small synchronous wrapper over the async client.
struct BlockingClient(tokio::runtime::Runtime, reqwest::Client);

impl BlockingClient {
    fn post(&self, url: &str, body: Value) -> (u16, Value) {
        self.0.block_on(async {
            let r = self.1.post(url).json(&body).send().await.unwrap();
            (r.status().as_u16(), r.json().await.unwrap())
        })
    }

    fn get(&self, url: &str) -> u16 {
        self.0
            .block_on(async { self.1.get(url).send().await.unwrap().status().as_u16() })
    }

    fn text(&self, url: &str) -> String {
        self.0
            .block_on(async { self.1.get(url).send().await.unwrap().text().await.unwrap() })
    }
}

#[test]
fn version() {
    let dir = tempfile::tempdir().unwrap();
    let output = run(tollgate(dir.path()).arg("--version"));
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        stdout.trim(),
        format!("tollgate {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn serves_the_default_policy_without_config_and_exits_0_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let server = Running::spawn({
        let mut c = tollgate(dir.path());
        c.args(["serve", "--listen", "127.0.0.1:0"]);
        c
    });
    assert!(
        server.startup.contains("policies=default"),
        "{}",
        server.startup
    );
    assert!(
        server.startup.contains("store=memory"),
        "{}",
        server.startup
    );
    let client = blocking_client();
    let (status, body) = client.post(
        &server.url("/v1/check"),
        json!({"policy": "default", "key": "first-user"}),
    );
    assert_eq!(status, 200);
    assert_eq!(body["allowed"], true);
    assert_eq!(body["limit"], 100);
    assert_eq!(body["remaining"], 99);
    let status = server.terminate();
    assert_eq!(status.code(), Some(0), "{status:?}");
}

#[test]
fn sigint_also_exits_0_and_json_logs_are_json() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Running::spawn({
        let mut c = tollgate(dir.path());
        c.args(["serve", "--listen", "127.0.0.1:0"])
            .env("TOLLGATE_LOG", "json");
        c
    });
    let line: Value = serde_json::from_str(&server.startup).expect("JSON startup line");
    assert_eq!(line["fields"]["message"], "tollgate listening");
    server.signal(libc::SIGINT);
    let status = wait(&mut server.child, Duration::from_secs(15));
    assert_eq!(status.code(), Some(0));
}

#[test]
fn flags_win_over_env_which_wins_over_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let [file_port, env_port, flag_port] = free_ports::<3>();
    std::fs::write(
        dir.path().join("tollgate.yaml"),
        format!("listen: 127.0.0.1:{file_port}\npolicies:\n  fromfile: {{ algorithm: gcra, rate: 5/s }}\n"),
    )
    .unwrap();
    let serve = |env: bool, flag: bool| {
        let mut c = tollgate(dir.path());
        c.arg("serve");
        if env {
            c.env("TOLLGATE_LISTEN", format!("127.0.0.1:{env_port}"));
        }
        if flag {
            c.args(["--listen", &format!("127.0.0.1:{flag_port}")]);
        }
        Running::spawn(c)
    };
    let client = blocking_client();
    for (env, flag, port) in [
        (true, true, flag_port),
        (true, false, env_port),
        (false, false, file_port),
    ] {
        let server = serve(env, flag);
        assert_eq!(server.addr.port(), port, "env {env}, flag {flag}");
        // tollgate.yaml in the working directory was read.
        assert!(
            server.startup.contains("policies=fromfile"),
            "{}",
            server.startup
        );
        assert_eq!(client.get(&server.url("/health")), 200);
        assert_eq!(server.terminate().code(), Some(0));
    }

    // The same order for the store URL and the config file itself.
    let other = dir.path().join("other.yaml");
    std::fs::write(
        &other,
        "store:\n  url: memory\npolicies:\n  fromother: { algorithm: gcra, rate: 5/s }\n",
    )
    .unwrap();
    // The env's Redis URL wins over the file's memory store: the server starts (Redis connects
    // lazily) and says so.
    let server = Running::spawn({
        let mut c = tollgate(dir.path());
        c.args(["serve", "--listen", "127.0.0.1:0"])
            .env("TOLLGATE_CONFIG", &other)
            .env("TOLLGATE_STORE_URL", "redis://127.0.0.1:1");
        c
    });
    assert!(server.startup.contains("redis"), "{}", server.startup);
    assert_eq!(server.terminate().code(), Some(0));
    let server = Running::spawn({
        let mut c = tollgate(dir.path());
        c.args(["serve", "--listen", "127.0.0.1:0", "--store", "memory"])
            .env("TOLLGATE_CONFIG", &other)
            .env("TOLLGATE_STORE_URL", "redis://127.0.0.1:1");
        c
    });
    assert!(
        server.startup.contains("policies=fromother"),
        "{}",
        server.startup
    );
    assert_eq!(server.terminate().code(), Some(0));
}

#[test]
fn config_check_accepts_a_good_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("good.yaml");
    std::fs::write(
        &file,
        "\
listen: 127.0.0.1:8080
grpc_listen: 127.0.0.1:8081
store:
  url: redis://127.0.0.1:6379
  prefix: tollgate
  timeout: 50ms
  on_error: local
  instances: 3
  max_keys: 1000000
policies:
  api:   { algorithm: token-bucket, rate: 100/min, burst: 150 }
  login: { algorithm: sliding-log, limit: 5, period: 15m }
envoy:
  config_dir: ./ratelimit
admin_token: s3cret
log: json
",
    )
    .unwrap();
    let output = run(tollgate(dir.path()).args(["config", "check"]).arg(&file));
    assert!(output.status.success(), "{}", stderr(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.starts_with("ok: "), "{stdout}");
    assert!(stdout.contains("2 policies (api, login)"), "{stdout}");
    assert!(!stdout.contains("s3cret"));
}

#[test]
fn config_check_names_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "policies:\n  ok: { algorithm: gcra, rate: 1/s }\n  api:\n    algorithm: gcra\n    rate: 100/fortnight\n",
            "bad.yaml:5: policies.api.rate: invalid rate \"100/fortnight\"",
        ),
        (
            "listen: 127.0.0.1:8080\nstore:\n  url: memory\n  colour: blue\n",
            "bad.yaml:4: store.colour: unknown field `colour`",
        ),
        (
            "policies:\n  api: { algorithm: fixed-window, limit: 0, period: 1m }\n",
            "bad.yaml:2: policies.api.limit: must be at least 1",
        ),
        (
            "policies:\n  api: { algorithm: gcra, limit: 5, period: 0s }\n",
            "bad.yaml:2: policies.api.period: duration \"0s\" must be longer than zero",
        ),
        (
            "policies:\n  api: { algorithm: gcra, rate: 5/s, burst: 0 }\n",
            "bad.yaml:2: policies.api.burst: must be at least 1",
        ),
        (
            "\npolicies:\n  api:\n    algorithm: sliding-log\n    rate: 5/s\n    burst: 9\n",
            "bad.yaml:4: policies.api: burst applies only to token-bucket and gcra",
        ),
        (
            "policies:\n  api:\n    algorithm: quantum\n    rate: 5/s\n",
            "bad.yaml:3: policies.api.algorithm: unknown algorithm \"quantum\"",
        ),
        (
            "policies:\n  api:\n    algorithm: gcra\n",
            "bad.yaml:3: policies.api: missing limit",
        ),
        (
            "policies:\n  api:\n    algorithm: gcra\n    rate: 5/s\n    limit: 5\n",
            "bad.yaml:3: policies.api: give either `rate` or `limit` and `period`",
        ),
        (
            "store:\n  on_error: maybe\n",
            "bad.yaml:2: store.on_error: unknown on_error `maybe`",
        ),
        (
            "store:\n  url: postgres://x\n",
            "bad.yaml:2: store.url: invalid store URL",
        ),
        (
            "store:\n  timeout: soon\n",
            "bad.yaml:2: store.timeout: invalid duration \"soon\"",
        ),
        (
            "log: loud\n",
            "bad.yaml:1: log: invalid log format \"loud\"",
        ),
        ("listen: [1, 2]\n", "bad.yaml:1: listen:"),
        (
            "policies:\n  \"bad name!\": { algorithm: gcra, rate: 5/s }\n",
            "invalid policy name \"bad name!\"",
        ),
    ];
    for (yaml, expected) in cases {
        let file = dir.path().join("bad.yaml");
        std::fs::write(&file, yaml).unwrap();
        let output = run(tollgate(dir.path()).args(["config", "check", "bad.yaml"]));
        assert!(!output.status.success(), "accepted:\n{yaml}");
        let err = stderr(&output);
        assert!(err.contains(expected), "expected {expected:?}, got {err:?}");
        assert!(output.stdout.is_empty());
    }
    let output = run(tollgate(dir.path()).args(["config", "check", "missing.yaml"]));
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("missing.yaml: cannot read"),
        "{}",
        stderr(&output)
    );

    // `serve` refuses the same file the same way.
    std::fs::write(dir.path().join("tollgate.yaml"), "store:\n  colour: blue\n").unwrap();
    let output = run(tollgate(dir.path()).args(["serve", "--listen", "127.0.0.1:0"]));
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("tollgate.yaml:2: store.colour"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn features_not_built_in_fail_loudly() {
    let dir = tempfile::tempdir().unwrap();
    let output = run(tollgate(dir.path()).args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--grpc-listen",
        "127.0.0.1:0",
    ]));
    assert!(!output.status.success());
    assert!(stderr(&output).contains("gRPC"), "{}", stderr(&output));
    let output = run(tollgate(dir.path())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("TOLLGATE_GRPC_LISTEN", "127.0.0.1:0"));
    assert!(!output.status.success());
    // An unreachable Redis: the server starts, is not ready, decides by on_error (local by
    // default) marked degraded, and never prints the password.
    let server = Running::spawn({
        let mut c = tollgate(dir.path());
        c.args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--store",
            "redis://u:hunter2@127.0.0.1:1",
        ]);
        c
    });
    assert!(!server.startup.contains("hunter2"), "{}", server.startup);
    let client = blocking_client();
    assert_eq!(client.get(&server.url("/ready")), 503);
    let (status, body) = client.post(
        &server.url("/v1/check"),
        serde_json::json!({"policy": "default", "key": "k"}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["degraded"], true, "{body}");
    assert_eq!(
        body["allowed"], true,
        "local fallback allows the first check: {body}"
    );
    // The failures are counted by kind: refused calls until the breaker opens, then calls
    // not made.
    for _ in 0..10 {
        client.post(
            &server.url("/v1/check"),
            serde_json::json!({"policy": "default", "key": "k"}),
        );
    }
    let metrics = client.text(&server.url("/metrics"));
    let count = |kind: &str| -> u64 {
        let prefix = format!("tollgate_store_errors_total{{kind=\"{kind}\"}} ");
        let line = metrics.lines().find(|l| l.starts_with(&prefix));
        line.and_then(|l| l[prefix.len()..].parse().ok())
            .unwrap_or_else(|| panic!("no {prefix}: {metrics}"))
    };
    assert!(count("backend") + count("timeout") >= 1, "{metrics}");
    assert!(count("circuit_open") >= 1, "{metrics}");
    assert_eq!(server.terminate().code(), Some(0));
    let output = run(tollgate(dir.path()).args(["serve", "--listen", "nowhere"]));
    assert!(!output.status.success());
    let output = run(tollgate(dir.path())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("TOLLGATE_LOG", "loud"));
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("TOLLGATE_LOG"),
        "{}",
        stderr(&output)
    );
}

/// `tollgate bench <target...>` over 10 keys, 1,000 requests, 4 in flight: its JSON line.
fn bench_10_keys(dir: &std::path::Path, target: &[&str]) -> Value {
    let output = run(tollgate(dir).arg("bench").args(target).args([
        "--keys",
        "10",
        "--requests",
        "1000",
        "--concurrency",
        "4",
        "--json",
    ]));
    assert!(output.status.success(), "{}", stderr(&output));
    serde_json::from_slice(&output.stdout).expect("one JSON line")
}

#[test]
fn bench_counts_what_the_store_decides() {
    let dir = tempfile::tempdir().unwrap();
    let line = bench_10_keys(
        dir.path(),
        &[
            "--algorithm",
            "fixed-window",
            "--limit",
            "5",
            "--period",
            "1h",
        ],
    );
    assert_eq!(line["bench"], "tollgate");
    assert_eq!(line["allowed"], 50, "{line}");
    assert_eq!(line["rejected"], 950, "{line}");
    let output = run(tollgate(dir.path()).args(["bench", "--algorithm", "nope"]));
    assert!(!output.status.success());
}

/// `tollgate bench --grpc` against a running `tollgate serve`: its framed calls are answered,
/// and the count is what the Envoy rule allows (5 per key per hour, 10 keys).
#[test]
fn bench_grpc_counts_what_the_envoy_service_decides() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("ratelimit");
    std::fs::create_dir(&rules).unwrap();
    std::fs::write(
        rules.join("bench.yaml"),
        "domain: bench\ndescriptors:\n  - key: key\n    rate_limit: { unit: hour, requests_per_unit: 5 }\n",
    )
    .unwrap();
    let config = dir.path().join("tollgate.yaml");
    std::fs::write(
        &config,
        format!("envoy:\n  config_dir: {}\n", rules.display()),
    )
    .unwrap();
    let [grpc_port] = free_ports::<1>();
    let grpc = format!("127.0.0.1:{grpc_port}");
    let server = Running::spawn({
        let mut c = tollgate(dir.path());
        c.args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--grpc-listen",
            &grpc,
            "--config",
        ])
        .arg(&config);
        c
    });
    let line = bench_10_keys(dir.path(), &["--grpc", &grpc]);
    assert_eq!(line["errors"], 0, "{line}");
    assert_eq!(line["allowed"], 50, "{line}");
    assert_eq!(line["rejected"], 950, "{line}");
    let status = server.terminate();
    assert_eq!(status.code(), Some(0), "{status:?}");
}

/// `store.replica_ack` is in the startup line, and the server says once Redis answers whether
/// each master has the replicas it asks for (without them, every consuming decision goes to
/// `on_error`).
#[test]
fn replica_ack_is_checked_against_the_masters_replicas() {
    use tollgate_testkit::RedisServer;
    let serve = |url: String| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("tollgate.yaml"),
            format!("store:\n  url: {url}\n  replica_ack: 1\n  timeout: 200ms\n"),
        )
        .unwrap();
        let server = Running::spawn({
            let mut c = tollgate(dir.path());
            c.args(["serve", "--listen", "127.0.0.1:0"]);
            c
        });
        (dir, server)
    };

    let alone = RedisServer::start().unwrap();
    let (_dir, server) = serve(alone.url());
    assert!(
        server.startup.contains("replica_ack 1 within 100ms"),
        "{}",
        server.startup
    );
    let warning = server.log_line("store.replica_ack asks for more", Duration::from_secs(10));
    assert!(
        warning.contains("WARN") && warning.contains("replicas=0"),
        "{warning}"
    );

    let (_dir, server) = serve("memory".into());
    server.log_line("applies to Redis only", Duration::from_secs(10));

    let (master, _replica) = RedisServer::start_replicated().unwrap();
    let (_dir, server) = serve(master.url());
    let fine = server.log_line("store.replica_ack", Duration::from_secs(10));
    assert!(
        fine.contains("enough replicas") && fine.contains("replicas=1"),
        "{fine}"
    );
}
