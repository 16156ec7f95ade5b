//! Server-side sessions: the store, the cookie, and typed access to what a
//! session holds.

mod backend;
mod memory;
mod recent;
mod redis;
mod sealed;
mod store;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use rand::RngCore as _;
use sha2::{Digest as _, Sha512};
use tower_sessions::cookie::{Cookie, CookieJar, Key, SameSite};
use tower_sessions::session::Id;
use tower_sessions::{Expiry, Session, SessionManagerLayer, SessionStore};

pub use backend::{Backend, SetInsert, SetKey};
pub use memory::MemoryStore;
pub use recent::{RECENT_SESSION_TTL, RecentSessions, SessionKey};
pub use redis::{
    KEY_PREFIX as REDIS_KEY_PREFIX, LIST_PREFIX as REDIS_LIST_PREFIX, RedisSetupError, RedisStore,
    SET_PREFIX as REDIS_SET_PREFIX,
};
pub(crate) use sealed::SealingKey;
pub use store::Store;
pub(crate) use store::watch_failures;

use crate::config::Config;
use crate::oauth::grant::{AccessGrant, PendingLogin};
use crate::oauth::pending::{Lookup, PendingLogins};

/// Name of the session cookie over http.
pub const COOKIE_NAME: &str = "ocs_session";
/// Name of the session cookie when `APP_URL` is https: the `__Host-` prefix
/// makes browsers refuse it unless it is Secure, for `/`, with no Domain,
/// so no sibling host can plant or overwrite it.
pub const HOST_COOKIE_NAME: &str = "__Host-ocs_session";

// Namespaced keys of what a session holds. The grant's key carries a
// version: grants stored before identity came from the API are not read.
const PENDING_LOGINS_KEY: &str = "oauth.pending_logins";
const GRANT_KEY: &str = "oauth.grant.v2";
const TOUCHED_KEY: &str = "web.touched_at";

/// Longest an active session goes without being saved again (which pushes
/// its expiry back).
const KEEP_ALIVE_PERIOD: time::Duration = time::Duration::minutes(1);

/// How often expired records are swept out of the embedded store.
const EXPIRED_SWEEP_PERIOD: Duration = Duration::from_secs(60);

/// The session store could not be reached or answered nonsense.
#[derive(Debug, thiserror::Error)]
#[error("the session store is unavailable: {0}")]
pub(crate) struct SessionError(#[from] tower_sessions::session::Error);

/// This browser's session, with typed accessors.
#[derive(Clone, Debug)]
pub(crate) struct AppSession(Session);

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

/// What a callback's request token matched in this browser's session.
#[derive(Debug)]
pub(crate) enum PendingMatch {
    /// One of this browser's logins.
    Found(PendingLogin),
    /// This browser has no login in progress.
    NoneInProgress,
    /// This browser has logins in progress, but not that one.
    NotThisBrowsers,
}

impl AppSession {
    /// Remembers a login this browser started, beside its other logins in
    /// progress (other tabs); the first store write of a visitor.
    pub async fn start_login(
        &self,
        pending: PendingLogin,
        max_age_secs: i64,
    ) -> Result<(), SessionError> {
        let now = pending.started_at;
        let mut logins = self.pending_logins().await?;
        logins.start(pending, now, max_age_secs);
        Ok(self.0.insert(PENDING_LOGINS_KEY, &logins).await?)
    }

    /// The login in progress whose request token is `token`, if it is this
    /// browser's and still in time.
    pub async fn pending_login(
        &self,
        token: &str,
        now: i64,
        max_age_secs: i64,
    ) -> Result<PendingMatch, SessionError> {
        let logins = self.pending_logins().await?;
        Ok(match logins.find(token, now, max_age_secs) {
            Lookup::Found(login) => PendingMatch::Found(login.clone()),
            Lookup::NoneInProgress => PendingMatch::NoneInProgress,
            Lookup::NotThisBrowsers => PendingMatch::NotThisBrowsers,
        })
    }

    /// Forgets the login of request token `token` (good once), keeping the
    /// browser's other logins in progress.
    pub async fn forget_pending_login(
        &self,
        token: &str,
        now: i64,
        max_age_secs: i64,
    ) -> Result<(), SessionError> {
        let mut logins = self.pending_logins().await?;
        logins.finish(token, now, max_age_secs);
        if logins.is_empty() {
            self.0.remove_value(PENDING_LOGINS_KEY).await?;
        } else {
            self.0.insert(PENDING_LOGINS_KEY, &logins).await?;
        }
        Ok(())
    }

    async fn pending_logins(&self) -> Result<PendingLogins, SessionError> {
        Ok(self.0.get(PENDING_LOGINS_KEY).await?.unwrap_or_default())
    }

    /// Finishes a login: gives the session a new id (so an id seen before
    /// login is worthless after) and stores the grant, which replaces any
    /// earlier one. The browser's other logins in progress are kept.
    pub async fn finish_login(&self, grant: &AccessGrant) -> Result<(), SessionError> {
        self.0.cycle_id().await?;
        self.0.insert(GRANT_KEY, grant).await?;
        Ok(())
    }

    /// The access grant of a logged-in session; using it keeps the session
    /// alive.
    pub async fn access(&self) -> Result<Option<AccessGrant>, SessionError> {
        Ok(self.access_and_keep_alive().await?.map(|(grant, _)| grant))
    }

    /// Like [`Self::access`], with how long the session may go on being
    /// used before its next keep-alive is due: until then, its use need not
    /// reach the store.
    pub async fn access_and_keep_alive(
        &self,
    ) -> Result<Option<(AccessGrant, Duration)>, SessionError> {
        let Some(grant) = self.0.get(GRANT_KEY).await? else {
            return Ok(None);
        };
        let due_in = self.keep_alive().await?;
        Ok(Some((grant, due_in)))
    }

    /// The session layer saves a session, and so moves its inactivity
    /// expiry (the Redis TTL), only when the session changed: reading is not
    /// activity to it. An active session is changed once per period (a
    /// minute, or half the idle time when shorter), so it lasts while it is
    /// used, for one store write a minute. Returns the time until the next
    /// change is due.
    async fn keep_alive(&self) -> Result<Duration, SessionError> {
        let Some(Expiry::OnInactivity(idle)) = self.0.expiry() else {
            return Ok(Duration::MAX);
        };
        let half: time::Duration = idle / 2;
        let period = half.min(KEEP_ALIVE_PERIOD).whole_seconds();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let mut touched: Option<i64> = self.0.get(TOUCHED_KEY).await?;
        if touched.is_none_or(|at| now - at >= period) {
            self.0.insert(TOUCHED_KEY, now).await?;
            touched = Some(now);
        }
        let due_at = touched.unwrap_or(now).saturating_add(period);
        Ok(Duration::from_secs(
            u64::try_from(due_at.saturating_sub(now)).unwrap_or(0),
        ))
    }

    /// The session's id, once it has one (after its first write or load).
    pub fn id(&self) -> Option<Id> {
        self.0.id()
    }

    /// Ends the session: the record is deleted and the cookie cleared.
    pub async fn log_out(&self) -> Result<(), SessionError> {
        Ok(self.0.flush().await?)
    }
}

/// A random 256-bit token, URL-safe.
pub(crate) fn random_token() -> String {
    let mut bytes = [0_u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, bytes)
}

/// A key derived from `SESSION_KEY` for one `purpose`, or random for this
/// process when there is none.
pub(crate) fn derived_key(config: &Config, purpose: &str) -> Key {
    match &config.session_key {
        Some(session_key) => {
            let digest = Sha512::new()
                .chain_update(b"oauth-consumer-server/")
                .chain_update(purpose.as_bytes())
                .chain_update(b"/")
                .chain_update(session_key.expose().as_bytes())
                .finalize();
            Key::from(&digest)
        }
        None => Key::generate(),
    }
}

/// The session cookie's name for `config`.
pub(crate) fn cookie_name(config: &Config) -> &'static str {
    if config.secure_cookies() {
        HOST_COOKIE_NAME
    } else {
        COOKIE_NAME
    }
}

/// The session cookie: its name and the key that encrypts it, shared by the
/// session layer and the look-up of remembered sessions (the key is random
/// per process without `SESSION_KEY`, so it is made once).
#[derive(Clone)]
pub struct SessionCookie {
    name: &'static str,
    key: Key,
}

impl std::fmt::Debug for SessionCookie {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionCookie")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl SessionCookie {
    /// The cookie `config` asks for.
    pub fn new(config: &Config) -> Self {
        Self {
            name: cookie_name(config),
            key: derived_key(config, "cookie"),
        }
    }

    /// The session id that the request's cookie holds, if it opens. Reads
    /// the cookies as the session layer does: of several with our name, the
    /// last one counts.
    pub fn session_id(&self, headers: &HeaderMap) -> Option<Id> {
        // Only our cookie's value is decoded (the session layer's parser
        // reads every cookie's attributes and decodes them all).
        let sealed = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(';'))
            .filter_map(|pair| pair.split_once('='))
            .rfind(|(name, _)| name.trim() == self.name)?
            .1;
        let sealed = percent_encoding::percent_decode_str(sealed.trim())
            .decode_utf8()
            .ok()?;
        let opened = CookieJar::new()
            .private(&self.key)
            .decrypt(Cookie::new(self.name, sealed.into_owned()))?;
        opened.value().parse().ok()
    }
}

/// Finds the grant of a request's session among those this instance read
/// lately (see [`RecentSessions`]), from its cookie alone: no store read, no
/// record to decrypt or parse. One `Arc`, as the router clones its services
/// for every request.
#[derive(Clone, Debug)]
pub struct RememberedSessions(Arc<Remembering>);

#[derive(Debug)]
struct Remembering {
    cookie: SessionCookie,
    store: Store,
}

impl RememberedSessions {
    /// The sessions of `store` whose cookie is `cookie`.
    pub fn new(cookie: SessionCookie, store: Store) -> Self {
        Self(Arc::new(Remembering { cookie, store }))
    }

    /// The request's session id and grant, if this instance read that
    /// session lately.
    pub fn grant(&self, headers: &HeaderMap) -> Option<(Id, Arc<AccessGrant>)> {
        let id = self.0.cookie.session_id(headers)?;
        let grant = self
            .0
            .store
            .recent_sessions()
            .get(&SessionKey::of(&id), Instant::now())?;
        Some((id, grant))
    }
}

/// The session layer over `store`, with the cookie settings the login needs.
pub(crate) fn layer<S: SessionStore + Clone>(
    store: S,
    config: &Config,
    cookie: &SessionCookie,
) -> SessionManagerLayer<S, tower_sessions::service::PrivateCookie> {
    let idle = time::Duration::seconds(i64::try_from(config.session_idle_secs).unwrap_or(i64::MAX));
    SessionManagerLayer::new(store)
        .with_name(cookie.name)
        .with_http_only(true)
        // Lax, not Strict: the API's redirect back to /callback is a
        // cross-site top-level navigation that must carry the cookie.
        .with_same_site(SameSite::Lax)
        .with_path("/")
        .with_secure(config.secure_cookies())
        .with_expiry(Expiry::OnInactivity(idle))
        .with_private(cookie.key.clone())
}

/// The store `config` asks for: Redis when `REDIS_URL` is set, else memory
/// with a background task deleting expired records. Records are sealed
/// with a key derived from `SESSION_KEY`, or a random one for this process.
pub(crate) async fn store(config: &Config) -> Result<Store, RedisSetupError> {
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
    tokio::spawn(memory.clone().sweep_expired_every(EXPIRED_SWEEP_PERIOD));
    Ok(Store::in_memory(memory, &key))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    /// The `Cookie` header a browser sends back for session `id`, sealed as
    /// the session layer seals it (and sets it: not percent-encoded).
    fn sealed_cookie(cookie: &SessionCookie, id: Id) -> String {
        let mut jar = CookieJar::new();
        jar.private_mut(&cookie.key)
            .add(Cookie::new(cookie.name, id.to_string()));
        let sealed = jar
            .get(cookie.name)
            .map(|c| format!("{}={}", c.name(), c.value()));
        sealed.unwrap_or_else(|| panic!("the jar holds the cookie"))
    }

    fn headers(cookies: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in cookies {
            let value = HeaderValue::from_str(value).unwrap_or_else(|e| panic!("{e}"));
            headers.append(header::COOKIE, value);
        }
        headers
    }

    #[test]
    fn the_session_id_is_read_from_our_sealed_cookie_only() {
        let config = Config::from_args(["test"]).unwrap_or_else(|e| panic!("{e}"));
        let cookie = SessionCookie::new(&config);
        let other_key = SessionCookie::new(&config);
        let (id, later) = (Id(42), Id(43));
        let ours = sealed_cookie(&cookie, id);

        assert_eq!(
            cookie.session_id(&headers(&[&format!("theme=dark; {ours}")])),
            Some(id)
        );
        assert_eq!(
            cookie.session_id(&headers(&[&ours, &sealed_cookie(&cookie, later)])),
            Some(later),
            "the last one counts, as for the session layer"
        );
        assert_eq!(cookie.session_id(&headers(&[])), None);
        assert_eq!(
            cookie.session_id(&headers(&[&format!("{}={}", cookie.name, id)])),
            None,
            "an unsealed id"
        );
        assert_eq!(
            other_key.session_id(&headers(&[&ours])),
            None,
            "sealed with another key"
        );
        let percent_encoded = ours.replace('+', "%2B").replace('/', "%2F");
        assert_eq!(
            cookie.session_id(&headers(&[&percent_encoded])),
            Some(id),
            "decoded as the session layer decodes it"
        );
        let altered = ours.replacen('=', "=A", 1);
        assert_eq!(cookie.session_id(&headers(&[&altered])), None);
    }
}
