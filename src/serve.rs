//! Serving until told to stop, then stopping gracefully.
//!
//! On the shutdown signal: `state.shutdown` is cancelled at once (relays
//! close with 1001 and `/ready` answers 503), the listener closes, in-flight
//! requests get `SHUTDOWN_GRACE_SECS` to finish, and relays that are still
//! closing get whatever remains of that time.

use std::future::IntoFuture as _;
use std::net::SocketAddr;
use std::time::Duration;

use axum::serve::ListenerExt as _;
use tokio::net::TcpListener;
use tokio::time::Instant;

use crate::App;

/// How often the end of shutdown looks whether the last relays have closed.
const RELAY_POLL: Duration = Duration::from_millis(20);

/// Serves `app` on `listener` until `app.state.shutdown` is cancelled, then
/// drains as described in the module docs. The binary and the tests both
/// run this.
pub async fn serve(listener: TcpListener, app: App) -> std::io::Result<()> {
    let App { router, state } = app;
    let shutdown = state.shutdown.clone();
    let grace = Duration::from_secs(state.config.shutdown_grace_secs);
    // Without TCP_NODELAY, a streamed answer's head and body go out as two
    // small writes, and Nagle holds the second until the client's delayed
    // ACK: milliseconds per proxied request.
    let listener = listener.tap_io(|stream| {
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
    });
    let server = axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.clone().cancelled_owned())
    .into_future();
    let mut server = std::pin::pin!(server);

    tokio::select! {
        result = &mut server => return result,
        () = shutdown.cancelled() => {}
    }
    let deadline = Instant::now() + grace;
    tracing::info!(
        grace_secs = grace.as_secs(),
        "shutting down: no new connections, in-flight requests may finish"
    );
    match tokio::time::timeout_at(deadline, &mut server).await {
        Ok(result) => result?,
        Err(_) => tracing::warn!("shutdown grace elapsed: cutting the requests still running"),
    }
    while state.relays.open() > 0 && Instant::now() < deadline {
        tokio::time::sleep(RELAY_POLL).await;
    }
    let still_open = state.relays.open();
    if still_open > 0 {
        tracing::warn!(
            still_open,
            "shutdown grace elapsed: cutting the relays still closing"
        );
    }
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on SIGTERM (what platforms send to stop an instance) or SIGINT
/// (Ctrl-C).
pub async fn signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut terminate) => {
                terminate.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => tracing::info!("SIGINT received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
}
