//! Who is the client? The socket peer, unless the peer is a proxy we trust.
//!
//! Rules, in order:
//! 1. The peer address comes from the connection (axum's `ConnectInfo<SocketAddr>` or a
//!    `SocketAddr` request extension, or a function you set), never from a header.
//! 2. If the peer is not in a trusted-proxy network, it is the client: forwarding headers are
//!    ignored, so a spoofed `X-Forwarded-For` from the internet changes nothing.
//! 3. If it is trusted, the configured forwarding header is walked right to left (nearest hop
//!    first), skipping trusted proxies; the first address that is not trusted is the client.
//!    Each proxy appends the address it saw, so everything right of that hop was written by
//!    proxies we trust, and everything left of it by someone we do not.
//! 4. If that hop is not a usable address (`unknown`, `_hidden`, garbage) there is no client IP
//!    (the key chain moves on). If every hop is trusted, the left-most one is the client.
//!
//! Addresses are normalised (IPv4-mapped IPv6 becomes IPv4) and then grouped: IPv6 by a /64
//! prefix by default, because one subscriber usually holds a whole /64 and could otherwise rotate
//! through 2^64 "clients".

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::Extensions;
use http::request::Parts;

use crate::cidr::{self, Cidr};
use crate::forwarded::{self, Hops};

/// Which header trusted proxies write the client chain into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2` (nginx, HAProxy, most load balancers).
    #[default]
    XForwardedFor,
    /// `Forwarded: for=client, for=proxy1` (RFC 7239).
    Forwarded,
}

/// Reads the socket peer's address from a request's extensions.
pub type PeerFn = Arc<dyn Fn(&Extensions) -> Option<IpAddr> + Send + Sync>;

/// How the client IP is found: trusted proxies, forwarding header, grouping prefixes.
///
/// Set through [`RateLimitBuilder`](crate::RateLimitBuilder); read with
/// [`RateLimitLayer::client_ip`](crate::RateLimitLayer::client_ip).
#[derive(Clone)]
pub struct ClientIp {
    trusted: Vec<Cidr>,
    header: ForwardedHeader,
    ipv4_prefix: u8,
    ipv6_prefix: u8,
    peer: Option<PeerFn>,
}

impl fmt::Debug for ClientIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIp")
            .field("trusted", &self.trusted)
            .field("header", &self.header)
            .field("ipv4_prefix", &self.ipv4_prefix)
            .field("ipv6_prefix", &self.ipv6_prefix)
            .field("peer", &self.peer.as_ref().map(|_| "custom"))
            .finish()
    }
}

impl Default for ClientIp {
    fn default() -> Self {
        ClientIp {
            trusted: Vec::new(),
            header: ForwardedHeader::default(),
            ipv4_prefix: 32,
            ipv6_prefix: 64,
            peer: None,
        }
    }
}

impl ClientIp {
    pub(crate) fn set_trusted(&mut self, trusted: Vec<Cidr>) {
        self.trusted = trusted;
    }

    pub(crate) fn set_header(&mut self, header: ForwardedHeader) {
        self.header = header;
    }

    pub(crate) fn set_ipv4_prefix(&mut self, prefix: u8) {
        self.ipv4_prefix = prefix.min(32);
    }

    pub(crate) fn set_ipv6_prefix(&mut self, prefix: u8) {
        self.ipv6_prefix = prefix.min(128);
    }

    pub(crate) fn set_peer(&mut self, peer: PeerFn) {
        self.peer = Some(peer);
    }

    /// Whether `ip` is one of the trusted proxies.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(ip))
    }

    /// The socket peer's address, normalised.
    pub fn peer(&self, extensions: &Extensions) -> Option<IpAddr> {
        let ip = match &self.peer {
            Some(peer) => peer(extensions),
            None => default_peer(extensions),
        };
        ip.map(cidr::normalize)
    }

    /// The client's address by the rules of this module (not yet grouped), or `None` when it
    /// cannot be known (no peer address, or an unusable hop where the client should be).
    pub fn resolve(&self, parts: &Parts) -> Option<IpAddr> {
        let peer = self.peer(&parts.extensions)?;
        if !self.is_trusted(peer) {
            return Some(peer);
        }
        let hops: Hops = match self.header {
            ForwardedHeader::XForwardedFor => forwarded::x_forwarded_for(&parts.headers),
            ForwardedHeader::Forwarded => forwarded::forwarded(&parts.headers),
        };
        let mut client = peer;
        for hop in hops.iter().rev() {
            let ip = cidr::normalize((*hop)?);
            client = ip;
            if !self.is_trusted(ip) {
                break;
            }
        }
        Some(client)
    }

    /// The network `ip` is counted under: itself for IPv4 (unless an IPv4 prefix is set), its
    /// /64 (by default) for IPv6.
    pub fn group(&self, ip: IpAddr) -> Cidr {
        let ip = cidr::normalize(ip);
        let prefix = if ip.is_ipv4() {
            self.ipv4_prefix
        } else {
            self.ipv6_prefix
        };
        Cidr::new(ip, prefix)
    }

    /// The client's group as a key value: `203.0.113.7`, or `2001:db8:1:2::/64`.
    pub(crate) fn key_value(&self, parts: &Parts) -> Option<GroupKey> {
        Some(GroupKey(self.group(self.resolve(parts)?)))
    }
}

/// Displays a client group as its key value: a bare address for a single host, else the network.
pub(crate) struct GroupKey(Cidr);

impl fmt::Display for GroupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let full = if self.0.addr().is_ipv4() { 32 } else { 128 };
        if self.0.prefix() == full {
            write!(f, "{}", self.0.addr())
        } else {
            write!(f, "{}", self.0)
        }
    }
}

/// axum's `ConnectInfo<SocketAddr>` (with the `axum` feature), else a plain `SocketAddr`
/// extension (set it yourself when serving with hyper directly).
fn default_peer(extensions: &Extensions) -> Option<IpAddr> {
    #[cfg(feature = "axum")]
    if let Some(info) = extensions.get::<axum::extract::ConnectInfo<SocketAddr>>() {
        return Some(info.0.ip());
    }
    extensions.get::<SocketAddr>().map(SocketAddr::ip)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn config(trusted: &[&str]) -> ClientIp {
        let mut c = ClientIp::default();
        c.set_trusted(trusted.iter().map(|s| s.parse().unwrap()).collect());
        c
    }

    fn parts(peer: &str, xff: &[&str]) -> Parts {
        let mut req = Request::builder();
        for v in xff {
            req = req.header("x-forwarded-for", *v);
        }
        let mut req = req.body(()).unwrap();
        let peer: IpAddr = peer.parse().unwrap();
        req.extensions_mut().insert(SocketAddr::new(peer, 4000));
        req.into_parts().0
    }

    fn resolve(c: &ClientIp, peer: &str, xff: &[&str]) -> Option<String> {
        c.resolve(&parts(peer, xff)).map(|ip| ip.to_string())
    }

    #[test]
    fn untrusted_peer_ignores_headers() {
        let c = config(&["10.0.0.0/8"]);
        assert_eq!(
            resolve(&c, "198.51.100.4", &["1.1.1.1"]).as_deref(),
            Some("198.51.100.4")
        );
    }

    #[test]
    fn trusted_chain_takes_rightmost_untrusted() {
        let c = config(&["10.0.0.0/8", "192.168.1.1"]);
        let got = resolve(
            &c,
            "10.0.0.5",
            &["6.6.6.6, 203.0.113.7, 192.168.1.1, 10.1.1.1"],
        );
        assert_eq!(got.as_deref(), Some("203.0.113.7"));
    }

    #[test]
    fn all_trusted_takes_leftmost() {
        let c = config(&["10.0.0.0/8"]);
        assert_eq!(
            resolve(&c, "10.0.0.5", &["10.2.2.2, 10.3.3.3"]).as_deref(),
            Some("10.2.2.2")
        );
        assert_eq!(resolve(&c, "10.0.0.5", &[]).as_deref(), Some("10.0.0.5"));
    }

    #[test]
    fn unusable_hop_means_unknown() {
        let c = config(&["10.0.0.0/8"]);
        assert_eq!(resolve(&c, "10.0.0.5", &["1.2.3.4, unknown"]), None);
        // Garbage left of the client does not matter.
        assert_eq!(
            resolve(&c, "10.0.0.5", &["nonsense, 1.2.3.4"]).as_deref(),
            Some("1.2.3.4")
        );
    }

    #[test]
    fn mapped_peer_and_hops_are_ipv4() {
        let c = config(&["10.0.0.0/8"]);
        let got = resolve(&c, "::ffff:10.0.0.5", &["::ffff:203.0.113.9"]);
        assert_eq!(got.as_deref(), Some("203.0.113.9"));
    }

    #[test]
    fn no_peer_no_ip() {
        let c = config(&[]);
        let req = Request::builder().body(()).unwrap();
        assert_eq!(c.resolve(&req.into_parts().0), None);
    }

    #[test]
    fn groups_ipv6_by_prefix() {
        let mut c = config(&[]);
        let p = parts("2001:db8:1:2:aaaa::1", &[]);
        assert_eq!(
            c.key_value(&p).map(|k| k.to_string()).as_deref(),
            Some("2001:db8:1:2::/64")
        );
        c.set_ipv6_prefix(128);
        assert_eq!(
            c.key_value(&p).map(|k| k.to_string()).as_deref(),
            Some("2001:db8:1:2:aaaa::1")
        );
        c.set_ipv4_prefix(24);
        assert_eq!(
            c.key_value(&parts("1.2.3.4", &[]))
                .map(|k| k.to_string())
                .as_deref(),
            Some("1.2.3.0/24")
        );
    }
}
