//! Shared test harness: a real server on an ephemeral port, a real HTTP client.
#![allow(dead_code)]

pub mod process;

use std::net::SocketAddr;

use reqwest::header::HeaderMap;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tollgate_server::config::{FileConfig, Overrides, Settings};
use tollgate_server::server::Server;

/// A server running in this process on 127.0.0.1:<ephemeral>.
pub struct TestServer {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub json: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// `error.code` of an error body.
    pub fn code(&self) -> &str {
        self.json["error"]["code"].as_str().unwrap_or("")
    }
}

impl TestServer {
    /// Start a server with this YAML config (listen address forced to an ephemeral port).
    pub async fn start(yaml: &str) -> TestServer {
        let file = FileConfig::parse(yaml, "test.yaml").expect("test config is valid");
        let overrides = Overrides {
            listen: Some("127.0.0.1:0".parse().unwrap()),
            ..Overrides::default()
        };
        TestServer::start_with(Settings::merge(file, None, overrides)).await
    }

    pub async fn start_with(settings: Settings) -> TestServer {
        let server = Server::bind(settings).await.expect("server binds");
        let addr = server.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            server
                .run(async {
                    let _ = stopped.await;
                })
                .await
                .expect("server runs");
        });
        TestServer {
            addr,
            client: reqwest::Client::new(),
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// `POST /v1/check` with a JSON body.
    pub async fn check(&self, body: Value) -> Reply {
        self.post_json("/v1/check", body).await
    }

    pub async fn post_json(&self, path: &str, body: Value) -> Reply {
        read(
            self.client
                .post(self.url(path))
                .json(&body)
                .send()
                .await
                .expect("request sent"),
        )
        .await
    }

    pub async fn get(&self, path: &str) -> Reply {
        read(
            self.client
                .get(self.url(path))
                .send()
                .await
                .expect("request sent"),
        )
        .await
    }

    /// `GET /metrics`, as text.
    pub async fn metrics(&self) -> String {
        self.client
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("request sent")
            .text()
            .await
            .expect("metrics read")
    }

    /// `GET /v1/peek` for `policy` and `key`.
    pub async fn peek(&self, policy: &str, key: &str) -> Reply {
        self.get(&format!("/v1/peek?policy={policy}&key={key}"))
            .await
    }

    /// Stop the server and wait until it has.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task ends cleanly");
        }
    }
}

/// Read a response; the body as JSON when it is JSON, else as a JSON string.
pub async fn read(response: reqwest::Response) -> Reply {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.expect("body read");
    let json = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    Reply {
        status,
        headers,
        json,
    }
}

/// One item of a RateLimit / RateLimit-Policy list: its string and integer parameters.
#[derive(Debug, PartialEq, Eq)]
pub struct SfItem {
    pub name: String,
    pub params: Vec<(String, i64)>,
}

impl SfItem {
    pub fn param(&self, key: &str) -> i64 {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("parameter {key} missing in {self:?}"))
    }
}

/// Parse a header as an RFC 9651 List of sf-strings with integer parameters, with a real
/// structured-field parser.
pub fn parse_sf_list(value: &str) -> Vec<SfItem> {
    let list: sfv::List = sfv::Parser::new(value)
        .parse()
        .unwrap_or_else(|e| panic!("not a structured-field list: {value:?}: {e}"));
    list.into_iter()
        .map(|entry| match entry {
            sfv::ListEntry::Item(item) => SfItem {
                name: item
                    .bare_item
                    .as_string()
                    .unwrap_or_else(|| panic!("item is not an sf-string in {value:?}"))
                    .as_str()
                    .to_owned(),
                params: item
                    .params
                    .iter()
                    .map(|(k, v)| {
                        let int = v
                            .as_integer()
                            .unwrap_or_else(|| panic!("parameter {k:?} is not an integer"));
                        (k.as_str().to_owned(), i64::from(int))
                    })
                    .collect(),
            },
            sfv::ListEntry::InnerList(_) => panic!("unexpected inner list in {value:?}"),
        })
        .collect()
}
