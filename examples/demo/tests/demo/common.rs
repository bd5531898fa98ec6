//! Demo processes on free ports, an HTTP client, and structured-field parsing.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// The binary under test.
pub const DEMO: &str = env!("CARGO_BIN_EXE_demo");

/// A temporary directory, removed when dropped.
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(label: &str) -> Scratch {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "tollgate-demo-test-{}-{n}-{label}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One `demo` process, logging to a file; terminated (SIGTERM, then SIGKILL) when dropped, and
/// killed by the kernel if the test binary dies first (spawned through the testkit).
pub struct Demo {
    child: Child,
    pub port: u16,
    log: PathBuf,
    _dir: Scratch,
}

impl Demo {
    /// Spawn `demo` with exactly these demo variables (nothing inherited from the caller's
    /// environment) and `PORT` on a free port unless given. Does not wait for it.
    pub fn spawn(vars: &[(&str, &str)]) -> Demo {
        let port = tollgate_testkit::free_port();
        let dir = Scratch::new("instance");
        let log = dir.path().join("demo.log");
        let out = File::create(&log).unwrap();
        let mut command = Command::new(DEMO);
        for name in [
            "PORT",
            "HOST",
            "REDIS_URL",
            "REDIS_PASSWORD",
            "INSTANCE",
            "RUST_LOG",
        ] {
            command.env_remove(name);
        }
        command.env("PORT", port.to_string());
        command.envs(vars.iter().copied());
        command
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        let child = tollgate_testkit::spawn(command).unwrap();
        Demo {
            child,
            port,
            log,
            _dir: dir,
        }
    }

    /// Spawn an instance on `redis_url` and wait until it answers `/health`.
    pub async fn start(vars: &[(&str, &str)]) -> Demo {
        let mut demo = Demo::spawn(vars);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = demo.child.try_wait().unwrap() {
                panic!("demo exited with {status}; log:\n{}", demo.log());
            }
            if let Ok(reply) = try_get(demo.port, "/health", None).await {
                assert_eq!(reply.status, StatusCode::OK, "{}", demo.log());
                return demo;
            }
            assert!(
                Instant::now() < deadline,
                "demo not healthy in 20 s; log:\n{}",
                demo.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait (at most `limit`) for it to exit by itself.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "demo still running after {limit:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Send `signal` to the process.
    pub fn signal(&self, signal: i32) {
        let pid = libc::pid_t::try_from(self.pid()).unwrap();
        // SAFETY: kill has no memory-safety preconditions; the pid is our own unreaped child.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.signal(libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// A response.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    pub fn json(&self) -> serde_json::Value {
        assert_eq!(self.header("content-type"), Some("application/json"));
        serde_json::from_str(&self.body).expect("a JSON body")
    }

    /// `RateLimit-Policy` parsed: `(name, q, w)` per item.
    pub fn policies(&self) -> Vec<(String, i64, i64)> {
        parse_list(self.header("ratelimit-policy").expect("RateLimit-Policy"))
            .into_iter()
            .map(|(name, p)| {
                assert_eq!(p.len(), 2, "only q and w: {p:?}");
                (name, p["q"], p["w"])
            })
            .collect()
    }

    /// `RateLimit` parsed: `(name, r, t)` per item.
    pub fn quotas(&self) -> Vec<(String, i64, i64)> {
        parse_list(self.header("ratelimit").expect("RateLimit"))
            .into_iter()
            .map(|(name, p)| {
                assert_eq!(p.len(), 2, "only r and t: {p:?}");
                (name, p["r"], p["t"])
            })
            .collect()
    }
}

/// A structured-field List of Strings with Integer parameters (the RateLimit draft's shape);
/// panics on anything else.
fn parse_list(value: &str) -> Vec<(String, HashMap<String, i64>)> {
    let list: sfv::List = sfv::Parser::new(value)
        .parse()
        .expect("a structured-field list");
    list.into_iter()
        .map(|entry| {
            let sfv::ListEntry::Item(item) = entry else {
                panic!("inner list in {value}")
            };
            let name = item.bare_item.as_string().expect("a String item");
            let params = item
                .params
                .iter()
                .map(|(k, v)| {
                    let n = v.as_integer().expect("an Integer parameter");
                    (k.as_str().to_owned(), i64::from(n))
                })
                .collect();
            (name.as_str().to_owned(), params)
        })
        .collect()
}

/// `GET http://127.0.0.1:{port}{path}`, with `X-User-ID: {user}` when given.
pub async fn get(port: u16, path: &str, user: Option<&str>) -> Reply {
    try_get(port, path, user)
        .await
        .unwrap_or_else(|e| panic!("GET :{port}{path}: {e}"))
}

async fn try_get(port: u16, path: &str, user: Option<&str>) -> Result<Reply, String> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut request = Request::get(format!("http://127.0.0.1:{port}{path}"));
    if let Some(user) = user {
        request = request.header("x-user-id", user);
    }
    let request = request.body(Empty::new()).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), client.request(request))
        .await
        .map_err(|_| "no answer in 10 s".to_owned())?
        .map_err(|e| e.to_string())?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(Reply {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8(body.to_vec()).unwrap(),
    })
}

/// A user id no other test uses.
pub fn user(label: &str) -> String {
    format!("{label}-{}", std::process::id())
}

/// The first of three consecutive loopback ports that are free now, never handed out before by
/// this process. Drawn below the testkit's Redis ranges (15000+).
pub fn three_free_ports() -> u16 {
    static TAKEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut taken = TAKEN.lock().unwrap();
    let taken = taken.get_or_insert_with(HashSet::new);
    let mut seed = u64::from(std::process::id()) ^ 0x9E37_79B9_7F4A_7C15;
    loop {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let first = 10_000 + u16::try_from((seed >> 33) % 4_990).unwrap();
        let ports = [first, first + 1, first + 2];
        if ports.iter().any(|p| taken.contains(p) || !port_is_free(*p)) {
            continue;
        }
        taken.extend(ports);
        return first;
    }
}

/// Whether 127.0.0.1:`port` can be bound (nothing listens there).
pub fn port_is_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// Whether process `pid` still exists (a zombie counts).
pub fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}
