//! Bad input gets its documented 4xx and JSON error code, never a 5xx, and the server lives on.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{TestServer, read};
use reqwest::Method;
use serde_json::json;

const CONFIG: &str = "policies:\n  api: { algorithm: gcra, rate: 10/min }\n  other: { algorithm: fixed-window, rate: 5/min }\n";

/// `(method, path, content type, body) -> (status, code)`.
type Case = (
    Method,
    &'static str,
    Option<&'static str>,
    String,
    u16,
    &'static str,
);

fn cases() -> Vec<Case> {
    let json_ct = Some("application/json");
    let post = |body: &str, status, code| {
        (
            Method::POST,
            "/v1/check",
            json_ct,
            body.to_owned(),
            status,
            code,
        )
    };
    let long_key = "k".repeat(1025);
    vec![
        post("{", 400, "invalid_request"),
        post("", 400, "invalid_request"),
        post("null", 400, "invalid_request"),
        post("[1,2]", 400, "invalid_request"),
        post(
            r#"{"policy":"api","key":"k"} trailing"#,
            400,
            "invalid_request",
        ),
        post(r#"{"policy":"api","key":7}"#, 400, "invalid_request"),
        post(r#"{"policy":1,"key":"k"}"#, 400, "invalid_request"),
        post(
            r#"{"policy":"api","key":"k","cost":"1"}"#,
            400,
            "invalid_request",
        ),
        post(
            r#"{"policy":"api","key":"k","cost":-1}"#,
            400,
            "invalid_request",
        ),
        post(
            r#"{"policy":"api","key":"k","cost":1.5}"#,
            400,
            "invalid_request",
        ),
        post(
            r#"{"policy":"api","key":"k","cost":0}"#,
            400,
            "invalid_request",
        ),
        post(
            r#"{"policy":"api","key":"k","cost":11}"#,
            400,
            "invalid_request",
        ),
        post(
            r#"{"policy":"api","key":"k","cost":18446744073709551615}"#,
            400,
            "invalid_request",
        ),
        post(
            r#"{"policy":"api","key":"k","cost":1e30}"#,
            400,
            "invalid_request",
        ),
        post(r#"{"policy":"api","key":""}"#, 400, "invalid_request"),
        post(
            &format!(r#"{{"policy":"api","key":"{long_key}"}}"#),
            400,
            "invalid_request",
        ),
        post(r#"{"policy":"api"}"#, 400, "invalid_request"),
        post(r#"{"key":"k"}"#, 400, "invalid_request"),
        post(
            r#"{"policy":"api","policies":["other"],"key":"k"}"#,
            400,
            "invalid_request",
        ),
        post(r#"{"policies":[],"key":"k"}"#, 400, "invalid_request"),
        // An array of the fields in order: serde would take it for the object.
        post(r#"["api",null,"k",1,null]"#, 400, "invalid_request"),
        post(r#"[]"#, 400, "invalid_request"),
        post(
            r#"{"policies":["api","api"],"key":"k"}"#,
            400,
            "invalid_request",
        ),
        post(r#"{"policies":"api","key":"k"}"#, 400, "invalid_request"),
        post(
            r#"{"policy":"api","key":"k","extra":true}"#,
            400,
            "invalid_request",
        ),
        post(
            r#"{"policy":"api","policy":"api","key":"k"}"#,
            400,
            "invalid_request",
        ),
        post(
            &format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000)),
            400,
            "invalid_request",
        ),
        post("\u{0}\u{1}\u{2}", 400, "invalid_request"),
        post(r#"{"policy":"nope","key":"k"}"#, 404, "unknown_policy"),
        post(
            r#"{"policies":["api","nope"],"key":"k"}"#,
            404,
            "unknown_policy",
        ),
        (
            Method::POST,
            "/v1/check",
            Some("text/plain"),
            r#"{"policy":"api","key":"k"}"#.into(),
            415,
            "unsupported_media_type",
        ),
        (
            Method::POST,
            "/v1/check",
            Some("application/x-www-form-urlencoded"),
            "policy=api".into(),
            415,
            "unsupported_media_type",
        ),
        (
            Method::POST,
            "/v1/reset",
            Some("text/plain"),
            "{}".into(),
            415,
            "unsupported_media_type",
        ),
        (
            Method::POST,
            "/v1/reset",
            json_ct,
            r#"{"policy":"api"}"#.into(),
            400,
            "invalid_request",
        ),
        (
            Method::POST,
            "/v1/reset",
            json_ct,
            r#"{"policy":"api","key":""}"#.into(),
            400,
            "invalid_request",
        ),
        (
            Method::POST,
            "/v1/reset",
            json_ct,
            r#"{"policy":"zzz","key":"k"}"#.into(),
            404,
            "unknown_policy",
        ),
        (
            Method::GET,
            "/v1/peek",
            None,
            String::new(),
            400,
            "invalid_request",
        ),
        (
            Method::GET,
            "/v1/peek?policy=api",
            None,
            String::new(),
            400,
            "invalid_request",
        ),
        (
            Method::GET,
            "/v1/peek?policy=api&key=k&cost=x",
            None,
            String::new(),
            400,
            "invalid_request",
        ),
        (
            Method::GET,
            "/v1/peek?policy=api&key=k&cost=0",
            None,
            String::new(),
            400,
            "invalid_request",
        ),
        (
            Method::GET,
            "/v1/peek?policy=api&key=k&cost=99",
            None,
            String::new(),
            400,
            "invalid_request",
        ),
        (
            Method::GET,
            "/v1/peek?policy=api&key=&cost=1",
            None,
            String::new(),
            400,
            "invalid_request",
        ),
        (
            Method::GET,
            "/v1/peek?policy=api&key=k&bogus=1",
            None,
            String::new(),
            400,
            "invalid_request",
        ),
        (
            Method::GET,
            "/v1/peek?policy=%ZZ&key=k",
            None,
            String::new(),
            404,
            "unknown_policy",
        ),
        (
            Method::GET,
            "/v1/peek?policy=nope&key=k",
            None,
            String::new(),
            404,
            "unknown_policy",
        ),
        (
            Method::GET,
            "/v1/check",
            None,
            String::new(),
            405,
            "method_not_allowed",
        ),
        (
            Method::PUT,
            "/v1/check",
            json_ct,
            "{}".into(),
            405,
            "method_not_allowed",
        ),
        (
            Method::DELETE,
            "/health",
            None,
            String::new(),
            405,
            "method_not_allowed",
        ),
        (
            Method::POST,
            "/v1/peek",
            json_ct,
            "{}".into(),
            405,
            "method_not_allowed",
        ),
        (
            Method::GET,
            "/v1/reset",
            None,
            String::new(),
            405,
            "method_not_allowed",
        ),
        (
            Method::POST,
            "/metrics",
            None,
            String::new(),
            405,
            "method_not_allowed",
        ),
        (Method::GET, "/", None, String::new(), 404, "not_found"),
        (
            Method::GET,
            "/v1/nope",
            None,
            String::new(),
            404,
            "not_found",
        ),
        (
            Method::POST,
            "/v2/check",
            json_ct,
            "{}".into(),
            404,
            "not_found",
        ),
        (
            Method::GET,
            "/v1/check/",
            None,
            String::new(),
            404,
            "not_found",
        ),
    ]
}

#[tokio::test]
async fn every_bad_input_gets_its_status_and_json_code() {
    let server = TestServer::start(CONFIG).await;
    for (method, path, content_type, body, status, code) in cases() {
        let mut request = server.client.request(method.clone(), server.url(path));
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        if !body.is_empty() {
            request = request.body(body.clone());
        }
        let reply = read(request.send().await.unwrap()).await;
        let shown = &body[..body.len().min(60)];
        assert_eq!(
            (reply.status, reply.code()),
            (status, code),
            "{method} {path} {content_type:?} {shown:?}: {:?}",
            reply.json
        );
        assert_eq!(reply.header("content-type"), Some("application/json"));
        if status == 405 {
            let allow = if path.starts_with("/v1/check") || path.starts_with("/v1/reset") {
                "POST"
            } else {
                "GET,HEAD"
            };
            assert_eq!(reply.header("allow"), Some(allow), "{method} {path}");
        }
        assert!(
            reply.json["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{method} {path}: error without a message"
        );
    }
    assert_eq!(server.get("/health").await.status, 200);
    // HEAD on a GET route: its status and headers, no body.
    let head = server
        .client
        .head(server.url("/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.bytes().await.unwrap().len(), 0);
    // The server counted them and decides as before.
    let ok = server.check(json!({"policy": "api", "key": "k"})).await;
    assert_eq!((ok.status, ok.json["allowed"].as_bool()), (200, Some(true)));
    server.stop().await;
}

#[tokio::test]
async fn a_key_of_exactly_1024_bytes_and_a_missing_content_type_are_fine() {
    let server = TestServer::start(CONFIG).await;
    let reply = server
        .check(json!({"policy": "api", "key": "k".repeat(1024)}))
        .await;
    assert_eq!(reply.status, 200);
    let body = r#"{"policy":"api","key":"k","cost":null}"#;
    let reply = read(
        server
            .client
            .post(server.url("/v1/check"))
            .body(body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (reply.status, reply.json["remaining"].as_u64()),
        (200, Some(9))
    );
    let reply = read(
        server
            .client
            .post(server.url("/v1/check"))
            .header("content-type", "application/json; charset=UTF-8")
            .body(r#"{"policies":["api"],"key":"k\u0000x"}"#)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, 200);
    server.stop().await;
}

/// A client that sends part of a request head and stalls, or sends it a byte at a time (a
/// slowloris), loses its connection once the head timeout passes, instead of holding it forever.
#[tokio::test]
async fn a_request_head_that_never_finishes_is_cut_off() {
    let server = TestServer::start(CONFIG).await;
    let addr = server.addr;
    let head =
        "POST /v1/check HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nX-Padding: ";
    let waits = [false, true].map(|trickle| {
        std::thread::spawn(move || {
            let mut stream = TcpStream::connect(addr).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(30)))
                .unwrap();
            stream.write_all(head.as_bytes()).unwrap();
            let started = std::time::Instant::now();
            if trickle {
                // One more header byte every 200 ms: the head never ends.
                let mut writer = stream.try_clone().unwrap();
                std::thread::spawn(move || {
                    while writer.write_all(b"x").is_ok()
                        && started.elapsed() < Duration::from_secs(40)
                    {
                        std::thread::sleep(Duration::from_millis(200));
                    }
                });
            }
            let mut response = Vec::new();
            let closed = stream.read_to_end(&mut response).is_ok();
            (trickle, closed, started.elapsed())
        })
    });
    for wait in waits {
        let (trickle, closed, waited) = tokio::task::spawn_blocking(move || wait.join().unwrap())
            .await
            .unwrap();
        assert!(closed, "trickle {trickle}: still open after {waited:?}");
        assert!(
            (Duration::from_secs(9)..Duration::from_secs(25)).contains(&waited),
            "trickle {trickle}: closed after {waited:?}"
        );
    }
    assert_eq!(server.get("/health").await.status, 200);
    server.stop().await;
}

/// The head timeout never closes a connection that is merely idle between requests, nor one
/// that has not sent anything yet.
#[tokio::test]
async fn idle_keep_alive_connections_stay_open() {
    let server = TestServer::start(CONFIG).await;
    let addr = server.addr;
    let (first, second, fresh) = tokio::task::spawn_blocking(move || {
        let request = "POST /v1/check HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 26\r\n\r\n{\"policy\":\"api\",\"key\":\"k\"}";
        let mut used = TcpStream::connect(addr).unwrap();
        let mut fresh = TcpStream::connect(addr).unwrap();
        used.write_all(request.as_bytes()).unwrap();
        let first = read_response(&mut used);
        // Past the head timeout, with nothing sent in between on either connection.
        std::thread::sleep(Duration::from_secs(12));
        used.write_all(request.as_bytes()).unwrap();
        let second = read_response(&mut used);
        fresh.write_all(request.as_bytes()).unwrap();
        (first, second, read_response(&mut fresh))
    })
    .await
    .unwrap();
    for response in [first, second, fresh] {
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    }
    server.stop().await;
}

/// Read one HTTP/1.1 response with a `Content-Length` body from a raw socket.
fn read_response(stream: &mut TcpStream) -> String {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).unwrap_or(0);
        if n == 0 {
            break;
        }
        bytes.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(str::to_owned)
                })
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if bytes.len() >= end + 4 + length {
                break;
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A client that announces a body and never finishes it gets a 408 once the body timeout
/// passes (and the connection is closed), instead of holding the connection forever.
#[tokio::test]
async fn a_body_that_never_arrives_gets_408() {
    let server = TestServer::start(CONFIG).await;
    let addr = server.addr;
    let (raw, waited) = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let head = "POST /v1/check HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"policy\":";
        stream.write_all(head.as_bytes()).unwrap();
        let started = std::time::Instant::now();
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response);
        (String::from_utf8_lossy(&response).into_owned(), started.elapsed())
    })
    .await
    .unwrap();
    assert!(raw.starts_with("HTTP/1.1 408"), "{raw}");
    assert!(raw.contains("request_timeout"), "{raw}");
    assert!(
        raw.to_ascii_lowercase().contains("connection: close"),
        "{raw}"
    );
    // `read_to_end` returned, so the server closed the connection; and not before the timeout.
    assert!(
        (Duration::from_secs(9)..Duration::from_secs(25)).contains(&waited),
        "answered after {waited:?}"
    );
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("tollgate_errors_total{code=\"request_timeout\"} 1"),
        "{metrics}"
    );
    assert_eq!(server.get("/health").await.status, 200);
    server.stop().await;
}

#[tokio::test]
async fn bodies_over_64_kib_get_413() {
    let server = TestServer::start(CONFIG).await;
    let padding = " ".repeat(2 * 1024 * 1024);
    let big = format!(r#"{{"policy":"api","key":"k"{padding}}}"#);
    let reply = read(
        server
            .client
            .post(server.url("/v1/check"))
            .header("content-type", "application/json")
            .body(big)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((reply.status, reply.code()), (413, "body_too_large"));

    // Just over the limit; and exactly at it.
    let over = format!(r#"{{"policy":"api","key":"k"}}{}"#, " ".repeat(64 * 1024));
    let reply = read(
        server
            .client
            .post(server.url("/v1/check"))
            .body(over)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, 413);
    let exact = r#"{"policy":"api","key":"k"}"#;
    let exact = format!("{exact}{}", " ".repeat(64 * 1024 - exact.len()));
    let reply = read(
        server
            .client
            .post(server.url("/v1/check"))
            .body(exact)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, 200);

    // Chunked, with no Content-Length: the limit holds while reading.
    let addr = server.addr;
    let raw = tokio::task::spawn_blocking(move || chunked_post(addr, 2 * 1024 * 1024))
        .await
        .unwrap();
    assert!(
        raw.starts_with("HTTP/1.1 413"),
        "{}",
        &raw[..raw.len().min(200)]
    );
    assert!(raw.contains("body_too_large"));

    // A client that waits for `100 Continue` is answered without sending its body.
    let raw = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let head = "POST /v1/check HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 2097152\r\nExpect: 100-continue\r\n\r\n";
        stream.write_all(head.as_bytes()).unwrap();
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response);
        String::from_utf8_lossy(&response).into_owned()
    })
    .await
    .unwrap();
    assert!(raw.starts_with("HTTP/1.1 413"), "{raw}");

    assert_eq!(server.get("/health").await.status, 200);
    server.stop().await;
}

/// POST a chunked body of `size` bytes over a raw socket; the response as text.
fn chunked_post(addr: std::net::SocketAddr, size: usize) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let head = "POST /v1/check HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
    stream.write_all(head.as_bytes()).unwrap();
    let chunk = vec![b' '; 16 * 1024];
    let mut sent = 0;
    while sent < size {
        let header = format!("{:x}\r\n", chunk.len());
        if stream.write_all(header.as_bytes()).is_err()
            || stream.write_all(&chunk).is_err()
            || stream.write_all(b"\r\n").is_err()
        {
            break;
        }
        sent += chunk.len();
    }
    let _ = stream.write_all(b"0\r\n\r\n");
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test]
async fn garbage_on_the_socket_does_not_hurt() {
    let server = TestServer::start(CONFIG).await;
    let addr = server.addr;
    tokio::task::spawn_blocking(move || {
        for garbage in [
            &b"GARBAGE\r\n\r\n"[..],
            b"GET / HTTP/9.9\r\n\r\n",
            b"POST /v1/check HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
            b"POST /v1/check HTTP/1.1\r\nContent-Length: 10\r\n\r\n{",
            &[0xff; 4096],
        ] {
            let mut stream = TcpStream::connect(addr).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let _ = stream.write_all(garbage);
            let _ = stream.shutdown(std::net::Shutdown::Write);
            let mut response = Vec::new();
            let _ = stream.read_to_end(&mut response);
            let text = String::from_utf8_lossy(&response);
            assert!(
                !text.starts_with("HTTP/1.1 5"),
                "5xx for {garbage:?}: {text}"
            );
        }
    })
    .await
    .unwrap();
    assert_eq!(server.get("/health").await.status, 200);
    server.stop().await;
}

/// Percent-escapes that are not UTF-8 are refused by peek as by check (decoded lossily, `%ff`
/// and `%fe` would both read as U+FFFD and share one key's state), and an HTTP/1.1 request
/// without `Host`, or with two, is a 400 (RFC 9112 §3.2), while HTTP/1.0 needs none.
#[tokio::test]
async fn peek_refuses_non_utf8_keys_and_http11_needs_host() {
    let server = TestServer::start(CONFIG).await;
    for query in [
        "policy=api&key=%ff",
        "policy=api&key=%fe",
        "policy=%ff&key=k",
    ] {
        let reply = server.get(&format!("/v1/peek?{query}")).await;
        assert_eq!(
            (reply.status, reply.code()),
            (400, "invalid_request"),
            "{query}"
        );
    }
    let fine = server.get("/v1/peek?policy=api&key=%C3%A9").await;
    assert_eq!(fine.status, 200);
    let addr = server.addr;
    let [no_host, two_hosts, with_host, old] = tokio::task::spawn_blocking(move || {
        [
            "GET /health HTTP/1.1\r\nConnection: close\r\n\r\n",
            "GET /health HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n",
            "GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
            "GET /health HTTP/1.0\r\n\r\n",
        ]
        .map(|request| {
            let mut stream = TcpStream::connect(addr).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            stream.write_all(request.as_bytes()).unwrap();
            let mut response = Vec::new();
            let _ = stream.read_to_end(&mut response);
            String::from_utf8_lossy(&response).into_owned()
        })
    })
    .await
    .unwrap();
    assert!(no_host.starts_with("HTTP/1.1 400"), "{no_host}");
    assert!(two_hosts.starts_with("HTTP/1.1 400"), "{two_hosts}");
    assert!(no_host.contains("\"invalid_request\""), "{no_host}");
    assert!(with_host.starts_with("HTTP/1.1 200"), "{with_host}");
    assert!(old.starts_with("HTTP/1.0 200"), "{old}");
    server.stop().await;
}
