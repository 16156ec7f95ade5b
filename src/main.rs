//! The server binary: configuration, logs, then serve until told to stop.

use anyhow::Context as _;
use oauth_consumer_server::config::Config;
use oauth_consumer_server::{app, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::from_env_and_args().unwrap_or_else(|error| error.exit());
    telemetry::init(config.log_format);
    let addr = config.listen_addr();
    let router = app(config).await?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    tracing::info!(%addr, "listening");
    axum::serve(listener, router).await?;
    Ok(())
}
