//! How errors reach people and programs: a page for browsers, JSON for API
//! clients. Each area's error type maps itself onto one of these.

use askama::Template;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use serde_json::json;

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

/// The 503 page of a session store that cannot be reached.
pub fn store_unavailable_page() -> Response {
    ErrorPage::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "Sessions are unavailable",
        "The server cannot reach its session store right now. Try again in a minute.",
    )
    .into_response()
}
