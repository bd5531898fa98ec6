//! A served axum app, an HTTP/1 client, and structured-field parsing of the quota headers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::task::JoinHandle;
use tollgate::{Algorithm, Limiter, MemoryStore, Policy};
use tollgate_tower::{Quota, RateLimitBuilder, RateLimitLayer};

/// An app served on a free loopback port until dropped.
pub struct Server {
    addr: SocketAddr,
    client: Client<HttpConnector, Empty<Bytes>>,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What came back.
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

    /// Whether any rate-limit header is present.
    pub fn has_quota_headers(&self) -> bool {
        [
            "ratelimit",
            "ratelimit-policy",
            "x-ratelimit-limit",
            "retry-after",
        ]
        .iter()
        .any(|h| self.headers.contains_key(*h))
    }

    /// `RateLimit-Policy` parsed: `(name, q, w)` per item.
    pub fn policies(&self) -> Vec<(String, i64, i64)> {
        let items = parse_list(self.header("ratelimit-policy").expect("RateLimit-Policy"));
        items
            .into_iter()
            .map(|(name, params)| {
                assert_eq!(params.len(), 2, "only q and w: {params:?}");
                (name, params["q"], params["w"])
            })
            .collect()
    }

    /// `RateLimit` parsed: `(name, r, t)` per item.
    pub fn quotas(&self) -> Vec<(String, i64, i64)> {
        let items = parse_list(self.header("ratelimit").expect("RateLimit"));
        items
            .into_iter()
            .map(|(name, params)| {
                assert_eq!(params.len(), 2, "only r and t: {params:?}");
                (name, params["r"], params["t"])
            })
            .collect()
    }

    pub fn json(&self) -> serde_json::Value {
        assert_eq!(self.header("content-type"), Some("application/json"));
        serde_json::from_str(&self.body).expect("JSON body")
    }
}

/// Parse a structured-field List whose items are Strings with Integer parameters, as the
/// RateLimit draft requires; panics on anything else.
pub fn parse_list(value: &str) -> Vec<(String, HashMap<String, i64>)> {
    let list: sfv::List = sfv::Parser::new(value)
        .parse()
        .expect("a structured-field list");
    list.into_iter()
        .map(|entry| {
            let sfv::ListEntry::Item(item) = entry else {
                panic!("inner list in {value}")
            };
            let name = item
                .bare_item
                .as_string()
                .expect("a String item")
                .as_str()
                .to_owned();
            let params = item
                .params
                .iter()
                .map(|(k, v)| {
                    let n = v.as_integer().expect("an Integer parameter");
                    (k.as_str().to_owned(), i64::from(n))
                })
                .collect();
            (name, params)
        })
        .collect()
}

impl Server {
    pub async fn start(app: Router) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
            .unwrap();
        });
        Server::from_task(addr, task, false)
    }

    /// A server some other way: `task` serves `addr`; `http2` for an HTTP/2-only server.
    pub fn from_task(addr: SocketAddr, task: JoinHandle<()>, http2: bool) -> Server {
        let client = Client::builder(TokioExecutor::new())
            .http2_only(http2)
            .build_http();
        Server { addr, client, task }
    }

    pub async fn send(&self, method: Method, path: &str, headers: &[(&str, &str)]) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Empty::new()).unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(10), self.client.request(req))
            .await
            .expect("answer within 10 s")
            .unwrap();
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8(body.to_vec()).unwrap(),
        }
    }

    /// The URL of `path` on this server (for clients other than `send`'s).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        self.send(Method::GET, path, headers).await
    }
}

/// A policy of `limit` per hour (long enough that no window ends during a test).
pub fn per_hour(algorithm: Algorithm, limit: u64) -> Policy {
    Policy::builder(algorithm)
        .limit(limit)
        .period(Duration::from_secs(3600))
        .build()
        .unwrap()
}

/// A limiter on a fresh memory store with the named hourly fixed-window policies.
pub fn limiter(policies: &[(&str, u64)]) -> Limiter<MemoryStore> {
    policies
        .iter()
        .fold(Limiter::new(MemoryStore::new()), |l, (name, limit)| {
            l.with_policy(*name, per_hour(Algorithm::FixedWindow, *limit))
                .unwrap()
        })
}

/// The handler behind every path: what the layer decided, as `key policy remaining consumed`,
/// or `none` when the request carries no quota.
pub async fn echo(quota: Option<Quota>) -> String {
    match quota {
        Some(q) => format!(
            "{} {} {} {}",
            q.key(),
            q.policy(),
            q.decision().remaining,
            q.consumed()
        ),
        None => "none".to_owned(),
    }
}

/// Serve the echo handler on every path behind the layer `builder` makes.
pub async fn serve(builder: RateLimitBuilder<MemoryStore>) -> Server {
    let layer: RateLimitLayer<MemoryStore> = builder.build().unwrap();
    Server::start(Router::new().fallback(echo).layer(layer)).await
}
