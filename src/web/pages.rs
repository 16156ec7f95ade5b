//! The login page, the OAuth callback, the credentials page, logout and
//! revoking access.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use serde::{Deserialize, Serialize};

use crate::error::{ErrorPage, render};
use crate::forwarded::ClientInfo;
use crate::oauth::grant::{AccessGrant, ApiUser, Consumer};
use crate::secret::Secret;
use crate::session::{AppSession, SessionError};
use crate::state::AppState;
use crate::web::csrf::Csrf;
use crate::web::dance::{self, CallbackParams, DanceError};
use crate::web::extract::WithErrorPage;

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    csrf: String,
    operator_consumer: bool,
    app_url: String,
    callback_url: String,
}

#[derive(Template)]
#[template(path = "dashboard.html")]
struct DashboardPage {
    csrf: String,
    consumer_key: String,
    consumer_secret: Option<String>,
    token: String,
    token_secret: String,
    expiration_date: Option<String>,
    /// Whom the API says the tokens are for; `None`: it would not say.
    user: Option<ApiUser>,
    snippets: Option<Snippets>,
    /// A call through our proxy with a proxy token: works whoever's consumer
    /// obtained the tokens.
    curl: String,
}

/// The API host clever-tools uses unless told otherwise.
const CLEVER_TOOLS_API_HOST: &str = "https://api.clever-cloud.com";

/// Ready-to-paste uses of the tokens, offered only when the visitor typed
/// the consumer secret (the operator's stays on the server).
struct Snippets {
    clever_login: String,
    env_lines: String,
    config_file: String,
}

/// What the snippets are made of.
struct SnippetInput<'a> {
    consumer_key: &'a str,
    consumer_secret: &'a str,
    grant: &'a AccessGrant,
    /// The API the tokens belong to, without a trailing slash.
    api_host: &'a str,
}

impl Snippets {
    fn new(input: &SnippetInput<'_>) -> Self {
        let [key, secret, token, token_secret, api_host] = [
            input.consumer_key,
            input.consumer_secret,
            input.grant.token.as_str(),
            input.grant.secret.expose(),
            input.api_host,
        ]
        .map(shell_quote);
        // clever-tools talks to its default API unless told otherwise.
        let custom_api = input.api_host != CLEVER_TOOLS_API_HOST;
        let mut clever_login = format!(
            "clever login --token {token} --secret {token_secret} \\\n  --oauth-consumer-key {key} --oauth-consumer-secret {secret}"
        );
        let mut env_lines = format!(
            "CLEVER_TOKEN={token}\nCLEVER_SECRET={token_secret}\nOAUTH_CONSUMER_KEY={key}\nOAUTH_CONSUMER_SECRET={secret}"
        );
        if custom_api {
            clever_login.push_str(&format!(" \\\n  --api-host {api_host}"));
            env_lines.push_str(&format!("\nAPI_HOST={api_host}"));
        }
        Self {
            clever_login,
            env_lines,
            config_file: clever_tools_config(input, custom_api),
        }
    }
}

/// The clever-tools configuration file (`~/.config/clever-cloud/clever-tools.json`):
/// format version 1, one `default` profile whose `overrides` name the
/// consumer, since the tokens only work with the consumer that obtained them.
fn clever_tools_config(input: &SnippetInput<'_>, custom_api: bool) -> String {
    #[derive(Serialize)]
    struct File<'a> {
        version: u8,
        profiles: [Profile<'a>; 1],
    }
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Profile<'a> {
        alias: &'a str,
        token: &'a str,
        secret: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        expiration_date: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        user_id: Option<&'a str>,
        overrides: Overrides<'a>,
    }
    #[derive(Serialize)]
    #[serde(rename_all = "SCREAMING_SNAKE_CASE")]
    struct Overrides<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        api_host: Option<&'a str>,
        oauth_consumer_key: &'a str,
        oauth_consumer_secret: &'a str,
    }

    let file = File {
        version: 1,
        profiles: [Profile {
            alias: "default",
            token: &input.grant.token,
            secret: input.grant.secret.expose(),
            expiration_date: input.grant.expiration_date.as_deref(),
            user_id: input.grant.user_id(),
            overrides: Overrides {
                api_host: custom_api.then_some(input.api_host),
                oauth_consumer_key: input.consumer_key,
                oauth_consumer_secret: input.consumer_secret,
            },
        }],
    };
    // Plain strings and numbers: serialising cannot fail.
    serde_json::to_string_pretty(&file).unwrap_or_default()
}

/// `curl` through our proxy, with a proxy token in `$PROXY_TOKEN`.
fn proxy_curl(app_url: &str) -> String {
    format!("curl -H \"Authorization: Bearer $PROXY_TOKEN\" {app_url}api/v2/self")
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

pub(crate) async fn home(
    State(state): State<AppState>,
    session: AppSession,
    csrf: Csrf,
) -> Result<Response, SessionError> {
    let Some(grant) = session.access().await? else {
        return Ok(Redirect::to("/login").into_response());
    };
    let (consumer_key, consumer_secret) = match &grant.consumer {
        Consumer::Visitor { key, secret } => (key.clone(), Some(secret.expose().to_owned())),
        Consumer::Operator => (
            state.config.oauth_consumer_key.clone().unwrap_or_default(),
            None,
        ),
    };
    let api_host = state.config.api_host.as_str().trim_end_matches('/');
    let snippets = consumer_secret.as_deref().map(|consumer_secret| {
        Snippets::new(&SnippetInput {
            consumer_key: &consumer_key,
            consumer_secret,
            grant: &grant,
            api_host,
        })
    });
    let page = DashboardPage {
        csrf: csrf.form_token(),
        consumer_key,
        consumer_secret,
        token: grant.token.clone(),
        token_secret: grant.secret.expose().to_owned(),
        expiration_date: grant.expiration_date.clone(),
        user: grant.user.clone(),
        snippets,
        curl: proxy_curl(state.config.app_url().as_str()),
    };
    Ok(csrf.set_cookie(no_store(render(StatusCode::OK, &page))))
}

/// The login page: no session is read or written, so an anonymous visitor
/// costs the store nothing; the CSRF token rides on its own cookie.
pub(crate) async fn login_page(State(state): State<AppState>, csrf: Csrf) -> Response {
    let page = LoginPage {
        csrf: csrf.form_token(),
        operator_consumer: state.config.operator_consumer().is_some(),
        app_url: state.config.app_url().to_string(),
        callback_url: state.config.callback_url().to_string(),
    };
    csrf.set_cookie(no_store(render(StatusCode::OK, &page)))
}

#[derive(Deserialize)]
pub(crate) struct LoginForm {
    csrf: String,
    consumer_key: Option<String>,
    consumer_secret: Option<Secret>,
}

pub(crate) async fn login(
    State(state): State<AppState>,
    session: AppSession,
    csrf: Csrf,
    client: Option<Extension<ClientInfo>>,
    WithErrorPage(Form(form)): WithErrorPage<Form<LoginForm>>,
) -> Result<Response, DanceError> {
    if !csrf.accepts(&form.csrf) {
        return Ok(stale_form());
    }
    if let Err(wait) = state
        .login_limiter
        .check(client.map(|Extension(client)| client.ip))
    {
        return Ok(too_many_login_starts(wait));
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

/// 429 with `Retry-After`, and a page that says when to try again.
fn too_many_login_starts(wait: std::time::Duration) -> Response {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let mut page = ErrorPage::new(
        StatusCode::TOO_MANY_REQUESTS,
        "Too many logins started",
        format!(
            "Too many logins were started from your address in the last minute. Try again in {seconds} seconds."
        ),
    )
    .into_response();
    page.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    tracing::info!(
        retry_after_secs = seconds,
        "login start refused: rate limit"
    );
    page
}

pub(crate) async fn callback(
    State(state): State<AppState>,
    session: AppSession,
    csrf: Csrf,
    WithErrorPage(Query(params)): WithErrorPage<Query<CallbackParams>>,
) -> Result<Response, DanceError> {
    let grant = dance::finish(&state.oauth, &session, &state.config, params).await?;
    state.metrics.login();
    tracing::info!(user_id = grant.user_id().unwrap_or("unknown"), "logged in");
    // Forms from before the login stop working.
    Ok(csrf.rotate().set_cookie(Redirect::to("/").into_response()))
}

#[derive(Deserialize)]
pub(crate) struct CsrfForm {
    csrf: String,
}

pub(crate) async fn logout(
    session: AppSession,
    csrf: Csrf,
    WithErrorPage(Form(form)): WithErrorPage<Form<CsrfForm>>,
) -> Result<Response, SessionError> {
    if !csrf.accepts(&form.csrf) {
        return Ok(stale_form());
    }
    session.log_out().await?;
    Ok(Redirect::to("/login").into_response())
}

/// Revokes the OAuth access token at the API, deletes every proxy token
/// made from it here, and ends the session. The tokens here go whatever the
/// API answers; the page says when the API refused.
pub(crate) async fn revoke_access(
    State(state): State<AppState>,
    session: AppSession,
    csrf: Csrf,
    WithErrorPage(Form(form)): WithErrorPage<Form<CsrfForm>>,
) -> Result<Response, Response> {
    if !csrf.accepts(&form.csrf) {
        return Ok(stale_form());
    }
    let Some(grant) = session
        .access()
        .await
        .map_err(IntoResponse::into_response)?
    else {
        return Ok(Redirect::to("/login").into_response());
    };
    let at_api = match grant.consumer.credentials(state.config.operator_consumer()) {
        Some(consumer) => state
            .oauth
            .revoke_access_token(&consumer, &grant.token_credentials())
            .await
            .map_err(|error| error.to_string()),
        None => Err("this server no longer has the consumer that obtained the token".to_owned()),
    };
    // The session first, so that no new token can be made from it while
    // its tokens are deleted.
    session
        .log_out()
        .await
        .map_err(IntoResponse::into_response)?;
    let revoked = state
        .tokens
        .revoke_made_from(&grant)
        .await
        .map_err(|error| {
            tracing::error!(%error, "token store failed while revoking access");
            crate::auth::AuthError::Unavailable.into_response()
        })?;
    for _ in 0..revoked {
        state.metrics.proxy_token_revoked();
    }
    tracing::info!(
        proxy_tokens = revoked,
        at_api = at_api.is_ok(),
        "access revoked"
    );
    let page = match at_api {
        Ok(()) => ErrorPage::new(
            StatusCode::OK,
            "Access revoked",
            format!(
                "Clever Cloud revoked the access token, {revoked} proxy token(s) made from it were deleted here, and you are logged out."
            ),
        ),
        Err(reason) => ErrorPage::new(
            StatusCode::BAD_GATEWAY,
            "Clever Cloud did not revoke the token",
            format!(
                "{reason}. The {revoked} proxy token(s) made from it were deleted here and you are logged out, but the access token itself may still work: revoke it in the Clever Cloud console (Profile, then Tokens)."
            ),
        ),
    };
    Ok(page.into_response())
}

/// A form whose CSRF token is not this browser's: forged, or from a page
/// older than the last login.
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

    fn grant() -> AccessGrant {
        AccessGrant {
            token: "tok".into(),
            secret: Secret::new("tok secret"),
            consumer: Consumer::Operator,
            user: Some(ApiUser {
                id: "user_1".into(),
                name: None,
                email: None,
            }),
            expiration_date: Some("2027-02-23T20:06:34Z".into()),
        }
    }

    #[test]
    fn snippets_carry_the_consumer_and_the_api_host_only_when_it_is_not_the_default() {
        let grant = grant();
        let input = SnippetInput {
            consumer_key: "ck",
            consumer_secret: "c&s",
            grant: &grant,
            api_host: CLEVER_TOOLS_API_HOST,
        };
        let default_api = Snippets::new(&input);
        assert_eq!(
            default_api.clever_login,
            "clever login --token tok --secret 'tok secret' \\\n  --oauth-consumer-key ck --oauth-consumer-secret 'c&s'"
        );
        assert!(!default_api.env_lines.contains("API_HOST"));
        assert!(!default_api.config_file.contains("API_HOST"));

        let custom_api = Snippets::new(&SnippetInput {
            api_host: "http://127.0.0.1:9",
            ..input
        });
        assert!(
            custom_api
                .clever_login
                .ends_with("--api-host http://127.0.0.1:9")
        );
        assert!(
            custom_api
                .env_lines
                .ends_with("\nAPI_HOST=http://127.0.0.1:9")
        );
    }

    #[test]
    fn the_config_file_is_a_clever_tools_profile_with_consumer_overrides() {
        let grant = grant();
        let input = SnippetInput {
            consumer_key: "ck",
            consumer_secret: "cs",
            grant: &grant,
            api_host: CLEVER_TOOLS_API_HOST,
        };
        let file: serde_json::Value =
            serde_json::from_str(&clever_tools_config(&input, false)).expect("valid JSON");
        assert_eq!(
            file,
            serde_json::json!({
                "version": 1,
                "profiles": [{
                    "alias": "default",
                    "token": "tok",
                    "secret": "tok secret",
                    "expirationDate": "2027-02-23T20:06:34Z",
                    "userId": "user_1",
                    "overrides": {"OAUTH_CONSUMER_KEY": "ck", "OAUTH_CONSUMER_SECRET": "cs"},
                }],
            })
        );
    }
}
