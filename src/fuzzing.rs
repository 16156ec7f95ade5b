//! Entry points of the fuzz targets under `fuzz/`, built with the `fuzzing`
//! feature only. Each feeds arbitrary bytes to one parser of untrusted
//! input, as the server does, and checks what it makes of them: a panic
//! here is a finding.

use std::net::{IpAddr, SocketAddr};

use axum::extract::FromRequestParts as _;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use bytes::BytesMut;
use futures_util::FutureExt as _;
use url::Url;

use crate::forwarded::{IpRange, TrustedProxies};
use crate::oauth::signature::{Freshness, Request};
use crate::oauth::{Credentials, SignatureMethod, Signer};
use crate::proxy::target;
use crate::relay::close::{Close, CloseAction, End};
use crate::relay::control::classify;
use crate::relay::frame::{self, Next, Opcode, Reader, Violation};
use crate::relay::target::Target;
use crate::relay::upgrade::ClientUpgrade;
use crate::upstream::handshake::handshake_response;
use crate::web::csrf::{self, CsrfKey};

/// Largest message the fuzzed frame readers accept: small, so that the
/// size limit is reached often.
const MAX_MESSAGE: usize = 4096;

/// The `Sec-WebSocket-Key` the fuzzed handshake answers are checked against
/// (RFC 6455's example, so that a seed can hold its accept key).
pub const HANDSHAKE_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// `data` cut at its NUL bytes, which no header value or query holds.
fn fields(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    data.split(|byte| *byte == 0)
}

/// The relay's reading of the frames a client (`peer_masks`) or the API
/// sends, as the pump does it: frame by frame, unmasking, looking into
/// short texts and close frames. Fed in one piece and then in chunks of a
/// size taken from the first byte, the reader must find the same frames.
pub fn relay_frames(peer_masks: bool, data: &[u8]) {
    let Some((&chunk, data)) = data.split_first() else {
        return;
    };
    let whole = read_frames(peer_masks, data, data.len());
    let chunked = read_frames(peer_masks, data, usize::from(chunk).max(1));
    assert_eq!(whole, chunked, "frames depend on how the bytes arrive");
}

/// What a reader found: each frame's header and payload, then why it
/// stopped (`None`: it needs more bytes than there are).
type Frames = (Vec<(frame::Header, Vec<u8>)>, Option<Violation>);

fn read_frames(peer_masks: bool, data: &[u8], chunk: usize) -> Frames {
    let mut reader = Reader::new(peer_masks, MAX_MESSAGE);
    let mut inbox = BytesMut::new();
    let mut unread = data;
    let mut frames = Vec::new();
    loop {
        match reader.next(&inbox) {
            Ok(Next::Frame(header)) => {
                assert!(header.frame_len() <= inbox.len());
                assert!(header.payload_len <= MAX_MESSAGE);
                assert_eq!(header.mask.is_some(), peer_masks);
                if header.opcode.is_control() {
                    assert!(header.fin && header.payload_len <= frame::MAX_CONTROL_PAYLOAD);
                }
                let mut payload = inbox[header.payload()].to_vec();
                if let Some(key) = header.mask {
                    frame::apply_mask(&mut payload, key);
                }
                look_into(header, &payload);
                re_encode(header, &payload, peer_masks);
                let _ = inbox.split_to(header.frame_len());
                frames.push((header, payload));
            }
            Ok(Next::NeedMore(need)) => {
                assert!(need > inbox.len(), "asks for bytes it has");
                if unread.is_empty() {
                    return (frames, None);
                }
                let (next, rest) = unread.split_at(chunk.min(unread.len()));
                inbox.extend_from_slice(next);
                unread = rest;
            }
            Err(violation) => return (frames, Some(violation)),
        }
    }
}

/// What the pump does with a frame's (unmasked) payload.
fn look_into(header: frame::Header, payload: &[u8]) {
    match header.opcode {
        Opcode::Text if header.fin => {
            let _ = classify(payload);
        }
        Opcode::Close => {
            if let Ok(close) = frame::parse_close(payload) {
                let close = close.map(|(code, reason)| Close::new(code, reason));
                for end in [End::ClientClosed(close.clone()), End::UpstreamClosed(close)] {
                    let (client, api) = end.close_actions();
                    for action in [client, api] {
                        if let CloseAction::Send(close) = action {
                            let payload = frame::close_payload(close.code, &close.reason);
                            assert!(payload.len() <= frame::MAX_CONTROL_PAYLOAD);
                        }
                    }
                }
            }
        }
        _ => {}
    }
}

/// Writing a frame that was read gives a frame that reads the same.
fn re_encode(header: frame::Header, payload: &[u8], masked: bool) {
    let mut out = BytesMut::new();
    frame::encode(&mut out, header.fin, header.opcode, payload, header.mask);
    let again = frame::parse_header(&out, MAX_MESSAGE);
    assert!(
        matches!(again, Ok(Some(read))
            if (read.fin, read.opcode, read.mask, read.payload_len)
                == (header.fin, header.opcode, header.mask, header.payload_len)
            && read.frame_len() == out.len()),
        "{header:?} written as {again:?}"
    );
    assert_eq!(header.mask.is_some(), masked);
}

/// The proxy's path guard and target builder, on a request target: what
/// it accepts stays on the API's origin, under the path's first segment,
/// with every segment kept and none a dot segment even once decoded.
pub fn proxy_target(data: &[u8]) {
    let Ok(uri) = Uri::try_from(data) else {
        return;
    };
    let Ok(api_host) = Url::parse("https://api.example.com:8443") else {
        unreachable!("a valid origin");
    };
    let Ok(url) = target::target_url(&api_host, &uri) else {
        return;
    };
    assert_eq!(url.origin(), api_host.origin(), "{uri} left the API");
    let rest = &uri.path()[target::PREFIX.len()..];
    // `Url` encodes a few characters `Uri` lets through (`{` as `%7B`).
    let first = |path: &str| {
        let segment = path.split('/').nth(1).unwrap_or_default();
        percent_encoding::percent_decode_str(segment).collect::<Vec<u8>>()
    };
    assert_eq!(
        first(url.path()),
        first(rest),
        "{uri} changed its first segment"
    );
    assert_eq!(
        url.path().split('/').count(),
        rest.split('/').count(),
        "{uri} lost or gained segments"
    );
    for segment in url.path().split('/') {
        let decoded = percent_encoding::percent_decode_str(segment).collect::<Vec<u8>>();
        assert!(
            decoded
                .split(|byte| *byte == b'/')
                .all(|piece| piece != b"." && piece != b".."),
            "{uri} reached a dot segment"
        );
    }
    let Ok(sent) = target::request_target(&url) else {
        panic!("{url} makes no request target");
    };
    assert_eq!(sent.path(), url.path());
}

/// The signature base string of a request whose query and form body are
/// the two first NUL-separated fields of `data`: made only of encoded
/// characters, in three parts, and the same whatever the order of the
/// parameters and whether each came in the query or the body.
pub fn oauth_base_string(data: &[u8]) {
    let mut fields = fields(data);
    let query = String::from_utf8_lossy(fields.next().unwrap_or_default());
    let body = fields.next();
    let Ok(mut url) = Url::parse("https://api.example.com/v2/x") else {
        unreachable!("a valid URL");
    };
    url.set_query(Some(&query));
    let base = base_string(&url, body);
    assert!(
        base.bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"-._~%&".contains(&byte)),
        "{base}"
    );
    assert_eq!(base.matches('&').count(), 2, "{base}");
    assert!(base.starts_with("POST&https%3A%2F%2Fapi.example.com%2Fv2%2Fx&"));

    // Every parameter in reverse order, all in the query.
    let mut pairs: Vec<(String, String)> = url
        .query_pairs()
        .chain(body.into_iter().flat_map(url::form_urlencoded::parse))
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .collect();
    pairs.reverse();
    let reordered = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(&pairs)
        .finish();
    url.set_query(Some(&reordered));
    assert_eq!(
        base_string(&url, None),
        base,
        "the order of {pairs:?} matters"
    );
}

fn base_string(url: &Url, form_body: Option<&[u8]>) -> String {
    let consumer = Credentials::new("consumer", "consumer secret");
    let token = Credentials::new("token", "token secret");
    let freshness = Freshness {
        nonce: "nonce".to_owned(),
        timestamp: 1_700_000_000,
    };
    let signed = Signer::new(SignatureMethod::HmacSha1).sign(
        &Request {
            method: "post",
            url,
            form_body,
            consumer: &consumer,
            token: Some(&token),
            callback: None,
            verifier: None,
        },
        &freshness,
    );
    let _ = signed.authorization_header();
    signed.base_string
}

/// The client's address behind proxies, from `X-Forwarded-For` (the two
/// first NUL-separated fields of `data`, as two header lines) and
/// `X-Forwarded-Proto` (the third), from a peer the first byte chooses;
/// and a proxy list entry (the fourth).
pub fn forwarded(data: &[u8]) {
    let Some((&choice, data)) = data.split_first() else {
        return;
    };
    let proxies = TrustedProxies::parse(
        &["10.0.0.0/8".to_owned(), "fd00::/8".to_owned()],
        Some("192.0.2.10"),
    )
    .unwrap_or_else(|_| unreachable!("valid ranges"));
    let peer: IpAddr = match choice % 4 {
        0 => [203, 0, 113, 9].into(),
        1 => [10, 0, 0, 1].into(),
        2 => [192, 0, 2, 10].into(),
        _ => "::ffff:10.1.2.3".parse().unwrap_or_else(|_| unreachable!()),
    };
    let mut headers = HeaderMap::new();
    let mut fields = fields(data);
    for name in ["x-forwarded-for", "x-forwarded-for", "x-forwarded-proto"] {
        if let Some(value) = fields
            .next()
            .and_then(|value| HeaderValue::from_bytes(value).ok())
        {
            headers.append(HeaderName::from_static(name), value);
        }
    }
    let client = proxies.client(SocketAddr::new(peer, 40_000), &headers);
    assert_eq!(client.ip, client.ip.to_canonical());
    if !proxies.trusts(peer) {
        assert_eq!(
            client.ip,
            peer.to_canonical(),
            "an untrusted peer was believed"
        );
        assert!(!client.https);
    }

    let entry = String::from_utf8_lossy(fields.next().unwrap_or_default());
    if let Some(range) = IpRange::parse(&entry) {
        let address = entry
            .split_once('/')
            .map_or(&*entry, |(address, _)| address);
        let address: IpAddr = address
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{entry:?} parsed without an address"));
        assert!(
            range.contains(address),
            "{entry:?} does not hold its own address"
        );
    }
}

/// The API's answer to the relay's upgrade: a head accepted is whole, and
/// every shorter piece of it asks for more.
pub fn upstream_handshake(data: &[u8]) {
    let Ok(answer) = handshake_response(data, HANDSHAKE_KEY) else {
        return;
    };
    let Some(head_len) = answer else {
        return;
    };
    assert!(head_len <= data.len());
    assert!(data[..head_len].ends_with(b"\n\n") || data[..head_len].ends_with(b"\n\r\n"));
    for cut in [head_len - 1, head_len / 2] {
        assert!(
            matches!(handshake_response(&data[..cut], HANDSHAKE_KEY), Ok(None)),
            "a piece of an accepted head is not awaited"
        );
    }
}

/// A client's upgrade request head, checked as `/ws/events` and
/// `/ws/logs/{app_id}` check it; then, for a logs path, the socket the
/// relay would open.
pub fn client_upgrade(data: &[u8]) {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut head = httparse::Request::new(&mut headers);
    let Ok(httparse::Status::Complete(_)) = head.parse(data) else {
        return;
    };
    let mut request = axum::http::Request::builder()
        .method(head.method.unwrap_or_default())
        .uri(head.path.unwrap_or_default());
    for header in head.headers.iter() {
        request = request.header(header.name, header.value);
    }
    let Ok(request) = request.body(()) else {
        return;
    };
    let (mut parts, ()) = request.into_parts();
    let Some(checked) = ClientUpgrade::from_request_parts(&mut parts, &()).now_or_never() else {
        panic!("the upgrade checks waited");
    };
    // With no connection to upgrade, a request that passes every check
    // still ends in 426.
    let Err(refusal) = checked else {
        panic!("an upgrade was accepted without a connection");
    };
    assert!(matches!(
        refusal.status(),
        StatusCode::METHOD_NOT_ALLOWED | StatusCode::BAD_REQUEST | StatusCode::UPGRADE_REQUIRED
    ));

    if let Some(app_id) = parts.uri.path().strip_prefix("/ws/logs/") {
        let query = parts.uri.query().map(str::to_owned);
        let Ok(target) = Target::logs(app_id.to_owned(), query) else {
            return;
        };
        let Ok(api_host) = Url::parse("https://api.example.com") else {
            unreachable!("a valid origin");
        };
        for url in [target.socket_url(&api_host), target.signed_url(&api_host)] {
            let Ok(url) = url else {
                panic!("{target:?} makes no URL");
            };
            assert_eq!(url.host_str(), Some("api.example.com"));
            assert!(url.path().ends_with(&format!("/{app_id}")), "{url}");
        }
    }
}

/// The CSRF double submit: a `Cookie` header and a form token, both from
/// the input. Reading the cookie never fails; a token is accepted only if
/// it is exactly the one this server makes for that cookie and its expiry;
/// the server's own token for a cookie is accepted until it expires.
pub fn csrf(data: &[u8]) {
    const NOW: i64 = 1_800_000_000;
    let key = CsrfKey::for_tests([7; 32]);
    let (cookie_part, token) = match data.iter().position(|byte| *byte == b'\n') {
        Some(split) => (&data[..split], &data[split + 1..]),
        None => (data, &[][..]),
    };
    let token = String::from_utf8_lossy(token);
    let mut headers = HeaderMap::new();
    let Ok(value) = HeaderValue::from_bytes(cookie_part) else {
        return;
    };
    headers.insert(axum::http::header::COOKIE, value);
    let Some(binding) = csrf::cookie_value(&headers, csrf::COOKIE_NAME) else {
        return;
    };
    if key.accepts(binding, &token, NOW) {
        let expires_at: i64 = token
            .split_once('.')
            .and_then(|(expiry, _)| expiry.parse().ok())
            .unwrap_or_else(|| panic!("an accepted token has an expiry: {token:?}"));
        assert!(expires_at > NOW);
        assert_eq!(token, key.token_until(binding, expires_at));
    }
    if csrf::is_binding(binding) {
        let made = key.form_token(binding, NOW);
        assert!(key.accepts(binding, &made, NOW));
        assert!(!key.accepts(binding, &made, NOW + key.lifetime_secs()));
    }
}
