//! One client connection: hyper's HTTP/1.1 with this server's limits on
//! request heads (`HEADER_READ_TIMEOUT_SECS`, `KEEPALIVE_IDLE_SECS`,
//! `MAX_REQUEST_HEAD_BYTES`), holding its share of `MAX_CONNECTIONS`.
//!
//! hyper has one clock for heads, its header-read time-out, and starts it
//! as soon as it waits for a head, so a kept-alive connection between two
//! requests would get the same few seconds as a head being sent. The
//! [`HeadTimer`] given to hyper tells the two apart: it knows, from the
//! connection's byte count, whether any byte of the next head has arrived.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// What a head that took too long gets, when the client is still there to
/// read it.
const REQUEST_TIMEOUT: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";

/// The limits every client connection is served with.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConnectionLimits {
    header_read_timeout: Duration,
    keepalive_idle: Duration,
    max_head_bytes: usize,
}

impl ConnectionLimits {
    /// The limits `config` sets.
    pub(crate) fn new(config: &Config) -> Self {
        Self {
            header_read_timeout: config.header_read_timeout(),
            keepalive_idle: config.keepalive_idle(),
            max_head_bytes: usize::try_from(config.max_request_head_bytes).unwrap_or(usize::MAX),
        }
    }
}

/// Serves HTTP/1.1 on `stream` until the client closes it, a limit cuts it,
/// or its upgrade (a WebSocket) is handed over; on shutdown, lets the
/// request in flight finish first. `slot` is held as long as the socket
/// lives, upgraded or not.
pub(crate) async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    slot: OwnedSemaphorePermit,
    router: axum::Router,
    limits: ConnectionLimits,
    shutdown: CancellationToken,
) {
    // Without TCP_NODELAY, a streamed answer's head and body go out as two
    // small writes, and Nagle holds the second until the client's delayed
    // ACK: milliseconds per proxied request.
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "cannot set TCP_NODELAY");
    }
    let activity = Arc::new(Activity::default());
    let io = Metered {
        stream,
        activity: Arc::clone(&activity),
        _slot: slot,
    };
    let service = hyper::service::service_fn(move |mut request: http::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        tower::ServiceExt::oneshot(router.clone(), request)
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(HeadTimer { activity, limits })
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(limits.max_head_bytes);
    let connection = http
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    let mut connection = std::pin::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%error, "client connection ended");
    }
}

/// What the socket and the head timer share.
#[derive(Debug, Default)]
struct Activity {
    /// Reads that brought bytes, since the connection opened.
    reads: AtomicU64,
    /// Heads waited for so far (the first one has no idle wait before it).
    heads: AtomicU64,
    /// A head had begun to arrive when its time ran out: the client gets a
    /// 408 as the connection closes.
    head_timed_out: AtomicBool,
}

impl Activity {
    fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }
}

/// The client's socket, counting the reads that bring bytes, and holding
/// the connection's slot.
struct Metered {
    stream: TcpStream,
    activity: Arc<Activity>,
    _slot: OwnedSemaphorePermit,
}

impl Drop for Metered {
    fn drop(&mut self) {
        if self.activity.head_timed_out.load(Ordering::Relaxed) {
            // Best effort, without waiting: a client that stopped reading
            // gets nothing, and loses nothing it was owed.
            let _ = self.stream.try_write(REQUEST_TIMEOUT);
        }
    }
}

impl AsyncRead for Metered {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = Pin::new(&mut this.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.reads.fetch_add(1, Ordering::Relaxed);
        }
        read
    }
}

impl AsyncWrite for Metered {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// The clock hyper's header-read time-out runs on, for one connection: a
/// head gets `HEADER_READ_TIMEOUT_SECS` from the connection's start, or,
/// after a first request, `KEEPALIVE_IDLE_SECS` for its first byte to come
/// and then `HEADER_READ_TIMEOUT_SECS` from that byte.
struct HeadTimer {
    activity: Arc<Activity>,
    limits: ConnectionLimits,
}

impl hyper::rt::Timer for HeadTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(PlainSleep {
            sleep: tokio::time::sleep(duration),
        })
    }

    /// hyper's deadline is its own header-read time-out from now; the wait
    /// is this timer's to decide.
    fn sleep_until(&self, _deadline: std::time::Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        let first = self.activity.heads.fetch_add(1, Ordering::Relaxed) == 0;
        let wait = if first {
            self.limits.header_read_timeout
        } else {
            self.limits.keepalive_idle
        };
        Box::pin(HeadWait {
            sleep: tokio::time::sleep(wait),
            reads_at_start: self.activity.reads(),
            idle: !first,
            activity: Arc::clone(&self.activity),
            header_read_timeout: self.limits.header_read_timeout,
        })
    }
}

pin_project_lite::pin_project! {
    /// A sleep for hyper's other uses of its timer (none in HTTP/1.1 today).
    struct PlainSleep {
        #[pin]
        sleep: tokio::time::Sleep,
    }
}

impl Future for PlainSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.project().sleep.poll(cx)
    }
}

impl hyper::rt::Sleep for PlainSleep {}

pin_project_lite::pin_project! {
    /// The wait for one request head. hyper polls it each time the socket
    /// has nothing more to read, so a first byte is noticed at once.
    struct HeadWait {
        #[pin]
        sleep: tokio::time::Sleep,
        reads_at_start: u64,
        // Between two requests, no byte of the next one seen yet.
        idle: bool,
        activity: Arc<Activity>,
        header_read_timeout: Duration,
    }
}

impl Future for HeadWait {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        let begun = this.activity.reads() != *this.reads_at_start;
        if *this.idle && begun {
            *this.idle = false;
            let deadline = Instant::now() + *this.header_read_timeout;
            this.sleep.as_mut().reset(deadline);
        }
        std::task::ready!(this.sleep.poll(cx));
        if begun {
            this.activity.head_timed_out.store(true, Ordering::Relaxed);
        }
        Poll::Ready(())
    }
}

impl hyper::rt::Sleep for HeadWait {}
