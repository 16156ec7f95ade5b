//! A fake Clever Cloud API for the integration tests: the OAuth 1.0a dance
//! endpoints and a few API calls, all checking signatures with the fake's own
//! code ([`verify`]). It runs on `127.0.0.1:0` in a spawned task and records
//! everything it receives.

mod api;
mod dance;
mod log_streams;
mod sockets;
mod state;
pub mod verify;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State as AxumState};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use futures_util::TryStreamExt as _;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use log_streams::{
    AccessLog, AppLog, FAKE_DEPLOYMENT_ID, FAKE_INSTANCE_ID, LogKind, LogStreamRequest,
};
pub use sockets::{AUTH_FAILED_CLOSE, FakeSocket};
pub use state::{IssuedToken, PendingRequestToken, RecordedRequest};
use state::{Refusal, State};
use verify::{RequestParts, SignedRequest};

/// The fake user's id, as `/v2/self` and the OAuth callback give it.
pub const FAKE_USER_ID: &str = "user_00000000-0000-4000-8000-00000000ada1";
/// The fake user's name.
pub const FAKE_USER_NAME: &str = "Ada Lovelace";
/// The organisation the fake user is a member of, beside their personal
/// space (whose id is the user's).
pub const FAKE_ORGANISATION_ID: &str = "orga_3a9e1a4c-1f00-4d2b-8f00-000000000042";
/// The fake user's email.
pub const FAKE_USER_EMAIL: &str = "ada@example.com";

const REQUEST_TOKEN_PATH: &str = "/v2/oauth/request_token";
const AUTHORIZE_PATH: &str = "/v2/oauth/authorize";
const ACCESS_TOKEN_PATH: &str = "/v2/oauth/access_token";
const OAUTH_PREFIX: &str = "/v2/oauth/";

/// How the fake misbehaves, switched at any time with [`FakeApi::set_mode`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mode {
    /// Behave like the real API.
    #[default]
    Normal,
    /// The token endpoints answer 401 with a text body.
    RejectConsumer,
    /// Every endpoint accepts the request and never answers.
    Hang,
    /// The token endpoints answer 200 with an HTML body instead of tokens.
    Garbage,
    /// Every endpoint answers 500.
    ServerError,
    /// Every endpoint answers normally, after this many milliseconds.
    Slow(u64),
}

type SharedState = Arc<Mutex<State>>;

/// Locks the state; a panic in another handler must not hide this one's.
fn lock(state: &SharedState) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Seconds since the Unix epoch.
fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// A running fake API. The server stops when this is dropped.
#[derive(Debug)]
pub struct FakeApi {
    addr: SocketAddr,
    state: SharedState,
    /// `None` once stopped; behind a lock so that a fake shared by several
    /// servers under test can be stopped through a shared reference.
    server: tokio::sync::Mutex<Option<JoinHandle<()>>>,
}

impl FakeApi {
    /// The consumer key registered from the start.
    pub const CONSUMER_KEY: &'static str = "fake-consumer-key";
    /// Its secret, with characters that must be percent-encoded in the
    /// signing key (`&`, `/`, `+`, `!`, `*`, space).
    pub const CONSUMER_SECRET: &'static str = "fake-consumer-secret&with/special+chars! *";

    /// Binds `127.0.0.1:0` and serves the fake in a spawned task.
    pub async fn start() -> Self {
        let state = SharedState::default();
        lock(&state).register_consumer(Self::CONSUMER_KEY, Self::CONSUMER_SECRET);
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("fake API: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("fake API: local address");
        let app = router(state.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("fake API: serve");
        });
        Self {
            addr,
            state,
            server: tokio::sync::Mutex::new(Some(server)),
        }
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address the fake listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving and closes the listening socket, to play an API that
    /// is down (connections already open stay open).
    pub async fn stop(&self) {
        if let Some(server) = self.server.lock().await.take() {
            server.abort();
            let _ = server.await;
        }
    }

    /// Changes how the fake answers from the next request on.
    pub fn set_mode(&self, mode: Mode) {
        lock(&self.state).mode = mode;
    }

    /// Registers (or replaces) a consumer, e.g. a visitor's own.
    pub fn register_consumer(&self, key: &str, secret: &str) {
        lock(&self.state).register_consumer(key, secret);
    }

    /// Issues an access token to `consumer_key` without the dance, for tests
    /// that only need a logged-in caller.
    pub fn issue_access_token(&self, consumer_key: &str) -> IssuedToken {
        lock(&self.state).issue_access_token(consumer_key, FAKE_USER_ID)
    }

    /// Access tokens issued from now on expire `lifetime` after they are
    /// issued, as the API says in the access-token answer.
    pub fn set_access_token_lifetime(&self, lifetime: time::Duration) {
        lock(&self.state).access_token_lifetime = Some(lifetime);
    }

    /// `GET /v2/self` answers 403 (`true`), as it does for a consumer
    /// without the right to read the account, or the token's user.
    pub fn refuse_self(&self, refuse: bool) {
        lock(&self.state).refuse_self = refuse;
    }

    /// `GET /v2/self` answers 503 (`true`): the API is failing.
    pub fn fail_self(&self, fail: bool) {
        lock(&self.state).fail_self = fail;
    }

    /// Every request received so far, refused ones included, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.state).requests.clone()
    }

    /// How many requests went to the API outside the login: not to
    /// `/v2/oauth/`, and not a login's identity check (`GET /v2/self` with
    /// the token just issued).
    pub fn api_request_count(&self) -> usize {
        let state = lock(&self.state);
        let outside_oauth = state
            .requests
            .iter()
            .filter(|request| !request.path.starts_with(OAUTH_PREFIX))
            .count();
        outside_oauth - state.identity_checks
    }

    /// How many logins asked the API whom their token is for.
    pub fn identity_checks(&self) -> usize {
        lock(&self.state).identity_checks
    }

    /// Access tokens issued so far.
    pub fn issued_access_tokens(&self) -> Vec<IssuedToken> {
        lock(&self.state).access_tokens().to_vec()
    }

    /// Request tokens issued and not yet exchanged.
    pub fn pending_request_tokens(&self) -> Vec<PendingRequestToken> {
        lock(&self.state).request_tokens().to_vec()
    }

    /// New real-time sockets send a heartbeat ping every `period`
    /// (`None`: never, the default).
    pub fn set_heartbeat_interval(&self, period: Option<std::time::Duration>) {
        lock(&self.state).socket_settings.heartbeat = period;
    }

    /// New real-time sockets refuse every OAuth message (error 2001, close
    /// 4001), as for a revoked token.
    pub fn refuse_socket_auth(&self, refuse: bool) {
        lock(&self.state).socket_settings.refuse_auth = refuse;
    }

    /// The real-time sockets accepted so far, oldest first.
    pub fn sockets(&self) -> Vec<FakeSocket> {
        lock(&self.state).sockets.clone()
    }

    /// The `index`-th real-time socket, waiting (at most 20 s) for it to be
    /// opened and authenticated (or refused).
    pub async fn socket(&self, index: usize) -> FakeSocket {
        let opened = sockets::wait_for(|| {
            lock(&self.state)
                .sockets
                .get(index)
                .is_some_and(|socket| socket.auth().is_some())
        })
        .await;
        assert!(opened, "fake API: socket {index} never authenticated");
        self.sockets()[index].clone()
    }

    /// Writes an application log line for `app_id`; the v4 streams send
    /// it as event `id`, returned.
    pub fn write_app_log(&self, app_id: &str, line: AppLog) -> u64 {
        lock(&self.state).log_streams.write_app_log(app_id, line)
    }

    /// Writes an access log line for `app_id`; returns its event id.
    pub fn write_access_log(&self, app_id: &str, line: &AccessLog) -> u64 {
        lock(&self.state).log_streams.write_access_log(app_id, line)
    }

    /// Every open v4 log stream breaks off, without `END_OF_STREAM`.
    pub fn drop_log_streams(&self) {
        lock(&self.state).log_streams.finish_open_streams(None);
    }

    /// Every open v4 log stream sends `END_OF_STREAM` with `ended_by`, then
    /// closes.
    pub fn end_log_streams(&self, ended_by: &str) {
        lock(&self.state)
            .log_streams
            .finish_open_streams(Some(ended_by));
    }

    /// How long a quiet v4 log stream waits before a `HEARTBEAT` (1 s unless
    /// changed).
    pub fn set_log_heartbeat(&self, period: std::time::Duration) {
        lock(&self.state).log_streams.heartbeat = period;
    }

    /// Makes the v4 log endpoints answer 404, as an API without them would.
    pub fn remove_v4_logs(&self, missing: bool) {
        lock(&self.state).log_streams.missing = missing;
    }

    /// The v4 log stream requests received so far, oldest first.
    pub fn log_streams(&self) -> Vec<LogStreamRequest> {
        lock(&self.state).log_streams.requests().to_vec()
    }

    /// Waits (at most 20 s) until `condition` holds on the fake; `false` if
    /// it never did.
    pub async fn wait_until(&self, condition: impl Fn(&Self) -> bool) -> bool {
        sockets::wait_for(|| condition(self)).await
    }

    /// The byte at `index` of any `/download` answer.
    pub fn download_byte(index: u64) -> u8 {
        // 251 is prime, so the pattern does not line up with chunk sizes.
        u8::try_from(index % 251).unwrap_or_default()
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        if let Some(server) = self.server.get_mut() {
            server.abort();
        }
    }
}

fn router(state: SharedState) -> Router {
    Router::new()
        .merge(dance::router())
        .merge(sockets::router())
        .merge(api::router(state.clone()))
        .layer(middleware::from_fn_with_state(state.clone(), apply_mode))
        .layer(middleware::from_fn_with_state(state.clone(), record))
        .with_state(state)
}

/// Records the request, then counts its body bytes as the handler reads them.
async fn record(
    AxumState(state): AxumState<SharedState>,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let index = lock(&state).record(RecordedRequest {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        raw_query: parts.uri.query().map(str::to_owned),
        headers: header_pairs(&parts.headers),
        body_len: 0,
    });
    let counted = body
        .into_data_stream()
        .inspect_ok(move |chunk| lock(&state).add_body_bytes(index, chunk.len()));
    next.run(Request::from_parts(parts, Body::from_stream(counted)))
        .await
}

/// Headers as `(name, value)` pairs, values lossily UTF-8.
fn header_pairs(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(name, value)| {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            (name.to_string(), value)
        })
        .collect()
}

/// Misbehaves according to the current [`Mode`].
async fn apply_mode(
    AxumState(state): AxumState<SharedState>,
    request: Request,
    next: Next,
) -> Response {
    let mode = lock(&state).mode;
    let path = request.uri().path();
    let token_endpoint = path == REQUEST_TOKEN_PATH || path == ACCESS_TOKEN_PATH;
    match mode {
        Mode::Hang => std::future::pending().await,
        Mode::ServerError => (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "fake API: internal error",
        )
            .into_response(),
        Mode::RejectConsumer if token_endpoint => {
            Refusal::unauthorized("consumer rejected").into_text_response()
        }
        Mode::Garbage if token_endpoint => axum::response::Html("<html>oops").into_response(),
        Mode::Slow(ms) => {
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            next.run(request).await
        }
        _ => next.run(request).await,
    }
}

/// Gathers the OAuth parameters of a request the fake received. The base
/// string URI is `http://` + `Host` + path, as the client addressed us.
fn signed_request(parts: &Parts, form_body: Option<&[u8]>) -> Result<SignedRequest, Refusal> {
    let header = |name: axum::http::HeaderName| {
        parts
            .headers
            .get(&name)
            .map(|value| {
                value
                    .to_str()
                    .map_err(|_| Refusal::unauthorized(format!("{name} is not ASCII")))
            })
            .transpose()
    };
    let authority = header(axum::http::header::HOST)?
        .ok_or_else(|| Refusal::bad_request("missing Host header"))?;
    let form_body = form_body
        .map(std::str::from_utf8)
        .transpose()
        .map_err(|_| Refusal::bad_request("form body is not UTF-8"))?;
    let request = RequestParts {
        method: parts.method.as_str(),
        scheme: "http",
        authority,
        path: parts.uri.path(),
        query: parts.uri.query().unwrap_or_default(),
        form_body,
        authorization: header(axum::http::header::AUTHORIZATION)?,
    };
    Ok(SignedRequest::parse(&request)?)
}

/// Whether the body is `application/x-www-form-urlencoded`, whose
/// parameters are signed.
fn is_form(parts: &Parts) -> bool {
    parts
        .headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|mime| {
            mime.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}
