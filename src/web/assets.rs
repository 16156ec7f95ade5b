//! Static files, compiled into the binary so it is the whole app.

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest as _, Sha256};

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
    asset("loglines.js", JS, include_str!("../../static/loglines.js")),
    asset(
        "logstream.js",
        JS,
        include_str!("../../static/logstream.js"),
    ),
    asset("sse.js", JS, include_str!("../../static/sse.js")),
    asset("tokens.js", JS, include_str!("../../static/tokens.js")),
    asset("scopes.js", JS, include_str!("../../static/scopes.js")),
    asset("time.js", JS, include_str!("../../static/time.js")),
];

const fn asset(name: &'static str, content_type: &'static str, body: &'static str) -> Asset {
    Asset {
        name,
        content_type,
        body,
    }
}

fn find(name: &str) -> Option<(usize, &'static Asset)> {
    ASSETS
        .iter()
        .enumerate()
        .find(|(_, asset)| asset.name == name)
}

/// Each asset's entity tag: a hash of its body, computed once.
fn etag(index: usize) -> &'static str {
    static ETAGS: OnceLock<Vec<String>> = OnceLock::new();
    let etags = ETAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|asset| {
                let digest = Sha256::digest(asset.body.as_bytes());
                format!("\"{}\"", crate::hex::encode(&digest[..12]))
            })
            .collect()
    });
    etags.get(index).map_or("", String::as_str)
}

/// Whether `If-None-Match` names `etag` (or `*`).
fn not_modified(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == etag || tag == "*")
}

pub(crate) async fn serve(Path(name): Path<String>, request: HeaderMap) -> Response {
    let Some((index, asset)) = find(&name) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let etag = etag(index);
    // Revalidated on every use: the modules import each other, and after a
    // deploy a browser must not mix cached old ones with new ones.
    let headers = [
        (header::CONTENT_TYPE, asset.content_type),
        (header::CACHE_CONTROL, "no-cache"),
        (header::ETAG, etag),
    ];
    if not_modified(&request, etag) {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    (headers, asset.body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_module_a_script_imports_is_served() {
        for script in ASSETS.iter().filter(|asset| asset.content_type == JS) {
            // `import "./a.js"` and `… from "./b.js"`, an import list spanning
            // lines included.
            let imports = ["import \"./", "from \"./"]
                .iter()
                .flat_map(|prefix| script.body.split(prefix).skip(1));
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

    #[test]
    fn a_cached_copy_is_revalidated_by_its_entity_tag() {
        let tag = etag(0);
        assert!(tag.starts_with('"') && tag.len() == 26, "{tag}");
        assert_ne!(tag, etag(1), "each body has its own tag");
        let mut headers = HeaderMap::new();
        assert!(!not_modified(&headers, tag));
        headers.insert(
            header::IF_NONE_MATCH,
            format!("\"other\", W/{tag}").parse().expect("header value"),
        );
        assert!(not_modified(&headers, tag));
        assert!(!not_modified(&headers, etag(1)));
    }
}
