//! The server binary: configuration, logs, then serve until told to stop.
//! `oauth-consumer-server healthcheck` instead asks a running server's
//! `/health` (for container health checks).

use std::process::ExitCode;

use anyhow::Context as _;
use oauth_consumer_server::config::Config;
use oauth_consumer_server::{build, healthcheck, serve, telemetry};
use tokio_util::sync::CancellationToken;

/// mimalloc rather than the system's malloc: every proxied request makes
/// dozens of short-lived allocations across threads (headers, URL, signature,
/// hyper's buffers), where glibc's allocator cost about a tenth of the CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<ExitCode> {
    if std::env::args_os()
        .nth(1)
        .is_some_and(|arg| arg == healthcheck::SUBCOMMAND)
    {
        return Ok(healthcheck::run());
    }
    run_server()?;
    Ok(ExitCode::SUCCESS)
}

/// Requests are served on worker threads (see `serve::serve_on_workers`);
/// this thread's event loop keeps the rest: signals, and the session store's
/// background tasks.
#[tokio::main(flavor = "current_thread")]
async fn run_server() -> anyhow::Result<()> {
    let config = Config::from_env_and_args().unwrap_or_else(|error| error.exit());
    telemetry::init(config.log_format);
    let addr = config.listen_addr();
    let workers = config.worker_threads();
    let shutdown = CancellationToken::new();
    let app = build(config, shutdown.clone()).await?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    tracing::info!(%addr, workers, "listening");
    tokio::spawn(async move {
        serve::signal().await;
        shutdown.cancel();
    });
    serve::serve_on_workers(listener, app, workers).await?;
    Ok(())
}
