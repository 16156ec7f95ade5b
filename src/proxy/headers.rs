//! Which headers cross the proxy. Hop-by-hop headers belong to one
//! connection and stop here both ways; the client's credentials for *this*
//! server and its claims about where it came from never reach the API, and
//! the API's cookies never reach the client, whose browser may not treat
//! an API answer as one of this server's pages.

use axum::http::{HeaderMap, HeaderName, HeaderValue, header};

/// The hop-by-hop headers of RFC 9110 §7.6.1, with the obsolete
/// `Keep-Alive` and `Proxy-Connection` that clients still send.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
];

/// Turns the client's request headers into those sent to the API: no
/// hop-by-hop header, no `Cookie` (our session cookie among them), no
/// `Authorization` (a proxy token, or anything else not meant for the API:
/// the proxy sets its own), no `Host` (the HTTP client sets the API's), no
/// `Expect` (this server already answered it), and none of the forwarding
/// headers (`Forwarded`, `X-Forwarded-*`, `X-Real-IP`, `Via`): written by
/// the client, they would let it claim any address or host to the API. Nor
/// the method-override headers: a server that honours them would run
/// another method than the one a proxy token's scope was checked for.
pub fn for_api(headers: &mut HeaderMap) {
    const OURS: [HeaderName; 10] = [
        header::COOKIE,
        header::AUTHORIZATION,
        header::HOST,
        header::EXPECT,
        header::FORWARDED,
        header::VIA,
        HeaderName::from_static("x-real-ip"),
        HeaderName::from_static("x-http-method-override"),
        HeaderName::from_static("x-http-method"),
        HeaderName::from_static("x-method-override"),
    ];
    strip_hop_by_hop(headers);
    remove_present(headers, |name| {
        OURS.contains(name) || name.as_str().starts_with("x-forwarded-")
    });
}

/// The API's CORS answers, which would otherwise speak for this server's
/// origin.
const CORS: [HeaderName; 6] = [
    header::ACCESS_CONTROL_ALLOW_ORIGIN,
    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
    header::ACCESS_CONTROL_ALLOW_HEADERS,
    header::ACCESS_CONTROL_ALLOW_METHODS,
    header::ACCESS_CONTROL_EXPOSE_HEADERS,
    header::ACCESS_CONTROL_MAX_AGE,
];

/// Turns the API's response headers into those sent to the client: no
/// hop-by-hop header, no `Set-Cookie` (the client's cookies for this
/// server are ours alone), and no CORS header: which other sites may read
/// this server's answers is this server's policy (none), not the API's.
pub fn for_client(headers: &mut HeaderMap) {
    strip_hop_by_hop(headers);
    remove_present(headers, |name| {
        name == header::SET_COOKIE || CORS.contains(name)
    });
}

/// The policy of every answer from `/api/…`: whatever the API sends, a
/// browser opening it renders it in a sandbox of its own (an opaque origin,
/// no scripts, no forms, nothing loaded), never as one of this server's
/// pages with their origin and cookies. Programs reading JSON or events
/// ignore it.
pub const SANDBOX_POLICY: &str = "sandbox; default-src 'none'";

/// Sets the sandbox policy and `nosniff` on an answer from `/api/…`,
/// replacing the API's own values of those two headers.
pub fn sandbox(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(SANDBOX_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
}

/// Removes every header whose name `unwanted` picks. A message has a few
/// headers and the lists many names: looking at the headers present costs
/// less than looking each name up.
fn remove_present(headers: &mut HeaderMap, unwanted: impl Fn(&HeaderName) -> bool) {
    let present: Vec<HeaderName> = headers
        .keys()
        .filter(|name| unwanted(name))
        .cloned()
        .collect();
    for name in present {
        headers.remove(name);
    }
}

/// Removes the hop-by-hop headers and every header that `Connection` names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .collect();
        for name in &named {
            headers.remove(name);
        }
    }
    remove_present(headers, |name| HOP_BY_HOP.contains(name));
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    fn names(map: &HeaderMap) -> Vec<&str> {
        let mut names: Vec<&str> = map.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        names
    }

    #[test]
    fn requests_lose_hop_by_hop_headers_and_our_credentials() {
        let mut map = headers(&[
            ("connection", "keep-alive, X-Hop"),
            ("connection", "x-other-hop"),
            ("x-hop", "1"),
            ("x-other-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("trailer", "x-checksum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic c2VjcmV0"),
            ("proxy-authenticate", "Basic"),
            ("cookie", "ocs_session=secret; other=1"),
            ("authorization", "Bearer ocsp_secret"),
            ("host", "gateway.example.com"),
            ("expect", "100-continue"),
            ("accept", "application/json"),
            ("content-type", "application/json"),
            ("content-length", "12"),
            ("x-custom", "kept"),
            ("x-custom", "twice"),
        ]);
        for_api(&mut map);
        assert_eq!(
            names(&map),
            ["accept", "content-length", "content-type", "x-custom"]
        );
        assert_eq!(map.get_all("x-custom").iter().count(), 2);
    }

    #[test]
    fn requests_lose_the_clients_forwarding_and_method_override_headers() {
        let mut map = headers(&[
            ("forwarded", "for=203.0.113.7;host=evil.example"),
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-host", "evil.example"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-port", "443"),
            ("x-real-ip", "203.0.113.7"),
            ("via", "1.1 evil"),
            ("x-http-method-override", "DELETE"),
            ("x-http-method", "DELETE"),
            ("x-method-override", "DELETE"),
            ("x-forwardedness", "kept: not a forwarding header"),
            ("accept", "application/json"),
        ]);
        for_api(&mut map);
        assert_eq!(names(&map), ["accept", "x-forwardedness"]);
    }

    #[test]
    fn api_answers_are_sandboxed_whatever_the_api_said() {
        let mut map = headers(&[
            ("content-type", "text/html"),
            ("content-security-policy", "script-src *"),
            ("content-security-policy", "default-src *"),
            ("x-content-type-options", "sniff-away"),
        ]);
        sandbox(&mut map);
        let policies: Vec<_> = map.get_all("content-security-policy").iter().collect();
        assert_eq!(policies, [SANDBOX_POLICY]);
        let sniffing: Vec<_> = map.get_all("x-content-type-options").iter().collect();
        assert_eq!(sniffing, ["nosniff"]);
        assert_eq!(map["content-type"], "text/html");
    }

    #[test]
    fn responses_lose_hop_by_hop_headers_cookies_and_cors() {
        let mut map = headers(&[
            ("connection", "close, x-hop"),
            ("x-hop", "1"),
            ("transfer-encoding", "chunked"),
            ("keep-alive", "timeout=5"),
            ("set-cookie", "api_session=secret; Path=/"),
            ("set-cookie", "other=1"),
            ("access-control-allow-origin", "https://evil.example"),
            ("access-control-allow-credentials", "true"),
            ("access-control-expose-headers", "x-request-id"),
            ("content-type", "text/event-stream"),
            ("cache-control", "no-cache"),
            ("x-request-id", "abc"),
        ]);
        for_client(&mut map);
        assert_eq!(
            names(&map),
            ["cache-control", "content-type", "x-request-id"]
        );
    }

    #[test]
    fn odd_connection_values_do_no_harm() {
        let mut map = headers(&[("connection", ", ,bad header name,"), ("x-kept", "1")]);
        map.append(
            "connection",
            HeaderValue::from_bytes(b"\xff").unwrap_or_else(|_| unreachable!()),
        );
        strip_hop_by_hop(&mut map);
        assert_eq!(names(&map), ["x-kept"]);
    }
}
