//! The proxy's connections to the API: HTTP/1.1, kept alive in a pool, and
//! driven by the request that uses them.
//!
//! A general-purpose client (reqwest, hyper-util's) runs each connection in
//! a task of its own and talks to it through channels, so every proxied
//! request crossed two tasks and woke each of them twice. Here the request's
//! own task polls the connection while it waits for the answer's head, and
//! the answer's body keeps polling it while the body streams to the client.
//! Once the body has ended, the connection goes back to the pool.
//!
//! Time-outs: connecting (`API_CONNECT_TIMEOUT_SECS`, TLS included); the
//! answer's head within `API_IDLE_TIMEOUT_SECS` of the request's last byte
//! (while a request body is uploading, only that long between two of its
//! chunks); then each chunk of the answer's body within that long of being
//! asked for. There is no total time-out, which would cut streams that last
//! for hours.
//!
//! At most `API_MAX_CONNECTIONS` connections per pool, idle ones included:
//! past that, a request waits up to the connect time-out for one to be
//! freed, then fails with [`UpstreamError::PoolFull`].

use std::future::{Future, poll_fn};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsConnector;
use url::{Position, Url};

use super::connect::{self, ApiStream, ConnectError};
use crate::config::Config;
use crate::metrics::UpstreamOutcome;

/// Most idle connections kept for reuse.
const MAX_IDLE: usize = 512;

/// An idle connection older than this is closed rather than reused: servers
/// close theirs after a while, and a request sent just as the server closes
/// fails.
const IDLE_LIFETIME: Duration = Duration::from_secs(30);

/// Why the API gave no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The TCP connection failed (refused, unreachable, reset).
    #[error("cannot connect to the API")]
    Connect(#[source] io::Error),
    /// Connecting (TCP and TLS) took longer than the connect time-out.
    #[error("connecting to the API timed out")]
    ConnectTimeout,
    /// The TLS handshake failed (certificate, protocol).
    #[error("the TLS handshake with the API failed")]
    Tls(#[source] io::Error),
    /// The HTTP exchange failed (connection closed, malformed answer).
    #[error("the HTTP exchange with the API failed")]
    Http(#[source] hyper::Error),
    /// No answer (or no next chunk of it) within the idle time-out.
    #[error("the API stayed silent past the idle time-out")]
    Idle,
    /// Every connection the pool may open was busy for the whole connect
    /// time-out.
    #[error("every connection to the API stayed busy past the connect time-out")]
    PoolFull,
}

impl UpstreamError {
    /// The connection was never established, as opposed to failing later.
    pub fn is_connect(&self) -> bool {
        matches!(self, Self::Connect(_) | Self::ConnectTimeout | Self::Tls(_))
    }

    /// A time-out, as opposed to a refusal or a broken connection.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::ConnectTimeout | Self::Idle)
    }

    /// The metrics' outcome of a call that ended with this error.
    pub fn outcome(&self) -> UpstreamOutcome {
        if matches!(self, Self::PoolFull) {
            UpstreamOutcome::PoolFull
        } else if self.is_timeout() {
            UpstreamOutcome::Timeout
        } else {
            UpstreamOutcome::Unreachable
        }
    }
}

/// Where the pool connects: `API_HOST`'s host and port, over TLS for https.
#[derive(Clone, Debug)]
struct Origin {
    host: String,
    port: u16,
    /// The `Host` header: the host, and the port unless it is the default.
    host_header: http::HeaderValue,
    /// `Some` for https: the name the certificate must carry.
    tls_name: Option<ServerName<'static>>,
}

/// The pool of connections to the API, shared by the requests of one
/// worker thread (see [`crate::serve::serve_on_workers`]).
#[derive(Clone)]
pub struct ApiClient(Arc<Pool>);

struct Pool {
    origin: Origin,
    tls: TlsConnector,
    connect_timeout: Duration,
    idle_timeout: Duration,
    idle: Mutex<Vec<Idle>>,
    /// One permit per connection open, idle or in use.
    slots: Arc<Semaphore>,
    /// Told when a connection goes back to the idle list, for requests
    /// waiting at the cap.
    returned: Notify,
}

struct Idle {
    connection: Box<Connection>,
    since: Instant,
}

/// One HTTP/1.1 connection: the handle requests are sent on, and the state
/// machine that reads and writes the socket, which someone must poll.
struct Connection {
    sender: http1::SendRequest<Body>,
    driver: http1::Connection<TokioIo<ApiStream>, Body>,
    /// Given back to the pool's count when the connection is dropped.
    _slot: OwnedSemaphorePermit,
}

/// The limits of a pool of connections to the API.
#[derive(Clone, Copy, Debug)]
pub struct PoolLimits {
    /// `API_CONNECT_TIMEOUT_SECS`: to connect, and to wait for a connection
    /// at the cap.
    pub connect_timeout: Duration,
    /// `API_IDLE_TIMEOUT_SECS`.
    pub idle_timeout: Duration,
    /// `API_MAX_CONNECTIONS`.
    pub max_connections: usize,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ApiClient")
            .field("host", &self.0.origin.host)
            .field("port", &self.0.origin.port)
            .finish_non_exhaustive()
    }
}

impl ApiClient {
    /// A pool for `api_host` (an origin, as the configuration checks).
    pub fn new(api_host: &Url, limits: PoolLimits) -> Result<Self, UrlNotAnOrigin> {
        let host = api_host.host_str().ok_or(UrlNotAnOrigin)?.to_owned();
        let port = api_host.port_or_known_default().ok_or(UrlNotAnOrigin)?;
        let host_header =
            http::HeaderValue::from_str(&api_host[Position::BeforeHost..Position::AfterPort])
                .map_err(|_| UrlNotAnOrigin)?;
        let tls_name = match api_host.scheme() {
            "http" => None,
            "https" => Some(
                ServerName::try_from(host.trim_matches(['[', ']']).to_owned())
                    .map_err(|_| UrlNotAnOrigin)?,
            ),
            _ => return Err(UrlNotAnOrigin),
        };
        Ok(Self(Arc::new(Pool {
            origin: Origin {
                host,
                port,
                host_header,
                tls_name,
            },
            tls: connect::tls_connector(),
            connect_timeout: limits.connect_timeout,
            idle_timeout: limits.idle_timeout,
            idle: Mutex::new(Vec::new()),
            slots: Arc::new(Semaphore::new(
                limits.max_connections.clamp(1, Semaphore::MAX_PERMITS),
            )),
            returned: Notify::new(),
        })))
    }

    /// Sends `request` (whose URI is the origin-form path and query) with
    /// the API's `Host`, and waits for the answer's head.
    pub async fn send(
        &self,
        mut request: http::Request<Body>,
    ) -> Result<http::Response<ApiBody>, UpstreamError> {
        request
            .headers_mut()
            .insert(http::header::HOST, self.0.origin.host_header.clone());
        // Only a request with a body makes progress once sent.
        let progress = (!http_body::Body::is_end_stream(request.body())).then(|| {
            Arc::new(Progress {
                start: Instant::now(),
                last: AtomicU64::new(0),
            })
        });
        if let Some(progress) = &progress {
            let progress = Arc::clone(progress);
            request = request.map(|body| Body::new(Uploading { body, progress }));
        }
        let idle_timeout = self.0.idle_timeout;
        loop {
            let (mut connection, reused) = self.connection().await?;
            // The clock runs from the request body's last progress, and at
            // the earliest from now: neither a steady upload nor the wait
            // for a connection counts as the API's silence.
            let sending = Instant::now();
            let deadline = || {
                let last = progress
                    .as_ref()
                    .map_or(sending, |progress| progress.last());
                last.max(sending) + idle_timeout
            };
            let mut driver_done = false;
            let sent = connection.sender.try_send_request(request);
            let mut sent = std::pin::pin!(sent);
            let mut timer = std::pin::pin!(tokio::time::sleep_until(deadline()));
            let answer = poll_fn(|cx| {
                drive(&mut connection.driver, &mut driver_done, cx);
                if let Poll::Ready(answer) = sent.as_mut().poll(cx) {
                    return Poll::Ready(Some(answer));
                }
                loop {
                    std::task::ready!(timer.as_mut().poll(cx));
                    let deadline = deadline();
                    if deadline <= Instant::now() {
                        return Poll::Ready(None);
                    }
                    timer.as_mut().reset(deadline);
                }
            })
            .await;
            match answer {
                Some(Ok(response)) => {
                    return Ok(self.answer(response, connection, driver_done));
                }
                Some(Err(mut error)) => match error.take_message() {
                    // A kept-alive connection the API had closed: the
                    // request was not sent, so it may go on a new one.
                    Some(unsent) if reused && error.error().is_canceled() => request = unsent,
                    _ => return Err(UpstreamError::Http(error.into_error())),
                },
                None => return Err(UpstreamError::Idle),
            }
        }
    }

    /// The answer, whose body drives `connection` and then returns it.
    fn answer(
        &self,
        response: http::Response<Incoming>,
        connection: Box<Connection>,
        driver_done: bool,
    ) -> http::Response<ApiBody> {
        let pool = Arc::clone(&self.0);
        response.map(|incoming| {
            let mut body = ApiBody {
                incoming,
                connection: (!driver_done).then_some(connection),
                pool,
                timer: None,
                waiting: false,
            };
            // A bodiless answer (204, 304, HEAD): the connection is free now,
            // whether or not the client's side ever polls the body.
            if http_body::Body::is_end_stream(&body.incoming) {
                body.release(&mut Context::from_waker(Waker::noop()));
            }
            body
        })
    }

    /// A connection to send on, and whether it was reused: an idle one, else
    /// a new one if the cap allows, else the first of those to come within
    /// the connect time-out.
    async fn connection(&self) -> Result<(Box<Connection>, bool), UpstreamError> {
        let pool = &self.0;
        let deadline = Instant::now() + pool.connect_timeout;
        loop {
            // Listening before looking: a connection returned in between
            // still wakes this request.
            let returned = pool.returned.notified();
            let mut returned = std::pin::pin!(returned);
            returned.as_mut().enable();
            if let Some(connection) = self.checkout() {
                return Ok((connection, true));
            }
            if let Ok(slot) = Arc::clone(&pool.slots).try_acquire_owned() {
                return Ok((self.connect(slot).await?, false));
            }
            tokio::select! {
                slot = Arc::clone(&pool.slots).acquire_owned() => {
                    // The semaphore is never closed.
                    let slot = slot.map_err(|_| UpstreamError::PoolFull)?;
                    return Ok((self.connect(slot).await?, false));
                }
                () = &mut returned => {}
                () = tokio::time::sleep_until(deadline) => return Err(UpstreamError::PoolFull),
            }
        }
    }

    /// An idle connection that still looks usable, if there is one.
    fn checkout(&self) -> Option<Box<Connection>> {
        let mut idle = self.0.idle.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(Idle {
            mut connection,
            since,
        }) = idle.pop()
        {
            if since.elapsed() > IDLE_LIFETIME {
                continue;
            }
            // Polling the idle connection once notices an API that closed it.
            let mut done = false;
            drive(
                &mut connection.driver,
                &mut done,
                &mut Context::from_waker(Waker::noop()),
            );
            if !done && connection.sender.is_ready() {
                return Some(connection);
            }
        }
        None
    }

    /// A new connection, boxed: it holds hyper's buffers, and moves between
    /// the pool, the request and the answer's body on every request.
    async fn connect(&self, slot: OwnedSemaphorePermit) -> Result<Box<Connection>, UpstreamError> {
        let pool = &self.0;
        let origin = &pool.origin;
        let tls = origin.tls_name.clone().map(|name| (&pool.tls, name));
        let connecting = connect::connect(&origin.host, origin.port, tls);
        let stream = tokio::time::timeout(pool.connect_timeout, connecting)
            .await
            .map_err(|_| UpstreamError::ConnectTimeout)?
            .map_err(|error| match error {
                ConnectError::Tcp(error) => UpstreamError::Connect(error),
                ConnectError::Tls(error) => UpstreamError::Tls(error),
            })?;
        let (sender, driver) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(UpstreamError::Http)?;
        Ok(Box::new(Connection {
            sender,
            driver,
            _slot: slot,
        }))
    }
}

/// When a request's body last moved (a chunk taken, or its end), for the
/// deadline of the answer's head.
struct Progress {
    start: Instant,
    /// Nanoseconds from `start` to the last progress.
    last: AtomicU64,
}

impl Progress {
    fn last(&self) -> Instant {
        self.start + Duration::from_nanos(self.last.load(Ordering::Relaxed))
    }

    fn moved(&self) {
        let since_start = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last.store(since_start, Ordering::Relaxed);
    }
}

/// A request body on its way to the API, noting its progress.
struct Uploading {
    body: Body,
    progress: Arc<Progress>,
}

impl http_body::Body for Uploading {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(None | Some(Ok(_))) = polled {
            self.progress.moved();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// `API_HOST` is not an `http`/`https` origin with a host.
#[derive(Debug, thiserror::Error)]
#[error("API_HOST must be an http:// or https:// origin")]
pub struct UrlNotAnOrigin;

/// Polls the connection's state machine, unless it has already ended.
fn drive(
    driver: &mut http1::Connection<TokioIo<ApiStream>, Body>,
    done: &mut bool,
    cx: &mut Context<'_>,
) {
    if !*done && Pin::new(driver).poll(cx).is_ready() {
        // Ended (closed, or failed: the pending answer reports the error).
        *done = true;
    }
}

/// The body of an answer from the API. Polling it drives the connection;
/// at its end the connection returns to the pool. Dropped before its end,
/// it closes the connection.
pub struct ApiBody {
    incoming: Incoming,
    /// `None` once the connection has ended or gone back to the pool.
    connection: Option<Box<Connection>>,
    pool: Arc<Pool>,
    timer: Option<Pin<Box<Sleep>>>,
    /// The last poll found no chunk ready: the idle clock runs.
    waiting: bool,
}

impl ApiBody {
    /// Puts the connection back in the pool if it can take another request.
    fn release(&mut self, cx: &mut Context<'_>) {
        let Some(mut connection) = self.connection.take() else {
            return;
        };
        // Lets the state machine finish the exchange and become idle.
        let mut done = false;
        drive(&mut connection.driver, &mut done, cx);
        if done || !connection.sender.is_ready() {
            return;
        }
        let mut idle = self
            .pool
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE {
            idle.push(Idle {
                connection,
                since: Instant::now(),
            });
            drop(idle);
            self.pool.returned.notify_one();
        }
    }

    /// Whether the API stayed silent for the idle time-out since this body
    /// was first asked for a chunk it did not have.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> bool {
        let deadline = Instant::now() + self.pool.idle_timeout;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !self.waiting {
            // A new wait begins: a client that was slow to ask for the next
            // chunk does not count against the API.
            self.waiting = true;
            timer.as_mut().reset(deadline);
        }
        timer.as_mut().poll(cx).is_ready()
    }
}

impl Drop for ApiBody {
    fn drop(&mut self) {
        // Read to its end, though nobody polled past it: still reusable.
        if http_body::Body::is_end_stream(&self.incoming) {
            self.release(&mut Context::from_waker(Waker::noop()));
        }
    }
}

impl http_body::Body for ApiBody {
    type Data = Bytes;
    type Error = UpstreamError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        let this = &mut *self;
        if let Some(connection) = &mut this.connection {
            let mut done = false;
            drive(&mut connection.driver, &mut done, cx);
            if done {
                this.connection = None;
            }
        }
        match Pin::new(&mut this.incoming).poll_frame(cx) {
            Poll::Ready(Some(frame)) => {
                this.waiting = false;
                // The last chunk of a body of known length: the server
                // writing it out may never ask for the end, so the
                // connection is freed now.
                if this.incoming.is_end_stream() {
                    this.release(cx);
                }
                Poll::Ready(Some(frame.map_err(UpstreamError::Http)))
            }
            Poll::Ready(None) => {
                this.release(cx);
                Poll::Ready(None)
            }
            Poll::Pending if this.poll_idle(cx) => Poll::Ready(Some(Err(UpstreamError::Idle))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming.size_hint()
    }
}

/// A pool of connections to the API, with the configured time-outs. It
/// follows no redirect: a redirect is the API's answer to the client, and
/// following it here would send a signed request wherever it points.
pub fn client(config: &Config) -> Result<ApiClient, UrlNotAnOrigin> {
    let limits = PoolLimits {
        connect_timeout: config.api_connect_timeout(),
        idle_timeout: config.api_idle_timeout(),
        max_connections: usize::try_from(config.api_max_connections).unwrap_or(usize::MAX),
    };
    ApiClient::new(&config.api_host, limits)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::BodyExt as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpListener;

    use super::*;

    /// How the test server answers each request on a connection.
    #[derive(Clone, Copy)]
    enum Script {
        /// `ok`, and the connection stays open.
        KeepAlive,
        /// `ok`, then the server closes the connection (without saying so).
        CloseAfterAnswer,
        /// The head and `sent` bytes of a `total`-byte body, then silence.
        Stall { sent: usize, total: usize },
        /// The head; after `first`, `ab`; after `pause`, `cd`.
        Trickle { first: Duration, pause: Duration },
        /// `ok` after this long, and the connection stays open.
        Delayed(Duration),
    }

    /// A bare HTTP/1.1 server on 127.0.0.1:0 that counts its connections.
    async fn server(script: Script) -> (Url, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url =
            Url::parse(&format!("http://{}", listener.local_addr().expect("addr"))).expect("url");
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&connections);
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buffer = [0_u8; 1024];
                    loop {
                        let Ok(read) = socket.read(&mut buffer).await else {
                            return;
                        };
                        if read == 0 {
                            return;
                        }
                        request.extend_from_slice(&buffer[..read]);
                        if !request.windows(4).any(|window| window == b"\r\n\r\n") {
                            continue;
                        }
                        request.clear();
                        match script {
                            Script::KeepAlive | Script::CloseAfterAnswer => {
                                let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                                if socket.write_all(answer).await.is_err() {
                                    return;
                                }
                                if matches!(script, Script::CloseAfterAnswer) {
                                    return;
                                }
                            }
                            Script::Stall { sent, total } => {
                                let head =
                                    format!("HTTP/1.1 200 OK\r\ncontent-length: {total}\r\n\r\n");
                                let _ = socket.write_all(head.as_bytes()).await;
                                let _ = socket.write_all(&vec![b'x'; sent]).await;
                                std::future::pending::<()>().await;
                            }
                            Script::Delayed(delay) => {
                                tokio::time::sleep(delay).await;
                                let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                                if socket.write_all(answer).await.is_err() {
                                    return;
                                }
                            }
                            Script::Trickle { first, pause } => {
                                let head = "HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n";
                                let _ = socket.write_all(head.as_bytes()).await;
                                tokio::time::sleep(first).await;
                                let _ = socket.write_all(b"ab").await;
                                tokio::time::sleep(pause).await;
                                let _ = socket.write_all(b"cd").await;
                            }
                        }
                    }
                });
            }
        });
        (url, connections)
    }

    fn get() -> http::Request<Body> {
        let mut request = http::Request::new(Body::empty());
        *request.uri_mut() = http::Uri::from_static("/v2/self");
        request
    }

    async fn body_of(client: &ApiClient) -> Result<Bytes, UpstreamError> {
        let answer = client.send(get()).await?;
        Ok(answer.into_body().collect().await?.to_bytes())
    }

    fn client(url: &Url, idle: Duration) -> ApiClient {
        let limits = PoolLimits {
            connect_timeout: Duration::from_secs(5),
            idle_timeout: idle,
            max_connections: 8,
        };
        ApiClient::new(url, limits).expect("client")
    }

    /// A pool of one connection, waiting `wait` for it at most.
    fn one_connection(url: &Url, wait: Duration) -> ApiClient {
        let limits = PoolLimits {
            connect_timeout: wait,
            idle_timeout: Duration::from_secs(10),
            max_connections: 1,
        };
        ApiClient::new(url, limits).expect("client")
    }

    #[tokio::test]
    async fn at_the_cap_a_request_waits_for_the_connection_in_use_and_reuses_it() {
        let (url, connections) = server(Script::Delayed(Duration::from_millis(300))).await;
        let client = one_connection(&url, Duration::from_secs(10));

        let (first, second) = tokio::join!(body_of(&client), body_of(&client));

        assert_eq!(first.ok().as_deref(), Some(&b"ok"[..]));
        assert_eq!(second.ok().as_deref(), Some(&b"ok"[..]));
        assert_eq!(connections.load(Ordering::SeqCst), 1, "never past the cap");
    }

    #[tokio::test]
    async fn at_the_cap_a_request_that_waits_past_the_connect_time_out_fails() {
        // Answers whose bodies never end: the connection stays in use.
        let (url, connections) = server(Script::Stall { sent: 0, total: 10 }).await;
        let client = one_connection(&url, Duration::from_millis(200));

        let busy = client.send(get()).await.expect("head");
        let refused = client.send(get()).await.err();
        drop(busy);
        let after = client.send(get()).await;

        assert!(
            matches!(refused, Some(UpstreamError::PoolFull)),
            "{refused:?}"
        );
        assert!(
            after.is_ok(),
            "a dropped answer frees its connection's slot"
        );
        assert_eq!(connections.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn one_connection_serves_requests_one_after_the_other() {
        let (url, connections) = server(Script::KeepAlive).await;
        let client = client(&url, Duration::from_secs(5));

        for _ in 0..5 {
            assert_eq!(body_of(&client).await.ok().as_deref(), Some(&b"ok"[..]));
        }

        assert_eq!(connections.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_body_read_to_its_length_frees_the_connection_even_if_not_polled_to_its_end() {
        let (url, connections) = server(Script::KeepAlive).await;
        let client = client(&url, Duration::from_secs(5));

        for _ in 0..3 {
            // As a server relaying a body of known length does: it stops
            // polling once it has the announced bytes.
            let mut body = client.send(get()).await.expect("head").into_body();
            let chunk = body
                .frame()
                .await
                .and_then(|frame| frame.ok()?.into_data().ok());
            assert_eq!(chunk.as_deref(), Some(&b"ok"[..]));
            assert!(http_body::Body::is_end_stream(&body));
        }

        assert_eq!(connections.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_connection_the_api_closed_is_replaced_without_failing_the_request() {
        let (url, connections) = server(Script::CloseAfterAnswer).await;
        let client = client(&url, Duration::from_secs(5));

        for _ in 0..3 {
            assert_eq!(body_of(&client).await.ok().as_deref(), Some(&b"ok"[..]));
            // Whether the close is seen before or after the next send, the
            // next request must not fail.
            tokio::task::yield_now().await;
        }

        assert_eq!(connections.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_silent_api_is_cut_after_the_idle_time_out_between_chunks() {
        let (url, _) = server(Script::Stall {
            sent: 10,
            total: 100,
        })
        .await;
        let client = client(&url, Duration::from_millis(200));

        let answer = client.send(get()).await.expect("head");
        let read = answer.into_body().collect().await;

        assert!(matches!(read, Err(UpstreamError::Idle)));
    }

    #[tokio::test]
    async fn a_client_slow_to_read_does_not_count_as_a_silent_api() {
        // The API sends `ab` after 100 ms, then `cd` 700 ms later; the idle
        // time-out is 300 ms. The reader waits for `ab`, comes back 600 ms
        // later (longer than the time-out), and `cd` comes 100 ms after.
        let (url, _) = server(Script::Trickle {
            first: Duration::from_millis(100),
            pause: Duration::from_millis(700),
        })
        .await;
        let client = client(&url, Duration::from_millis(300));
        let mut body = client.send(get()).await.expect("head").into_body();

        let first = body
            .frame()
            .await
            .and_then(|frame| frame.ok()?.into_data().ok());
        tokio::time::sleep(Duration::from_millis(600)).await;
        let rest = body.collect().await.map(|rest| rest.to_bytes());

        assert_eq!(first.as_deref(), Some(&b"ab"[..]));
        assert_eq!(rest.ok().as_deref(), Some(&b"cd"[..]));
    }

    #[tokio::test]
    async fn an_api_that_refuses_connections_is_a_connect_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url =
            Url::parse(&format!("http://{}", listener.local_addr().expect("addr"))).expect("url");
        drop(listener);
        let client = client(&url, Duration::from_secs(1));

        let error = client.send(get()).await.err();

        assert!(
            matches!(&error, Some(error) if error.is_connect() && !error.is_timeout()),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn an_https_api_with_an_untrusted_certificate_is_a_tls_error() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let key = rcgen::KeyPair::generate().expect("key");
        let certificate = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("certificate");
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(
                vec![certificate.der().clone()],
                rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).expect("key der"),
            )
            .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let handshakes = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&handshakes);
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let _ = acceptor.accept(socket).await;
            }
        });
        let url = Url::parse(&format!("https://localhost:{port}")).expect("url");

        let error = client(&url, Duration::from_secs(5)).send(get()).await.err();

        assert!(matches!(error, Some(UpstreamError::Tls(_))), "{error:?}");
        assert_eq!(
            handshakes.load(Ordering::SeqCst),
            1,
            "the handshake was tried"
        );
    }

    #[test]
    fn only_http_origins_make_a_client() {
        let limits = PoolLimits {
            connect_timeout: Duration::ZERO,
            idle_timeout: Duration::ZERO,
            max_connections: 1,
        };
        for bad in ["ftp://example.com", "unix:/tmp/socket"] {
            let url = Url::parse(bad).expect("url");
            assert!(ApiClient::new(&url, limits).is_err(), "{bad}");
        }
        let url = Url::parse("https://api.clever-cloud.com").expect("url");
        let client = ApiClient::new(&url, limits).expect("client");
        assert_eq!(client.0.origin.port, 443);
        assert_eq!(client.0.origin.host_header, "api.clever-cloud.com");
    }
}
