//! How the login's and the session's errors reach a browser: a page that
//! says what happened and what to do.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::error::{ErrorPage, store_unavailable_page};
use crate::oauth::OAuthError;
use crate::session::SessionError;
use crate::web::dance::DanceError;

impl IntoResponse for SessionError {
    fn into_response(self) -> Response {
        tracing::error!(error = %self, "session store failed");
        store_unavailable_page()
    }
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
