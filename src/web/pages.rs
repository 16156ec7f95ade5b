//! The login page, the OAuth callback, the credentials page, logout.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;

use crate::AppState;
use crate::error::{ErrorPage, render};
use crate::oauth::dance::{self, CallbackParams, DanceError};
use crate::secret::Secret;
use crate::session::{AccessGrant, AppSession, Consumer, SessionError};

/// `/`, `/login`, `/callback`, `/logout`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(home))
        .route("/login", get(login_page).post(login))
        .route("/callback", get(callback))
        .route("/logout", post(logout))
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    csrf: String,
    operator_consumer: bool,
    callback_url: String,
}

#[derive(Template)]
#[template(path = "credentials.html")]
struct CredentialsPage {
    csrf: String,
    consumer_key: String,
    consumer_secret: Option<String>,
    token: String,
    token_secret: String,
    expiration_date: Option<String>,
    user_id: Option<String>,
    snippets: Option<Snippets>,
}

/// Ready-to-paste uses of the tokens, offered only when the visitor typed
/// the consumer secret (the operator's stays on the server).
struct Snippets {
    clever_login: String,
    env_lines: String,
}

impl Snippets {
    fn new(consumer_key: &str, consumer_secret: &str, grant: &AccessGrant) -> Self {
        let [key, secret, token, token_secret] = [
            consumer_key,
            consumer_secret,
            grant.token.as_str(),
            grant.secret.expose(),
        ]
        .map(shell_quote);
        Self {
            clever_login: format!(
                "clever login --token {token} --secret {token_secret} \\\n  --oauth-consumer-key {key} --oauth-consumer-secret {secret}"
            ),
            env_lines: format!(
                "CLEVER_TOKEN={token}\nCLEVER_SECRET={token_secret}\nOAUTH_CONSUMER_KEY={key}\nOAUTH_CONSUMER_SECRET={secret}"
            ),
        }
    }
}

/// Quotes a value for a POSIX shell, only when it needs it.
fn shell_quote(value: &str) -> String {
    let plain = !value.is_empty()
        && value
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"-_.:/@%+=".contains(&byte));
    if plain {
        value.to_owned()
    } else {
        format!("'{}'", value.replace('\'', r"'\''"))
    }
}

/// Pages that show secrets must not be kept by caches or the back button.
fn no_store(response: Response) -> Response {
    ([(header::CACHE_CONTROL, "no-store")], response).into_response()
}

async fn home(
    State(state): State<AppState>,
    session: AppSession,
) -> Result<Response, SessionError> {
    let Some(grant) = session.access().await? else {
        return Ok(Redirect::to("/login").into_response());
    };
    let csrf = session.csrf_token().await?;
    let (consumer_key, consumer_secret) = match &grant.consumer {
        Consumer::Visitor { key, secret } => (key.clone(), Some(secret.expose().to_owned())),
        Consumer::Operator => (
            state.config.oauth_consumer_key.clone().unwrap_or_default(),
            None,
        ),
    };
    let snippets = consumer_secret
        .as_deref()
        .map(|secret| Snippets::new(&consumer_key, secret, &grant));
    let page = CredentialsPage {
        csrf,
        consumer_key,
        consumer_secret,
        token: grant.token.clone(),
        token_secret: grant.secret.expose().to_owned(),
        expiration_date: grant.expiration_date.clone(),
        user_id: grant.user_id.clone(),
        snippets,
    };
    Ok(no_store(render(StatusCode::OK, &page)))
}

async fn login_page(
    State(state): State<AppState>,
    session: AppSession,
) -> Result<Response, SessionError> {
    let page = LoginPage {
        csrf: session.csrf_token().await?,
        operator_consumer: state.config.operator_consumer().is_some(),
        callback_url: state.config.callback_url().to_string(),
    };
    Ok(no_store(render(StatusCode::OK, &page)))
}

#[derive(Deserialize)]
struct LoginForm {
    csrf: String,
    consumer_key: Option<String>,
    consumer_secret: Option<Secret>,
}

async fn login(
    State(state): State<AppState>,
    session: AppSession,
    Form(form): Form<LoginForm>,
) -> Result<Response, DanceError> {
    if !session.csrf_matches(&form.csrf).await? {
        return Ok(stale_form());
    }
    let consumer = if state.config.operator_consumer().is_some() {
        Consumer::Operator
    } else {
        let key = form.consumer_key.unwrap_or_default().trim().to_owned();
        let secret = form.consumer_secret.unwrap_or_default();
        if key.is_empty() || secret.expose().is_empty() {
            return Err(DanceError::NoConsumer);
        }
        Consumer::Visitor { key, secret }
    };
    let authorize_url = dance::start(&state.oauth, &session, &state.config, consumer).await?;
    Ok(Redirect::to(authorize_url.as_str()).into_response())
}

async fn callback(
    State(state): State<AppState>,
    session: AppSession,
    Query(params): Query<CallbackParams>,
) -> Result<Response, DanceError> {
    let grant = dance::finish(&state.oauth, &session, &state.config, params).await?;
    state.metrics.login();
    tracing::info!(
        user_id = grant.user_id.as_deref().unwrap_or("unknown"),
        "logged in"
    );
    Ok(Redirect::to("/").into_response())
}

#[derive(Deserialize)]
struct LogoutForm {
    csrf: String,
}

async fn logout(
    session: AppSession,
    Form(form): Form<LogoutForm>,
) -> Result<Response, SessionError> {
    if !session.csrf_matches(&form.csrf).await? {
        return Ok(stale_form());
    }
    session.log_out().await?;
    Ok(Redirect::to("/login").into_response())
}

/// A form whose CSRF token is not this session's: forged, or from a page
/// older than the session.
fn stale_form() -> Response {
    ErrorPage::new(
        StatusCode::FORBIDDEN,
        "Form expired",
        "This form does not belong to your current session (it may be old, or sent from another site). Reload the page and try again.",
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quote_leaves_plain_values_and_quotes_the_rest() {
        assert_eq!(shell_quote("abc-123_x"), "abc-123_x");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
