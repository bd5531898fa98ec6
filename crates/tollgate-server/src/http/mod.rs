//! The HTTP API (docs/architecture.md §6) on hyper: JSON in, JSON out, rate-limit headers, and
//! a JSON error for every refusal (unknown path, wrong method, bad body), never plain text.
//!
//! | route | answer |
//! |---|---|
//! | `POST /v1/check` | a decision, consuming `cost` when allowed |
//! | `GET /v1/peek` | the same decision, consuming nothing |
//! | `POST /v1/reset` | 204; bearer token when an admin token is set |
//! | `POST /v1/adjust` | charge or refund after the fact; the decision of one more unit |
//! | `POST /v1/acquire`, `/v1/release`, `/v1/renew` | leases of `concurrency` policies |
//! | `PUT`, `GET`, `DELETE /v1/overrides` | per-key overrides (admin token as reset) |
//! | `GET /v1/policies` | the policies in force (as last reloaded) |
//! | `GET /health`, `GET /ready` | alive; store reachable |
//! | `GET /metrics` | Prometheus text |
//! | `GET /v1/stats` | live stats as JSON; admin token rule as reset |
//! | `GET /dashboard` | the live dashboard page; admin token (or its cookie) as reset |

pub mod body;
pub mod dashboard;
pub mod decision;
pub mod error;
pub mod headers;
mod lease;
pub mod request;
pub mod route;
pub mod serve;

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use ::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Version, header};
use hyper::body::Incoming;
use serde::Serialize;
use tollgate::Mode;

use self::error::ApiError;
use self::request::{
    AdjustRequest, CheckRequest, OverrideQuery, OverrideRequest, PeekQuery, ResetRequest,
};
use self::route::Route;
use crate::metrics::ErrorCode;
use crate::service::{Decided, Service};
use crate::stats::{StatsReport, StoreHealth};

/// Every response's body: whole, in memory (the API never streams).
pub type Body = http_body_util::Full<bytes::Bytes>;

/// A response of the API.
pub type Response = ::http::Response<Body>;

/// `Content-Type: application/json`.
pub static JSON: HeaderValue = HeaderValue::from_static("application/json");
/// The Prometheus text exposition format.
static PROMETHEUS: HeaderValue =
    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8");

/// What handlers share: the service.
#[derive(Debug)]
pub struct Api {
    service: Arc<Service>,
}

impl Api {
    /// The HTTP API over `service`.
    pub fn new(service: Arc<Service>) -> Arc<Api> {
        Arc::new(Api { service })
    }

    /// The future answering one request. Routed here, before any future exists, so the box
    /// holds only the chosen handler's state (a check's is a quarter of the largest's).
    pub fn handle(self: &Arc<Self>, request: Request<Incoming>) -> Handler {
        // RFC 9112 §3.2: an HTTP/1.1 request without Host, or with more than one, gets a 400
        // (HTTP/2 carries `:authority` instead, and HTTP/1.0 predates Host).
        if request.version() == Version::HTTP_11 {
            let mut hosts = request.headers().get_all(header::HOST).iter();
            if hosts.next().is_none() || hosts.next().is_some() {
                return answered(self.error(ApiError::invalid(
                    "an HTTP/1.1 request needs exactly one Host header",
                )));
            }
        }
        let Some(route) = Route::of(request.uri().path()) else {
            return answered(self.error(ApiError::new(
                ErrorCode::NotFound,
                format!("no route for {} {}", request.method(), request.uri().path()),
            )));
        };
        if !route.allows(request.method()) {
            let mut response = self.error(ApiError::new(
                ErrorCode::MethodNotAllowed,
                format!(
                    "method {} is not allowed on {}",
                    request.method(),
                    request.uri().path()
                ),
            ));
            response.headers_mut().insert(header::ALLOW, route.allow());
            return answered(response);
        }
        let api = self.clone();
        match route {
            Route::Check => Box::pin(check(api, request)),
            Route::Peek => Box::pin(peek(api, request)),
            Route::Reset => Box::pin(reset(api, request)),
            Route::Adjust => Box::pin(adjust(api, request)),
            Route::Acquire => Box::pin(lease::acquire(api, request)),
            Route::Release => Box::pin(lease::release(api, request)),
            Route::Renew => Box::pin(lease::renew(api, request)),
            Route::Overrides => Box::pin(overrides(api, request)),
            Route::Policies => answered(policies(&api)),
            Route::Health => answered(json(StatusCode::OK, &serde_json::json!({"status": "ok"}))),
            Route::Ready => Box::pin(ready(api)),
            Route::Metrics => answered(metrics(&api)),
            Route::Stats => Box::pin(stats(api, request)),
            Route::Dashboard => answered(dashboard(&api, &request)),
        }
    }

    /// The answer to a handler that panicked: a JSON 500, logged and counted.
    pub fn panicked(&self, panic: Box<dyn Any + Send>) -> Response {
        let what = panic
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("panic");
        tracing::error!(panic = what, "request handler panicked");
        self.error(ApiError::new(ErrorCode::Internal, "internal error"))
    }

    /// An error response, counted.
    fn error(&self, error: ApiError) -> Response {
        self.service.metrics().record_error(error.code);
        error.into_response()
    }

    fn respond(&self, result: Result<Response, ApiError>) -> Response {
        result.unwrap_or_else(|error| self.error(error))
    }

    /// The decision as JSON with its rate-limit headers, named from the table it was made on
    /// (and, for a check that asked to wait, how long it waited).
    fn decision_response(&self, decided: &Decided, waited_ms: Option<u64>) -> Response {
        let (verdict, live) = (&decided.verdict, &decided.policies);
        let decision = &verdict.decision;
        let policy = live.policy_name(verdict.reported_policy());
        let bytes = decision::render(
            policy,
            decision,
            verdict.degraded,
            shadow_of(verdict),
            waited_ms,
        );
        let mut response = Response::new(Body::from(bytes));
        let headers = response.headers_mut();
        // Room for all four headers at once instead of growing on the first and third insert.
        headers.reserve(4);
        headers.insert(header::CONTENT_TYPE, JSON.clone());
        let limiter = live.limiter();
        // Each policy as decided: its name, the capacity and period decided under (an
        // override's, where one stood), and whether those are the configured ones.
        let decided = || {
            verdict
                .policies
                .iter()
                .zip(&verdict.decisions)
                .filter_map(|(&i, d)| {
                    let (name, policy) = limiter.policy_at(i)?;
                    Some((name.as_str(), d.limit, d.period_us, d.decided_under(policy)))
                })
        };
        let policy_header = match verdict.policies.as_slice() {
            // Under an override the quota is the override's: rendered for this decision.
            _ if decided().any(|(.., configured)| !configured) => Some(headers::policy_header(
                decided().map(|(name, limit, w, _)| (name, limit, w)),
            )),
            [one] => live.header_item(*one).cloned(),
            many => Some(headers::join_items(
                many.iter().filter_map(|&i| live.header_item(i)),
            )),
        };
        if let Some(value) = policy_header {
            headers.insert(headers::RATELIMIT_POLICY.clone(), value);
        }
        headers.insert(
            headers::RATELIMIT.clone(),
            headers::ratelimit(
                verdict
                    .policies
                    .iter()
                    .zip(&verdict.decisions)
                    .map(|(&i, d)| (live.policy_name(i), d)),
            ),
        );
        if !decision.allowed {
            headers.insert(header::RETRY_AFTER, headers::retry_after(decision));
        }
        response
    }

    /// Refuse unless the request carries the admin token (when one is configured), as a
    /// bearer header or the dashboard's cookie.
    fn authorize(&self, request_headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(token) = self.service.admin_token() else {
            return Ok(());
        };
        let presented = dashboard::presented_token(request_headers).ok_or_else(|| {
            ApiError::new(
                ErrorCode::Unauthorized,
                "this endpoint needs an Authorization: Bearer <admin token> header \
                 (or, in a browser, the cookie /dashboard?token=<admin token> sets)",
            )
        })?;
        if token.matches(&presented) {
            Ok(())
        } else {
            Err(ApiError::new(ErrorCode::Forbidden, "invalid admin token"))
        }
    }
}

/// The shadow fields of a decision's JSON: `None` unless the reported policy is in shadow mode,
/// else whether a shadow policy would have denied.
fn shadow_of(verdict: &tollgate::Verdict) -> Option<bool> {
    (verdict.shadow || verdict.shadow_denied).then_some(verdict.shadow_denied)
}

/// A request's handler, running.
pub type Handler = Pin<Box<dyn Future<Output = Response> + Send>>;

/// A handler whose answer is already known.
fn answered(response: Response) -> Handler {
    Box::pin(std::future::ready(response))
}

async fn check(api: Arc<Api>, request: Request<Incoming>) -> Response {
    let result = async {
        let (parts, body) = request.into_parts();
        let body = body::read_json(&parts.headers, body).await?;
        let request: CheckRequest = body::parse_json(&body)?;
        let names = request.policy_names()?;
        let (key, cost) = (request.key.as_str(), request.cost());
        if let Some(max_wait) = request.max_wait()? {
            let (decided, waited) = api
                .service
                .decide_waiting(&names, key, cost, max_wait)
                .await?;
            let waited_ms = u64::try_from(waited.as_millis()).unwrap_or(u64::MAX);
            return Ok(api.decision_response(&decided, Some(waited_ms)));
        }
        let decided = api.service.decide(&names, key, cost, Mode::Consume).await?;
        Ok(api.decision_response(&decided, None))
    }
    .await;
    api.respond(result)
}

async fn peek(api: Arc<Api>, request: Request<Incoming>) -> Response {
    let result = async {
        let query = PeekQuery::parse(request.uri().query().unwrap_or_default())?;
        let decided = api
            .service
            .decide(
                &[query.policy.as_str()],
                query.key.as_str(),
                query.cost.unwrap_or(1),
                Mode::Peek,
            )
            .await?;
        Ok(api.decision_response(&decided, None))
    }
    .await;
    api.respond(result)
}

async fn reset(api: Arc<Api>, request: Request<Incoming>) -> Response {
    let result = async {
        let (parts, body) = request.into_parts();
        api.authorize(&parts.headers)?;
        let body = body::read_json(&parts.headers, body).await?;
        let request: ResetRequest = body::parse_json(&body)?;
        api.service
            .reset(request.policy.as_str(), request.key.as_str())
            .await?;
        Ok(no_content())
    }
    .await;
    api.respond(result)
}

/// `POST /v1/adjust`: charge or refund after the fact; 200 with what a check of one unit would
/// answer now (the decision body and headers, `allowed` meaning one more unit would pass). No
/// admin token: like a check, it is the callers' own accounting.
async fn adjust(api: Arc<Api>, request: Request<Incoming>) -> Response {
    let result = async {
        let (parts, body) = request.into_parts();
        let body = body::read_json(&parts.headers, body).await?;
        let request: AdjustRequest = body::parse_json(&body)?;
        let decided = api
            .service
            .adjust(request.policy.as_str(), request.key.as_str(), request.delta)
            .await?;
        Ok(api.decision_response(&decided, None))
    }
    .await;
    api.respond(result)
}

/// `/v1/overrides`: `PUT` sets one (200 with it as stored), `GET` reads one (`key` given: 200
/// or 404) or lists a page, `DELETE` removes one (204). All need the admin token when one is
/// set, as reset does.
async fn overrides(api: Arc<Api>, request: Request<Incoming>) -> Response {
    let result = async {
        let (parts, body) = request.into_parts();
        api.authorize(&parts.headers)?;
        let live = api.service.live();
        let limiter = live.limiter();
        if parts.method == Method::PUT {
            let body = body::read_json(&parts.headers, body).await?;
            let request: OverrideRequest = body::parse_json(&body)?;
            let (policy, key) = (request.policy.as_str(), request.key.as_str());
            let stored = limiter.set_override(policy, key, request.spec()?).await?;
            tracing::info!(policy, key, limit = stored.policy.limit(), "override set");
            return Ok(json(
                StatusCode::OK,
                &OverrideJson::new(policy, key, &stored),
            ));
        }
        let query = OverrideQuery::parse(parts.uri.query().unwrap_or_default())?;
        let policy = query.policy.as_str();
        match (&parts.method, &query.key) {
            (&Method::DELETE, Some(key)) => {
                limiter.delete_override(policy, key.as_str()).await?;
                tracing::info!(policy, key = key.as_str(), "override deleted");
                Ok(no_content())
            }
            (&Method::DELETE, None) => Err(ApiError::invalid(
                "missing query parameter `key` (an override is deleted one key at a time)",
            )),
            (_, Some(key)) => match limiter.get_override(policy, key.as_str()).await? {
                Some(found) => Ok(json(
                    StatusCode::OK,
                    &OverrideJson::new(policy, key.as_str(), &found),
                )),
                None => Err(ApiError::new(
                    ErrorCode::NotFound,
                    format!("no override of `{policy}` for this key"),
                )),
            },
            (_, None) => {
                let cursor = query.cursor.as_ref().map(|c| c.as_str());
                let page = limiter
                    .list_overrides(policy, cursor, OVERRIDES_PER_PAGE)
                    .await?;
                Ok(json(StatusCode::OK, &OverridesPage::new(policy, &page)))
            }
        }
    }
    .await;
    api.respond(result)
}

/// Overrides per page of `GET /v1/overrides?policy=..`.
const OVERRIDES_PER_PAGE: usize = 100;

/// An override as the API shows it.
#[derive(Serialize)]
struct OverrideJson<'a> {
    policy: &'a str,
    key: &'a str,
    algorithm: &'static str,
    limit: u64,
    period: String,
    period_ms: u64,
    /// Token bucket and GCRA only.
    #[serde(skip_serializing_if = "Option::is_none")]
    burst: Option<u64>,
    /// `null`: until deleted.
    expires_in_ms: Option<u64>,
}

impl<'a> OverrideJson<'a> {
    fn new(policy: &'a str, key: &'a str, value: &tollgate::Override) -> OverrideJson<'a> {
        let p = &value.policy;
        OverrideJson {
            policy,
            key,
            algorithm: p.algorithm().name(),
            limit: p.limit(),
            period: period_text(p),
            period_ms: p.period_us().div_ceil(1000),
            burst: p.algorithm().has_burst().then_some(p.burst()),
            expires_in_ms: value
                .expires_in
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        }
    }
}

/// A policy's period as the API shows it: `month` for calendar months (whose `period_ms` is
/// the longest month's), else a humantime duration.
fn period_text(policy: &tollgate::Policy) -> String {
    if policy.is_monthly() {
        "month".to_owned()
    } else {
        humantime::format_duration(policy.period()).to_string()
    }
}

fn policies(api: &Api) -> Response {
    #[derive(Serialize)]
    struct PolicyJson<'a> {
        name: &'a str,
        algorithm: &'static str,
        limit: u64,
        period_ms: u64,
        period: String,
        /// Token bucket and GCRA only.
        burst: Option<u64>,
        /// Present (true) only for a policy in shadow mode.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        shadow: bool,
    }
    #[derive(Serialize)]
    struct Policies<'a> {
        policies: Vec<PolicyJson<'a>>,
    }
    let live = api.service.live();
    let list = Policies {
        policies: live
            .policies()
            .map(|(name, p)| PolicyJson {
                name,
                algorithm: p.algorithm().name(),
                limit: p.limit(),
                period_ms: p.period_us().div_ceil(1000),
                period: period_text(p),
                burst: p.algorithm().has_burst().then_some(p.burst()),
                shadow: p.shadow(),
            })
            .collect(),
    };
    json(StatusCode::OK, &list)
}

async fn ready(api: Arc<Api>) -> Response {
    match api.service.ready().await {
        Ok(()) => json(StatusCode::OK, &serde_json::json!({"status": "ready"})),
        Err(error) => ApiError::new(
            ErrorCode::StoreUnavailable,
            format!("store unreachable: {error}"),
        )
        .into_response(),
    }
}

async fn stats(api: Arc<Api>, request: Request<Incoming>) -> Response {
    let result = async {
        api.authorize(request.headers())?;
        if !api.service.stats_on() {
            return Err(stats_off());
        }
        let store = api.service.store();
        let health = StoreHealth {
            kind: store.kind(),
            ready: api.service.ready().await.is_ok(),
            breaker: store.breaker_state(),
        };
        let report = api.service.stats_report(health).ok_or_else(stats_off)?;
        let live = api.service.live();
        let mut pages = Vec::new();
        for (policy, _) in live.policies() {
            // A store that cannot list now (down, or a lease policy) leaves its policy out:
            // the figures above still answer.
            if let Ok(page) = live
                .limiter()
                .list_overrides(policy, None, OVERRIDES_IN_STATS)
                .await
            {
                pages.push((policy, page));
            }
        }
        let overrides = pages
            .iter()
            .map(|(policy, page)| OverridesPage {
                policy: Some(policy),
                ..OverridesPage::new(policy, page)
            })
            .collect();
        let mut response = json(
            StatusCode::OK,
            &StatsJson {
                report: &report,
                overrides,
            },
        );
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Ok(response)
    }
    .await;
    api.respond(result)
}

/// Overrides `GET /v1/stats` shows per policy: the first page of `GET /v1/overrides?policy=`.
const OVERRIDES_IN_STATS: usize = 20;

/// `GET /v1/stats`: the live figures, and the overrides the dashboard shows beside them.
#[derive(Serialize)]
struct StatsJson<'a> {
    #[serde(flatten)]
    report: &'a StatsReport,
    overrides: Vec<OverridesPage<'a>>,
}

/// A page of a policy's overrides: `GET /v1/overrides?policy=`, and (naming the policy) each
/// policy's first page in `GET /v1/stats`; `next_cursor` continues it.
#[derive(Serialize)]
struct OverridesPage<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    policy: Option<&'a str>,
    overrides: Vec<OverrideJson<'a>>,
    next_cursor: Option<&'a str>,
}

impl<'a> OverridesPage<'a> {
    fn new(policy: &'a str, page: &'a tollgate::OverridePage) -> OverridesPage<'a> {
        OverridesPage {
            policy: None,
            overrides: page
                .overrides
                .iter()
                .map(|(key, found)| OverrideJson::new(policy, key, found))
                .collect(),
            next_cursor: page.next_cursor.as_deref(),
        }
    }
}

fn stats_off() -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        "live stats are off on this server (stats: false in its config)",
    )
}

/// The dashboard page; with `?token=`, the exchange of the token for the cookie.
fn dashboard(api: &Api, request: &Request<Incoming>) -> Response {
    let result = (|| {
        let query = dashboard::DashboardQuery::parse(request.uri().query().unwrap_or_default())?;
        if !api.service.stats_on() {
            return Err(stats_off());
        }
        if let Some(presented) = query.token {
            return match api.service.admin_token() {
                Some(token) if !token.matches(presented.as_bytes()) => {
                    Err(ApiError::new(ErrorCode::Forbidden, "invalid admin token"))
                }
                Some(_) => Ok(dashboard::redirect(Some(presented.as_bytes()))),
                None => Ok(dashboard::redirect(None)),
            };
        }
        api.authorize(request.headers())?;
        Ok(dashboard::page())
    })();
    result.unwrap_or_else(|error| {
        api.service.metrics().record_error(error.code);
        dashboard::refusal(&error)
    })
}

fn metrics(api: &Api) -> Response {
    let mut response = Response::new(Body::from(api.service.render_metrics()));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, PROMETHEUS.clone());
    response
}

/// `204 No Content`: done, nothing to say.
fn no_content() -> Response {
    let mut response = Response::new(Body::default());
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    let mut response = Response::new(Body::from(serde_json::to_vec(value).unwrap_or_default()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, JSON.clone());
    response
}
