//! Extractors for browser-facing handlers, whose refusals are error pages
//! rather than axum's plain-text rejections.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::IntoResponse;

use crate::error::ErrorPage;

/// Wraps an extractor (`Form<T>`, `Query<T>`, …) so that a request it
/// refuses gets an [`ErrorPage`] with the rejection's status, saying what to
/// do. The rejection's own text is not shown: it may quote what was sent.
#[derive(Debug, Clone, Copy)]
pub struct WithErrorPage<E>(pub E);

impl<S, E> FromRequest<S> for WithErrorPage<E>
where
    S: Send + Sync,
    E: FromRequest<S>,
    E::Rejection: IntoResponse,
{
    type Rejection = ErrorPage;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        E::from_request(request, state)
            .await
            .map(Self)
            .map_err(|rejection| unreadable(rejection.into_response().status()))
    }
}

impl<S, E> FromRequestParts<S> for WithErrorPage<E>
where
    S: Send + Sync,
    E: FromRequestParts<S>,
    E::Rejection: IntoResponse,
{
    type Rejection = ErrorPage;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        E::from_request_parts(parts, state)
            .await
            .map(Self)
            .map_err(|rejection| unreadable(rejection.into_response().status()))
    }
}

/// The page for a request an extractor refused with `status`.
fn unreadable(status: StatusCode) -> ErrorPage {
    let what = match status {
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "it was not sent as a web form",
        StatusCode::PAYLOAD_TOO_LARGE => "it is too large",
        _ => "a field is missing or malformed",
    };
    tracing::debug!(
        status = status.as_u16(),
        what,
        "request refused by an extractor"
    );
    // A rejection is always a 4xx; anything else would be our bug, and the
    // person can do nothing but start again either way.
    let status = if status.is_client_error() {
        status
    } else {
        StatusCode::BAD_REQUEST
    };
    ErrorPage::new(
        status,
        "Request not understood",
        format!(
            "The server could not read this request: {what}. Use the pages' own forms and links: go back to the login page, reload it, and start again."
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_keeps_the_client_error_and_says_what_to_do() {
        let page = unreadable(StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(page.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert!(page.message.contains("not sent as a web form"));
        assert!(page.message.contains("login page"));
        assert_eq!(
            unreadable(StatusCode::UNPROCESSABLE_ENTITY).status,
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(
            unreadable(StatusCode::INTERNAL_SERVER_ERROR).status,
            StatusCode::BAD_REQUEST
        );
    }
}
