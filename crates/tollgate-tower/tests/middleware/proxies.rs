//! Client addresses: the socket peer, trusted proxies, spoofing attempts, IPv6 grouping.
//!
//! The test client always connects from 127.0.0.1, so "trusted peer" means 127.0.0.1 is listed.

use http::StatusCode;
use tollgate_tower::{ForwardedHeader, Key, RateLimitBuilder, RateLimitLayer};

use crate::common::{Server, limiter, serve};

fn builder(limit: u64, trusted: &[&str]) -> RateLimitBuilder<tollgate::MemoryStore> {
    RateLimitLayer::builder(limiter(&[("api", limit)]))
        .key(Key::client_ip())
        .trusted_proxies(trusted)
        .default_policies("api")
}

/// The key the layer used for a request with these headers.
async fn key(server: &Server, headers: &[(&str, &str)]) -> String {
    let reply = server.get("/", headers).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    reply.body.split(' ').next().unwrap().to_owned()
}

#[tokio::test]
async fn untrusted_peer_headers_change_nothing() {
    let server = serve(builder(2, &["10.0.0.0/8"])).await;
    assert_eq!(key(&server, &[]).await, "ip:127.0.0.1");
    assert_eq!(
        key(&server, &[("x-forwarded-for", "203.0.113.9")]).await,
        "ip:127.0.0.1"
    );
    // A rotating spoofed header does not buy more requests.
    let reply = server
        .get(
            "/",
            &[
                ("forwarded", "for=198.51.100.1"),
                ("x-forwarded-for", "1.2.3.4"),
            ],
        )
        .await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    let reply = server.get("/", &[("x-forwarded-for", "5.6.7.8")]).await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn trusted_peer_right_most_untrusted_hop_is_the_client() {
    let server = serve(builder(100, &["127.0.0.1", "10.0.0.0/8", "192.168.0.0/16"])).await;
    // One proxy: it appended what it saw.
    assert_eq!(
        key(&server, &[("x-forwarded-for", "203.0.113.9")]).await,
        "ip:203.0.113.9"
    );
    // The client prepended a lie; our proxy appended the truth.
    let spoofed = [("x-forwarded-for", "1.1.1.1, 203.0.113.9")];
    assert_eq!(key(&server, &spoofed).await, "ip:203.0.113.9");
    // Several trusted proxies behind the client, over two header lines.
    let chain = [
        ("x-forwarded-for", "8.8.8.8, 203.0.113.10"),
        ("x-forwarded-for", "192.168.1.1, 10.0.0.2"),
    ];
    assert_eq!(key(&server, &chain).await, "ip:203.0.113.10");
    // Ports and brackets as some proxies write them.
    let ported = [("x-forwarded-for", "203.0.113.11:5123, 10.0.0.2")];
    assert_eq!(key(&server, &ported).await, "ip:203.0.113.11");
    // Everything trusted: the left-most (an internal client).
    assert_eq!(
        key(&server, &[("x-forwarded-for", "10.9.9.9, 10.0.0.2")]).await,
        "ip:10.9.9.9"
    );
    // No header: the proxy itself is the client.
    assert_eq!(key(&server, &[]).await, "ip:127.0.0.1");
    // IPv4-mapped IPv6 is IPv4.
    let mapped = [("x-forwarded-for", "::ffff:203.0.113.12")];
    assert_eq!(key(&server, &mapped).await, "ip:203.0.113.12");
    // The Forwarded header is not the one configured here: ignored.
    let other = [("forwarded", "for=203.0.113.13")];
    assert_eq!(key(&server, &other).await, "ip:127.0.0.1");
}

#[tokio::test]
async fn unusable_hop_leaves_no_address() {
    let server = serve(builder(100, &["127.0.0.1"])).await;
    // The proxy says it does not know: the shared anonymous key, not the proxy's address.
    let unknown = [("x-forwarded-for", "203.0.113.9, unknown")];
    assert_eq!(key(&server, &unknown).await, "anonymous");
    // Garbage left of the client is never read.
    let garbage = [("x-forwarded-for", "not-an-ip, 203.0.113.9")];
    assert_eq!(key(&server, &garbage).await, "ip:203.0.113.9");
}

#[tokio::test]
async fn forwarded_header_rfc7239() {
    let server = serve(
        builder(100, &["127.0.0.0/8", "10.0.0.0/8"]).forwarded_header(ForwardedHeader::Forwarded),
    )
    .await;
    let simple = [("forwarded", "for=192.0.2.60;proto=http;by=203.0.113.43")];
    assert_eq!(key(&server, &simple).await, "ip:192.0.2.60");
    let chain = [(
        "forwarded",
        r#"for=198.51.100.1, for="[2001:db8:cafe::17]:4711";proto=https, for=10.0.0.1"#,
    )];
    assert_eq!(key(&server, &chain).await, "ip:2001:db8:cafe::/64");
    let obfuscated = [("forwarded", "for=198.51.100.1, for=_hidden")];
    assert_eq!(key(&server, &obfuscated).await, "anonymous");
    // X-Forwarded-For is not the one configured here: ignored.
    let xff = [("x-forwarded-for", "203.0.113.9")];
    assert_eq!(key(&server, &xff).await, "ip:127.0.0.1");
}

#[tokio::test]
async fn ipv6_clients_are_grouped_by_prefix() {
    let server = serve(builder(3, &["127.0.0.1"])).await;
    let hosts = [
        "2001:db8:1:2::1",
        "2001:db8:1:2:ffff::9",
        "2001:db8:1:2:abcd::3",
    ];
    for (i, host) in hosts.iter().enumerate() {
        let reply = server.get("/", &[("x-forwarded-for", host)]).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(
            reply.body,
            format!("ip:2001:db8:1:2::/64 api {} true", 2 - i)
        );
    }
    let same_net = server
        .get("/", &[("x-forwarded-for", "2001:db8:1:2::77")])
        .await;
    assert_eq!(
        same_net.status,
        StatusCode::TOO_MANY_REQUESTS,
        "same /64, same quota"
    );
    let next_net = server
        .get("/", &[("x-forwarded-for", "2001:db8:1:3::1")])
        .await;
    assert_eq!(next_net.status, StatusCode::OK, "another /64");

    let per_host = serve(builder(3, &["127.0.0.1"]).ipv6_prefix(128)).await;
    for host in hosts {
        assert_eq!(
            key(&per_host, &[("x-forwarded-for", host)]).await,
            format!("ip:{host}")
        );
    }
}
