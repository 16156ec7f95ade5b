//! Static files, compiled into the binary so it is the whole app.

use axum::Router;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::AppState;

/// One embedded file: its name under `/static/`, media type and body.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const SVG: &str = "image/svg+xml";

/// Every static file. The scripts are ES modules importing each other by
/// relative path, so each one a page imports must be listed here.
const ASSETS: &[Asset] = &[
    asset("app.css", CSS, include_str!("../../static/app.css")),
    asset("logo.svg", SVG, include_str!("../../static/logo.svg")),
    asset("app.js", JS, include_str!("../../static/app.js")),
    asset("copy.js", JS, include_str!("../../static/copy.js")),
    asset("api.js", JS, include_str!("../../static/api.js")),
    asset("live.js", JS, include_str!("../../static/live.js")),
    asset("account.js", JS, include_str!("../../static/account.js")),
    asset("events.js", JS, include_str!("../../static/events.js")),
    asset("logs.js", JS, include_str!("../../static/logs.js")),
    asset("tokens.js", JS, include_str!("../../static/tokens.js")),
    asset("time.js", JS, include_str!("../../static/time.js")),
];

const fn asset(name: &'static str, content_type: &'static str, body: &'static str) -> Asset {
    Asset {
        name,
        content_type,
        body,
    }
}

fn find(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|asset| asset.name == name)
}

async fn serve(Path(name): Path<String>) -> Response {
    let Some(asset) = find(&name) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    (
        [
            (header::CONTENT_TYPE, asset.content_type),
            // Short: the modules import each other, and a deploy should not
            // leave a browser mixing old and new ones for long.
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        asset.body,
    )
        .into_response()
}

/// `/static/{name}`.
pub fn router() -> Router<AppState> {
    Router::new().route("/static/{name}", get(serve))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_module_a_script_imports_is_served() {
        for script in ASSETS.iter().filter(|asset| asset.content_type == JS) {
            let imports = script
                .body
                .lines()
                .filter(|line| line.starts_with("import "))
                .filter_map(|line| line.split("\"./").nth(1));
            for path in imports {
                let imported = path.split('"').next().unwrap_or_default();
                assert!(
                    find(imported).is_some(),
                    "{} imports {imported}, which is not served",
                    script.name
                );
            }
        }
    }
}
