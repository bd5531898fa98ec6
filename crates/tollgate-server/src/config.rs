//! Configuration: the YAML file, its validation, and the merge flags > env > file > defaults.
//!
//! The file is read with `serde-saphyr` through `serde_path_to_error`, so every error names the
//! file, the line and the field (`tollgate.yaml:7: policies.api.rate: invalid rate ...`). Values
//! that can be checked on their own (a rate, a duration, an address) are checked while the file
//! is read; a policy is checked as a whole right after its mapping is read, so its errors point
//! at the policy's first line.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer};
pub use tollgate::OnError;
use tollgate::policy::DEFAULT_LEASE;
use tollgate::{Algorithm, Policy, PolicyError, PolicyName, Rate};
use tollgate_envoy::{EnvoyOptions, ResponseHeaders};

/// Where `tollgate serve` listens for HTTP when nothing says otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// The config file read from the working directory when no `--config` is given.
pub const DEFAULT_CONFIG_FILE: &str = "tollgate.yaml";
/// Name of the policy served when the config defines none.
pub const DEFAULT_POLICY_NAME: &str = "default";
/// The default policy's limit per [`DEFAULT_POLICY_PERIOD`] (algorithm `gcra`: 100/min).
pub const DEFAULT_POLICY_LIMIT: u64 = 100;
/// The default policy's period.
pub const DEFAULT_POLICY_PERIOD: Duration = Duration::from_secs(60);
/// Key prefix in shared stores.
pub const DEFAULT_PREFIX: &str = "tollgate";
/// Store call timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(50);

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read the config file: {source}")]
    Read {
        /// The file.
        file: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid YAML or holds an invalid value.
    #[error("{file}:{line}: {field}: {message}")]
    Invalid {
        /// The file.
        file: String,
        /// 1-based line of the offending value (0 when unknown).
        line: u64,
        /// Dotted path of the field, e.g. `policies.api.rate`.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// An environment variable holds an invalid value.
    #[error("{var}: {message}")]
    Env {
        /// The variable.
        var: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines (the default).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!(
                "invalid log format \"{other}\" (expected text or json)"
            )),
        }
    }
}

/// Where decisions are made: `memory`, or a Redis URL (docs/architecture.md §4).
#[derive(Clone, PartialEq, Eq, Default)]
pub enum StoreUrl {
    /// The in-process memory store.
    #[default]
    Memory,
    /// `redis://`, `rediss://`, `valkey://`, `valkeys://`, `redis+cluster://`,
    /// `rediss+cluster://`, `redis+sentinel://` or `rediss+sentinel://` (kept verbatim).
    Redis(String),
}

impl FromStr for StoreUrl {
    type Err = String;

    /// `memory`, or any URL the Redis store accepts: its own parser decides
    /// ([`tollgate_redis::check_url`]), so the server and the library accept the same set.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "memory" || s == "memory://" {
            return Ok(StoreUrl::Memory);
        }
        match tollgate_redis::check_url(s) {
            Ok(_) => Ok(StoreUrl::Redis(s.to_owned())),
            Err(tollgate_redis::RedisStoreError::InvalidUrl { url, reason }) => Err(format!(
                "invalid store URL \"{url}\": {reason} (or `memory` for the memory store)"
            )),
            Err(other) => Err(format!("invalid store URL: {other}")),
        }
    }
}

impl fmt::Display for StoreUrl {
    /// The URL with any password replaced by `***`, safe to log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreUrl::Memory => f.write_str("memory"),
            StoreUrl::Redis(url) => f.write_str(&tollgate_redis::redact(url)),
        }
    }
}

impl fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The admin token guarding `POST /v1/reset`. Its `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(String);

impl AdminToken {
    /// A token; `None` when empty (an empty token would guard nothing).
    pub fn new(token: impl Into<String>) -> Option<AdminToken> {
        let token = token.into();
        (!token.is_empty()).then_some(AdminToken(token))
    }

    /// Whether `presented` equals the token, compared in time independent of where they differ.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let expected = self.0.as_bytes();
        if expected.len() != presented.len() {
            return false;
        }
        expected
            .iter()
            .zip(presented)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(***)")
    }
}

/// Deserialize a string and parse it with `FromStr`, reporting the parse error as is.
fn parse_str<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: fmt::Display,
{
    let s = String::deserialize(d)?;
    s.parse().map_err(de::Error::custom)
}

fn opt_parse_str<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: fmt::Display,
{
    parse_str(d).map(Some)
}

fn opt_ratio<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    let ratio = f64::deserialize(d)?;
    if (0.0..=1.0).contains(&ratio) {
        Ok(Some(ratio))
    } else {
        Err(de::Error::custom(format!(
            "invalid ratio {ratio} (expected a number from 0 to 1)"
        )))
    }
}

fn opt_socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let s = String::deserialize(d)?;
    parse_socket_addr(&s).map(Some).map_err(de::Error::custom)
}

/// `IP:PORT`, e.g. `127.0.0.1:8080` or `[::1]:8080`.
pub fn parse_socket_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse()
        .map_err(|_| format!("invalid address \"{s}\" (expected IP:PORT, e.g. 127.0.0.1:8080)"))
}

/// A positive duration: `50ms`, `15m`, `1h 30m`, or a bare unit like `min`.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(s)
        .ok()
        .or_else(|| format!("1/{s}").parse::<Rate>().ok().map(|r| r.period))
        .ok_or_else(|| format!("invalid duration \"{s}\" (expected e.g. 50ms, 1s, 15m, 1h, 1d)"))?;
    if duration.is_zero() {
        return Err(format!("duration \"{s}\" must be longer than zero"));
    }
    Ok(duration)
}

fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map(Some).map_err(de::Error::custom)
}

fn opt_positive<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match u64::deserialize(d)? {
        0 => Err(de::Error::custom("must be at least 1")),
        n => Ok(Some(n)),
    }
}

fn opt_admin_token<'de, D: Deserializer<'de>>(d: D) -> Result<Option<AdminToken>, D::Error> {
    let token = String::deserialize(d)?;
    AdminToken::new(token).map(Some).ok_or_else(|| {
        de::Error::custom("must not be empty (remove the key to leave /v1/reset open)")
    })
}

/// A key prefix: it starts every key in a shared store, so no spaces, control bytes, or the
/// braces that delimit Redis Cluster hash tags.
fn opt_prefix<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let prefix = String::deserialize(d)?;
    let valid = |c: char| !c.is_whitespace() && !c.is_control() && c != '{' && c != '}';
    if prefix.is_empty() || prefix.len() > 64 || !prefix.chars().all(valid) {
        return Err(de::Error::custom(format!(
            "invalid prefix \"{prefix}\" (1 to 64 characters, no spaces, control characters or braces)"
        )));
    }
    Ok(Some(prefix))
}

fn opt_positive_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    match u32::deserialize(d)? {
        0 => Err(de::Error::custom("must be at least 1")),
        n => Ok(Some(n)),
    }
}

fn algorithm<'de, D: Deserializer<'de>>(d: D) -> Result<Algorithm, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map_err(|_| {
        de::Error::custom(format!(
            "unknown algorithm \"{s}\" (expected {})",
            Algorithm::accepted_names()
        ))
    })
}

/// A policy's period: a duration, or UTC calendar months (`period: month`, `rate: N/month`).
#[derive(Debug, Clone, Copy)]
enum Period {
    Fixed(Duration),
    Month,
}

fn opt_period<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Period>, D::Error> {
    let s = String::deserialize(d)?;
    if tollgate::policy::is_month_period(&s) {
        return Ok(Some(Period::Month));
    }
    parse_duration(&s)
        .map(|d| Some(Period::Fixed(d)))
        .map_err(de::Error::custom)
}

fn opt_rate<'de, D: Deserializer<'de>>(d: D) -> Result<Option<(u64, Period)>, D::Error> {
    let s = String::deserialize(d)?;
    if let Some(limit) = tollgate::policy::monthly_rate(&s) {
        return match limit {
            Some(limit) if limit > 0 => Ok(Some((limit, Period::Month))),
            _ => Err(de::Error::custom(format!(
                "invalid rate \"{s}\" (expected N/month with N at least 1)"
            ))),
        };
    }
    let rate: Rate = s.parse().map_err(|_| {
        de::Error::custom(format!(
            "invalid rate \"{s}\" (expected N/unit with unit s, min, h or d, or N/duration like 10/15m)"
        ))
    })?;
    if rate.limit == 0 {
        return Err(de::Error::custom(format!(
            "invalid rate \"{s}\": {}",
            PolicyError::ZeroLimit
        )));
    }
    Ok(Some((rate.limit, Period::Fixed(rate.period))))
}

/// The config file as written: every key optional, unknown keys refused.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// HTTP listen address.
    #[serde(default, deserialize_with = "opt_socket_addr")]
    pub listen: Option<SocketAddr>,
    /// gRPC (Envoy rate limit service) listen address.
    #[serde(default, deserialize_with = "opt_socket_addr")]
    pub grpc_listen: Option<SocketAddr>,
    /// The `store` section.
    #[serde(default)]
    pub store: Option<FileStore>,
    /// Named policies.
    #[serde(default)]
    pub policies: Option<BTreeMap<PolicyName, FilePolicy>>,
    /// The `envoy` section.
    #[serde(default)]
    pub envoy: Option<FileEnvoy>,
    /// Bearer token required by `POST /v1/reset`.
    #[serde(default, deserialize_with = "opt_admin_token")]
    pub admin_token: Option<AdminToken>,
    /// `text` or `json`.
    #[serde(default, deserialize_with = "opt_parse_str")]
    pub log: Option<LogFormat>,
    /// Live stats (`GET /v1/stats`, the dashboard); on unless `false`.
    #[serde(default)]
    pub stats: Option<bool>,
}

/// The `store` section as written.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileStore {
    /// `memory` or a Redis URL.
    #[serde(default, deserialize_with = "opt_parse_str")]
    pub url: Option<StoreUrl>,
    /// Key prefix in shared stores.
    #[serde(default, deserialize_with = "opt_prefix")]
    pub prefix: Option<String>,
    /// Store call timeout.
    #[serde(default, deserialize_with = "opt_duration")]
    pub timeout: Option<Duration>,
    /// `allow`, `deny` or `local`.
    #[serde(default, deserialize_with = "opt_parse_str")]
    pub on_error: Option<OnError>,
    /// Instances sharing the limit (divides it under `on_error: local`).
    #[serde(default, deserialize_with = "opt_positive_u32")]
    pub instances: Option<u32>,
    /// Bound on identifiers held by the memory store.
    #[serde(default, deserialize_with = "opt_positive")]
    pub max_keys: Option<u64>,
    /// Redis: replicas that must acknowledge each consuming decision (`WAIT`); 0 = off.
    #[serde(default)]
    pub replica_ack: Option<u32>,
}

/// The `envoy` section as written. Each key but `config_dir` is one of upstream's environment
/// variables, named in [`EnvoySettings`].
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEnvoy {
    /// Directory of envoyproxy/ratelimit YAML files.
    #[serde(default)]
    pub config_dir: Option<PathBuf>,
    /// `off`, `draft` or `legacy`.
    #[serde(default, deserialize_with = "opt_parse_str")]
    pub response_headers: Option<ResponseHeaders>,
    /// 0 to 1.
    #[serde(default, deserialize_with = "opt_ratio")]
    pub near_limit_ratio: Option<f64>,
    /// Answer OK whatever the limits say.
    #[serde(default)]
    pub shadow_mode: Option<bool>,
    /// Let several files add to one domain.
    #[serde(default)]
    pub merge_domains: Option<bool>,
    /// Dynamic metadata in responses.
    #[serde(default)]
    pub response_dynamic_metadata: Option<bool>,
}

/// One policy as written, validated into a [`Policy`] as soon as its mapping is read.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawPolicy")]
pub struct FilePolicy(pub Policy);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(deserialize_with = "algorithm")]
    algorithm: Algorithm,
    #[serde(default, deserialize_with = "opt_rate")]
    rate: Option<(u64, Period)>,
    #[serde(default, deserialize_with = "opt_positive")]
    limit: Option<u64>,
    #[serde(default, deserialize_with = "opt_period")]
    period: Option<Period>,
    #[serde(default, deserialize_with = "opt_positive")]
    burst: Option<u64>,
    /// `concurrency` only: how long a lease lasts (default 60s).
    #[serde(default, deserialize_with = "opt_duration")]
    lease: Option<Duration>,
    /// Decide and count, but never reject (report `shadow_denied`).
    #[serde(default)]
    shadow: bool,
}

impl TryFrom<RawPolicy> for FilePolicy {
    type Error = String;

    fn try_from(raw: RawPolicy) -> Result<Self, Self::Error> {
        if raw.algorithm.is_concurrency() {
            return concurrency_policy(raw);
        }
        if raw.lease.is_some() {
            return Err(format!(
                "lease applies only to concurrency, not to {}",
                raw.algorithm
            ));
        }
        let (limit, period) = match (raw.rate, raw.limit, raw.period) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
                return Err("give either `rate` or `limit` and `period`, not both".into());
            }
            (Some(rate), None, None) => rate,
            (None, Some(limit), Some(period)) => (limit, period),
            (None, None, _) => return Err(PolicyError::MissingLimit.to_string()),
            (None, Some(_), None) => return Err(PolicyError::MissingPeriod.to_string()),
        };
        let policy = match (period, raw.burst) {
            (Period::Fixed(period), burst) => Policy::new(raw.algorithm, limit, period, burst),
            (Period::Month, Some(_)) if raw.algorithm == Algorithm::FixedWindow => {
                Err(PolicyError::BurstNotApplicable(raw.algorithm))
            }
            (Period::Month, _) => Policy::monthly(raw.algorithm, limit),
        };
        policy
            .map(|policy| FilePolicy(policy.with_shadow(raw.shadow)))
            .map_err(|e| e.to_string())
    }
}

/// A `concurrency` policy: `limit` units leased at once, each lease lasting `lease`.
fn concurrency_policy(raw: RawPolicy) -> Result<FilePolicy, String> {
    if raw.rate.is_some() || raw.period.is_some() {
        return Err(
            "concurrency takes `limit` and `lease` (how long a lease lasts), not `rate` or `period`"
                .into(),
        );
    }
    if raw.burst.is_some() {
        return Err(PolicyError::BurstNotApplicable(raw.algorithm).to_string());
    }
    let limit = raw.limit.ok_or("missing limit (units leased at once)")?;
    Policy::concurrency(limit, raw.lease.unwrap_or(DEFAULT_LEASE))
        .map(FilePolicy)
        .map_err(|e| e.to_string())
}

impl FileConfig {
    /// Parse `text`, naming `file` in errors.
    pub fn parse(text: &str, file: &str) -> Result<FileConfig, ConfigError> {
        let mut path = None;
        let parsed = serde_saphyr::with_deserializer_from_str(text, |yaml| {
            serde_path_to_error::deserialize::<_, FileConfig>(yaml).map_err(|e| {
                path = Some(e.path().to_string());
                e.into_inner()
            })
        });
        parsed.map_err(|error| {
            use serde_saphyr::MessageFormatter;
            ConfigError::Invalid {
                file: file.to_owned(),
                line: error.location().map_or(0, |l| l.line()),
                field: field_name(path.as_deref()),
                message: serde_saphyr::UserMessageFormatter
                    .format_message(&error)
                    .into_owned(),
            }
        })
    }

    /// The policies this file configures by name: the `default` policy when it names none.
    pub fn policies(&self) -> BTreeMap<PolicyName, Policy> {
        let mut policies: BTreeMap<PolicyName, Policy> = self
            .policies
            .iter()
            .flatten()
            .map(|(name, policy)| (name.clone(), policy.0.clone()))
            .collect();
        if policies.is_empty() {
            policies.insert(
                PolicyName::from_static(DEFAULT_POLICY_NAME),
                default_policy(),
            );
        }
        policies
    }

    /// The keys other than `policies` whose values differ in `other`: what a reload cannot
    /// apply (bound sockets, the store, the log and stats set up at start).
    pub fn restart_keys(&self, other: &FileConfig) -> Vec<&'static str> {
        // Destructured, so a new key cannot be forgotten here.
        let FileConfig {
            listen,
            grpc_listen,
            store,
            policies: _,
            envoy,
            admin_token,
            log,
            stats,
        } = other;
        [
            ("listen", self.listen == *listen),
            ("grpc_listen", self.grpc_listen == *grpc_listen),
            ("store", self.store == *store),
            ("envoy", self.envoy == *envoy),
            ("admin_token", self.admin_token == *admin_token),
            ("log", self.log == *log),
            ("stats", self.stats == *stats),
        ]
        .into_iter()
        .filter_map(|(key, same)| (!same).then_some(key))
        .collect()
    }

    /// Read and parse the file at `path`.
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        FileConfig::parse(&text, &file)
    }
}

/// `serde_path_to_error` writes `?` for a segment it could not name and `.` for the root.
fn field_name(path: Option<&str>) -> String {
    let path = path
        .unwrap_or("")
        .trim_end_matches(".?")
        .trim_end_matches('?');
    if path.is_empty() || path == "." {
        "(document)".to_owned()
    } else {
        path.to_owned()
    }
}

/// Store settings after the merge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSettings {
    /// Where decisions are made.
    pub url: StoreUrl,
    /// Key prefix in shared stores.
    pub prefix: String,
    /// Store call timeout.
    pub timeout: Duration,
    /// What a failed store call decides.
    pub on_error: OnError,
    /// Instances sharing the limit.
    pub instances: u32,
    /// Bound on identifiers held by the memory store.
    pub max_keys: usize,
    /// Redis: replicas that must acknowledge each consuming decision; 0 = off.
    pub replica_ack: u32,
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            url: StoreUrl::Memory,
            prefix: DEFAULT_PREFIX.to_owned(),
            timeout: DEFAULT_TIMEOUT,
            on_error: OnError::Local,
            instances: 1,
            max_keys: tollgate::memory::DEFAULT_MAX_KEYS,
            replica_ack: 0,
        }
    }
}

/// Values given on the command line or in the environment; each one wins over the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--config` / `TOLLGATE_CONFIG`.
    pub config: Option<PathBuf>,
    /// `--listen` / `TOLLGATE_LISTEN`.
    pub listen: Option<SocketAddr>,
    /// `--grpc-listen` / `TOLLGATE_GRPC_LISTEN`.
    pub grpc_listen: Option<SocketAddr>,
    /// `--store` / `TOLLGATE_STORE_URL`.
    pub store_url: Option<StoreUrl>,
    /// `TOLLGATE_ADMIN_TOKEN`.
    pub admin_token: Option<AdminToken>,
    /// `TOLLGATE_LOG`.
    pub log: Option<LogFormat>,
}

/// The Envoy rate limit service's settings (`envoy:`), with upstream's environment variable for
/// each.
#[derive(Debug, Clone, PartialEq)]
pub struct EnvoySettings {
    /// Directory of envoyproxy/ratelimit YAML files (upstream: `RUNTIME_ROOT` and
    /// `RUNTIME_SUBDIRECTORY`).
    pub config_dir: Option<PathBuf>,
    /// RateLimit headers in responses (`LIMIT_RESPONSE_HEADERS_ENABLED`): off.
    pub response_headers: ResponseHeaders,
    /// Share of a limit past which hits count as near it (`NEAR_LIMIT_RATIO`): 0.8.
    pub near_limit_ratio: f64,
    /// Answer OK whatever the limits say, still counting (`SHADOW_MODE`): off.
    pub shadow_mode: bool,
    /// Let several files add to one domain (`MERGE_DOMAIN_CONFIG`): off.
    pub merge_domains: bool,
    /// Dynamic metadata in responses (`RESPONSE_DYNAMIC_METADATA`): off.
    pub response_dynamic_metadata: bool,
}

impl EnvoySettings {
    fn from_file(file: Option<FileEnvoy>) -> EnvoySettings {
        let file = file.unwrap_or_default();
        let defaults = EnvoyOptions::default();
        EnvoySettings {
            config_dir: file.config_dir,
            response_headers: file.response_headers.unwrap_or(defaults.response_headers),
            near_limit_ratio: file.near_limit_ratio.unwrap_or(defaults.near_limit_ratio),
            shadow_mode: file.shadow_mode.unwrap_or(defaults.global_shadow_mode),
            merge_domains: file.merge_domains.unwrap_or(defaults.merge_domains),
            response_dynamic_metadata: file
                .response_dynamic_metadata
                .unwrap_or(defaults.response_dynamic_metadata),
        }
    }

    /// The options the service runs with.
    pub fn options(&self) -> EnvoyOptions {
        EnvoyOptions {
            response_headers: self.response_headers,
            near_limit_ratio: self.near_limit_ratio,
            global_shadow_mode: self.shadow_mode,
            merge_domains: self.merge_domains,
            response_dynamic_metadata: self.response_dynamic_metadata,
            ..EnvoyOptions::default()
        }
    }
}

/// The configuration `tollgate serve` runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The config file read, if any.
    pub config_file: Option<PathBuf>,
    /// HTTP listen address.
    pub listen: SocketAddr,
    /// gRPC listen address; off when `None`.
    pub grpc_listen: Option<SocketAddr>,
    /// The store.
    pub store: StoreSettings,
    /// Policies by name.
    pub policies: BTreeMap<PolicyName, Policy>,
    /// The Envoy rate limit service (`envoy:`).
    pub envoy: EnvoySettings,
    /// Token required by `POST /v1/reset`; open when `None`.
    pub admin_token: Option<AdminToken>,
    /// Log format.
    pub log: LogFormat,
    /// Whether live stats are kept (`GET /v1/stats`, `GET /dashboard`).
    pub stats: bool,
}

impl Default for Settings {
    /// Everything at its default: memory store, the `default` policy, 127.0.0.1:8080.
    fn default() -> Self {
        Settings::merge(FileConfig::default(), None, Overrides::default())
    }
}

/// The policy served when none is configured: `default`, gcra, 100/min.
pub fn default_policy() -> Policy {
    Policy::new(
        Algorithm::Gcra,
        DEFAULT_POLICY_LIMIT,
        DEFAULT_POLICY_PERIOD,
        None,
    )
    .expect("100/min gcra is a valid policy")
}

impl Settings {
    /// Resolve the settings: the config file named by `overrides.config`, else `tollgate.yaml`
    /// in the working directory if present; then the overrides on top.
    pub fn load(overrides: Overrides) -> Result<Settings, ConfigError> {
        let file = match &overrides.config {
            Some(path) => Some(path.clone()),
            None => {
                let default = PathBuf::from(DEFAULT_CONFIG_FILE);
                default.is_file().then_some(default)
            }
        };
        let config = match &file {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        Ok(Settings::merge(config, file, overrides))
    }

    /// Merge a parsed file with the overrides (flags and env win) and the defaults.
    pub fn merge(file: FileConfig, path: Option<PathBuf>, overrides: Overrides) -> Settings {
        let policies = file.policies();
        let store = file.store.unwrap_or_default();
        let defaults = StoreSettings::default();
        Settings {
            config_file: path,
            listen: overrides
                .listen
                .or(file.listen)
                .unwrap_or_else(default_listen),
            grpc_listen: overrides.grpc_listen.or(file.grpc_listen),
            store: StoreSettings {
                url: overrides.store_url.or(store.url).unwrap_or(defaults.url),
                prefix: store.prefix.unwrap_or(defaults.prefix),
                timeout: store.timeout.unwrap_or(defaults.timeout),
                on_error: store.on_error.unwrap_or(defaults.on_error),
                instances: store.instances.unwrap_or(defaults.instances),
                max_keys: store.max_keys.map_or(defaults.max_keys, |n| {
                    usize::try_from(n).unwrap_or(usize::MAX)
                }),
                replica_ack: store.replica_ack.unwrap_or(defaults.replica_ack),
            },
            policies,
            envoy: EnvoySettings::from_file(file.envoy),
            admin_token: overrides.admin_token.or(file.admin_token),
            log: overrides.log.or(file.log).unwrap_or_default(),
            stats: file.stats.unwrap_or(true),
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_err(yaml: &str) -> String {
        FileConfig::parse(yaml, "t.yaml").unwrap_err().to_string()
    }

    #[test]
    fn design_example_parses() {
        let yaml = "\
listen: 127.0.0.1:8080
grpc_listen: 127.0.0.1:8081
store:
  url: redis://127.0.0.1:6379
  prefix: tollgate
  timeout: 50ms
  on_error: local
  instances: 3
  max_keys: 1000000
policies:
  api:   { algorithm: token-bucket, rate: 100/min, burst: 150 }
  login: { algorithm: sliding-log, limit: 5, period: 15m }
  jobs:  { algorithm: concurrency, limit: 20, lease: 60s }
  trial: { algorithm: fixed-window, rate: 10000/month, shadow: true }
  quota: { algorithm: fixed-window, limit: 7, period: month }
envoy:
  config_dir: ./ratelimit
";
        let file = FileConfig::parse(yaml, "t.yaml").unwrap();
        let s = Settings::merge(file, None, Overrides::default());
        assert_eq!(s.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(s.grpc_listen, Some("127.0.0.1:8081".parse().unwrap()));
        assert_eq!(
            s.store.url,
            StoreUrl::Redis("redis://127.0.0.1:6379".into())
        );
        assert_eq!(s.store.on_error, OnError::Local);
        assert_eq!(s.store.instances, 3);
        assert_eq!(s.store.timeout, Duration::from_millis(50));
        assert_eq!(s.policies["api"].capacity(), 150);
        assert_eq!(s.policies["login"].period(), Duration::from_secs(900));
        let trial = &s.policies["trial"];
        assert!(trial.is_monthly() && trial.shadow() && trial.limit() == 10_000);
        assert!(s.policies["quota"].is_monthly() && !s.policies["quota"].shadow());
        assert_eq!(s.envoy.config_dir, Some(PathBuf::from("./ratelimit")));
        assert_eq!(s.envoy.options().response_headers, ResponseHeaders::Off);
        assert!(!s.envoy.options().response_dynamic_metadata);
        assert_eq!(s.policies["jobs"].algorithm(), Algorithm::Concurrency);
        assert_eq!(
            (s.policies["jobs"].limit(), s.policies["jobs"].lease()),
            (20, Duration::from_secs(60))
        );
    }

    #[test]
    fn envoy_options_are_read_and_bad_ones_named() {
        let yaml = "envoy:\n  config_dir: ./rl\n  response_headers: draft\n  near_limit_ratio: 0.5\n  shadow_mode: true\n  merge_domains: true\n  response_dynamic_metadata: true\n";
        let s = Settings::merge(
            FileConfig::parse(yaml, "t.yaml").unwrap(),
            None,
            Overrides::default(),
        );
        let options = s.envoy.options();
        assert_eq!(options.response_headers, ResponseHeaders::Draft);
        assert_eq!(options.near_limit_ratio, 0.5);
        assert!(options.global_shadow_mode && options.merge_domains);
        assert!(options.response_dynamic_metadata);
        for (line, error) in [
            ("response_headers: on", "envoy.response_headers"),
            ("near_limit_ratio: 1.5", "envoy.near_limit_ratio"),
            (
                "response_dynamic_metadata: 3",
                "envoy.response_dynamic_metadata",
            ),
            ("response_metadata: true", "response_metadata"),
        ] {
            let e = FileConfig::parse(&format!("stats: true\nenvoy:\n  {line}\n"), "t.yaml")
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with("t.yaml:3") && e.contains(error),
                "{line}: {e}"
            );
        }
    }

    #[test]
    fn concurrency_policies_take_limit_and_lease() {
        let parse =
            |policy: &str| FileConfig::parse(&format!("policies:\n  jobs: {policy}\n"), "t.yaml");
        let file = parse("{ algorithm: concurrency, limit: 3 }").unwrap();
        let s = Settings::merge(file, None, Overrides::default());
        assert_eq!(s.policies["jobs"].lease(), DEFAULT_LEASE);
        for (policy, error) in [
            (
                "{ algorithm: concurrency, rate: 5/s }",
                "not `rate` or `period`",
            ),
            (
                "{ algorithm: concurrency, limit: 5, period: 1s }",
                "not `rate` or `period`",
            ),
            ("{ algorithm: concurrency, lease: 5s }", "missing limit"),
            (
                "{ algorithm: concurrency, limit: 5, burst: 9 }",
                "burst applies only",
            ),
            (
                "{ algorithm: concurrency, limit: 5, lease: 0s }",
                "must be longer than zero",
            ),
            (
                "{ algorithm: gcra, rate: 5/s, lease: 5s }",
                "lease applies only to concurrency",
            ),
        ] {
            let e = parse(policy).unwrap_err().to_string();
            assert!(
                e.starts_with("t.yaml:2: policies.jobs") && e.contains(error),
                "{policy}: {e}"
            );
        }
    }

    #[test]
    fn errors_name_line_and_field() {
        let yaml = "policies:\n  ok: { algorithm: gcra, rate: 1/s }\n  api:\n    algorithm: gcra\n    rate: 100/fortnight\n";
        let e = parse_err(yaml);
        assert!(
            e.starts_with("t.yaml:5: policies.api.rate: invalid rate \"100/fortnight\""),
            "{e}"
        );
        let e = parse_err("store:\n  url: memory\n  bogus: 1\n");
        assert!(
            e.starts_with("t.yaml:3: store.bogus: unknown field `bogus`"),
            "{e}"
        );
        let e = parse_err(
            "policies:\n  api:\n    algorithm: fixed-window\n    limit: 0\n    period: 1s\n",
        );
        assert!(
            e.starts_with("t.yaml:4: policies.api.limit: must be at least 1"),
            "{e}"
        );
        let e = parse_err(
            "policies:\n  api:\n    algorithm: fixed-window\n    rate: 5/s\n    burst: 9\n",
        );
        assert!(
            e.starts_with("t.yaml:3: policies.api: burst applies only"),
            "{e}"
        );
        let e = parse_err("policies:\n  api:\n    algorithm: gcra\n    rate: 5/month\n");
        assert!(
            e.starts_with("t.yaml:3: policies.api: period: month (calendar months) applies only to fixed-window"),
            "{e}"
        );
        let e = parse_err(
            "policies:\n  api:\n    algorithm: sliding-log\n    limit: 5\n    period: month\n",
        );
        assert!(e.contains("applies only to fixed-window"), "{e}");
        let e = parse_err("policies:\n  api:\n    algorithm: bucket\n    rate: 5/s\n");
        assert!(
            e.starts_with("t.yaml:3: policies.api.algorithm: unknown algorithm"),
            "{e}"
        );
        let e = parse_err("policies:\n  \"a b\": { algorithm: gcra, rate: 5/s }\n");
        assert!(e.contains("t.yaml:2: policies"), "{e}");
        assert!(e.contains("invalid policy name \"a b\""), "{e}");
        // The core's one rule for names: a Redis key separator is refused, an Envoy-style name
        // is not.
        let e = parse_err(
            "policies:\n  ok: { algorithm: gcra, rate: 1/s }\n  \"a:b\": { algorithm: gcra, rate: 5/s }\n",
        );
        assert!(e.contains("t.yaml:3: policies"), "{e}");
        assert!(
            e.contains("invalid policy name \"a:b\": ':' is not allowed"),
            "{e}"
        );
        let yaml = "policies:\n  \"envoy/rl.path_/a*/minute\": { algorithm: gcra, rate: 5/s }\n";
        assert!(FileConfig::parse(yaml, "t.yaml").is_ok());
        let e = parse_err("listen: nowhere\n");
        assert!(e.starts_with("t.yaml:1: listen: invalid address"), "{e}");
        let e = parse_err("admin_token: \"\"\n");
        assert!(
            e.starts_with("t.yaml:1: admin_token: must not be empty"),
            "{e}"
        );
        let e = parse_err("store:\n  prefix: \"a{b}\"\n");
        assert!(
            e.starts_with("t.yaml:2: store.prefix: invalid prefix"),
            "{e}"
        );
        let e = parse_err("store:\n  timeout: 0s\n");
        assert!(e.starts_with("t.yaml:2: store.timeout: duration"), "{e}");
    }

    #[test]
    fn durations_and_names() {
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("50ms"), Ok(Duration::from_millis(50)));
        assert_eq!(parse_duration("min"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn flags_and_env_win_over_the_file() {
        let file = FileConfig::parse("listen: 127.0.0.1:1\nlog: json\n", "t.yaml").unwrap();
        let over = Overrides {
            listen: Some("127.0.0.1:2".parse().unwrap()),
            ..Overrides::default()
        };
        let s = Settings::merge(file.clone(), None, over);
        assert_eq!(s.listen.port(), 2);
        assert_eq!(s.log, LogFormat::Json);
        let s = Settings::merge(file, None, Overrides::default());
        assert_eq!(s.listen.port(), 1);
    }

    #[test]
    fn defaults_serve_the_default_policy() {
        let s = Settings::default();
        assert_eq!(s.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(s.store.url, StoreUrl::Memory);
        let p = &s.policies[DEFAULT_POLICY_NAME];
        assert_eq!((p.algorithm(), p.limit()), (Algorithm::Gcra, 100));
    }

    /// The server takes every URL the Redis store takes, and refuses what it refuses, with the
    /// store's reason.
    #[test]
    fn store_urls_are_the_redis_stores() {
        for url in [
            "redis://127.0.0.1:6379/2",
            "rediss://h:6380",
            "valkey://h:6379",
            "valkeys://u:p@h:6380",
            "redis+cluster://a:1,b:2",
            "rediss+cluster://u:p@a:1,b:2",
            "redis+sentinel://a:1,b:2/mymaster",
            "rediss+sentinel://a:1/mymaster/3",
        ] {
            assert_eq!(
                url.parse::<StoreUrl>(),
                Ok(StoreUrl::Redis(url.to_owned())),
                "{url}"
            );
            assert!(tollgate_redis::check_url(url).is_ok());
        }
        for url in [
            "http://x",
            "redis+cluster://a:1/3",
            "redis+sentinel://a:1",
            "redis://:secret@h:notaport",
        ] {
            let error = url.parse::<StoreUrl>().unwrap_err();
            assert!(tollgate_redis::check_url(url).is_err(), "{url}");
            assert!(error.contains("invalid store URL"), "{url}: {error}");
            assert!(!error.contains("secret"), "{error}");
        }
        assert_eq!("memory".parse::<StoreUrl>(), Ok(StoreUrl::Memory));
    }

    #[test]
    fn urls_are_redacted() {
        let url: StoreUrl = "redis://user:hunter2@127.0.0.1:6379/0".parse().unwrap();
        assert_eq!(url.to_string(), "redis://user:***@127.0.0.1:6379/0");
        assert!("http://x".parse::<StoreUrl>().is_err());
        let token = AdminToken::new("s3cret").unwrap();
        assert!(token.matches(b"s3cret"));
        assert!(!token.matches(b"s3creT"));
        assert!(!format!("{token:?}").contains("s3cret"));
    }
}
