//! Log output through `tracing`, and what every request leaves behind: a
//! request id, a span around its work, one log line, its metrics.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue};
use axum::response::Response;
use rand::RngCore as _;
use tracing::Instrument as _;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;
use crate::forwarded::ClientInfo;
use crate::metrics::UNMATCHED_ROUTE;
use crate::state::AppState;

/// The header a request id comes in and goes back out with.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest request id taken from a client.
const MAX_REQUEST_ID_LEN: usize = 128;

/// Routes polled by load balancers and scrapers: logged at debug, not info,
/// so they do not drown the rest.
const QUIET_ROUTES: [&str; 3] = ["/health", "/ready", "/metrics"];

/// Installs the global subscriber: level from `RUST_LOG` (default `info`),
/// text or one JSON object per line.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// A request's id, as a request extension for handlers that want it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RequestId(pub(crate) String);

/// The client's id when it is sane (short, printable, no separators that
/// could forge log structure), else a new random one.
pub(crate) fn request_id(presented: Option<&HeaderValue>) -> RequestId {
    let sane = presented
        .and_then(|value| value.to_str().ok())
        .filter(|id| {
            (1..=MAX_REQUEST_ID_LEN).contains(&id.len())
                && id
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || b"-_.:".contains(&byte))
        });
    RequestId(sane.map_or_else(new_request_id, str::to_owned))
}

fn new_request_id() -> String {
    let mut bytes = [0_u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    crate::hex::encode(&bytes)
}

/// Middleware around every route: gives the request an id (returned in
/// `X-Request-Id`), runs it inside a span carrying that id, then logs one
/// line (method, route template, status, latency) and counts it.
///
/// Only the route template is logged, never the path or query: callback
/// URLs carry request tokens and verifiers.
///
/// A tower layer rather than `axum::middleware::from_fn`, which boxes the
/// rest of the stack and the future on every request: this runs on every
/// proxied call.
#[derive(Clone)]
pub(crate) struct Track {
    state: AppState,
}

impl Track {
    /// Tracking with `state`'s metrics and trusted proxies.
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

impl<S> tower::Layer<S> for Track {
    type Service = Tracked<S>;

    fn layer(&self, inner: S) -> Tracked<S> {
        Tracked {
            inner,
            state: self.state.clone(),
        }
    }
}

/// A service wrapped by [`Track`].
#[derive(Clone)]
pub(crate) struct Tracked<S> {
    inner: S,
    state: AppState,
}

impl<S> tower::Service<Request> for Tracked<S>
where
    S: tower::Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = TrackedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let started = Instant::now();
        let id = request_id(request.headers().get(&REQUEST_ID));
        // A checked id is header-safe; the fallback is never used.
        let id_header =
            HeaderValue::from_str(&id.0).unwrap_or_else(|_| HeaderValue::from_static("invalid"));
        let route = request.extensions().get::<MatchedPath>().cloned();
        let route_name = route.as_ref().map_or(UNMATCHED_ROUTE, MatchedPath::as_str);
        let method = request.method().clone();
        let client = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(peer)| self.state.trusted_proxies.client(*peer, request.headers()));
        if let Some(client) = client {
            request.extensions_mut().insert(client);
        }
        // Fields are only formatted when the span is enabled.
        let client = OrUnknown(client);
        let quiet = QUIET_ROUTES.contains(&route_name);
        let span = if quiet {
            tracing::debug_span!("request", request_id = %id.0, method = %method, route = %route_name, client = %client)
        } else {
            tracing::info_span!("request", request_id = %id.0, method = %method, route = %route_name, client = %client)
        };
        request.extensions_mut().insert(id);
        let inner = span.in_scope(|| self.inner.call(request));
        TrackedFuture {
            inner: inner.instrument(span),
            done: Some(Done {
                started,
                id_header,
                route,
                method,
                quiet,
                metrics: Arc::clone(&self.state.metrics),
            }),
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of a [`Tracked`] call: the inner call, then the log line,
    /// the metrics and the `X-Request-Id` header.
    pub struct TrackedFuture<F> {
        #[pin]
        inner: tracing::instrument::Instrumented<F>,
        done: Option<Done>,
    }
}

/// What the end of a tracked request needs.
struct Done {
    started: Instant,
    id_header: HeaderValue,
    route: Option<MatchedPath>,
    method: axum::http::Method,
    quiet: bool,
    metrics: Arc<crate::metrics::Metrics>,
}

impl<F, E> Future for TrackedFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let mut response = std::task::ready!(this.inner.as_mut().poll(cx))?;
        if let Some(done) = this.done.take() {
            let latency = done.started.elapsed();
            let status = response.status().as_u16();
            let latency_ms = latency.as_secs_f64() * 1000.0;
            this.inner.span().in_scope(|| {
                if done.quiet {
                    tracing::debug!(status, latency_ms, "request");
                } else if response.status().is_server_error() {
                    tracing::warn!(status, latency_ms, "request");
                } else {
                    tracing::info!(status, latency_ms, "request");
                }
            });
            let route = done
                .route
                .as_ref()
                .map_or(UNMATCHED_ROUTE, MatchedPath::as_str);
            done.metrics
                .record_request(&done.method, route, status, latency);
            response
                .headers_mut()
                .insert(REQUEST_ID.clone(), done.id_header);
        }
        Poll::Ready(Ok(response))
    }
}

/// The client's address, or `unknown` when the connection did not say.
struct OrUnknown(Option<ClientInfo>);

impl std::fmt::Display for OrUnknown {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(client) => client.fmt(formatter),
            None => formatter.write_str("unknown"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sane_ids_are_kept_and_others_replaced() {
        let kept = request_id(Some(&HeaderValue::from_static("abc-123_x.y:z")));
        assert_eq!(kept.0, "abc-123_x.y:z");

        for bad in ["", "has space", "quote\"", "new\\nline", "{json}"] {
            let value = HeaderValue::from_str(bad).unwrap_or(HeaderValue::from_static(""));
            let replaced = request_id(Some(&value));
            assert_ne!(replaced.0, bad);
            assert_eq!(replaced.0.len(), 32);
        }
        let long = "a".repeat(MAX_REQUEST_ID_LEN + 1);
        let value = HeaderValue::from_str(&long).unwrap_or(HeaderValue::from_static(""));
        assert_eq!(request_id(Some(&value)).0.len(), 32);
        assert_ne!(request_id(None).0, request_id(None).0);
    }
}
