//! A tiny CIDR matcher: enough to say "is this peer one of my proxies?" and to group IPv6
//! clients by prefix, without a dependency.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An IPv4 or IPv6 network, such as `10.0.0.0/8` or `2001:db8::/32`.
///
/// A bare address (`10.0.0.7`, `::1`) is a single-host network. Host bits after the prefix are
/// ignored (`10.1.2.3/8` is `10.0.0.0/8`). IPv4-mapped IPv6 networks (`::ffff:10.0.0.0/104`) are
/// read as the IPv4 network they name, matching how addresses are normalised.
///
/// ```
/// use tollgate_tower::Cidr;
/// let net: Cidr = "10.0.0.0/8".parse().unwrap();
/// assert!(net.contains("10.20.30.40".parse().unwrap()));
/// assert!(!net.contains("11.0.0.1".parse().unwrap()));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The network address with host bits cleared.
    addr: IpAddr,
    /// Prefix length: 0..=32 for IPv4, 0..=128 for IPv6.
    prefix: u8,
}

/// Why a string is not a CIDR network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid CIDR network `{input}`: {reason}")]
pub struct CidrError {
    input: String,
    reason: &'static str,
}

impl Cidr {
    /// The network of `addr` with the first `prefix` bits kept (clamped to the address width).
    pub fn new(addr: IpAddr, prefix: u8) -> Cidr {
        let addr = normalize(addr);
        let prefix = prefix.min(width(addr));
        Cidr {
            addr: mask(addr, prefix),
            prefix,
        }
    }

    /// The network address (host bits cleared).
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` (normalised, see [`normalize`]) lies in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = normalize(ip);
        ip.is_ipv4() == self.addr.is_ipv4() && mask(ip, self.prefix) == self.addr
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        let err = |reason| CidrError {
            input: s.to_owned(),
            reason,
        };
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| err("not an IP address"))?;
        // A mapped IPv6 network counts its prefix over 128 bits; the IPv4 it names over 32.
        let mapped = matches!(addr, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some());
        let max = if mapped { 128 } else { width(addr) };
        let prefix = match prefix {
            None => max,
            Some(p) => p.parse::<u8>().map_err(|_| err("prefix is not a number"))?,
        };
        if prefix > max {
            return Err(err("prefix is longer than the address"));
        }
        if mapped {
            if prefix < 96 {
                return Err(err("an IPv4-mapped network needs a prefix of at least 96"));
            }
            return Ok(Cidr::new(addr, prefix - 96));
        }
        Ok(Cidr::new(addr, prefix))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// An IPv4-mapped IPv6 address (`::ffff:192.0.2.1`, what a dual-stack socket reports for an
/// IPv4 client) as the IPv4 address it is; every other address unchanged.
pub fn normalize(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Address width in bits.
fn width(ip: IpAddr) -> u8 {
    if ip.is_ipv4() { 32 } else { 128 }
}

/// `ip` with all bits after `prefix` cleared.
pub(crate) fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let keep = u32::MAX
                .checked_shl(32 - u32::from(prefix.min(32)))
                .unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(bits & keep))
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let keep = u128::MAX
                .checked_shl(128 - u32::from(prefix.min(128)))
                .unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(bits & keep))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv4_networks() {
        let net: Cidr = "192.168.0.0/16".parse().unwrap();
        assert!(net.contains(ip("192.168.255.1")));
        assert!(!net.contains(ip("192.169.0.1")));
        let host: Cidr = "10.0.0.7".parse().unwrap();
        assert_eq!(host.prefix(), 32);
        assert!(host.contains(ip("10.0.0.7")));
        assert!(!host.contains(ip("10.0.0.8")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("203.0.113.9")));
        assert!(
            !all.contains(ip("2001:db8::1")),
            "an IPv4 network holds no IPv6 address"
        );
    }

    #[test]
    fn host_bits_are_ignored() {
        let net: Cidr = "10.1.2.3/8".parse().unwrap();
        assert_eq!(net.to_string(), "10.0.0.0/8");
    }

    #[test]
    fn ipv6_networks() {
        let net: Cidr = "2001:db8:abcd:12::/64".parse().unwrap();
        assert!(net.contains(ip("2001:db8:abcd:12:ffff::1")));
        assert!(!net.contains(ip("2001:db8:abcd:13::1")));
        let all: Cidr = "::/0".parse().unwrap();
        assert!(all.contains(ip("::1")));
        assert!(!all.contains(ip("127.0.0.1")));
    }

    #[test]
    fn mapped_addresses_are_ipv4() {
        let net: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(net.contains(ip("::ffff:10.9.8.7")));
        let mapped: Cidr = "::ffff:10.0.0.0/104".parse().unwrap();
        assert_eq!(mapped, net);
        assert_eq!(normalize(ip("::ffff:1.2.3.4")), ip("1.2.3.4"));
        assert_eq!(normalize(ip("::1")), ip("::1"));
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "10.0.0.0/x",
            "::ffff:10.0.0.0/8",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn masks_to_prefix() {
        assert_eq!(mask(ip("2001:db8:1:2:3:4:5:6"), 64), ip("2001:db8:1:2::"));
        assert_eq!(mask(ip("2001:db8:1:2:3:4:5:6"), 0), ip("::"));
        assert_eq!(mask(ip("1.2.3.4"), 24), ip("1.2.3.0"));
        assert_eq!(mask(ip("1.2.3.4"), 32), ip("1.2.3.4"));
    }
}
