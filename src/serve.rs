//! Serving until told to stop, then stopping gracefully.
//!
//! The binary serves on [`serve_on_workers`]: one thread per core, each
//! with its own single-threaded event loop and its own connection pool to
//! the API, all accepting from one listening socket. A proxied request, its
//! upstream call and the answer then stay on one thread; with tokio's
//! work-stealing runtime they hopped between threads, and the wake-ups that
//! cost showed as about a quarter of the proxy's CPU time. The tests serve
//! on [`serve`], in their own runtime.
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

use crate::{App, AppState};

/// How often the end of shutdown looks whether the last relays have closed.
const RELAY_POLL: Duration = Duration::from_millis(20);

/// Serves `app` on `listener` until `app.state.shutdown` is cancelled, then
/// drains as described in the module docs. The binary and the tests both
/// run this.
pub async fn serve(listener: TcpListener, app: App) -> std::io::Result<()> {
    let router = app.router();
    announced(
        &app.state,
        serve_router(listener, router, app.state.clone()),
    )
    .await
}

/// Serves `app` on `workers` threads that all accept from `listener`, until
/// `app.state.shutdown` is cancelled; returns once every worker has drained.
pub async fn serve_on_workers(
    listener: std::net::TcpListener,
    app: App,
    workers: usize,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let mut finished = Vec::with_capacity(workers);
    for index in 0..workers {
        // Each worker registers its own handle of the socket with its own
        // event loop; whichever is free first accepts a new connection.
        let listener = listener.try_clone()?;
        let router = app.worker_router().map_err(std::io::Error::other)?;
        let state = app.state.clone();
        let (done, finished_one) = tokio::sync::oneshot::channel();
        finished.push(finished_one);
        std::thread::Builder::new()
            .name(format!("worker-{index}"))
            .spawn(move || {
                let _ = done.send(run_worker(listener, router, state));
            })?;
    }
    let all_finished = async {
        for finished_one in finished {
            finished_one
                .await
                .map_err(|_| std::io::Error::other("a worker thread panicked"))??;
        }
        Ok(())
    };
    announced(&app.state, all_finished).await
}

/// Runs `server` to its end, logging once when shutdown begins and once
/// when everything has stopped.
async fn announced(
    state: &AppState,
    server: impl Future<Output = std::io::Result<()>>,
) -> std::io::Result<()> {
    let mut server = std::pin::pin!(server);
    tokio::select! {
        result = &mut server => return result,
        () = state.shutdown.cancelled() => {}
    }
    tracing::info!(
        grace_secs = state.config.shutdown_grace_secs,
        "shutting down: no new connections, in-flight requests may finish"
    );
    server.await?;
    tracing::info!("stopped");
    Ok(())
}

/// One worker thread's life: its event loop, serving until shutdown.
fn run_worker(
    listener: std::net::TcpListener,
    router: axum::Router,
    state: AppState,
) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = TcpListener::from_std(listener)?;
        serve_router(listener, router, state).await
    })
}

/// Serves `router` on `listener`, then drains once shutdown begins.
async fn serve_router(
    listener: TcpListener,
    router: axum::Router,
    state: AppState,
) -> std::io::Result<()> {
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
