//! OAuth 1.0a (RFC 5849) signature verification, written for the fake API
//! independently of the application: its own percent-encoding, its own
//! signature base string and HMAC straight from the `hmac`, `sha1` and `sha2`
//! crates. Everything here is pure; freshness of timestamps and nonces is the
//! server's business (see [`check_timestamp`]).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::Sha512;

/// Decoded `(name, value)` pairs, in the order they were found.
pub type Params = Vec<(String, String)>;

/// Why a request's OAuth parameters were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The `Authorization` header is not `OAuth k="v", …`.
    #[error("malformed Authorization header: {0}")]
    MalformedHeader(&'static str),
    /// A URL, query or form body could not be decoded.
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    /// A required protocol parameter is absent.
    #[error("missing parameter {0}")]
    MissingParameter(&'static str),
    /// A protocol parameter appears more than once.
    #[error("duplicated parameter {0}")]
    DuplicateParameter(String),
    /// `oauth_signature_method` names a method the fake does not know.
    #[error("unsupported signature method {0:?}")]
    UnsupportedSignatureMethod(String),
    /// `oauth_version` is present and is not `1.0`.
    #[error("unsupported oauth_version {0:?}")]
    UnsupportedVersion(String),
    /// `oauth_timestamp` is not a number or too far from the server's clock.
    #[error("oauth_timestamp {0:?} is not within the accepted window")]
    StaleTimestamp(String),
    /// The signature does not match the request.
    #[error("invalid signature")]
    BadSignature,
}

/// The signature methods the Clever Cloud API accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureMethod {
    /// `HMAC-SHA1`.
    HmacSha1,
    /// `HMAC-SHA512`, the one Clever Cloud recommends.
    HmacSha512,
    /// `PLAINTEXT`: the signature is the signing key itself.
    Plaintext,
}

impl SignatureMethod {
    /// The method's name as it appears in `oauth_signature_method`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HmacSha1 => "HMAC-SHA1",
            Self::HmacSha512 => "HMAC-SHA512",
            Self::Plaintext => "PLAINTEXT",
        }
    }

    fn parse(name: &str) -> Result<Self, VerifyError> {
        [Self::HmacSha1, Self::HmacSha512, Self::Plaintext]
            .into_iter()
            .find(|method| method.as_str() == name)
            .ok_or_else(|| VerifyError::UnsupportedSignatureMethod(name.to_owned()))
    }

    /// Signs `base_string` (ignored by `PLAINTEXT`) with the two secrets.
    pub fn sign(self, base_string: &str, consumer_secret: &str, token_secret: &str) -> String {
        let key = format!(
            "{}&{}",
            percent_encode(consumer_secret),
            percent_encode(token_secret)
        );
        match self {
            Self::HmacSha1 => hmac_base64::<Hmac<Sha1>>(&key, base_string),
            Self::HmacSha512 => hmac_base64::<Hmac<Sha512>>(&key, base_string),
            Self::Plaintext => key,
        }
    }
}

fn hmac_base64<M: Mac + KeyInit>(key: &str, message: &str) -> String {
    let mut mac =
        <M as KeyInit>::new_from_slice(key.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(message.as_bytes());
    BASE64.encode(mac.finalize().into_bytes())
}

/// The parts of an HTTP request that RFC 5849 signs.
#[derive(Debug, Clone, Copy)]
pub struct RequestParts<'a> {
    /// HTTP method, any case.
    pub method: &'a str,
    /// `http` or `https`.
    pub scheme: &'a str,
    /// `host[:port]`, as in the `Host` header.
    pub authority: &'a str,
    /// The path, still percent-encoded as on the request line.
    pub path: &'a str,
    /// The raw query, without `?` (empty when there is none).
    pub query: &'a str,
    /// The body, only when it is `application/x-www-form-urlencoded`.
    pub form_body: Option<&'a str>,
    /// The `Authorization` header, if any.
    pub authorization: Option<&'a str>,
}

impl<'a> RequestParts<'a> {
    /// Splits an absolute URL (`scheme://authority/path?query`) into parts.
    pub fn from_url(
        method: &'a str,
        url: &'a str,
        form_body: Option<&'a str>,
        authorization: Option<&'a str>,
    ) -> Result<Self, VerifyError> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or(VerifyError::Malformed("URL without scheme"))?;
        let rest = rest.split_once('#').map_or(rest, |(before, _)| before);
        let (target, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, path) = target
            .find('/')
            .map_or((target, "/"), |slash| (&target[..slash], &target[slash..]));
        Ok(Self {
            method,
            scheme,
            authority,
            path,
            query,
            form_body,
            authorization,
        })
    }

    /// RFC 5849 §3.4.1.2: lower-case scheme and host, default port dropped.
    pub fn base_string_uri(&self) -> String {
        let scheme = self.scheme.to_ascii_lowercase();
        let authority = self.authority.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" => Some("80"),
            "https" => Some("443"),
            _ => None,
        };
        let host = match authority.rsplit_once(':') {
            Some((host, port)) if Some(port) == default_port => host,
            _ => authority.as_str(),
        };
        let path = if self.path.is_empty() { "/" } else { self.path };
        format!("{scheme}://{host}{path}")
    }

    /// The decoded query and form body parameters, in that order.
    fn request_params(&self) -> Result<Params, VerifyError> {
        let mut params = parse_form(self.query)?;
        if let Some(body) = self.form_body {
            params.extend(parse_form(body)?);
        }
        Ok(params)
    }
}

/// A request whose OAuth parameters have been gathered and checked for shape,
/// ready to have its signature verified.
#[derive(Debug, Clone)]
pub struct SignedRequest {
    method: String,
    base_uri: String,
    query: Params,
    /// Every signed parameter: query, form body and header, without
    /// `oauth_signature` and `realm`.
    params: Params,
    signature: String,
    signature_method: SignatureMethod,
}

impl SignedRequest {
    /// Gathers the protocol parameters from the `Authorization` header, the
    /// query and the form body (RFC 5849 §3.5) and checks the required ones
    /// are there, once each.
    pub fn parse(request: &RequestParts<'_>) -> Result<Self, VerifyError> {
        let query = parse_form(request.query)?;
        let mut params = request.request_params()?;
        if let Some(header) = request.authorization {
            params.extend(
                parse_authorization_header(header)?
                    .into_iter()
                    .filter(|(name, _)| name != "realm"),
            );
        }
        reject_duplicate_protocol_params(&params)?;
        let signature_index = params
            .iter()
            .position(|(name, _)| name == "oauth_signature")
            .ok_or(VerifyError::MissingParameter("oauth_signature"))?;
        let (_, signature) = params.remove(signature_index);

        let find = |name| find_param(&params, name);
        find("oauth_consumer_key").ok_or(VerifyError::MissingParameter("oauth_consumer_key"))?;
        let signature_method = SignatureMethod::parse(
            find("oauth_signature_method")
                .ok_or(VerifyError::MissingParameter("oauth_signature_method"))?,
        )?;
        if signature_method != SignatureMethod::Plaintext {
            find("oauth_timestamp").ok_or(VerifyError::MissingParameter("oauth_timestamp"))?;
            find("oauth_nonce").ok_or(VerifyError::MissingParameter("oauth_nonce"))?;
        }
        if let Some(version) = find("oauth_version").filter(|version| *version != "1.0") {
            return Err(VerifyError::UnsupportedVersion(version.to_owned()));
        }

        Ok(Self {
            method: request.method.to_ascii_uppercase(),
            base_uri: request.base_string_uri(),
            query,
            params,
            signature,
            signature_method,
        })
    }

    /// The value of a signed parameter (an `oauth_*` one, usually).
    pub fn param(&self, name: &str) -> Option<&str> {
        find_param(&self.params, name)
    }

    /// `oauth_consumer_key`, which [`SignedRequest::parse`] made sure exists.
    pub fn consumer_key(&self) -> &str {
        self.param("oauth_consumer_key").unwrap_or_default()
    }

    /// `oauth_token`, absent on the request-token call.
    pub fn token(&self) -> Option<&str> {
        self.param("oauth_token")
    }

    /// The signature method used.
    pub fn signature_method(&self) -> SignatureMethod {
        self.signature_method
    }

    /// The decoded query parameters (`+` is a space).
    pub fn query(&self) -> &Params {
        &self.query
    }

    /// RFC 5849 §3.4.1: `METHOD&pct(base URI)&pct(normalized parameters)`.
    pub fn base_string(&self) -> String {
        base_string(&self.method, &self.base_uri, &self.params)
    }

    /// Checks the signature against the secrets (an empty token secret when
    /// the request carries no token). Timestamp and nonce are not checked.
    pub fn verify(&self, consumer_secret: &str, token_secret: &str) -> Result<(), VerifyError> {
        let expected =
            self.signature_method
                .sign(&self.base_string(), consumer_secret, token_secret);
        if expected == self.signature {
            Ok(())
        } else {
            Err(VerifyError::BadSignature)
        }
    }
}

fn find_param<'p>(params: &'p [(String, String)], name: &str) -> Option<&'p str> {
    params
        .iter()
        .find(|(candidate, _)| candidate == name)
        .map(|(_, value)| value.as_str())
}

/// RFC 5849 §3.1: each protocol parameter may appear only once, whichever
/// place (header, query, body) it comes from.
fn reject_duplicate_protocol_params(params: &[(String, String)]) -> Result<(), VerifyError> {
    let mut names: Vec<&str> = params
        .iter()
        .map(|(name, _)| name.as_str())
        .filter(|name| name.starts_with("oauth_"))
        .collect();
    names.sort_unstable();
    match names.windows(2).find(|pair| pair[0] == pair[1]) {
        Some(pair) => Err(VerifyError::DuplicateParameter(pair[0].to_owned())),
        None => Ok(()),
    }
}

fn base_string(method: &str, base_uri: &str, params: &[(String, String)]) -> String {
    format!(
        "{}&{}&{}",
        method.to_ascii_uppercase(),
        percent_encode(base_uri),
        percent_encode(&normalize_params(params))
    )
}

/// RFC 5849 §3.4.1.3.2: encode names and values, sort by encoded name then
/// encoded value, join as `n=v&…`. Repeated names are kept.
fn normalize_params(params: &[(String, String)]) -> String {
    let mut encoded: Vec<(String, String)> = params
        .iter()
        .map(|(name, value)| (percent_encode(name), percent_encode(value)))
        .collect();
    encoded.sort_unstable();
    encoded
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// RFC 3986 percent-encoding as RFC 5849 §3.6 wants it: everything but
/// `A-Z a-z 0-9 - . _ ~` becomes `%XX` (upper-case hex) of its UTF-8 bytes.
pub fn percent_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// Decodes `%XX` sequences (and `+` as a space when `plus_is_space`); the
/// result must be UTF-8.
fn percent_decode(text: &str, plus_is_space: bool) -> Result<String, VerifyError> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut input = text.bytes();
    while let Some(byte) = input.next() {
        match byte {
            b'%' => {
                let high = input.next().and_then(hex_value);
                let low = input.next().and_then(hex_value);
                match (high, low) {
                    (Some(high), Some(low)) => bytes.push(high << 4 | low),
                    _ => return Err(VerifyError::Malformed("bad %-escape")),
                }
            }
            b'+' if plus_is_space => bytes.push(b' '),
            _ => bytes.push(byte),
        }
    }
    String::from_utf8(bytes).map_err(|_| VerifyError::Malformed("%-escapes are not UTF-8"))
}

fn hex_value(digit: u8) -> Option<u8> {
    char::from(digit)
        .to_digit(16)
        .and_then(|value| u8::try_from(value).ok())
}

/// Parses `application/x-www-form-urlencoded` text (a query or a body):
/// `&`-separated `name=value` pairs, `+` is a space, a bare `name` has an
/// empty value, empty pieces are skipped.
pub fn parse_form(text: &str) -> Result<Params, VerifyError> {
    text.split('&')
        .filter(|piece| !piece.is_empty())
        .map(|piece| {
            let (name, value) = piece.split_once('=').unwrap_or((piece, ""));
            Ok((percent_decode(name, true)?, percent_decode(value, true)?))
        })
        .collect()
}

/// Parses `OAuth name="value", …` (RFC 5849 §3.5.1). The `OAuth ` scheme and
/// the double quotes are mandatory; values are percent-decoded.
pub fn parse_authorization_header(header: &str) -> Result<Params, VerifyError> {
    let (scheme, mut rest) = header.split_once(' ').ok_or(VerifyError::MalformedHeader(
        "expected `OAuth ` and parameters",
    ))?;
    if !scheme.eq_ignore_ascii_case("OAuth") {
        return Err(VerifyError::MalformedHeader("scheme is not `OAuth`"));
    }
    let mut params = Params::new();
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            return Ok(params);
        }
        let (name, after_name) = rest
            .split_once('=')
            .ok_or(VerifyError::MalformedHeader("parameter without `=`"))?;
        let quoted = after_name
            .strip_prefix('"')
            .ok_or(VerifyError::MalformedHeader("value not in double quotes"))?;
        let (value, after_value) = quoted
            .split_once('"')
            .ok_or(VerifyError::MalformedHeader("unterminated quoted value"))?;
        let name = name.trim();
        if name.is_empty() || name.contains([' ', ',', '"']) {
            return Err(VerifyError::MalformedHeader("bad parameter name"));
        }
        params.push((percent_decode(name, false)?, percent_decode(value, false)?));
        let after_value = after_value.trim_start();
        rest = match after_value.strip_prefix(',') {
            Some(next) => next,
            None if after_value.is_empty() => after_value,
            None => {
                return Err(VerifyError::MalformedHeader(
                    "expected `,` between parameters",
                ));
            }
        };
    }
}

/// Accepts `timestamp` (seconds since the epoch) if it is within
/// `tolerance_secs` of `now`.
pub fn check_timestamp(timestamp: &str, now: i64, tolerance_secs: i64) -> Result<(), VerifyError> {
    match timestamp.parse::<i64>() {
        Ok(seconds) if (seconds - now).abs() <= tolerance_secs => Ok(()),
        _ => Err(VerifyError::StaleTimestamp(timestamp.to_owned())),
    }
}

/// Credentials for [`sign_for_tests`].
#[derive(Debug, Clone, Copy)]
pub struct TestCredentials<'a> {
    /// The consumer key.
    pub consumer_key: &'a str,
    /// The consumer secret.
    pub consumer_secret: &'a str,
    /// The token and its secret, when the call uses one.
    pub token: Option<(&'a str, &'a str)>,
}

/// **Test-only**: builds the `Authorization` header a well-behaved client
/// would send for `request` (whose own `authorization` is ignored), so tests
/// can drive the fake without the application. `extra` holds further
/// protocol parameters such as `oauth_callback` or `oauth_verifier`.
pub fn sign_for_tests(
    request: &RequestParts<'_>,
    method: SignatureMethod,
    credentials: TestCredentials<'_>,
    extra: &[(&str, &str)],
    timestamp: i64,
    nonce: &str,
) -> Result<String, VerifyError> {
    let timestamp = timestamp.to_string();
    let mut protocol: Vec<(&str, &str)> = vec![
        ("oauth_consumer_key", credentials.consumer_key),
        ("oauth_nonce", nonce),
        ("oauth_signature_method", method.as_str()),
        ("oauth_timestamp", &timestamp),
        ("oauth_version", "1.0"),
    ];
    if let Some((token, _)) = credentials.token {
        protocol.push(("oauth_token", token));
    }
    protocol.extend_from_slice(extra);

    let mut params = request.request_params()?;
    params.extend(
        protocol
            .iter()
            .map(|&(name, value)| (name.to_owned(), value.to_owned())),
    );
    let base = base_string(request.method, &request.base_string_uri(), &params);
    let token_secret = credentials.token.map_or("", |(_, secret)| secret);
    let signature = method.sign(&base, credentials.consumer_secret, token_secret);

    let fields: Vec<String> = protocol
        .iter()
        .copied()
        .chain([("oauth_signature", signature.as_str())])
        .map(|(name, value)| format!("{name}=\"{}\"", percent_encode(value)))
        .collect();
    Ok(format!("OAuth {}", fields.join(", ")))
}
