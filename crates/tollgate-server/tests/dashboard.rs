//! The live stats and the dashboard, end to end: a real server under load, its `/v1/stats`, and
//! the dashboard page rendered by a real headless Chromium (Debian's `chromium`, which
//! `scripts/setup.sh` installs), whose figures must move and match `/v1/stats`.
//!
//! The screenshot is written to `target/dashboard.png`; with `TOLLGATE_UPDATE_SCREENSHOT=1` it
//! also replaces `docs/dashboard.png`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::Value;
use tollgate_server::config::{AdminToken, FileConfig, Overrides, Settings};
use tollgate_server::server::Server;

const TOKEN: &str = "dash-s3cret";

fn settings() -> Settings {
    let yaml = "policies:\n  api: { algorithm: token-bucket, rate: 50/min }\n  login: { algorithm: sliding-log, limit: 5, period: 15m }\n";
    let file = FileConfig::parse(yaml, "test.yaml").expect("test config is valid");
    let overrides = Overrides {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        admin_token: AdminToken::new(TOKEN),
        ..Overrides::default()
    };
    Settings::merge(file, None, overrides)
}

fn chromium() -> PathBuf {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        if let Ok(out) = Command::new("sh")
            .args(["-c", &format!("command -v {name}")])
            .output()
            && out.status.success()
        {
            return PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        }
    }
    panic!("no chromium found: run scripts/setup.sh (it installs Debian's chromium package)");
}

/// Run headless Chromium on `url` with a fresh profile, letting the page run `budget_ms` of
/// (virtual) time, with `extra` flags; returns its stdout.
fn run_chromium(url: &str, budget_ms: u64, extra: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(chromium())
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--no-first-run",
            &format!("--user-data-dir={}", profile.path().display()),
            &format!("--virtual-time-budget={budget_ms}"),
        ])
        .args(extra)
        .arg(url)
        .output()
        .expect("chromium runs");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every `data-stat="name" ... data-value="v"` of the rendered page.
fn page_stats(dom: &str) -> HashMap<String, String> {
    let mut stats = HashMap::new();
    for (at, _) in dom.match_indices("data-stat=\"") {
        let start = &dom[..at].rfind('<').map_or(at, |i| i);
        let tag = &dom[*start..];
        let tag = &tag[..tag.find('>').unwrap_or(tag.len())];
        let attr = |name: &str| {
            let from = tag.find(&format!("{name}=\""))? + name.len() + 2;
            Some(tag[from..from + tag[from..].find('"')?].to_owned())
        };
        if let (Some(name), Some(value)) = (attr("data-stat"), attr("data-value")) {
            stats.insert(name, value);
        }
    }
    stats
}

async fn get_stats(client: &reqwest::Client, base: &str) -> Value {
    client
        .get(format!("{base}/v1/stats"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_live_figures_that_match_v1_stats() {
    let server = Server::bind(settings()).await.expect("binds");
    let base = format!("http://{}", server.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::new();

    // The admin token rule: /v1/stats and /dashboard need it, the dashboard trades it for a cookie.
    let status = |r: reqwest::Response| r.status().as_u16();
    assert_eq!(
        status(client.get(format!("{base}/v1/stats")).send().await.unwrap()),
        401
    );
    assert_eq!(
        status(
            client
                .get(format!("{base}/v1/stats"))
                .bearer_auth("wrong")
                .send()
                .await
                .unwrap()
        ),
        403
    );
    let page = client
        .get(format!("{base}/dashboard"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 401);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert_eq!(
        status(
            client
                .get(format!("{base}/dashboard?token=wrong"))
                .send()
                .await
                .unwrap()
        ),
        403
    );
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let signed_in = no_redirects
        .get(format!("{base}/dashboard?token={TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 303);
    assert_eq!(signed_in.headers()["location"], "/dashboard");
    let cookie = signed_in.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap().to_owned();
    let with_cookie = client
        .get(format!("{base}/v1/stats"))
        .header("cookie", &pair)
        .send()
        .await
        .unwrap();
    assert_eq!(with_cookie.status(), 200, "the cookie opens /v1/stats");

    // Load: a hot key that is soon limited, and a spread of others.
    let running = Arc::new(AtomicBool::new(true));
    let load = {
        let running = running.clone();
        let client = client.clone();
        let base = base.clone();
        tokio::spawn(async move {
            let mut i = 0u64;
            while running.load(Ordering::Relaxed) {
                let key = match i % 4 {
                    0 | 1 => "mallory".to_owned(),
                    2 => "eve".to_owned(),
                    _ => format!("user-{}", i % 97),
                };
                let policy = if i.is_multiple_of(5) { "login" } else { "api" };
                let _ = client
                    .post(format!("{base}/v1/check"))
                    .json(&serde_json::json!({"policy": policy, "key": key}))
                    .send()
                    .await;
                i += 1;
            }
            i
        })
    };
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let url = format!("{base}/dashboard?token={TOKEN}");
    let first = {
        let url = url.clone();
        tokio::task::spawn_blocking(move || run_chromium(&url, 3000, &["--dump-dom"]))
            .await
            .unwrap()
    };
    let first = page_stats(&first);
    let first_allowed: u64 = first
        .get("policy.api.totals.allowed")
        .unwrap_or_else(|| panic!("the page shows api's totals: {first:?}"))
        .parse()
        .unwrap();
    assert!(first_allowed > 0, "{first:?}");
    tokio::time::sleep(Duration::from_millis(2000)).await;

    // The screenshot, under load.
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/dashboard.png");
    {
        let url = url.clone();
        let shot = format!("--screenshot={}", target.display());
        tokio::task::spawn_blocking(move || {
            run_chromium(&url, 4000, &[&shot, "--window-size=1440,1100"])
        })
        .await
        .unwrap();
    }
    let png = std::fs::read(&target).expect("the screenshot was written");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "{} bytes",
        png.len()
    );
    if std::env::var_os("TOLLGATE_UPDATE_SCREENSHOT").is_some() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/dashboard.png");
        std::fs::write(docs, &png).unwrap();
    }

    // Stop the load and let one more sample pass: totals and top keys are then still.
    running.store(false, Ordering::Relaxed);
    let sent = load.await.unwrap();
    assert!(sent > 50, "the load ran: {sent} requests");
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let stats = get_stats(&client, &base).await;
    let dom = tokio::task::spawn_blocking(move || run_chromium(&url, 3000, &["--dump-dom"]))
        .await
        .unwrap();
    let shown = page_stats(&dom);
    let api = stats["policies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "api")
        .unwrap();
    let number = |name: &str| -> u64 {
        shown
            .get(name)
            .unwrap_or_else(|| panic!("the page shows {name}: {shown:?}"))
            .parse()
            .unwrap()
    };
    assert!(
        number("policy.api.totals.allowed") > first_allowed,
        "the figures move"
    );
    assert_eq!(
        number("policy.api.totals.allowed"),
        api["totals"]["allowed"].as_u64().unwrap()
    );
    assert_eq!(
        number("policy.api.totals.denied"),
        api["totals"]["denied"].as_u64().unwrap()
    );
    assert!(api["totals"]["denied"].as_u64().unwrap() > 0, "{api}");
    assert_eq!(shown["policy.api.top.0.key"], "mallory");
    assert_eq!(api["top_limited_keys"][0]["key"], "mallory");
    assert_eq!(
        number("policy.api.top.0.count"),
        api["top_limited_keys"][0]["count"].as_u64().unwrap()
    );
    assert_eq!(shown["store.kind"], "memory");

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(15), task)
        .await
        .expect("server stops")
        .expect("task")
        .expect("clean exit");
}
