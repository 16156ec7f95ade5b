//! Serving until told to stop, then stopping gracefully.
//!
//! The binary serves on [`serve_on_workers`]: one thread per core, each
//! with its own single-threaded event loop and its own connection pool to
//! the API. A proxied request, its upstream call and the answer then stay on
//! one thread; with tokio's work-stealing runtime they hopped between
//! threads, and the wake-ups that cost showed as about a quarter of the
//! proxy's CPU time. One acceptor deals new connections to the workers in
//! turn: workers accepting for themselves took them in bursts, and a worker
//! holding most of a client's connections left the other idle. The tests
//! serve on [`serve`], in their own runtime.
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

/// Serves `app` on `workers` threads, each given in turn the connections
/// `listener` accepts, until `app.state.shutdown` is cancelled; returns once
/// every worker has drained.
pub async fn serve_on_workers(
    listener: TcpListener,
    app: App,
    workers: usize,
) -> std::io::Result<()> {
    let local_addr = listener.local_addr()?;
    let mut finished = Vec::with_capacity(workers);
    let mut dealt = Vec::with_capacity(workers);
    for index in 0..workers {
        let router = app.worker_router().map_err(std::io::Error::other)?;
        let state = app.state.clone();
        let (deal, connections) = tokio::sync::mpsc::channel(DEALT_BACKLOG);
        dealt.push(deal);
        let connections = DealtConnections {
            connections,
            local_addr,
        };
        let (done, finished_one) = tokio::sync::oneshot::channel();
        finished.push(finished_one);
        std::thread::Builder::new()
            .name(format!("worker-{index}"))
            .spawn(move || {
                let _ = done.send(run_worker(connections, router, state));
            })?;
    }
    let shutdown = app.state.shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            () = deal_connections(listener, dealt) => {}
            // Dropping the listener closes it: no new connections.
            () = shutdown.cancelled() => {}
        }
    });
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

/// Connections accepted but not yet taken by their worker, per worker.
const DEALT_BACKLOG: usize = 1024;

/// Accepts connections and hands them to the workers in turn.
async fn deal_connections(
    listener: TcpListener,
    workers: Vec<tokio::sync::mpsc::Sender<std::net::TcpStream>>,
) {
    for worker in workers.iter().cycle() {
        let stream = loop {
            match listener.accept().await {
                Ok((stream, _)) => break stream,
                Err(error) => accept_failed(&error).await,
            }
        };
        // The worker's own event loop takes the socket over.
        let Ok(stream) = stream.into_std() else {
            continue;
        };
        if worker.send(stream).await.is_err() {
            // That worker has stopped: the server is shutting down.
            return;
        }
    }
}

/// Waits out a failed accept: a connection reset before it was accepted is
/// the client's business, anything else (out of file descriptors) may last,
/// so it is logged and retried after a pause.
async fn accept_failed(error: &std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        error.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(%error, "cannot accept connections; retrying in a second");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// A worker's share of the connections, as a listener for `axum::serve`.
struct DealtConnections {
    connections: tokio::sync::mpsc::Receiver<std::net::TcpStream>,
    local_addr: SocketAddr,
}

impl axum::serve::Listener for DealtConnections {
    type Io = tokio::net::TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Some(stream) = self.connections.recv().await else {
                // No more connections: shutdown stops the serving loop.
                return std::future::pending().await;
            };
            let registered = tokio::net::TcpStream::from_std(stream)
                .and_then(|stream| Ok((stream.peer_addr()?, stream)));
            match registered {
                Ok((peer, stream)) => return (stream, peer),
                Err(error) => tracing::debug!(%error, "dropped a dealt connection"),
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local_addr)
    }
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
    connections: DealtConnections,
    router: axum::Router,
    state: AppState,
) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve_router(connections, router, state))
}

/// Serves `router` on `listener`, then drains once shutdown begins.
async fn serve_router<L>(listener: L, router: axum::Router, state: AppState) -> std::io::Result<()>
where
    L: axum::serve::Listener<Io = tokio::net::TcpStream, Addr = SocketAddr>,
{
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
