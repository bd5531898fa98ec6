//! `tollgate`: the rate-limit decision service.

use std::process::ExitCode;

use clap::Parser;
use tollgate_server::cli::{Cli, Command, ConfigCommand, ServeArgs};
use tollgate_server::config::{FileConfig, Overrides, Settings};
use tollgate_server::logging;
use tollgate_server::server::{Server, shutdown_signal};

/// mimalloc instead of glibc's malloc: a request allocates a dozen small blocks (head, body,
/// response, headers), and glibc's malloc and free were a large share of the server's
/// user-space instructions per decision (bench/HISTORY.md); mimalloc's thread-local free lists
/// take a fraction of that.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Config(ConfigCommand::Check { file }) => check_config(&file),
        Command::Bench(args) => bench(*args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: ServeArgs) -> Result<(), String> {
    let overrides = args
        .overrides(|name| std::env::var(name).ok())
        .map_err(|e| e.to_string())?;
    let settings = Settings::load(overrides).map_err(|e| e.to_string())?;
    logging::init(settings.log);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async {
        let shutdown =
            shutdown_signal().map_err(|e| format!("cannot install signal handlers: {e}"))?;
        let server = Server::bind(settings).await.map_err(|e| e.to_string())?;
        server.run(shutdown).await.map_err(|e| e.to_string())
    })
}

fn bench(args: tollgate_server::bench::BenchArgs) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(tollgate_server::bench::bench(args))
}

fn check_config(file: &std::path::Path) -> Result<(), String> {
    let config = FileConfig::load(file).map_err(|e| e.to_string())?;
    let settings = Settings::merge(config, Some(file.to_owned()), Overrides::default());
    let names: Vec<&str> = settings.policies.keys().map(|name| name.as_str()).collect();
    println!(
        "ok: {}: {} {} ({}); listen {}; store {}",
        file.display(),
        names.len(),
        if names.len() == 1 {
            "policy"
        } else {
            "policies"
        },
        names.join(", "),
        settings.listen,
        settings.store.url,
    );
    Ok(())
}
