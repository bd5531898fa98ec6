//! Which handler a request goes to: fixed paths, looked up in one list.
//!
//! axum's `Router` did this before, at a price paid on every decision: it cloned a boxed
//! service per request, boxed the response future three times and stored the matched path in
//! the request's extensions (most of the allocations a decision made, bench/HISTORY.md). A fixed
//! API needs none of that.

use ::http::{HeaderValue, Method};

/// A path of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `POST /v1/check`.
    Check,
    /// `GET /v1/peek`.
    Peek,
    /// `POST /v1/reset`.
    Reset,
    /// `POST /v1/adjust`.
    Adjust,
    /// `POST /v1/acquire`.
    Acquire,
    /// `POST /v1/release`.
    Release,
    /// `POST /v1/renew`.
    Renew,
    /// `PUT`, `GET`, `DELETE /v1/overrides`.
    Overrides,
    /// `GET /v1/policies`.
    Policies,
    /// `GET /health`.
    Health,
    /// `GET /ready`.
    Ready,
    /// `GET /metrics`.
    Metrics,
    /// `GET /v1/stats`.
    Stats,
    /// `GET /dashboard`.
    Dashboard,
}

impl Route {
    /// Every route. A route is served exactly when it is listed here ([`Route::of`] looks paths
    /// up in it), so tests can walk the whole API (the OpenAPI document's test does).
    pub const ALL: [Route; 14] = [
        Route::Check,
        Route::Peek,
        Route::Reset,
        Route::Adjust,
        Route::Overrides,
        Route::Acquire,
        Route::Release,
        Route::Renew,
        Route::Policies,
        Route::Health,
        Route::Ready,
        Route::Metrics,
        Route::Stats,
        Route::Dashboard,
    ];

    /// The route of `path` (exactly: no trailing slash, no prefix match).
    pub fn of(path: &str) -> Option<Route> {
        Route::ALL.into_iter().find(|route| route.path() == path)
    }

    /// The route's path.
    pub const fn path(self) -> &'static str {
        match self {
            Route::Check => "/v1/check",
            Route::Peek => "/v1/peek",
            Route::Reset => "/v1/reset",
            Route::Adjust => "/v1/adjust",
            Route::Overrides => "/v1/overrides",
            Route::Acquire => "/v1/acquire",
            Route::Release => "/v1/release",
            Route::Renew => "/v1/renew",
            Route::Policies => "/v1/policies",
            Route::Health => "/health",
            Route::Ready => "/ready",
            Route::Metrics => "/metrics",
            Route::Stats => "/v1/stats",
            Route::Dashboard => "/dashboard",
        }
    }

    /// Whether the route answers `method`. A GET route answers HEAD too: the handler runs and
    /// hyper sends the head without the body.
    pub fn allows(self, method: &Method) -> bool {
        if self == Route::Overrides {
            return [Method::GET, Method::HEAD, Method::PUT, Method::DELETE].contains(method);
        }
        if self.is_post() {
            method == Method::POST
        } else {
            method == Method::GET || method == Method::HEAD
        }
    }

    /// The `Allow` header of a 405 on this route.
    pub fn allow(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Route::Overrides => "GET,HEAD,PUT,DELETE",
            _ if self.is_post() => "POST",
            _ => "GET,HEAD",
        })
    }

    fn is_post(self) -> bool {
        matches!(
            self,
            Route::Check
                | Route::Reset
                | Route::Adjust
                | Route::Acquire
                | Route::Release
                | Route::Renew
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_match_exactly_and_methods_per_route() {
        assert_eq!(Route::of("/v1/check"), Some(Route::Check));
        assert_eq!(Route::of("/metrics"), Some(Route::Metrics));
        for route in Route::ALL {
            assert_eq!(Route::of(route.path()), Some(route), "{route:?}");
        }
        assert_eq!(Route::of("/v1/stats"), Some(Route::Stats));
        assert_eq!(Route::of("/dashboard"), Some(Route::Dashboard));
        assert!(!Route::Dashboard.allows(&Method::POST));
        for path in [
            "/v1/check/",
            "/v1",
            "/",
            "",
            "/V1/CHECK",
            "/v1/checks",
            "//v1/check",
        ] {
            assert_eq!(Route::of(path), None, "{path}");
        }
        assert!(Route::Check.allows(&Method::POST));
        assert!(!Route::Check.allows(&Method::GET));
        assert!(!Route::Reset.allows(&Method::PUT));
        assert!(Route::Health.allows(&Method::HEAD));
        assert!(!Route::Peek.allows(&Method::POST));
        assert_eq!(Route::Reset.allow(), "POST");
        assert_eq!(Route::Ready.allow(), "GET,HEAD");
        assert!(Route::Overrides.allows(&Method::PUT) && Route::Overrides.allows(&Method::DELETE));
        assert!(!Route::Overrides.allows(&Method::POST));
    }
}
