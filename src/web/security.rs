//! Security headers on what browsers render.
//!
//! Pages get a Content-Security-Policy that allows only our own scripts,
//! styles, images and connections, forbids framing, and lets forms go to us
//! and to the API (the login form's POST is answered by a redirect to the
//! API's authorize page, and browsers hold that redirect to `form-action`).

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;

use crate::config::Config;

/// The headers added to responses, computed once from the configuration.
#[derive(Clone, Debug)]
pub struct SecurityHeaders {
    content_security_policy: HeaderValue,
    /// Set when `APP_URL` is https: browsers then never try plain http.
    strict_transport_security: Option<HeaderValue>,
}

impl SecurityHeaders {
    /// The policy for `config`'s public URL and API host.
    pub fn new(config: &Config) -> Self {
        let policy = content_security_policy(config);
        Self {
            // The policy is built from URL origins, which are always
            // header-safe ASCII; an empty policy would only mean no policy.
            content_security_policy: HeaderValue::from_str(&policy)
                .unwrap_or_else(|_| HeaderValue::from_static("default-src 'self'")),
            strict_transport_security: config
                .secure_cookies()
                .then(|| HeaderValue::from_static("max-age=31536000")),
        }
    }
}

/// The Content-Security-Policy of our pages.
///
/// `img-src` also allows `https:`: the account panel shows the avatar
/// `/v2/self` names, which lives on another host (images cannot run code).
/// `connect-src` names our WebSocket origin as well as `'self'`: CSP level 3
/// lets `'self'` cover `ws:`/`wss:` on the same host, but older browsers
/// (Safari before 15.4) did not.
pub fn content_security_policy(config: &Config) -> String {
    let app_url = config.app_url();
    let mut websocket = app_url.clone();
    let ws_scheme = if app_url.scheme() == "https" {
        "wss"
    } else {
        "ws"
    };
    let websocket_origin = websocket
        .set_scheme(ws_scheme)
        .ok()
        .map(|()| websocket.origin().ascii_serialization())
        .unwrap_or_default();
    let api_origin = config.api_host.origin().ascii_serialization();
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' https:; \
         connect-src 'self' {websocket_origin}; form-action 'self' {api_origin}; \
         frame-ancestors 'none'; base-uri 'none'"
    )
}

/// Adds the headers to `response`: the policy and `no-store` on HTML pages
/// (every page may show a secret or a CSRF token), `nosniff` and the
/// referrer policy everywhere. Headers a handler set itself are kept.
pub fn apply(headers: &SecurityHeaders, mut response: Response) -> Response {
    let target = response.headers_mut();
    if is_html(target) {
        set_default(
            target,
            header::CONTENT_SECURITY_POLICY,
            headers.content_security_policy.clone(),
        );
        set_default(
            target,
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        );
    }
    set_default(
        target,
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Some(hsts) = &headers.strict_transport_security {
        set_default(target, header::STRICT_TRANSPORT_SECURITY, hsts.clone());
    }
    // Not no-referrer: with it Chromium sends `Origin: null` on same-origin
    // POSTs, which the same-origin check refuses.
    set_default(
        target,
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response
}

/// [`apply`] as a layer over every route. tower's own response mapping,
/// not axum's `map_response`, which boxes the rest of the stack and the
/// future on every request.
pub fn layer(
    headers: SecurityHeaders,
) -> tower::util::MapResponseLayer<impl FnMut(Response) -> Response + Clone> {
    let headers = Arc::new(headers);
    tower::util::MapResponseLayer::new(move |response| apply(&headers, response))
}

fn is_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.trim_start().starts_with("text/html"))
}

fn set_default(headers: &mut HeaderMap, name: header::HeaderName, value: HeaderValue) {
    headers.entry(name).or_insert(value);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(args: &[&str]) -> anyhow::Result<Config> {
        Config::from_args(std::iter::once("oauth-consumer-server").chain(args.iter().copied()))
    }

    #[test]
    fn the_policy_allows_our_origin_and_the_api_for_forms() -> anyhow::Result<()> {
        let config = config(&[
            "--app-url",
            "https://gw.example.com/base/",
            "--api-host",
            "https://api.example.com",
        ])?;
        let policy = content_security_policy(&config);
        assert!(policy.contains("script-src 'self';"), "{policy}");
        assert!(!policy.contains("unsafe-inline"), "{policy}");
        assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
        assert!(
            policy.contains("form-action 'self' https://api.example.com;"),
            "{policy}"
        );
        assert!(
            policy.contains("connect-src 'self' wss://gw.example.com;"),
            "{policy}"
        );
        Ok(())
    }

    #[test]
    fn plain_http_deployments_connect_with_ws() -> anyhow::Result<()> {
        let policy = content_security_policy(&config(&["--port", "9000"])?);
        assert!(
            policy.contains("connect-src 'self' ws://localhost:9000;"),
            "{policy}"
        );
        Ok(())
    }
}
