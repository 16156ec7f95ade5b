//! The OAuth 1.0a dance: request token, authorize page, access token.

use axum::extract::{Form, Query, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Router, body::Bytes};
use serde::Deserialize;

use super::state::{Refusal, TokenKind};
use super::verify::percent_encode;
use super::{
    ACCESS_TOKEN_PATH, AUTHORIZE_PATH, FAKE_USER_ID, REQUEST_TOKEN_PATH, SharedState, is_form,
    lock, signed_request, unix_now,
};

pub(super) fn router() -> Router<SharedState> {
    Router::new()
        .route(REQUEST_TOKEN_PATH, post(request_token))
        .route(AUTHORIZE_PATH, get(authorize_page).post(approve))
        .route(ACCESS_TOKEN_PATH, post(access_token))
}

/// The `oauth_token` of the authorize page's URL and form.
#[derive(Debug, Deserialize)]
struct AuthorizeParams {
    oauth_token: String,
    /// Who approves (a test's choice; the fake's one user by default).
    user: Option<String>,
}

async fn request_token(State(state): State<SharedState>, parts: Parts, body: Bytes) -> Response {
    let issued = signed_request(&parts, is_form(&parts).then_some(&body[..])).and_then(|request| {
        let mut state = lock(&state);
        state.check(&request, TokenKind::None, unix_now())?;
        let callback = request
            .param("oauth_callback")
            .ok_or_else(|| Refusal::bad_request("missing parameter oauth_callback"))?;
        Ok(state.issue_request_token(request.consumer_key(), callback))
    });
    match issued {
        Ok(pending) => form_response(&[
            ("oauth_token", &pending.token),
            ("oauth_token_secret", &pending.secret),
            ("oauth_callback_confirmed", "true"),
        ]),
        Err(refusal) => refusal.into_text_response(),
    }
}

async fn authorize_page(
    State(state): State<SharedState>,
    Query(params): Query<AuthorizeParams>,
) -> Response {
    let consumer_key = lock(&state)
        .request_tokens()
        .iter()
        .find(|pending| pending.token == params.oauth_token)
        .map(|pending| pending.consumer_key.clone());
    let Some(consumer_key) = consumer_key else {
        return unknown_token_page();
    };
    let app = escape_html(&consumer_key);
    let token = escape_html(&params.oauth_token);
    Html(format!(
        "<!doctype html>\n<html><head><title>Authorize {app}?</title></head><body>\n\
         <h1>Authorize {app}?</h1>\n\
         <form method=\"post\" action=\"{AUTHORIZE_PATH}\">\n\
         <input type=\"hidden\" name=\"oauth_token\" value=\"{token}\">\n\
         <button id=\"approve\" type=\"submit\">Approve</button>\n\
         </form>\n</body></html>\n"
    ))
    .into_response()
}

async fn approve(
    State(state): State<SharedState>,
    Form(params): Form<AuthorizeParams>,
) -> Response {
    let user = params.user.as_deref().unwrap_or(FAKE_USER_ID);
    let Some((callback, verifier)) = lock(&state).approve(&params.oauth_token, user) else {
        return unknown_token_page();
    };
    let separator = if callback.contains('?') { '&' } else { '?' };
    let location = format!(
        "{callback}{separator}oauth_token={}&oauth_verifier={}&user={}",
        percent_encode(&params.oauth_token),
        percent_encode(&verifier),
        percent_encode(user),
    );
    Redirect::to(&location).into_response()
}

async fn access_token(State(state): State<SharedState>, parts: Parts, body: Bytes) -> Response {
    let issued = signed_request(&parts, is_form(&parts).then_some(&body[..])).and_then(|request| {
        let mut state = lock(&state);
        state.check(&request, TokenKind::Request, unix_now())?;
        let token = request.token().unwrap_or_default();
        state.exchange(token, request.param("oauth_verifier"))
    });
    match issued {
        Ok(issued) => form_response(&[
            ("oauth_token", &issued.token),
            ("oauth_token_secret", &issued.secret),
            ("expiration_date", &issued.expiration_date),
        ]),
        Err(refusal) => refusal.into_text_response(),
    }
}

/// An `application/x-www-form-urlencoded` answer.
fn form_response(fields: &[(&str, &str)]) -> Response {
    let body = fields
        .iter()
        .map(|(name, value)| format!("{}={}", percent_encode(name), percent_encode(value)))
        .collect::<Vec<_>>()
        .join("&");
    (
        [(header::CONTENT_TYPE, "application/x-www-form-urlencoded")],
        body,
    )
        .into_response()
}

fn unknown_token_page() -> Response {
    (
        StatusCode::BAD_REQUEST,
        Html("<!doctype html>\n<html><body><h1>Unknown or expired request token</h1></body></html>\n"),
    )
        .into_response()
}

fn escape_html(text: &str) -> String {
    text.chars()
        .fold(String::with_capacity(text.len()), |mut escaped, c| {
            match c {
                '&' => escaped.push_str("&amp;"),
                '<' => escaped.push_str("&lt;"),
                '>' => escaped.push_str("&gt;"),
                '"' => escaped.push_str("&quot;"),
                '\'' => escaped.push_str("&#39;"),
                _ => escaped.push(c),
            }
            escaped
        })
}
