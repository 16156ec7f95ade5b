//! The login dance: start it (request token, then the browser goes to the
//! API's authorize page) and finish it (callback, access token).

use serde::Deserialize;
use url::Url;

use crate::config::Config;
use crate::oauth::client::{OAuthClient, OAuthError};
use crate::oauth::grant::{AccessGrant, Consumer, PendingLogin};
use crate::oauth::signature::Credentials;
use crate::secret::Secret;
use crate::session::{AppSession, PendingMatch, SessionError};

/// Why a login could not start or finish.
#[derive(Debug, thiserror::Error)]
pub enum DanceError {
    /// No consumer: none configured and the visitor typed none.
    #[error("a consumer key and secret are needed")]
    NoConsumer,
    /// The callback came to a browser that started no login (or already
    /// finished it: a request token is good once), or too long ago.
    #[error("this browser has no login in progress")]
    NoPendingLogin,
    /// The callback's request token is none of this browser's logins.
    #[error("the callback's token does not belong to this browser's logins")]
    TokenMismatch,
    /// The callback has no verifier.
    #[error("the callback carries no verifier")]
    MissingVerifier,
    /// The API refused or failed.
    #[error(transparent)]
    OAuth(#[from] OAuthError),
    /// The session store failed.
    #[error(transparent)]
    Session(#[from] SessionError),
}

/// The query of `GET /callback`.
#[derive(Debug, Default, Deserialize)]
pub struct CallbackParams {
    /// The request token being authorized.
    pub oauth_token: Option<String>,
    /// Proof that the person approved.
    pub oauth_verifier: Option<Secret>,
    /// A Clever Cloud user id the API adds in practice (not documented).
    /// It decides nothing: whom the token is for comes from `/v2/self`.
    pub user: Option<String>,
}

/// Asks for a request token, remembers it in this browser's session beside
/// its other logins in progress, and returns the API's authorize URL to
/// send the browser to.
pub async fn start(
    client: &OAuthClient,
    session: &AppSession,
    config: &Config,
    consumer: Consumer,
) -> Result<Url, DanceError> {
    let credentials = consumer
        .credentials(config.operator_consumer())
        .ok_or(DanceError::NoConsumer)?;
    let request_token = client
        .request_token(&credentials, &config.callback_url())
        .await?;
    let authorize_url = client.authorize_url(&request_token.token);
    session
        .start_login(
            PendingLogin {
                request_token: request_token.token,
                request_secret: request_token.secret,
                consumer,
                started_at: unix_now(),
            },
            config.login_pending_secs(),
        )
        .await?;
    Ok(authorize_url)
}

/// Checks that the callback answers one of this browser's own logins,
/// exchanges the verifier for an access token, asks the API whom it is for,
/// and stores the grant in the session. Nothing is stored when any step
/// fails (but the login is spent: a request token is good once).
pub async fn finish(
    client: &OAuthClient,
    session: &AppSession,
    config: &Config,
    params: CallbackParams,
) -> Result<AccessGrant, DanceError> {
    let now = unix_now();
    let max_age = config.login_pending_secs();
    let token = params.oauth_token.unwrap_or_default();
    let pending = match session.pending_login(&token, now, max_age).await? {
        PendingMatch::Found(pending) => pending,
        PendingMatch::NoneInProgress => return Err(DanceError::NoPendingLogin),
        PendingMatch::NotThisBrowsers => return Err(DanceError::TokenMismatch),
    };
    let verifier = params
        .oauth_verifier
        .filter(|verifier| !verifier.expose().is_empty())
        .ok_or(DanceError::MissingVerifier)?;
    session.forget_pending_login(&token, now, max_age).await?;
    let consumer = pending
        .consumer
        .credentials(config.operator_consumer())
        .ok_or(DanceError::NoConsumer)?;
    let request_token = Credentials {
        key: pending.request_token,
        secret: pending.request_secret,
    };
    let access = client
        .access_token(&consumer, &request_token, &verifier)
        .await?;
    let access_credentials = Credentials {
        key: access.token.clone(),
        secret: access.secret.clone(),
    };
    let user = client.whoami(&consumer, &access_credentials).await?;
    match (&user, params.user.as_deref()) {
        (Some(user), Some(claimed)) if claimed != user.id => {
            tracing::warn!(
                api_user_id = %user.id,
                "the callback named another user than the API did: the API's is kept"
            );
        }
        (None, _) => tracing::info!(
            "the API did not say whom the token is for (the consumer may not read /v2/self): proxy tokens are kept per login"
        ),
        _ => {}
    }
    let grant = AccessGrant {
        token: access.token,
        secret: access.secret,
        consumer: pending.consumer,
        user,
        expiration_date: access.expiration_date,
    };
    session.finish_login(&grant).await?;
    Ok(grant)
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}
