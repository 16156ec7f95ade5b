//! Static files, compiled into the binary so it is the whole app.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::AppState;

/// One embedded file and its media type.
struct Asset {
    body: &'static str,
    content_type: &'static str,
}

const CSS: Asset = Asset {
    body: include_str!("../../static/app.css"),
    content_type: "text/css; charset=utf-8",
};
const JS: Asset = Asset {
    body: include_str!("../../static/app.js"),
    content_type: "text/javascript; charset=utf-8",
};
const LOGO: Asset = Asset {
    body: include_str!("../../static/logo.svg"),
    content_type: "image/svg+xml",
};

fn serve(asset: &'static Asset) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, asset.content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        asset.body,
    )
}

/// `/static/…`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/static/app.css", get(|| async { serve(&CSS) }))
        .route("/static/app.js", get(|| async { serve(&JS) }))
        .route("/static/logo.svg", get(|| async { serve(&LOGO) }))
}
