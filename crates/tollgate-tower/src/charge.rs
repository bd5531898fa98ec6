//! Costs known only once the response has ended (tokens an LLM used, rows a query read): read
//! from the response, then settled with [`tollgate::Limiter::adjust`].

use std::fmt;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, StatusCode};

/// Reads a request's real cost from its response: the status and the headers, with the
/// trailers (if the body sent any) added after them.
pub type ChargeFn = Arc<dyn Fn(StatusCode, &HeaderMap) -> Option<u64> + Send + Sync>;

/// Where a [`Rule::charge`](crate::Rule::charge) finds the real cost of a request.
///
/// `None` (no header, a value that is not a whole number) leaves the cost charged up front as
/// it is.
///
/// ```
/// use tollgate_tower::Charge;
///
/// // The count in a header or trailer the upstream sets.
/// let tokens = Charge::header("x-tokens-used");
/// // Failed responses cost nothing: refund them.
/// let only_ok = Charge::from_fn(|status, headers| {
///     if !status.is_success() {
///         return Some(0);
///     }
///     headers.get("x-tokens-used")?.to_str().ok()?.trim().parse().ok()
/// });
/// # let _ = (tokens, only_ok);
/// ```
#[derive(Clone)]
pub struct Charge(pub(crate) Kind);

#[derive(Clone)]
pub(crate) enum Kind {
    Header(HeaderName),
    Fn(ChargeFn),
    /// A header name that is not one: refused by `build()`.
    Invalid(String),
}

impl Charge {
    /// The cost is the value of header (or trailer) `name`, a whole number; a trailer wins
    /// over a header of the same name, and the last line of either wins.
    pub fn header(name: &str) -> Charge {
        match HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()) {
            Ok(header) => Charge(Kind::Header(header)),
            Err(_) => Charge(Kind::Invalid(name.to_owned())),
        }
    }

    /// The cost is what `f` reads from the response status and headers (trailers added).
    pub fn from_fn<F>(f: F) -> Charge
    where
        F: Fn(StatusCode, &HeaderMap) -> Option<u64> + Send + Sync + 'static,
    {
        Charge(Kind::Fn(Arc::new(f)))
    }

    /// The real cost of a response, if it says.
    pub(crate) fn read(&self, status: StatusCode, headers: &HeaderMap) -> Option<u64> {
        match &self.0 {
            Kind::Header(name) => headers
                .get_all(name)
                .iter()
                .next_back()?
                .to_str()
                .ok()?
                .trim()
                .parse()
                .ok(),
            Kind::Fn(f) => f(status, headers),
            Kind::Invalid(_) => None,
        }
    }

    /// The header name that does not parse, if any.
    pub(crate) fn invalid_header(&self) -> Option<&str> {
        match &self.0 {
            Kind::Invalid(name) => Some(name),
            _ => None,
        }
    }
}

impl fmt::Debug for Charge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Kind::Header(name) => write!(f, "Charge::header({name})"),
            Kind::Fn(_) => f.write_str("Charge::from_fn(..)"),
            Kind::Invalid(name) => write!(f, "Charge::header({name:?}, invalid)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_last_whole_number() {
        let charge = Charge::header("X-Tokens-Used");
        let mut headers = HeaderMap::new();
        assert_eq!(charge.read(StatusCode::OK, &headers), None);
        headers.append("x-tokens-used", " 12 ".parse().unwrap());
        assert_eq!(charge.read(StatusCode::OK, &headers), Some(12));
        headers.append("x-tokens-used", "40".parse().unwrap());
        assert_eq!(charge.read(StatusCode::OK, &headers), Some(40));
        headers.insert("x-tokens-used", "-3".parse().unwrap());
        assert_eq!(charge.read(StatusCode::OK, &headers), None);
        assert_eq!(
            Charge::header("bad header").invalid_header(),
            Some("bad header")
        );
    }
}
