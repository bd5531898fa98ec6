//! `GET /dashboard`: one self-contained page (its script and style inline, nothing fetched from
//! elsewhere) that polls `GET /v1/stats` once a second and draws it.
//!
//! When an admin token is set, a browser cannot send a bearer header with a page load, so
//! `/dashboard?token=<token>` checks the token, stores it in an `HttpOnly`, `SameSite=Strict`
//! cookie and redirects to `/dashboard` (so the token leaves the address bar and history). The
//! page's own requests carry the cookie; [`presented_token`] is where every admin-guarded route
//! reads the bearer header or this cookie. Script on the page cannot read the cookie, and other
//! sites' pages cannot make the browser send it.

use std::borrow::Cow;

use super::{Body, Response};
use ::http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::Deserialize;

use super::error::ApiError;
use crate::metrics::ErrorCode;

/// The page, embedded in the binary.
pub const PAGE: &str = include_str!("dashboard.html");

/// The cookie holding the admin token (hex-encoded, so any token is a valid cookie value).
pub const COOKIE: &str = "tollgate_admin";

/// What the page may load and where it may connect: only itself and this server.
static CONTENT_SECURITY_POLICY: HeaderValue = HeaderValue::from_static(
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
     connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'",
);

/// `GET /dashboard?token=...`.
#[derive(Debug, Deserialize)]
pub struct DashboardQuery {
    /// The admin token, to be exchanged for the cookie.
    pub token: Option<String>,
}

impl DashboardQuery {
    /// Parse a query string (unknown parameters are ignored: a page URL collects them).
    pub fn parse(query: &str) -> Result<DashboardQuery, ApiError> {
        serde_urlencoded::from_str(query)
            .map_err(|e| ApiError::invalid(format!("invalid query string: {e}")))
    }
}

/// The admin token a request presents: `Authorization: Bearer <token>`, else the dashboard
/// cookie.
pub fn presented_token(headers: &HeaderMap) -> Option<Cow<'_, [u8]>> {
    bearer(headers)
        .map(Cow::Borrowed)
        .or_else(|| cookie(headers).map(Cow::Owned))
}

fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = value.split_at_checked(7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then_some(rest.trim_ascii())
}

/// The decoded value of the [`COOKIE`] cookie, from any `Cookie` header.
fn cookie(headers: &HeaderMap) -> Option<Vec<u8>> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii();
            let value = pair.strip_prefix(COOKIE.as_bytes())?.strip_prefix(b"=")?;
            decode_hex(value)
        })
}

/// `Set-Cookie` storing `token` for this server's pages, until the browser closes.
pub fn set_cookie(token: &[u8]) -> HeaderValue {
    let mut value = format!("{COOKIE}=");
    for byte in token {
        value.push_str(&format!("{byte:02x}"));
    }
    value.push_str("; Path=/; HttpOnly; SameSite=Strict");
    // Hex digits and fixed ASCII: always a valid header value.
    HeaderValue::try_from(value).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn decode_hex(hex: &[u8]) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    hex.chunks(2)
        .map(|pair| {
            let digit = |b: u8| char::from(b).to_digit(16);
            Some((digit(pair[0])? * 16 + digit(pair[1])?) as u8)
        })
        .collect()
}

/// The page itself.
pub fn page() -> Response {
    let mut response = Response::new(Body::from(PAGE));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        CONTENT_SECURITY_POLICY.clone(),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// 303 to `/dashboard`, storing the cookie when there is a token to store.
pub fn redirect(token: Option<&[u8]>) -> Response {
    let mut response = Response::new(Body::default());
    *response.status_mut() = StatusCode::SEE_OTHER;
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, HeaderValue::from_static("/dashboard"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(token) = token {
        headers.insert(header::SET_COOKIE, set_cookie(token));
    }
    response
}

/// A refusal a person reads in the browser: a short HTML page with the status of `error`.
pub fn refusal(error: &ApiError) -> Response {
    let advice = match error.code {
        ErrorCode::Unauthorized => {
            "This server has an admin token. Open <code>/dashboard?token=&lt;admin token&gt;</code> once; \
             the browser then keeps it in a cookie for this server."
        }
        ErrorCode::Forbidden => {
            "That admin token is not this server's. Open <code>/dashboard?token=&lt;admin token&gt;</code> \
             with the token the server was started with (<code>TOLLGATE_ADMIN_TOKEN</code>)."
        }
        _ => "Live stats are off on this server (<code>stats: false</code> in its config).",
    };
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>tollgate dashboard</title>\
         <style>body{{font:16px/1.5 system-ui,sans-serif;background:#0f172a;color:#e2e8f0;\
         display:grid;place-items:center;min-height:90vh}}main{{max-width:36em}}\
         code{{background:#1e293b;padding:.1em .3em;border-radius:4px}}</style></head>\
         <body><main><h1>tollgate dashboard: {}</h1><p>{advice}</p></main></body></html>",
        error.status().as_u16()
    );
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = error.status();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if error.code == ErrorCode::Unauthorized {
        headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn the_cookie_carries_any_token_and_is_read_back() {
        let token = b"s3cret; with=odd \"bytes\"";
        let set = set_cookie(token);
        let set = set.to_str().unwrap();
        assert!(
            set.contains("HttpOnly") && set.contains("SameSite=Strict") && set.contains("Path=/")
        );
        let pair = set.split(';').next().unwrap();
        let request = headers(&[("cookie", &format!("other=1; {pair}; last=2"))]);
        assert_eq!(presented_token(&request).as_deref(), Some(&token[..]));
    }

    #[test]
    fn bearer_wins_and_bad_cookies_present_nothing() {
        let request = headers(&[
            ("authorization", "bearer  tok "),
            ("cookie", "tollgate_admin=6162"),
        ]);
        assert_eq!(presented_token(&request).as_deref(), Some(&b"tok"[..]));
        assert_eq!(
            presented_token(&headers(&[("cookie", "tollgate_admin=6162")])).as_deref(),
            Some(&b"ab"[..])
        );
        for bad in [
            "tollgate_admin=616",
            "tollgate_admin=zz",
            "tollgate_adminx=6162",
            "x=1",
        ] {
            assert_eq!(presented_token(&headers(&[("cookie", bad)])), None, "{bad}");
        }
        assert_eq!(presented_token(&HeaderMap::new()), None);
        assert_eq!(
            presented_token(&headers(&[("authorization", "Basic abc")])),
            None
        );
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        for needle in ["http://", "https://", "//cdn", "src=\"http", "@import"] {
            assert!(!PAGE.contains(needle), "the page refers to {needle}");
        }
        assert!(PAGE.contains("/v1/stats"));
        let response = page();
        assert_eq!(
            response.headers()[header::CONTENT_SECURITY_POLICY],
            CONTENT_SECURITY_POLICY
        );
    }
}
