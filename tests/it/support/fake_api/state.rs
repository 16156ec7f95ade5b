//! What the fake remembers: consumers, tokens, nonces and every request.
//! All methods are synchronous; callers hold the lock only while calling them.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rand::RngCore as _;
use serde_json::json;
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

use super::Mode;
use super::verify::{SignedRequest, check_timestamp};

/// How far, in seconds, a request's `oauth_timestamp` may be from the clock.
const TIMESTAMP_TOLERANCE_SECS: i64 = 300;
/// Access tokens last about three months, like the real API's.
const ACCESS_TOKEN_LIFETIME: Duration = Duration::days(91);

/// One request as the fake received it, refused or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// HTTP method.
    pub method: String,
    /// Path, still percent-encoded.
    pub path: String,
    /// Query string without `?`, if the URL had one.
    pub raw_query: Option<String>,
    /// Headers in arrival order (names lower-case, values lossily UTF-8).
    pub headers: Vec<(String, String)>,
    /// Bytes of body the fake read (a request refused before its body was
    /// read counts only what was read).
    pub body_len: usize,
}

impl RecordedRequest {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(candidate, _)| candidate.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// An access token the fake handed out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    /// `oauth_token`.
    pub token: String,
    /// `oauth_token_secret`.
    pub secret: String,
    /// The consumer it was issued to.
    pub consumer_key: String,
    /// ISO 8601, exactly as sent in the access-token answer.
    pub expiration_date: String,
    /// The Clever Cloud user who approved it, as `/v2/self` tells.
    pub user_id: String,
}

/// A request token not yet exchanged for an access token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRequestToken {
    /// `oauth_token`.
    pub token: String,
    /// `oauth_token_secret`.
    pub secret: String,
    /// The consumer that asked for it.
    pub consumer_key: String,
    /// The decoded `oauth_callback`.
    pub callback: String,
    /// Set once the user approved on the authorize page.
    pub verifier: Option<String>,
    /// Who approved it.
    pub approved_by: Option<String>,
}

/// Why the fake refuses a call: a status and a short human reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Refusal {
    pub status: StatusCode,
    pub reason: String,
}

impl Refusal {
    pub fn unauthorized(reason: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            reason: reason.into(),
        }
    }

    pub fn bad_request(reason: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            reason: reason.into(),
        }
    }

    /// The refusal as a `text/plain` answer, like the token endpoints give.
    pub fn into_text_response(self) -> Response {
        (self.status, self.reason).into_response()
    }

    /// The refusal as `{"error": reason}`, like API calls give.
    pub fn into_json_response(self) -> Response {
        (self.status, Json(json!({ "error": self.reason }))).into_response()
    }
}

impl From<super::verify::VerifyError> for Refusal {
    fn from(error: super::verify::VerifyError) -> Self {
        Self::unauthorized(error.to_string())
    }
}

/// Which token, and so which token secret, a signed call must use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TokenKind {
    /// No token: the request-token call.
    None,
    /// A pending request token: the access-token call.
    Request,
    /// An issued access token: API calls.
    Access,
}

/// The fake's whole memory.
#[derive(Debug, Default)]
pub(super) struct State {
    pub mode: Mode,
    consumers: HashMap<String, String>,
    request_tokens: Vec<PendingRequestToken>,
    access_tokens: Vec<IssuedToken>,
    /// `(consumer key, token, timestamp, nonce)` already seen.
    nonces: HashSet<(String, String, String, String)>,
    pub requests: Vec<RecordedRequest>,
    /// Real-time sockets accepted, oldest first.
    pub sockets: Vec<super::sockets::FakeSocket>,
    /// How new real-time sockets behave.
    pub socket_settings: super::sockets::SocketSettings,
    /// `/v2/self` answers 403, as for a consumer without that right.
    pub refuse_self: bool,
    /// `/v2/self` answers 503, as an API that is failing.
    pub fail_self: bool,
    /// Access tokens issued by the dance and not yet asked about.
    awaiting_identity: HashSet<String>,
    /// How many `GET /v2/self` were a login's identity check: the first
    /// one with a token the dance just issued.
    pub identity_checks: usize,
    /// The v4 log streams: lines written, requests received.
    pub log_streams: super::log_streams::LogStreams,
    /// How long access tokens issued from now on last (`None`: as the real
    /// API's, [`ACCESS_TOKEN_LIFETIME`]).
    pub access_token_lifetime: Option<Duration>,
}

impl State {
    pub fn register_consumer(&mut self, key: &str, secret: &str) {
        self.consumers.insert(key.to_owned(), secret.to_owned());
    }

    pub fn consumer_exists(&self, key: &str) -> bool {
        self.consumers.contains_key(key)
    }

    /// Appends a request and returns its index, for later body counting.
    pub fn record(&mut self, request: RecordedRequest) -> usize {
        self.requests.push(request);
        self.requests.len() - 1
    }

    pub fn add_body_bytes(&mut self, index: usize, count: usize) {
        if let Some(request) = self.requests.get_mut(index) {
            request.body_len += count;
        }
    }

    pub fn request_tokens(&self) -> &[PendingRequestToken] {
        &self.request_tokens
    }

    pub fn access_tokens(&self) -> &[IssuedToken] {
        &self.access_tokens
    }

    /// Checks a signed call: known consumer, the expected kind of token,
    /// signature, timestamp within the window and a fresh nonce (which is
    /// then remembered). `PLAINTEXT` calls may omit timestamp and nonce.
    pub fn check(
        &mut self,
        request: &SignedRequest,
        kind: TokenKind,
        now: i64,
    ) -> Result<(), Refusal> {
        let consumer_key = request.consumer_key();
        let consumer_secret = self
            .consumers
            .get(consumer_key)
            .ok_or_else(|| Refusal::unauthorized(format!("unknown consumer {consumer_key:?}")))?;
        let token_secret = self.token_secret(request, kind)?;
        request.verify(consumer_secret, token_secret)?;

        let timestamp = request.param("oauth_timestamp");
        if let Some(timestamp) = timestamp {
            check_timestamp(timestamp, now, TIMESTAMP_TOLERANCE_SECS)?;
        }
        if let Some(nonce) = request.param("oauth_nonce") {
            let seen = (
                consumer_key.to_owned(),
                request.token().unwrap_or_default().to_owned(),
                timestamp.unwrap_or_default().to_owned(),
                nonce.to_owned(),
            );
            if !self.nonces.insert(seen) {
                return Err(Refusal::unauthorized(format!(
                    "nonce {nonce:?} already used"
                )));
            }
        }
        Ok(())
    }

    fn token_secret(&self, request: &SignedRequest, kind: TokenKind) -> Result<&str, Refusal> {
        let consumer_key = request.consumer_key();
        let token = match (kind, request.token()) {
            (TokenKind::None, None) => return Ok(""),
            (TokenKind::None, Some(_)) => {
                return Err(Refusal::unauthorized("no oauth_token expected here"));
            }
            (_, None) => return Err(Refusal::unauthorized("missing parameter oauth_token")),
            (_, Some(token)) => token,
        };
        let secret = match kind {
            TokenKind::Request => self
                .request_tokens
                .iter()
                .find(|pending| pending.token == token && pending.consumer_key == consumer_key)
                .map(|pending| pending.secret.as_str()),
            _ => self
                .access_tokens
                .iter()
                .find(|issued| issued.token == token && issued.consumer_key == consumer_key)
                .map(|issued| issued.secret.as_str()),
        };
        secret.ok_or_else(|| Refusal::unauthorized(format!("unknown oauth_token {token:?}")))
    }

    pub fn issue_request_token(
        &mut self,
        consumer_key: &str,
        callback: &str,
    ) -> PendingRequestToken {
        let pending = PendingRequestToken {
            token: random_token("fake-request-token-"),
            secret: random_token("fake-request-secret-"),
            consumer_key: consumer_key.to_owned(),
            callback: callback.to_owned(),
            verifier: None,
            approved_by: None,
        };
        self.request_tokens.push(pending.clone());
        pending
    }

    /// `user` approved `token`: gives it a verifier. Returns the token's
    /// callback and the verifier, or `None` for an unknown token.
    pub fn approve(&mut self, token: &str, user: &str) -> Option<(String, String)> {
        let pending = self
            .request_tokens
            .iter_mut()
            .find(|pending| pending.token == token)?;
        let verifier = random_token("fake-verifier-");
        pending.verifier = Some(verifier.clone());
        pending.approved_by = Some(user.to_owned());
        Some((pending.callback.clone(), verifier))
    }

    /// Trades an approved request token and its verifier, once, for an
    /// access token.
    pub fn exchange(
        &mut self,
        token: &str,
        verifier: Option<&str>,
    ) -> Result<IssuedToken, Refusal> {
        let verifier = verifier.ok_or_else(|| Refusal::unauthorized("missing oauth_verifier"))?;
        let index = self
            .request_tokens
            .iter()
            .position(|pending| {
                pending.token == token && pending.verifier.as_deref() == Some(verifier)
            })
            .ok_or_else(|| Refusal::unauthorized("wrong oauth_verifier for this oauth_token"))?;
        let pending = self.request_tokens.remove(index);
        let user = pending
            .approved_by
            .unwrap_or_else(|| super::FAKE_USER_ID.to_owned());
        let issued = self.issue_access_token(&pending.consumer_key, &user);
        self.awaiting_identity.insert(issued.token.clone());
        Ok(issued)
    }

    /// Counts a `GET /v2/self` with `token` as a login's identity check
    /// when it is the token's first.
    pub fn note_identity_check(&mut self, token: &str) {
        if self.awaiting_identity.remove(token) {
            self.identity_checks += 1;
        }
    }

    /// The user an access token was issued for.
    pub fn owner_of(&self, token: &str) -> Option<&str> {
        self.access_tokens
            .iter()
            .find(|issued| issued.token == token)
            .map(|issued| issued.user_id.as_str())
    }

    /// Forgets access token `token`: calls signed with it are refused.
    pub fn revoke_access_token(&mut self, token: &str) -> bool {
        let before = self.access_tokens.len();
        self.access_tokens.retain(|issued| issued.token != token);
        self.access_tokens.len() < before
    }

    pub fn issue_access_token(&mut self, consumer_key: &str, user_id: &str) -> IssuedToken {
        let expiration = OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .expect("0 is a valid nanosecond")
            + self.access_token_lifetime.unwrap_or(ACCESS_TOKEN_LIFETIME);
        let issued = IssuedToken {
            token: random_token("fake-access-token-"),
            secret: random_token("fake-access-secret-"),
            consumer_key: consumer_key.to_owned(),
            user_id: user_id.to_owned(),
            expiration_date: expiration
                .format(&Rfc3339)
                .expect("a UTC date formats as RFC 3339"),
        };
        self.access_tokens.push(issued.clone());
        issued
    }
}

/// `prefix` followed by 32 random hex digits.
fn random_token(prefix: &str) -> String {
    let mut bytes = [0_u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", hex(&bytes))
}

/// Lower-case hexadecimal.
pub(super) fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut text, byte| {
            let _ = write!(text, "{byte:02x}");
            text
        })
}
