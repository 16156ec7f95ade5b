//! WebSocket relays of the API's real-time streams: `GET /ws/events` and
//! `GET /ws/logs/{app_id}`.
//!
//! The caller authenticates as for the proxy (session cookie from our own
//! origin, or a bearer proxy token). The relay opens the API's socket and
//! sends the signed OAuth message *before* accepting the client's upgrade,
//! so an unreachable API answers 502 rather than a socket that dies. It
//! then accepts the upgrade at once, without waiting for the API's
//! `socket_ready`: a refusal of the OAuth message arrives as an error
//! message, which is forwarded before the client is closed with 1008.

pub(crate) mod close;
pub(crate) mod control;
pub(crate) mod frame;
pub(crate) mod pump;
pub(crate) mod registry;
pub(crate) mod target;
pub(crate) mod upgrade;
mod upstream;

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::time::Instant;

use crate::upstream::websocket::WebSocket;
pub(crate) use close::End;
pub(crate) use pump::{Limits, Pump};
pub use registry::RelayRegistry;
pub(crate) use registry::{CallerKey, LimitReached, OwnerKey, RelayLimits, RelaySlot};
use target::Target;
use upgrade::{ClientStream, ClientUpgrade};

use crate::auth::{AuthError, Caller, Credential, same_origin};
use crate::config::Config;
use crate::error::json_error;
use crate::forwarded::ClientInfo;
use crate::proxy_tokens::audit::CallRecord;
use crate::proxy_tokens::{ProxyTokens, TokenInfo};
use crate::session::Store;
use crate::state::AppState;
use tower_sessions::Session;
use tower_sessions::session::Id;

/// Why a relay could not be opened. Answers JSON before the upgrade.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RelayError {
    /// Not authenticated, or a cross-site cookie.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The application id is not a plain path segment.
    #[error(
        "the application id must be a plain path segment (letters, digits, `-`, `_`, `.`, `~`)"
    )]
    BadAppId,
    /// The caller already holds its share of relays.
    #[error("too many relays open at once for this caller (at most {0}); close one first")]
    TooMany(usize),
    /// The person behind the caller already holds their share of relays,
    /// across their session and proxy tokens.
    #[error(
        "too many relays open at once for this account, across its session and proxy tokens (at most {0}); close one first"
    )]
    TooManyForOwner(usize),
    /// The session's consumer is the operator's, which is not configured
    /// any more.
    #[error("the consumer this login was made with is no longer configured; log in again")]
    NoConsumer,
    /// `API_HOST` cannot make a socket URL (validated at start, so unlikely).
    #[error("the server's API_HOST cannot be turned into a WebSocket URL")]
    BadApiHost,
    /// The API did not accept the connection.
    #[error("the Clever Cloud API is unreachable; try again in a moment")]
    Unreachable(#[source] std::io::Error),
    /// The API answered the WebSocket handshake with an HTTP error.
    #[error("the Clever Cloud API refused the WebSocket (HTTP {0}); try again later")]
    Refused(StatusCode),
    /// The API did not complete the handshake in time.
    #[error("the Clever Cloud API did not answer in time; try again in a moment")]
    Timeout,
    /// A proxy token whose scope does not name this relay.
    #[error("proxy token {0} may not open this relay: its scope does not name it")]
    OutOfScope(String),
}

impl RelayError {
    fn status(&self) -> StatusCode {
        match self {
            Self::Auth(error) => error.status(),
            Self::NoConsumer => StatusCode::UNAUTHORIZED,
            Self::OutOfScope(_) => StatusCode::FORBIDDEN,
            Self::BadAppId => StatusCode::BAD_REQUEST,
            Self::TooMany(_) | Self::TooManyForOwner(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::BadApiHost => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Unreachable(_) | Self::Refused(_) => StatusCode::BAD_GATEWAY,
            Self::Timeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }
}

impl IntoResponse for RelayError {
    fn into_response(self) -> Response {
        if let Self::Auth(error) = self {
            return error.into_response();
        }
        let status = self.status();
        if status.is_server_error() {
            let cause = std::error::Error::source(&self).map(ToString::to_string);
            tracing::warn!(error = %self, ?cause, "relay not opened");
        }
        json_error(status, self.to_string())
    }
}

pub(crate) async fn events(
    State(state): State<AppState>,
    caller: Caller,
    Seen { client, session }: Seen,
    headers: HeaderMap,
    upgrade: ClientUpgrade,
) -> Result<Response, RelayError> {
    let holder = Holder::of(&state, &caller, session);
    open(
        state,
        caller,
        client,
        holder,
        &headers,
        upgrade,
        Target::Events,
    )
    .await
}

pub(crate) async fn logs(
    State(state): State<AppState>,
    Path(app_id): Path<String>,
    RawQuery(query): RawQuery,
    caller: Caller,
    Seen { client, session }: Seen,
    headers: HeaderMap,
    upgrade: ClientUpgrade,
) -> Result<Response, RelayError> {
    let target = Target::logs(app_id, query)?;
    let holder = Holder::of(&state, &caller, session);
    open(state, caller, client, holder, &headers, upgrade, target).await
}

/// What the layers outside noted of a relay's request: the client's
/// address and the browser's session, when there is one.
pub(crate) struct Seen {
    client: Option<std::net::IpAddr>,
    session: Option<Id>,
}

impl<S: Sync> axum::extract::FromRequestParts<S> for Seen {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self {
            client: parts.extensions.get::<ClientInfo>().map(|client| client.ip),
            // The session layer's session, or the one a remembered grant
            // came from (the layer was gone around).
            session: parts
                .extensions
                .get::<Session>()
                .and_then(Session::id)
                .or_else(|| {
                    parts
                        .extensions
                        .get::<crate::auth::RememberedSessionId>()
                        .map(|remembered| remembered.0)
                }),
        })
    }
}

/// How often an open relay checks that its credential still lives: a
/// revoked proxy token or an ended session closes its relays within this
/// long, on every instance.
const CREDENTIAL_CHECK_PERIOD: std::time::Duration = std::time::Duration::from_secs(10);

/// The credential an open relay keeps checking.
enum Holder {
    /// A proxy token, whose record must still be in the store.
    ProxyToken {
        tokens: Arc<ProxyTokens>,
        token: Arc<TokenInfo>,
    },
    /// A browser session, whose record must still be in the store.
    Session { store: Store, id: Id },
    /// Nothing to check (a session without an id: not expected).
    Nothing,
}

impl Holder {
    fn of(state: &AppState, caller: &Caller, session: Option<Id>) -> Self {
        match (&caller.credential, session) {
            (Credential::ProxyToken(token), _) => Self::ProxyToken {
                tokens: Arc::clone(&state.tokens),
                token: Arc::clone(token),
            },
            (Credential::Session, Some(id)) => Self::Session {
                store: state.store.clone(),
                id,
            },
            (Credential::Session, None) => Self::Nothing,
        }
    }

    /// Whether the credential still lives. A store that does not answer
    /// keeps the relay open: a passing failure is not a revocation.
    async fn is_live(&self) -> bool {
        match self {
            Self::ProxyToken { tokens, token } => tokens.is_live(token).await.unwrap_or(true),
            Self::Session { store, id } => store
                .load_record(id)
                .await
                .map_or(true, |record| record.is_some()),
            Self::Nothing => true,
        }
    }

    /// Returns once the credential is found revoked or expired.
    async fn revoked(&self) {
        let mut checks = tokio::time::interval(CREDENTIAL_CHECK_PERIOD);
        checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        checks.tick().await;
        loop {
            checks.tick().await;
            if !self.is_live().await {
                return;
            }
        }
    }
}

/// [`open_checked`], audited when the caller is a proxy token.
async fn open(
    state: AppState,
    caller: Caller,
    client: Option<std::net::IpAddr>,
    holder: Holder,
    headers: &HeaderMap,
    upgrade: ClientUpgrade,
    target: Target,
) -> Result<Response, RelayError> {
    let Credential::ProxyToken(token) = &caller.credential else {
        return open_checked(state, caller, holder, headers, upgrade, target).await;
    };
    let token = Arc::clone(token);
    let started = Instant::now();
    let call = CallRecord {
        at: time::OffsetDateTime::now_utc(),
        method: "GET".to_owned(),
        path: target.audit_path(),
        status: 0,
        client,
    };
    let tokens = Arc::clone(&state.tokens);
    let answer = open_checked(state, caller, holder, headers, upgrade, target).await;
    let status = match &answer {
        Ok(response) => response.status(),
        Err(error) => error.status(),
    };
    tokens.audit(
        &token,
        CallRecord {
            status: status.as_u16(),
            ..call
        },
        started.elapsed(),
    );
    answer
}

/// Checks the caller, opens the API's socket, then accepts the upgrade and
/// relays in one task.
async fn open_checked(
    state: AppState,
    caller: Caller,
    holder: Holder,
    headers: &HeaderMap,
    upgrade: ClientUpgrade,
    target: Target,
) -> Result<Response, RelayError> {
    if let Credential::ProxyToken(token) = &caller.credential {
        let allowed = match &target {
            Target::Events => token.scope.allows_events(),
            Target::Logs { app_id, .. } => token.scope.allows_logs(app_id),
        };
        if !allowed {
            state
                .metrics
                .proxy_token_refused(crate::auth::REFUSED_SCOPE);
            return Err(RelayError::OutOfScope(token.id.clone()));
        }
    }
    let config = &state.config;
    // `Caller` lets a GET through without the same-origin proof; an upgrade
    // with a cookie needs it, or any site could open the person's streams.
    if caller.credential == Credential::Session && !same_origin(headers, &config.app_origin()) {
        return Err(AuthError::CrossOrigin.into());
    }
    let consumer = caller
        .grant
        .consumer
        .credentials(config.operator_consumer())
        .ok_or(RelayError::NoConsumer)?;
    let shares = RelayLimits {
        per_caller: config.relay_max_per_caller,
        per_owner: config.relays_per_owner,
    };
    let slot = state
        .relays
        .acquire(
            caller_key(&caller),
            OwnerKey::new(caller.grant.owner()),
            shares,
        )
        .map_err(|reached| match reached {
            LimitReached::Caller(limit) => RelayError::TooMany(limit),
            LimitReached::Owner(limit) => RelayError::TooManyForOwner(limit),
        })?;
    let token = caller.grant.token_credentials();
    let upstream = crate::upstream::timed(
        &state.metrics,
        target.kind(),
        upstream::connect(config, &target, &consumer, &token),
        upstream::outcome,
    )
    .await?;
    tracing::info!(stream = target.kind(), "relay opened");

    let limits = limits(config);
    let shutdown = state.shutdown.clone();
    Ok(upgrade.accept(move |client| async move {
        relay(client, upstream, slot, limits, shutdown, holder).await;
    }))
}

/// Whose share of relays a caller's counts against: its proxy token, or
/// its browser session.
fn caller_key(caller: &Caller) -> CallerKey {
    match &caller.credential {
        Credential::ProxyToken(token) => CallerKey::proxy_token(&token.id),
        Credential::Session => CallerKey::session(&caller.grant.token),
    }
}

/// Relays until either side ends it or the server shuts down, then closes
/// both. The slot is released last, once nothing is left open.
async fn relay(
    client: ClientStream,
    upstream: WebSocket,
    slot: RelaySlot,
    limits: Limits,
    shutdown: tokio_util::sync::CancellationToken,
    holder: Holder,
) {
    let mut pump = Pump::new(
        client,
        upstream.stream,
        upstream.read_ahead,
        limits,
        slot.registry().clone(),
    );
    let end = tokio::select! {
        biased;
        () = shutdown.cancelled() => End::Shutdown,
        () = holder.revoked() => End::Revoked,
        end = pump.run() => end,
    };
    tracing::info!(?end, "relay closing");
    pump.finish(&end).await;
    drop(slot);
}

/// The queues', timer's and messages' limits. Each queue holds at most
/// `RELAY_QUEUE_MESSAGES` frames and, past one frame, about
/// `RELAY_MAX_MESSAGE_BYTES` bytes.
fn limits(config: &Config) -> Limits {
    Limits {
        queue_messages: config.relay_queue_messages.max(1),
        queue_bytes: config.relay_max_message_bytes.max(1),
        idle: std::time::Duration::from_secs(config.relay_idle_timeout_secs.max(1)),
        max_message: config.relay_max_message_bytes,
    }
}
