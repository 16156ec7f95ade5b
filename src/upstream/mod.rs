//! Everything that goes out to the Clever Cloud API from the proxy and the
//! relays: connecting (TCP, TLS, time-outs, a DNS cache), the pooled
//! HTTP/1.1 client, and the WebSocket client handshake; and the one place
//! calls to the API are timed and counted.
//!
//! The OAuth calls (`oauth::client`) keep reqwest: they are small,
//! whole-body request/answer exchanges (a form-encoded answer, a JSON one)
//! made a few times per login, where reqwest's request building and body
//! reading read better than the pool's streaming interface; they are timed
//! and counted through [`timed`] like the rest.

pub mod connect;
pub mod handshake;
pub mod pool;
pub mod websocket;

use std::future::Future;
use std::time::Instant;

use crate::metrics::{Metrics, UpstreamOutcome};

/// Runs `call`, then counts it under `upstream` in `metrics` with the time
/// it took and the outcome `outcome` reads from its result (`None`: it
/// never reached the network, so it is not counted).
pub async fn timed<T>(
    metrics: &Metrics,
    upstream: &'static str,
    call: impl Future<Output = T>,
    outcome: impl FnOnce(&T) -> Option<UpstreamOutcome>,
) -> T {
    let started = Instant::now();
    let result = call.await;
    if let Some(outcome) = outcome(&result) {
        metrics.record_upstream(upstream, started.elapsed(), outcome);
    }
    result
}
