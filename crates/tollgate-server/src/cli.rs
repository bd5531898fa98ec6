//! The command line: `tollgate serve`, `tollgate config check FILE`, `tollgate --version`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{AdminToken, ConfigError, LogFormat, Overrides, StoreUrl, parse_socket_addr};

/// Environment variable naming the config file.
pub const ENV_CONFIG: &str = "TOLLGATE_CONFIG";
/// Environment variable with the HTTP listen address.
pub const ENV_LISTEN: &str = "TOLLGATE_LISTEN";
/// Environment variable with the gRPC listen address.
pub const ENV_GRPC_LISTEN: &str = "TOLLGATE_GRPC_LISTEN";
/// Environment variable with the store URL.
pub const ENV_STORE_URL: &str = "TOLLGATE_STORE_URL";
/// Environment variable holding the admin token (never a flag: flags show up in `ps`).
pub const ENV_ADMIN_TOKEN: &str = "TOLLGATE_ADMIN_TOKEN";
/// Environment variable choosing the log format (`text` or `json`).
pub const ENV_LOG: &str = "TOLLGATE_LOG";

/// tollgate: a distributed rate limiter.
#[derive(Debug, Parser)]
#[command(name = "tollgate", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP decision service.
    Serve(ServeArgs),
    /// Work with config files.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Measure decisions/s and latency against a store, a running server or an Envoy service.
    Bench(Box<crate::bench::BenchArgs>),
}

/// `tollgate config ...`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a config file: prints a summary, or the file, line and field of the first error.
    Check {
        /// The YAML file.
        file: PathBuf,
    },
}

/// Flags of `tollgate serve`. Each has an environment variable; flags win over the
/// environment, which wins over the config file. An empty variable counts as unset.
#[derive(Debug, Args)]
#[command(
    after_help = "Environment: TOLLGATE_CONFIG, TOLLGATE_LISTEN, TOLLGATE_GRPC_LISTEN, \
TOLLGATE_STORE_URL, TOLLGATE_ADMIN_TOKEN, TOLLGATE_LOG (text|json), RUST_LOG (log levels, default info)."
)]
pub struct ServeArgs {
    /// Config file (env TOLLGATE_CONFIG) [default: tollgate.yaml in the working directory, if present].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// HTTP listen address (env TOLLGATE_LISTEN) [default: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR", value_parser = parse_socket_addr)]
    pub listen: Option<SocketAddr>,
    /// gRPC (Envoy rate limit service) listen address (env TOLLGATE_GRPC_LISTEN) [default: off].
    #[arg(long, value_name = "ADDR", value_parser = parse_socket_addr)]
    pub grpc_listen: Option<SocketAddr>,
    /// Store: `memory` or a Redis URL (env TOLLGATE_STORE_URL) [default: memory].
    #[arg(long, value_name = "URL")]
    pub store: Option<StoreUrl>,
}

impl ServeArgs {
    /// The overrides these flags give, completed from the environment (read through `env`).
    pub fn overrides(self, env: impl Fn(&str) -> Option<String>) -> Result<Overrides, ConfigError> {
        let var = |name: &'static str| env(name).filter(|v| !v.is_empty()).map(|v| (name, v));
        Ok(Overrides {
            config: self
                .config
                .or_else(|| var(ENV_CONFIG).map(|(_, v)| v.into())),
            listen: or_env(self.listen, var(ENV_LISTEN), parse_socket_addr)?,
            grpc_listen: or_env(self.grpc_listen, var(ENV_GRPC_LISTEN), parse_socket_addr)?,
            store_url: or_env(self.store, var(ENV_STORE_URL), str::parse)?,
            admin_token: var(ENV_ADMIN_TOKEN).and_then(|(_, v)| AdminToken::new(v)),
            log: or_env(None, var(ENV_LOG), str::parse::<LogFormat>)?,
        })
    }
}

/// The flag's value if given, else the variable's, parsed; a bad variable is named.
fn or_env<T>(
    flag: Option<T>,
    var: Option<(&'static str, String)>,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Option<T>, ConfigError> {
    match (flag, var) {
        (Some(value), _) => Ok(Some(value)),
        (None, Some((name, value))) => parse(&value)
            .map(Some)
            .map_err(|message| ConfigError::Env { var: name, message }),
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::collections::HashMap;

    fn overrides(args: &[&str], env: &[(&str, &str)]) -> Result<Overrides, ConfigError> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let cli = Cli::try_parse_from([&["tollgate", "serve"], args].concat()).unwrap();
        let Command::Serve(serve) = cli.command else {
            unreachable!()
        };
        serve.overrides(|name| env.get(name).cloned())
    }

    #[test]
    fn flags_win_over_env_and_empty_env_is_unset() {
        let o = overrides(&["--listen", "127.0.0.1:1"], &[(ENV_LISTEN, "127.0.0.1:2")]).unwrap();
        assert_eq!(o.listen.unwrap().port(), 1);
        let o = overrides(&[], &[(ENV_LISTEN, "127.0.0.1:2"), (ENV_STORE_URL, "")]).unwrap();
        assert_eq!(o.listen.unwrap().port(), 2);
        assert_eq!(o.store_url, None);
        let o = overrides(&[], &[(ENV_ADMIN_TOKEN, ""), (ENV_LOG, "")]).unwrap();
        assert!(o.admin_token.is_none() && o.log.is_none());
        let e = overrides(&[], &[(ENV_LISTEN, "nowhere")])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("TOLLGATE_LISTEN: invalid address"), "{e}");
        let o = overrides(&["--store", "memory"], &[(ENV_STORE_URL, "bogus")]).unwrap();
        assert_eq!(o.store_url, Some(StoreUrl::Memory));
    }
}
