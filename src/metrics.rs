//! Prometheus metrics: what the server counts, and `GET /metrics`.
//!
//! Each [`AppState`] has its own [`Metrics`] (a registry per application,
//! not a process-wide one), so tests that run several servers in one process
//! read exact figures. The endpoint exists only when `METRICS_TOKEN` is set,
//! and then answers only `Authorization: Bearer <METRICS_TOKEN>`.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Media type of the OpenMetrics text format, which Prometheus scrapes.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The route label of requests that matched no route, so that scanners
/// probing random paths cannot grow the label set without bound.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// The `method` label of a method outside the standard ones: any client
/// can make up methods, and each would otherwise be a series of its own.
pub const OTHER_METHOD: &str = "other";

/// The standard methods (RFC 9110 §9 and PATCH), which keep their name as
/// a label.
const STANDARD_METHODS: [http::Method; 9] = [
    http::Method::GET,
    http::Method::HEAD,
    http::Method::POST,
    http::Method::PUT,
    http::Method::DELETE,
    http::Method::CONNECT,
    http::Method::OPTIONS,
    http::Method::TRACE,
    http::Method::PATCH,
];

/// The `method` label of `method`: its name if standard, else
/// [`OTHER_METHOD`].
pub fn method_label(method: &http::Method) -> &'static str {
    STANDARD_METHODS
        .iter()
        .find(|standard| *standard == method)
        .map_or(OTHER_METHOD, http::Method::as_str)
}

/// Every label comes from a closed set: a standard method or `other`, a
/// route template (or [`UNMATCHED_ROUTE`]), a status code. Nothing the
/// client writes becomes a label as is.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    upstream: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamName {
    upstream: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Latency buckets from 1 ms to about 33 s (doubling): page renders are
/// milliseconds, API calls up to the OAuth call time-out.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// How one call to the Clever Cloud API ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamOutcome {
    /// The API answered with this status.
    Status(u16),
    /// The API did not answer in time.
    Timeout,
    /// The API could not be reached (connection refused, DNS, TLS, reset).
    Unreachable,
    /// The API answered something unusable.
    Invalid,
    /// No connection to the API was free in time (`API_MAX_CONNECTIONS`).
    PoolFull,
}

impl UpstreamOutcome {
    /// The `outcome` label: a status class, or what went wrong.
    pub fn label(self) -> &'static str {
        match self {
            Self::Status(100..=199) => "1xx",
            Self::Status(200..=299) => "2xx",
            Self::Status(300..=399) => "3xx",
            Self::Status(400..=499) => "4xx",
            Self::Status(_) => "5xx",
            Self::Timeout => "timeout",
            Self::Unreachable => "unreachable",
            Self::Invalid => "invalid",
            Self::PoolFull => "pool_full",
        }
    }

    /// Whether the API failed (as opposed to refusing the caller with a 4xx).
    pub fn is_error(self) -> bool {
        !matches!(self, Self::Status(0..=499))
    }
}

/// Everything the server counts.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_duration: HistogramFamily<RouteLabels>,
    upstream_requests: Family<UpstreamLabels, Counter>,
    upstream_errors: Family<UpstreamLabels, Counter>,
    upstream_duration: HistogramFamily<UpstreamName>,
    relays_open: Gauge,
    logins: Counter,
    proxy_tokens_created: Counter,
    proxy_tokens_revoked: Counter,
    proxy_token_refusals: Family<RefusalLabels, Counter>,
}

/// Why a proxy-token call was refused: a fixed word, never from the request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct RefusalLabels {
    reason: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric at zero.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, route template and status",
            requests.clone(),
        );
        let request_duration: HistogramFamily<RouteLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "http_request_duration_seconds",
            "Time to answer a request (until the response head), by route template",
            request_duration.clone(),
        );
        let upstream_requests = Family::<UpstreamLabels, Counter>::default();
        registry.register(
            "upstream_requests",
            "Calls to the Clever Cloud API, by upstream and outcome",
            upstream_requests.clone(),
        );
        let upstream_errors = Family::<UpstreamLabels, Counter>::default();
        registry.register(
            "upstream_errors",
            "Calls to the Clever Cloud API that failed (5xx, time-out, unreachable, invalid answer)",
            upstream_errors.clone(),
        );
        let upstream_duration: HistogramFamily<UpstreamName> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "upstream_request_duration_seconds",
            "Time the Clever Cloud API took to answer, by upstream",
            upstream_duration.clone(),
        );
        let relays_open = Gauge::default();
        registry.register(
            "relays_open",
            "WebSocket relays open right now",
            relays_open.clone(),
        );
        let logins = Counter::default();
        registry.register("logins", "Logins completed", logins.clone());
        let proxy_tokens_created = Counter::default();
        registry.register(
            "proxy_tokens_created",
            "Proxy tokens created on this instance",
            proxy_tokens_created.clone(),
        );
        let proxy_tokens_revoked = Counter::default();
        registry.register(
            "proxy_tokens_revoked",
            "Proxy tokens revoked on this instance",
            proxy_tokens_revoked.clone(),
        );
        let proxy_token_refusals = Family::<RefusalLabels, Counter>::default();
        registry.register(
            "proxy_token_refusals",
            "Calls with a valid proxy token refused by its scope or its addresses",
            proxy_token_refusals.clone(),
        );
        Self {
            registry,
            proxy_token_refusals,
            requests,
            request_duration,
            upstream_requests,
            upstream_errors,
            upstream_duration,
            relays_open,
            logins,
            proxy_tokens_created,
            proxy_tokens_revoked,
        }
    }

    /// Counts one answered request. `route` is the matched route template
    /// (or [`UNMATCHED_ROUTE`]), never the raw path.
    pub fn record_request(
        &self,
        method: &http::Method,
        route: &str,
        status: u16,
        latency: Duration,
    ) {
        self.requests
            .get_or_create(&RequestLabels {
                method: method_label(method),
                route: route.to_owned(),
                status,
            })
            .inc();
        self.request_duration
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
            })
            .observe(latency.as_secs_f64());
    }

    /// Counts one call to the API: `upstream` names the kind of call
    /// (`"oauth"`, `"api"`, `"events"`, …), `latency` runs until the answer's
    /// head (or the failure).
    pub fn record_upstream(
        &self,
        upstream: &'static str,
        latency: Duration,
        outcome: UpstreamOutcome,
    ) {
        let labels = UpstreamLabels {
            upstream,
            outcome: outcome.label(),
        };
        self.upstream_requests.get_or_create(&labels).inc();
        if outcome.is_error() {
            self.upstream_errors.get_or_create(&labels).inc();
        }
        self.upstream_duration
            .get_or_create(&UpstreamName { upstream })
            .observe(latency.as_secs_f64());
    }

    /// The `relays_open` gauge, for the relay registry to keep its count in
    /// (a clone shares the same atomic).
    pub fn relays_open_gauge(&self) -> Gauge {
        self.relays_open.clone()
    }

    /// Counts a completed login.
    pub fn login(&self) {
        self.logins.inc();
    }

    /// Counts a proxy token created.
    pub fn proxy_token_created(&self) {
        self.proxy_tokens_created.inc();
    }

    /// Counts a proxy token revoked.
    pub fn proxy_token_revoked(&self) {
        self.proxy_tokens_revoked.inc();
    }

    /// Counts a call with a valid proxy token refused for `reason`
    /// (`scope` or `address`).
    pub fn proxy_token_refused(&self, reason: &'static str) {
        self.proxy_token_refusals
            .get_or_create(&RefusalLabels { reason })
            .inc();
    }

    /// The whole registry in the OpenMetrics text format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_labelled_by_class_and_errors_exclude_refusals() {
        assert_eq!(UpstreamOutcome::Status(204).label(), "2xx");
        assert_eq!(UpstreamOutcome::Status(401).label(), "4xx");
        assert_eq!(UpstreamOutcome::Status(503).label(), "5xx");
        assert!(!UpstreamOutcome::Status(401).is_error());
        assert!(UpstreamOutcome::Status(502).is_error());
        assert!(UpstreamOutcome::Timeout.is_error());
        assert!(UpstreamOutcome::Unreachable.is_error());
    }

    #[test]
    fn the_text_holds_every_family_with_its_labels() -> Result<(), std::fmt::Error> {
        let metrics = Metrics::new();
        metrics.record_request(&http::Method::GET, "/login", 200, Duration::from_millis(3));
        metrics.record_upstream("oauth", Duration::from_millis(40), UpstreamOutcome::Timeout);
        metrics.login();
        metrics.relays_open_gauge().inc();
        let text = metrics.encode()?;
        assert!(
            text.contains(r#"http_requests_total{method="GET",route="/login",status="200"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"http_request_duration_seconds_count{route="/login"} 1"#));
        assert!(text.contains(r#"upstream_errors_total{upstream="oauth",outcome="timeout"} 1"#));
        assert!(text.contains("logins_total 1"));
        assert!(text.contains("relays_open 1"));
        Ok(())
    }

    #[test]
    fn made_up_methods_share_one_label() -> Result<(), Box<dyn std::error::Error>> {
        assert_eq!(method_label(&http::Method::PATCH), "PATCH");
        assert_eq!(method_label(&http::Method::TRACE), "TRACE");
        let metrics = Metrics::new();
        for n in 0..50 {
            let method = http::Method::from_bytes(format!("XM{n:04}").as_bytes())?;
            assert_eq!(method_label(&method), OTHER_METHOD);
            metrics.record_request(&method, UNMATCHED_ROUTE, 405, Duration::ZERO);
        }
        let text = metrics.encode()?;
        assert!(
            text.contains(
                r#"http_requests_total{method="other",route="unmatched",status="405"} 50"#
            ),
            "{text}"
        );
        assert!(!text.contains("XM00"), "{text}");
        Ok(())
    }
}
