//! Server-side sessions: the store, the cookie, and typed access to what a
//! session holds.

mod encrypted;
mod memory;
mod redis;
mod store;

use std::time::Duration;

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha512};
use tower_sessions::cookie::{Key, SameSite};
use tower_sessions::session_store::ExpiredDeletion as _;
use tower_sessions::{Expiry, Session, SessionManagerLayer, SessionStore};

pub use encrypted::{Sealed, SealingKey};
pub use memory::MemoryStore;
pub use redis::{KEY_PREFIX as REDIS_KEY_PREFIX, RedisSetupError, RedisStore, is_redis_url};
pub use store::{Backend, Store};

use crate::auth::AuthError;
use crate::config::Config;
use crate::error::store_unavailable_page;
use crate::oauth::Credentials;
use crate::secret::Secret;

/// Name of the session cookie.
pub const COOKIE_NAME: &str = "ocs_session";

// Namespaced keys of what a session holds.
const PENDING_LOGIN_KEY: &str = "oauth.pending_login";
const ACCESS_KEY: &str = "oauth.access";
const CSRF_KEY: &str = "web.csrf";
const TOUCHED_KEY: &str = "web.touched_at";

/// Longest an active session goes without being saved again (which pushes
/// its expiry back).
const KEEP_ALIVE_PERIOD: time::Duration = time::Duration::minutes(1);

/// How often expired sessions are swept out of the embedded store.
const EXPIRED_SWEEP_PERIOD: Duration = Duration::from_secs(60);

/// Which consumer a login was made with.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Consumer {
    /// The operator's, from the configuration (its secret is never stored).
    Operator,
    /// One the visitor typed on the login page.
    Visitor {
        /// Consumer key.
        key: String,
        /// Consumer secret.
        secret: Secret,
    },
}

impl Consumer {
    /// The consumer's credentials, resolving the operator's from `config`.
    pub fn credentials(&self, config: &Config) -> Option<Credentials> {
        match self {
            Self::Operator => config.operator_consumer(),
            Self::Visitor { key, secret } => Some(Credentials {
                key: key.clone(),
                secret: secret.clone(),
            }),
        }
    }
}

/// A login in progress: between `POST /login` and `GET /callback`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PendingLogin {
    /// The request token the API gave us for this browser.
    pub request_token: String,
    /// Its secret.
    pub request_secret: Secret,
    /// The consumer that asked for it.
    pub consumer: Consumer,
}

/// What a logged-in session holds: the access token and whom it is for.
/// Its `Debug` leaves the token out, as its secret's does.
#[derive(Clone, Serialize, Deserialize)]
pub struct AccessGrant {
    /// The access token.
    pub token: String,
    /// Its secret.
    pub secret: Secret,
    /// The consumer that obtained it (tokens only work with it).
    pub consumer: Consumer,
    /// The Clever Cloud user id, when the callback named it.
    pub user_id: Option<String>,
    /// When the token expires (ISO 8601, as the API gave it).
    pub expiration_date: Option<String>,
}

impl std::fmt::Debug for AccessGrant {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("AccessGrant")
            .field("token", &"[redacted]")
            .field("secret", &self.secret)
            .field("consumer", &self.consumer)
            .field("user_id", &self.user_id)
            .field("expiration_date", &self.expiration_date)
            .finish()
    }
}

impl AccessGrant {
    /// The access token as signing credentials.
    pub fn token_credentials(&self) -> Credentials {
        Credentials {
            key: self.token.clone(),
            secret: self.secret.clone(),
        }
    }
}

/// The session store could not be reached or answered nonsense.
#[derive(Debug, thiserror::Error)]
#[error("the session store is unavailable: {0}")]
pub struct SessionError(#[from] tower_sessions::session::Error);

/// This browser's session, with typed accessors.
#[derive(Clone, Debug)]
pub struct AppSession(Session);

impl<S: Send + Sync> FromRequestParts<S> for AppSession {
    type Rejection = <Session as FromRequestParts<S>>::Rejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Session::from_request_parts(parts, state).await.map(Self)
    }
}

impl From<Session> for AppSession {
    fn from(session: Session) -> Self {
        Self(session)
    }
}

impl AppSession {
    /// This session's CSRF token, created on first use.
    pub async fn csrf_token(&self) -> Result<String, SessionError> {
        if let Some(token) = self.0.get::<String>(CSRF_KEY).await? {
            return Ok(token);
        }
        let token = random_token();
        self.0.insert(CSRF_KEY, &token).await?;
        Ok(token)
    }

    /// Whether `submitted` is this session's CSRF token (constant time).
    pub async fn csrf_matches(&self, submitted: &str) -> Result<bool, SessionError> {
        let expected = self.0.get::<String>(CSRF_KEY).await?;
        Ok(expected.is_some_and(|expected| {
            subtle::ConstantTimeEq::ct_eq(expected.as_bytes(), submitted.as_bytes()).into()
        }))
    }

    /// Remembers the login this browser started.
    pub async fn start_login(&self, pending: &PendingLogin) -> Result<(), SessionError> {
        Ok(self.0.insert(PENDING_LOGIN_KEY, pending).await?)
    }

    /// The login this browser started, if any.
    pub async fn pending_login(&self) -> Result<Option<PendingLogin>, SessionError> {
        Ok(self.0.get(PENDING_LOGIN_KEY).await?)
    }

    /// Finishes a login: forgets the request token, gives the session a new
    /// id (so an id seen before login is worthless after), stores the grant.
    pub async fn finish_login(&self, grant: &AccessGrant) -> Result<(), SessionError> {
        self.0.remove_value(PENDING_LOGIN_KEY).await?;
        self.0.cycle_id().await?;
        self.0.insert(ACCESS_KEY, grant).await?;
        Ok(())
    }

    /// The access grant of a logged-in session; using it keeps the session
    /// alive.
    pub async fn access(&self) -> Result<Option<AccessGrant>, SessionError> {
        let grant = self.0.get(ACCESS_KEY).await?;
        if grant.is_some() {
            self.keep_alive().await?;
        }
        Ok(grant)
    }

    /// The session layer saves a session, and so moves its inactivity
    /// expiry (the Redis TTL), only when the session changed: reading is not
    /// activity to it. An active session is changed once per period (a
    /// minute, or half the idle time when shorter), so it lasts while it is
    /// used, for one store write a minute.
    async fn keep_alive(&self) -> Result<(), SessionError> {
        let Some(Expiry::OnInactivity(idle)) = self.0.expiry() else {
            return Ok(());
        };
        let half: time::Duration = idle / 2;
        let period = half.min(KEEP_ALIVE_PERIOD).whole_seconds();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let touched: Option<i64> = self.0.get(TOUCHED_KEY).await?;
        if touched.is_none_or(|at| now - at >= period) {
            self.0.insert(TOUCHED_KEY, now).await?;
        }
        Ok(())
    }

    /// Ends the session: the record is deleted and the cookie cleared.
    pub async fn log_out(&self) -> Result<(), SessionError> {
        Ok(self.0.flush().await?)
    }
}

/// A random 256-bit token, URL-safe.
pub fn random_token() -> String {
    let mut bytes = [0_u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, bytes)
}

/// The cookie key: derived from `SESSION_KEY`, or random for this process.
pub fn cookie_key(config: &Config) -> Key {
    match &config.session_key {
        Some(session_key) => {
            let digest = Sha512::new()
                .chain_update(b"oauth-consumer-server/cookie/")
                .chain_update(session_key.expose().as_bytes())
                .finalize();
            Key::from(&digest)
        }
        None => Key::generate(),
    }
}

/// The session layer over `store`, with the cookie settings the login needs.
pub fn layer<S: SessionStore + Clone>(
    store: S,
    config: &Config,
) -> SessionManagerLayer<S, tower_sessions::service::PrivateCookie> {
    let idle = time::Duration::seconds(i64::try_from(config.session_idle_secs).unwrap_or(i64::MAX));
    SessionManagerLayer::new(store)
        .with_name(COOKIE_NAME)
        .with_http_only(true)
        // Lax, not Strict: the API's redirect back to /callback is a
        // cross-site top-level navigation that must carry the cookie.
        .with_same_site(SameSite::Lax)
        .with_path("/")
        .with_secure(config.secure_cookies())
        .with_expiry(Expiry::OnInactivity(idle))
        .with_private(cookie_key(config))
}

/// The store `config` asks for: Redis when `REDIS_URL` is set, else memory
/// with a background task deleting expired sessions. Records are sealed
/// with a key derived from `SESSION_KEY`, or a random one for this process.
pub async fn store(config: &Config) -> Result<Store, RedisSetupError> {
    let key = match &config.session_key {
        Some(session_key) => SealingKey::derive(session_key),
        None => SealingKey::random(),
    };
    if let Some(url) = &config.redis_url {
        let redis = RedisStore::connect(url, config.redis_ca_file.as_deref()).await?;
        return Ok(Store::new(redis, &key));
    }
    tracing::warn!(
        "sessions are kept in memory: they are lost on restart and not shared between instances (set REDIS_URL to share them)"
    );
    let memory = MemoryStore::default();
    tokio::spawn(
        memory
            .clone()
            .continuously_delete_expired(EXPIRED_SWEEP_PERIOD),
    );
    Ok(Store::new(memory, &key))
}

/// Applies the session layers (`L`) to every request but bearer calls to
/// the proxy, which are judged on their token alone (see
/// [`crate::auth::Caller`]): for those, making and dropping a session that
/// nothing reads cost several percent of the proxy's CPU time.
#[derive(Clone, Debug)]
pub struct UnlessBearerProxyCall<L>(pub L);

impl<L, S> tower::Layer<S> for UnlessBearerProxyCall<L>
where
    L: tower::Layer<S>,
    S: Clone,
{
    type Service = UnlessBearerProxyCallService<S, L::Service>;

    fn layer(&self, inner: S) -> Self::Service {
        UnlessBearerProxyCallService {
            plain: inner.clone(),
            layered: self.0.layer(inner),
        }
    }
}

/// The service of [`UnlessBearerProxyCall`]: the inner service, plain or
/// wrapped in the session layers.
#[derive(Clone, Debug)]
pub struct UnlessBearerProxyCallService<S, T> {
    plain: S,
    layered: T,
}

impl<S, T> tower::Service<Request> for UnlessBearerProxyCallService<S, T>
where
    S: tower::Service<Request>,
    T: tower::Service<Request, Response = S::Response, Error = S::Error>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures_util::future::Either<S::Future, T::Future>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::ready!(self.plain.poll_ready(cx))?;
        self.layered.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let bearer_proxy_call = request
            .uri()
            .path()
            .starts_with(crate::proxy::target::PREFIX)
            && request.headers().contains_key(header::AUTHORIZATION);
        if bearer_proxy_call {
            futures_util::future::Either::Left(self.plain.call(request))
        } else {
            futures_util::future::Either::Right(self.layered.call(request))
        }
    }
}

/// Middleware around the session layer: when the store fails as the layer
/// saves a session (after the handler ran), the layer answers a bare 500;
/// this answers the same 503 as any other store failure instead, a page for
/// browsers and JSON for programs.
pub async fn answer_store_failures(request: Request, next: Next) -> Response {
    let wants_page = accepts_html(request.headers());
    let (response, store_failed) = store::watch_failures(next.run(request)).await;
    if store_failed && response.status() == StatusCode::INTERNAL_SERVER_ERROR {
        return if wants_page {
            store_unavailable_page()
        } else {
            AuthError::Unavailable.into_response()
        };
    }
    response
}

/// Whether the client reads HTML (a browser navigating) rather than JSON.
fn accepts_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|accept| accept.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"))
}

#[cfg(test)]
mod tests {
    use async_trait::async_trait;
    use axum::Router;
    use axum::routing::get;
    use tower_sessions::session::{Id, Record};
    use tower_sessions::session_store;

    use super::*;

    /// A backend that reads nothing and cannot write: the store going away
    /// between a handler's reads and the session layer's save.
    #[derive(Debug)]
    struct WriteFails;

    #[async_trait]
    impl SessionStore for WriteFails {
        async fn create(&self, _: &mut Record) -> session_store::Result<()> {
            Err(session_store::Error::Backend("down".to_owned()))
        }
        async fn save(&self, _: &Record) -> session_store::Result<()> {
            Err(session_store::Error::Backend("down".to_owned()))
        }
        async fn load(&self, _: &Id) -> session_store::Result<Option<Record>> {
            Ok(None)
        }
        async fn delete(&self, _: &Id) -> session_store::Result<()> {
            Ok(())
        }
    }

    #[async_trait]
    impl Backend for WriteFails {
        async fn is_available(&self) -> bool {
            false
        }
    }

    async fn serve(with_middleware: bool) -> String {
        let config = Config::from_args(["test"]).unwrap_or_else(|e| panic!("{e}"));
        let store = Store::new(WriteFails, &SealingKey::random());
        let mut router = Router::new()
            .route(
                "/",
                get(|session: Session| async move {
                    let _ = session.insert("k", "v").await;
                    "saved?"
                }),
            )
            .layer(layer(store, &config));
        if with_middleware {
            router = router.layer(axum::middleware::from_fn(answer_store_failures));
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        tokio::spawn(async move { axum::serve(listener, router).await });
        format!("http://{addr}/")
    }

    async fn get_with_accept(url: &str, accept: &str) -> (reqwest::StatusCode, String) {
        let response = reqwest::Client::new()
            .get(url)
            .header("accept", accept)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let status = response.status();
        (status, response.text().await.unwrap_or_default())
    }

    #[test]
    fn a_grant_prints_neither_its_token_nor_its_secrets() {
        let grant = AccessGrant {
            token: "access-token-value".to_owned(),
            secret: Secret::new("access-secret-value"),
            consumer: Consumer::Visitor {
                key: "visitor-key".to_owned(),
                secret: Secret::new("consumer-secret-value"),
            },
            user_id: Some("user_1".to_owned()),
            expiration_date: None,
        };
        let printed = format!("{grant:?}");
        for secret in [
            "access-token-value",
            "access-secret-value",
            "consumer-secret-value",
        ] {
            assert!(!printed.contains(secret), "{printed}");
        }
        assert!(printed.contains("user_1"));
    }

    #[tokio::test]
    async fn only_bearer_proxy_calls_go_around_the_session_layer() {
        let config = Config::from_args(["test"]).unwrap_or_else(|e| panic!("{e}"));
        let store = Store::new(WriteFails, &SealingKey::random());
        let has_session = |request: Request| async move {
            request.extensions().get::<Session>().is_some().to_string()
        };
        let router = Router::new()
            .route("/api/{*path}", get(has_session))
            .route("/page", get(has_session))
            .layer(UnlessBearerProxyCall(layer(store, &config)));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        tokio::spawn(async move { axum::serve(listener, router).await });
        let client = reqwest::Client::new();

        let mut seen = Vec::new();
        for (path, bearer) in [
            ("/api/v2/self", true),
            ("/api/v2/self", false),
            ("/page", true),
        ] {
            let mut request = client.get(format!("http://{addr}{path}"));
            if bearer {
                request = request.bearer_auth("ocsp_x");
            }
            let answer = request.send().await.unwrap_or_else(|e| panic!("{e}"));
            seen.push(answer.text().await.unwrap_or_default());
        }

        assert_eq!(seen, ["false", "true", "true"]);
    }

    #[tokio::test]
    async fn a_failed_save_answers_503_rather_than_a_bare_500() {
        let bare = serve(false).await;
        let (status, body) = get_with_accept(&bare, "*/*").await;
        assert_eq!(status, 500, "what the session layer does on its own");
        assert!(body.is_empty());

        let url = serve(true).await;
        let (status, body) = get_with_accept(&url, "text/html,*/*;q=0.8").await;
        assert_eq!(status, 503);
        assert!(body.contains("Sessions are unavailable"), "{body}");

        let (status, body) = get_with_accept(&url, "application/json").await;
        assert_eq!(status, 503);
        let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        assert!(
            json["error"]
                .as_str()
                .is_some_and(|e| e.contains("session store")),
            "{body}"
        );
    }
}
