//! Which requests a rule applies to: an optional method and a path pattern or prefix.
//!
//! Paths are matched against the raw request path (`uri.path()`, still percent-encoded, no
//! query), which is what axum's router matches too. Put any path-normalising layer outside this
//! one so both see the same path.

use http::Method;

/// A method (optional) and a path matcher.
///
/// Patterns are split on `/` and compared segment by segment: a literal matches itself, `*`,
/// `:name` or `{name}` match any one non-empty segment, and a final `**` (or `{*name}`) matches
/// zero or more further segments. A `&str` converts into a pattern route.
///
/// ```
/// use http::Method;
/// use tollgate_tower::Route;
///
/// assert!(Route::pattern("/api/users/:id").matches(&Method::GET, "/api/users/42"));
/// assert!(!Route::pattern("/api/users/:id").matches(&Method::GET, "/api/users/42/posts"));
/// assert!(Route::pattern("/api/**").matches(&Method::GET, "/api/users/42/posts"));
/// assert!(Route::prefix("/static/").matches(&Method::GET, "/static/app.js"));
/// let login = Route::pattern("/api/auth/login").method(Method::POST);
/// assert!(!login.matches(&Method::GET, "/api/auth/login"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    method: Option<Method>,
    path: PathMatch,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PathMatch {
    Any,
    Prefix(String),
    Pattern {
        segments: Vec<Segment>,
        /// Ends in `**`: any number of further segments.
        tail: bool,
    },
    /// A pattern that did not parse: reported by `build()`.
    Invalid {
        pattern: String,
        reason: &'static str,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param,
}

impl Route {
    /// Every request.
    pub fn any() -> Route {
        Route {
            method: None,
            path: PathMatch::Any,
        }
    }

    /// Paths starting with `prefix`, character for character: `/api/` matches `/api/users` but
    /// not `/api`; `/api` also matches `/apiary` (use the pattern `/api/**` for segments).
    pub fn prefix(prefix: &str) -> Route {
        Route {
            method: None,
            path: PathMatch::Prefix(prefix.to_owned()),
        }
    }

    /// A segment pattern such as `/api/users/:id`, `/files/{*path}` or `/api/**`.
    pub fn pattern(pattern: &str) -> Route {
        Route {
            method: None,
            path: parse_pattern(pattern),
        }
    }

    /// Only requests with this method. `GET` also matches `HEAD`, as routers answer `HEAD` with
    /// the `GET` handler.
    pub fn method(mut self, method: Method) -> Route {
        self.method = Some(method);
        self
    }

    /// Whether a request with `method` and `path` matches.
    pub fn matches(&self, method: &Method, path: &str) -> bool {
        let method_ok = match &self.method {
            None => true,
            Some(want) => want == method || (*want == Method::GET && *method == Method::HEAD),
        };
        if !method_ok {
            return false;
        }
        match &self.path {
            PathMatch::Any => true,
            PathMatch::Prefix(prefix) => path.starts_with(prefix.as_str()),
            PathMatch::Pattern { segments, tail } => match_segments(segments, *tail, path),
            PathMatch::Invalid { .. } => false,
        }
    }

    /// Why the pattern is invalid, for `build()`.
    pub(crate) fn invalid(&self) -> Option<(&str, &'static str)> {
        match &self.path {
            PathMatch::Invalid { pattern, reason } => Some((pattern, reason)),
            _ => None,
        }
    }
}

impl From<&str> for Route {
    fn from(pattern: &str) -> Route {
        Route::pattern(pattern)
    }
}

fn parse_pattern(pattern: &str) -> PathMatch {
    let invalid = |reason| PathMatch::Invalid {
        pattern: pattern.to_owned(),
        reason,
    };
    let Some(rest) = pattern.strip_prefix('/') else {
        return invalid("a path pattern starts with `/`");
    };
    let parts: Vec<&str> = rest.split('/').collect();
    let mut segments = Vec::with_capacity(parts.len());
    let mut tail = false;
    for (i, part) in parts.iter().enumerate() {
        let is_tail = *part == "**" || (part.starts_with("{*") && part.ends_with('}'));
        if is_tail {
            if i + 1 != parts.len() {
                return invalid("`**` may only end a pattern");
            }
            tail = true;
        } else if *part == "*"
            || (part.len() > 1 && part.starts_with(':'))
            || (part.len() > 2 && part.starts_with('{') && part.ends_with('}'))
        {
            segments.push(Segment::Param);
        } else if part.contains(['*', '{', '}']) {
            return invalid("`*` and `{...}` must be a whole segment");
        } else {
            segments.push(Segment::Literal((*part).to_owned()));
        }
    }
    PathMatch::Pattern { segments, tail }
}

fn match_segments(segments: &[Segment], tail: bool, path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    let mut parts = rest.split('/');
    for segment in segments {
        let Some(part) = parts.next() else {
            return false;
        };
        let ok = match segment {
            Segment::Literal(literal) => part == literal,
            Segment::Param => !part.is_empty(),
        };
        if !ok {
            return false;
        }
    }
    tail || parts.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(route: &Route, path: &str) -> bool {
        route.matches(&Method::GET, path)
    }

    #[test]
    fn literal_patterns_are_exact() {
        let r = Route::pattern("/health");
        assert!(get(&r, "/health"));
        assert!(!get(&r, "/health/"));
        assert!(!get(&r, "/healthz"));
        assert!(!get(&r, "/Health"));
        assert!(get(&Route::pattern("/"), "/"));
        assert!(!get(&Route::pattern("/"), "/x"));
    }

    #[test]
    fn params() {
        for p in ["/api/users/:id", "/api/users/{id}", "/api/users/*"] {
            let r = Route::pattern(p);
            assert!(get(&r, "/api/users/42"), "{p}");
            assert!(!get(&r, "/api/users/"), "{p}: a parameter is never empty");
            assert!(!get(&r, "/api/users"), "{p}");
            assert!(!get(&r, "/api/users/42/x"), "{p}");
        }
    }

    #[test]
    fn tails() {
        for p in ["/api/**", "/api/{*rest}"] {
            let r = Route::pattern(p);
            assert!(get(&r, "/api"), "{p}");
            assert!(get(&r, "/api/"), "{p}");
            assert!(get(&r, "/api/a/b/c"), "{p}");
            assert!(!get(&r, "/apiary"), "{p}");
        }
        assert!(get(&Route::pattern("/**"), "/anything/at/all"));
    }

    #[test]
    fn prefixes() {
        let r = Route::prefix("/api/");
        assert!(get(&r, "/api/x"));
        assert!(!get(&r, "/api"));
    }

    #[test]
    fn methods() {
        let r = Route::pattern("/x").method(Method::GET);
        assert!(r.matches(&Method::HEAD, "/x"));
        assert!(!r.matches(&Method::POST, "/x"));
        let p = Route::pattern("/x").method(Method::POST);
        assert!(p.matches(&Method::POST, "/x"));
        assert!(!p.matches(&Method::GET, "/x"));
    }

    #[test]
    fn invalid_patterns() {
        for p in ["api", "/a/**/b", "/a/b*", "/a/{x"] {
            assert!(Route::pattern(p).invalid().is_some(), "{p}");
            assert!(!get(&Route::pattern(p), "/a/b"), "{p}");
        }
        assert!(Route::pattern("/a/:b/**").invalid().is_none());
    }
}
