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
//! serve on [`serve`], in their own runtime. Both serve each connection
//! with the same limits (see [`connection`]).
//!
//! On the shutdown signal: `state.shutdown` is cancelled at once (relays
//! close with 1001 and `/ready` answers 503), the listener closes, in-flight
//! requests get `SHUTDOWN_GRACE_SECS` to finish, and relays that are still
//! closing get whatever remains of that time.

mod connection;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use crate::app::App;
use crate::state::AppState;
use connection::ConnectionLimits;

/// How often the end of shutdown looks whether the last relays have closed.
const RELAY_POLL: Duration = Duration::from_millis(20);

/// Serves `app` on `listener` until `app.state.shutdown` is cancelled, then
/// drains as described in the module docs. The tests run this.
pub async fn serve(listener: TcpListener, app: App) -> std::io::Result<()> {
    let router = app.router();
    let admission = Admission::new(listener, &app.state);
    announced(
        &app.state,
        serve_router(Connections::Listener(admission), router, app.state.clone()),
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
    let mut finished = Vec::with_capacity(workers);
    let mut dealt = Vec::with_capacity(workers);
    for index in 0..workers {
        let router = app.worker_router().map_err(std::io::Error::other)?;
        let state = app.state.clone();
        let (deal, connections) = tokio::sync::mpsc::channel(DEALT_BACKLOG);
        dealt.push(deal);
        let (done, finished_one) = tokio::sync::oneshot::channel();
        finished.push(finished_one);
        std::thread::Builder::new()
            .name(format!("worker-{index}"))
            .spawn(move || {
                let _ = done.send(run_worker(connections, router, state));
            })?;
    }
    let admission = Admission::new(listener, &app.state);
    let shutdown = app.state.shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            () = deal_connections(admission, dealt) => {}
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

/// A connection accepted, with its share of `MAX_CONNECTIONS`.
type Accepted<S> = (S, SocketAddr, OwnedSemaphorePermit);

/// Accepts connections and hands them to the workers in turn.
async fn deal_connections(
    admission: Admission,
    workers: Vec<tokio::sync::mpsc::Sender<Accepted<std::net::TcpStream>>>,
) {
    for worker in workers.iter().cycle() {
        let (stream, peer, slot) = admission.accept().await;
        // The worker's own event loop takes the socket over.
        let Ok(stream) = stream.into_std() else {
            continue;
        };
        if worker.send((stream, peer, slot)).await.is_err() {
            // That worker has stopped: the server is shutting down.
            return;
        }
    }
}

/// The listener, letting in at most `MAX_CONNECTIONS` connections at once:
/// past that it stops accepting, and new connections wait in the kernel's
/// listen backlog (or are refused by it once that is full too).
struct Admission {
    listener: TcpListener,
    slots: Arc<Semaphore>,
}

impl Admission {
    fn new(listener: TcpListener, state: &AppState) -> Self {
        let slots = usize::try_from(state.config.max_connections).unwrap_or(usize::MAX);
        Self {
            listener,
            slots: Arc::new(Semaphore::new(slots.min(Semaphore::MAX_PERMITS))),
        }
    }

    /// The next connection, once one of the slots is free.
    async fn accept(&self) -> Accepted<TcpStream> {
        let Ok(slot) = Arc::clone(&self.slots).acquire_owned().await else {
            // The semaphore is never closed.
            return std::future::pending().await;
        };
        loop {
            match self.listener.accept().await {
                Ok((stream, peer)) => return (stream, peer, slot),
                Err(error) => accept_failed(&error).await,
            }
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

/// Where a serving loop gets its connections.
enum Connections {
    /// Straight from the listener (the tests' single runtime).
    Listener(Admission),
    /// A worker's share, dealt by the acceptor.
    Dealt(tokio::sync::mpsc::Receiver<Accepted<std::net::TcpStream>>),
}

impl Connections {
    async fn next(&mut self) -> Accepted<TcpStream> {
        match self {
            Self::Listener(admission) => admission.accept().await,
            Self::Dealt(connections) => loop {
                let Some((stream, peer, slot)) = connections.recv().await else {
                    // No more connections: shutdown stops the serving loop.
                    return std::future::pending().await;
                };
                match TcpStream::from_std(stream) {
                    Ok(stream) => return (stream, peer, slot),
                    Err(error) => tracing::debug!(%error, "dropped a dealt connection"),
                }
            },
        }
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
    connections: tokio::sync::mpsc::Receiver<Accepted<std::net::TcpStream>>,
    router: axum::Router,
    state: AppState,
) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve_router(Connections::Dealt(connections), router, state))
}

/// Serves `router` on the connections that come, then drains once shutdown
/// begins.
async fn serve_router(
    mut connections: Connections,
    router: axum::Router,
    state: AppState,
) -> std::io::Result<()> {
    let shutdown = state.shutdown.clone();
    let grace = Duration::from_secs(state.config.shutdown_grace_secs);
    let limits = ConnectionLimits::new(&state.config);
    let served = TaskTracker::new();
    loop {
        let (stream, peer, slot) = tokio::select! {
            accepted = connections.next() => accepted,
            () = shutdown.cancelled() => break,
        };
        served.spawn(connection::serve(
            stream,
            peer,
            slot,
            router.clone(),
            limits,
            shutdown.clone(),
        ));
    }
    // Closes the listener (or stops taking dealt connections).
    drop(connections);
    served.close();
    let deadline = Instant::now() + grace;
    if tokio::time::timeout_at(deadline, served.wait())
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace elapsed: cutting the requests still running");
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
