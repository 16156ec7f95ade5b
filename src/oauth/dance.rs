//! The login dance: start it (request token, then the browser goes to the
//! API's authorize page) and finish it (callback, access token).

use serde::Deserialize;
use subtle::ConstantTimeEq as _;
use url::Url;

use super::client::{OAuthClient, OAuthError};
use super::signature::Credentials;
use crate::config::Config;
use crate::secret::Secret;
use crate::session::{AccessGrant, AppSession, Consumer, PendingLogin, SessionError};

/// Why a login could not start or finish.
#[derive(Debug, thiserror::Error)]
pub enum DanceError {
    /// No consumer: none configured and the visitor typed none.
    #[error("a consumer key and secret are needed")]
    NoConsumer,
    /// The callback came to a browser that started no login (or already
    /// finished it: a request token is good once).
    #[error("this browser has no login in progress")]
    NoPendingLogin,
    /// The callback's request token is not the one this browser asked for.
    #[error("the callback's token does not belong to this browser's login")]
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
    /// The Clever Cloud user id (sent in practice, not documented).
    pub user: Option<String>,
}

/// Asks for a request token, remembers it in this browser's session, and
/// returns the API's authorize URL to send the browser to.
pub async fn start(
    client: &OAuthClient,
    session: &AppSession,
    config: &Config,
    consumer: Consumer,
) -> Result<Url, DanceError> {
    let credentials = consumer.credentials(config).ok_or(DanceError::NoConsumer)?;
    let request_token = client
        .request_token(&credentials, &config.callback_url())
        .await?;
    let authorize_url = client.authorize_url(&request_token.token);
    session
        .start_login(&PendingLogin {
            request_token: request_token.token,
            request_secret: request_token.secret,
            consumer,
        })
        .await?;
    Ok(authorize_url)
}

/// Checks that the callback answers this browser's own login, exchanges the
/// verifier for an access token and stores it in the session.
pub async fn finish(
    client: &OAuthClient,
    session: &AppSession,
    config: &Config,
    params: CallbackParams,
) -> Result<AccessGrant, DanceError> {
    let pending = session
        .pending_login()
        .await?
        .ok_or(DanceError::NoPendingLogin)?;
    let token_matches: bool = params.oauth_token.as_deref().is_some_and(|token| {
        token
            .as_bytes()
            .ct_eq(pending.request_token.as_bytes())
            .into()
    });
    if !token_matches {
        return Err(DanceError::TokenMismatch);
    }
    let verifier = params
        .oauth_verifier
        .filter(|verifier| !verifier.expose().is_empty())
        .ok_or(DanceError::MissingVerifier)?;
    let consumer = pending
        .consumer
        .credentials(config)
        .ok_or(DanceError::NoConsumer)?;
    let request_token = Credentials {
        key: pending.request_token,
        secret: pending.request_secret,
    };
    let access = client
        .access_token(&consumer, &request_token, &verifier)
        .await?;
    let grant = AccessGrant {
        token: access.token,
        secret: access.secret,
        consumer: pending.consumer,
        user_id: params.user,
        expiration_date: access.expiration_date,
    };
    session.finish_login(&grant).await?;
    Ok(grant)
}
