//! How errors reach people and programs: a page for browsers, JSON for API
//! clients. Each area's error type maps itself onto one of these.

use askama::Template;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use serde_json::json;

use crate::oauth::OAuthError;
use crate::oauth::dance::DanceError;
use crate::session::SessionError;

/// An error page: what happened, and what to do.
#[derive(Debug, Template)]
#[template(path = "error.html")]
pub struct ErrorPage {
    /// HTTP status of the page.
    pub status: StatusCode,
    /// Short title.
    pub title: &'static str,
    /// What happened and what to do, in plain words.
    pub message: String,
}

impl ErrorPage {
    /// An error page with `status`.
    pub fn new(status: StatusCode, title: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            title,
            message: message.into(),
        }
    }
}

impl IntoResponse for ErrorPage {
    fn into_response(self) -> Response {
        render(self.status, &self)
    }
}

/// Renders a page template, or logs why it could not and answers 500.
pub fn render<T: Template>(status: StatusCode, page: &T) -> Response {
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(error) => {
            tracing::error!(%error, "a page template failed to render");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    }
}

/// `{"error": message}` with `status`, for API clients.
pub fn json_error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

impl IntoResponse for SessionError {
    fn into_response(self) -> Response {
        tracing::error!(error = %self, "session store failed");
        store_unavailable_page()
    }
}

/// The 503 page of a session store that cannot be reached.
pub fn store_unavailable_page() -> Response {
    ErrorPage::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "Sessions are unavailable",
        "The server cannot reach its session store right now. Try again in a minute.",
    )
    .into_response()
}

impl IntoResponse for DanceError {
    fn into_response(self) -> Response {
        let again = "Go back to the login page and start again.";
        let page = match self {
            DanceError::OAuth(error) => return oauth_error_page(&error).into_response(),
            DanceError::Session(error) => return error.into_response(),
            DanceError::NoConsumer => ErrorPage::new(
                StatusCode::BAD_REQUEST,
                "Consumer needed",
                "Enter the consumer key and secret of an OAuth consumer you created in the Clever Cloud console.",
            ),
            DanceError::NoPendingLogin => ErrorPage::new(
                StatusCode::BAD_REQUEST,
                "No login in progress",
                format!(
                    "This browser has no login waiting for this callback: it may have been finished already, or started in another browser. {again}"
                ),
            ),
            DanceError::TokenMismatch => ErrorPage::new(
                StatusCode::BAD_REQUEST,
                "Unexpected callback",
                format!("The callback does not answer the login this browser started. {again}"),
            ),
            DanceError::MissingVerifier => ErrorPage::new(
                StatusCode::BAD_REQUEST,
                "Incomplete callback",
                format!("The callback carries no verifier, so the login cannot finish. {again}"),
            ),
        };
        tracing::info!(reason = page.title, "login refused");
        page.into_response()
    }
}

fn oauth_error_page(error: &OAuthError) -> ErrorPage {
    let (status, title, message) = match error {
        OAuthError::ConsumerRejected(_) => (
            StatusCode::BAD_REQUEST,
            "Consumer refused",
            "Clever Cloud refused the consumer key or secret. Check them in the console's OAuth consumer page, then log in again.",
        ),
        OAuthError::VerifierRejected(_) => (
            StatusCode::BAD_REQUEST,
            "Authorization refused",
            "Clever Cloud refused to turn this authorization into tokens (it may have expired or been used). Log in again.",
        ),
        OAuthError::Timeout(_) => (
            StatusCode::GATEWAY_TIMEOUT,
            "Clever Cloud is too slow",
            "The Clever Cloud API did not answer in time. Try again in a moment.",
        ),
        OAuthError::Unreachable(_) => (
            StatusCode::BAD_GATEWAY,
            "Clever Cloud is unreachable",
            "The server could not reach the Clever Cloud API. Try again in a moment.",
        ),
        OAuthError::UnexpectedStatus(_) | OAuthError::Malformed => (
            StatusCode::BAD_GATEWAY,
            "Unexpected answer",
            "The Clever Cloud API gave an answer this server does not understand. Try again later.",
        ),
    };
    tracing::warn!(error = %error, source = ?std::error::Error::source(error).map(ToString::to_string), "OAuth call failed");
    ErrorPage::new(status, title, message)
}
