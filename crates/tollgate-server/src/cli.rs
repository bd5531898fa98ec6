//! The command line: `tollgate serve`, `tollgate config check FILE`, `tollgate --version`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{AdminToken, ConfigError, LogFormat, Overrides, StoreUrl, parse_socket_addr};

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

/// Flags of `tollgate serve`. Each also reads its environment variable; flags win over the
/// environment, which wins over the config file. Also read: TOLLGATE_ADMIN_TOKEN, TOLLGATE_LOG
/// (text|json) and RUST_LOG (log levels, default info).
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Config file [default: tollgate.yaml in the working directory, if present].
    #[arg(long, env = "TOLLGATE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// HTTP listen address [default: 127.0.0.1:8080].
    #[arg(long, env = "TOLLGATE_LISTEN", value_name = "ADDR", value_parser = parse_socket_addr)]
    pub listen: Option<SocketAddr>,
    /// gRPC (Envoy rate limit service) listen address [default: off].
    #[arg(long, env = "TOLLGATE_GRPC_LISTEN", value_name = "ADDR", value_parser = parse_socket_addr)]
    pub grpc_listen: Option<SocketAddr>,
    /// Store: `memory` or a Redis URL [default: memory].
    #[arg(long, env = "TOLLGATE_STORE_URL", value_name = "URL")]
    pub store: Option<StoreUrl>,
}

impl ServeArgs {
    /// The overrides these flags and the environment (read through `env`) give.
    pub fn overrides(self, env: impl Fn(&str) -> Option<String>) -> Result<Overrides, ConfigError> {
        let log = env(ENV_LOG)
            .filter(|v| !v.is_empty())
            .map(|v| v.parse::<LogFormat>())
            .transpose()
            .map_err(|message| ConfigError::Env {
                var: ENV_LOG,
                message,
            })?;
        Ok(Overrides {
            config: self.config,
            listen: self.listen,
            grpc_listen: self.grpc_listen,
            store_url: self.store,
            admin_token: env(ENV_ADMIN_TOKEN).and_then(AdminToken::new),
            log,
        })
    }
}
