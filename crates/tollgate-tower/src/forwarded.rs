//! Parsing the hop lists of `X-Forwarded-For` and `Forwarded` (RFC 7239).
//!
//! Both headers list addresses left (the original client, as claimed) to right (the hop nearest
//! to us). Each entry becomes one hop: `Some(ip)`, or `None` when the entry names no usable
//! address (`unknown`, an obfuscated `_name`, garbage). Which hop is believed is decided in
//! [`crate::client_ip`]; this module only reads.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use http::header::{FORWARDED, HeaderName};
use smallvec::SmallVec;

/// The hops of one request, left to right. Most requests cross one or two proxies.
pub(crate) type Hops = SmallVec<[Option<IpAddr>; 4]>;

/// `X-Forwarded-For`.
pub(crate) static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Every hop of every `X-Forwarded-For` line, in order. Header lines are one list (RFC 9110
/// §5.3), so `a, b` and two lines `a` then `b` mean the same.
pub(crate) fn x_forwarded_for(headers: &HeaderMap) -> Hops {
    let mut hops = Hops::new();
    for value in headers.get_all(&X_FORWARDED_FOR) {
        // A line that is not visible ASCII cannot hold addresses: one unusable hop.
        let Ok(value) = value.to_str() else {
            hops.push(None);
            continue;
        };
        // Empty entries (`a,,b`, a trailing comma) are sloppiness, not hops.
        hops.extend(
            value
                .split(',')
                .filter(|entry| !entry.trim().is_empty())
                .map(node),
        );
    }
    hops
}

/// The `for=` node of every element of every `Forwarded` line, in order.
pub(crate) fn forwarded(headers: &HeaderMap) -> Hops {
    let mut hops = Hops::new();
    for value in headers.get_all(FORWARDED) {
        let Ok(value) = value.to_str() else {
            hops.push(None);
            continue;
        };
        hops.extend(split_unquoted(value, b',').map(forwarded_for));
    }
    hops
}

/// The `for` parameter of one `Forwarded` element (`for=192.0.2.60;proto=http;by=...`).
/// An element without `for` names no client: an unusable hop.
fn forwarded_for(element: &str) -> Option<IpAddr> {
    let pair = split_unquoted(element, b';').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("for")
            .then_some(value.trim())
    })?;
    match pair.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        // Addresses never contain `\` or `"`, so a quoted value with escapes is not an address.
        Some(quoted) if quoted.contains('\\') => None,
        Some(quoted) => node(quoted),
        None => node(pair),
    }
}

/// One node: `192.0.2.1`, `192.0.2.1:8080`, `2001:db8::1`, `[2001:db8::1]`, `[2001:db8::1]:443`.
fn node(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sock) = s.parse::<SocketAddr>() {
        return Some(sock.ip());
    }
    s.strip_prefix('[')?.strip_suffix(']')?.parse().ok()
}

/// Split `s` at `sep`, except inside double-quoted strings (where `\` escapes one byte).
fn split_unquoted(s: &str, sep: u8) -> impl Iterator<Item = &str> {
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        let mut quoted = false;
        let mut i = start;
        while i < bytes.len() {
            match bytes[i] {
                b'\\' if quoted => i += 1,
                b'"' => quoted = !quoted,
                b if b == sep && !quoted => {
                    let part = &s[start..i];
                    start = i + 1;
                    return Some(part);
                }
                _ => {}
            }
            i += 1;
        }
        done = true;
        Some(&s[start.min(s.len())..])
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    fn headers(name: &HeaderName, values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(name, HeaderValue::from_str(v).unwrap());
        }
        map
    }

    #[test]
    fn xff_lists_and_lines() {
        let one = headers(&X_FORWARDED_FOR, &["203.0.113.7, 10.0.0.1"]);
        let two = headers(&X_FORWARDED_FOR, &["203.0.113.7", "10.0.0.1"]);
        assert_eq!(x_forwarded_for(&one), x_forwarded_for(&two));
        assert_eq!(
            x_forwarded_for(&one).as_slice(),
            &[ip("203.0.113.7"), ip("10.0.0.1")]
        );
    }

    #[test]
    fn xff_ports_brackets_and_garbage() {
        let map = headers(
            &X_FORWARDED_FOR,
            &["1.2.3.4:5678, [2001:db8::1]:443, [2001:db8::2], 2001:db8::3, unknown, "],
        );
        assert_eq!(
            x_forwarded_for(&map).as_slice(),
            &[
                ip("1.2.3.4"),
                ip("2001:db8::1"),
                ip("2001:db8::2"),
                ip("2001:db8::3"),
                None
            ]
        );
    }

    #[test]
    fn forwarded_elements() {
        let map = headers(
            &FORWARDED,
            &[
                r#"for=192.0.2.60;proto=http;by=203.0.113.43, For="[2001:db8:cafe::17]:4711""#,
                "proto=https, for=unknown, for=_hidden, for=\"198.51.100.17:80\"",
            ],
        );
        assert_eq!(
            forwarded(&map).as_slice(),
            &[
                ip("192.0.2.60"),
                ip("2001:db8:cafe::17"),
                None,
                None,
                None,
                ip("198.51.100.17")
            ]
        );
    }

    #[test]
    fn forwarded_quotes_hide_separators() {
        let map = headers(&FORWARDED, &[r#"for="_a,b;c", for=10.0.0.1"#]);
        assert_eq!(forwarded(&map).as_slice(), &[None, ip("10.0.0.1")]);
        let escaped = headers(&FORWARDED, &[r#"for="a\",b", for=10.0.0.2"#]);
        assert_eq!(forwarded(&escaped).as_slice(), &[None, ip("10.0.0.2")]);
    }

    #[test]
    fn split_keeps_empty_parts() {
        let parts: Vec<_> = split_unquoted("a,,b,", b',').collect();
        assert_eq!(parts, ["a", "", "b", ""]);
    }
}
