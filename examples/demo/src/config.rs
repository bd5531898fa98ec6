//! Settings from the environment, so the same binary runs under `scripts/demo.sh`, in Docker and
//! in tests: `PORT`, `HOST`, `REDIS_URL`, `REDIS_PASSWORD`, `INSTANCE`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::http::HeaderValue;

/// Port served when `PORT` is not set.
pub const DEFAULT_PORT: u16 = 8081;
/// Redis used when `REDIS_URL` is not set.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

/// What one instance needs to start.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where to listen: `HOST` (default 127.0.0.1) and `PORT` (default 8081).
    pub addr: SocketAddr,
    /// `REDIS_URL` with `REDIS_PASSWORD` applied. May hold a password: log it only through
    /// `tollgate_redis::redact`.
    pub redis_url: String,
    /// The name this instance answers with (`INSTANCE`, default the listen address), already
    /// checked to be a valid header value.
    pub instance: HeaderValue,
}

/// A setting that cannot be used. Values that may be secret are never included.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A variable that is set but not UTF-8.
    #[error("{0} is not valid UTF-8")]
    NotUnicode(&'static str),
    /// `PORT` is not a number from 1 to 65535.
    #[error("PORT `{0}` is not a port number (1-65535)")]
    Port(String),
    /// `HOST` is not an IP address.
    #[error("HOST `{0}` is not an IP address (e.g. 127.0.0.1, or 0.0.0.0 in a container)")]
    Host(String),
    /// `INSTANCE` cannot be sent as a header.
    #[error("INSTANCE `{0}` must be printable ASCII (it is sent in the x-instance header)")]
    Instance(String),
    /// `REDIS_URL` has no scheme, so a password cannot be placed in it.
    #[error("REDIS_URL must look like redis://host:port (got `{0}`)")]
    RedisUrl(String),
}

impl Settings {
    /// Read the settings from the process environment.
    pub fn from_env() -> Result<Settings, ConfigError> {
        Settings::from_vars(|name| match std::env::var(name) {
            Ok(value) => Ok(Some(value)),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err(ConfigError::NotUnicode(name)),
        })
    }

    /// Read the settings through `var`. Empty values count as unset, as Compose files often
    /// pass `REDIS_PASSWORD=` for "no password".
    fn from_vars(
        var: impl Fn(&'static str) -> Result<Option<String>, ConfigError>,
    ) -> Result<Settings, ConfigError> {
        let get = |name| var(name).map(|v| v.filter(|v| !v.trim().is_empty()));

        let port = match get("PORT")? {
            Some(p) => match p.trim().parse::<u16>() {
                Ok(port) if port > 0 => port,
                _ => return Err(ConfigError::Port(p)),
            },
            None => DEFAULT_PORT,
        };
        let host = match get("HOST")? {
            Some(h) => h
                .trim()
                .parse::<IpAddr>()
                .map_err(|_| ConfigError::Host(h))?,
            None => IpAddr::V4(Ipv4Addr::LOCALHOST),
        };
        let addr = SocketAddr::new(host, port);

        let url = get("REDIS_URL")?.unwrap_or_else(|| DEFAULT_REDIS_URL.to_owned());
        let redis_url = match get("REDIS_PASSWORD")? {
            Some(password) => with_password(url.trim(), &password)?,
            None => url.trim().to_owned(),
        };

        let name = get("INSTANCE")?.unwrap_or_else(|| addr.to_string());
        let instance = HeaderValue::from_str(name.trim())
            .ok()
            .filter(|v| v.to_str().is_ok())
            .ok_or(ConfigError::Instance(name))?;

        Ok(Settings {
            addr,
            redis_url,
            instance,
        })
    }
}

/// `url` with its password set to `password` (percent-encoded), keeping any user name and
/// replacing any password already there: `redis://host:6379` + `s3cret` ->
/// `redis://:s3cret@host:6379`.
pub fn with_password(url: &str, password: &str) -> Result<String, ConfigError> {
    let Some((scheme, rest)) = url.split_once("://") else {
        // Without a scheme `redact` cannot find the userinfo: mask everything before an `@`.
        let shown = match url.rsplit_once('@') {
            Some((_, hosts)) => format!("***@{hosts}"),
            None => url.to_owned(),
        };
        return Err(ConfigError::RedisUrl(shown));
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let (user, hosts) = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => (userinfo.split(':').next().unwrap_or_default(), hosts),
        None => ("", authority),
    };
    Ok(format!(
        "{scheme}://{user}:{}@{hosts}{path}",
        percent_encode(password)
    ))
}

/// Percent-encode everything but RFC 3986 unreserved characters, so any password survives in
/// the URL's userinfo (the Redis client decodes it again).
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for byte in s.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn settings(vars: &[(&'static str, &str)]) -> Result<Settings, ConfigError> {
        let vars: HashMap<&str, String> = vars.iter().map(|(k, v)| (*k, v.to_string())).collect();
        Settings::from_vars(|name| Ok(vars.get(name).cloned()))
    }

    #[test]
    fn defaults_are_the_first_demo_instance() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.addr, "127.0.0.1:8081".parse().unwrap());
        assert_eq!(s.redis_url, "redis://127.0.0.1:6379");
        assert_eq!(s.instance, "127.0.0.1:8081");
    }

    #[test]
    fn variables_override_defaults_and_empty_means_unset() {
        let s = settings(&[
            ("PORT", "8083"),
            ("HOST", "0.0.0.0"),
            ("REDIS_URL", "redis://redis:6379/2"),
            ("REDIS_PASSWORD", ""),
            ("INSTANCE", "demo-3"),
        ])
        .unwrap();
        assert_eq!(s.addr, "0.0.0.0:8083".parse().unwrap());
        assert_eq!(s.redis_url, "redis://redis:6379/2");
        assert_eq!(s.instance, "demo-3");
    }

    #[test]
    fn bad_values_are_named() {
        for (var, value, expected) in [
            ("PORT", "80a", "PORT `80a`"),
            ("PORT", "0", "PORT `0`"),
            ("PORT", "70000", "PORT `70000`"),
            ("HOST", "localhost", "HOST `localhost`"),
            ("INSTANCE", "naïve", "INSTANCE `naïve`"),
            ("REDIS_URL", "127.0.0.1:6379", "REDIS_URL must look like"),
        ] {
            let mut vars = vec![(var, value)];
            if var == "REDIS_URL" {
                vars.push(("REDIS_PASSWORD", "pw"));
            }
            let error = settings(&vars).unwrap_err().to_string();
            assert!(error.contains(expected), "{var}={value}: {error}");
        }
    }

    #[test]
    fn the_password_goes_into_the_userinfo_encoded() {
        assert_eq!(
            with_password("redis://127.0.0.1:6379", "s3cret").unwrap(),
            "redis://:s3cret@127.0.0.1:6379"
        );
        assert_eq!(
            with_password("redis://app@redis:6379/1", "p@ss:w/rd%").unwrap(),
            "redis://app:p%40ss%3Aw%2Frd%25@redis:6379/1"
        );
        // An existing password is replaced, the user kept.
        assert_eq!(
            with_password("rediss://app:old@redis:6380", "new").unwrap(),
            "rediss://app:new@redis:6380"
        );
        assert_eq!(
            with_password("redis+cluster://a:7000,b:7001", "pw").unwrap(),
            "redis+cluster://:pw@a:7000,b:7001"
        );
    }

    #[test]
    fn the_password_never_appears_in_errors() {
        let error = with_password("user:secret@host", "pw").unwrap_err();
        assert!(!error.to_string().contains("secret"), "{error}");
    }
}
