//! OAuth 1.0a request signing, exactly as RFC 5849 §3.4 says.
//!
//! The signature base string is built here rather than by `oauth1-request`'s
//! `ParameterList`, which sorts parameters by their raw names and values where
//! the RFC sorts their *encoded* forms (they differ for names like `c@`). The
//! hashing goes through `oauth1-request`'s [`Sign`] trait: its own HMAC-SHA1,
//! and [`HmacSha512`] implemented here on `hmac` and `sha2`. PLAINTEXT is
//! the signing key itself (§3.4.4), written here too: the crate's
//! `Plaintext` does not percent-encode the two secrets before joining them,
//! which breaks any secret holding a reserved character.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt::{self, Display, Write as _};
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use oauth1_request::signature_method::{HmacSha1, Sign, SignatureMethod as CrateSignatureMethod};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, PercentEncode, utf8_percent_encode};
use rand::Rng as _;
use sha2::Sha512;
use url::Url;

use crate::secret::Secret;

/// Every byte but RFC 3986's unreserved characters (`ALPHA / DIGIT / - . _ ~`).
const RFC3986_RESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes a string as RFC 5849 §3.6 requires.
pub fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    encode_into(&mut out, value);
    out
}

/// Appends `value` percent-encoded as RFC 5849 §3.6 requires. Every proxied
/// request encodes its base string and header through here: runs of
/// unreserved characters are copied whole, without `fmt` machinery.
fn encode_into(out: &mut String, value: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.reserve(value.len());
    // Every byte of a multi-byte character is reserved, so a run of
    // unreserved bytes (never empty when sliced) starts and ends on
    // character boundaries.
    let mut run_start = 0;
    for (index, &byte) in value.as_bytes().iter().enumerate() {
        if is_unreserved(byte) {
            continue;
        }
        if run_start < index {
            out.push_str(&value[run_start..index]);
        }
        out.push('%');
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0x0f)]));
        run_start = index + 1;
    }
    out.push_str(&value[run_start..]);
}

/// `value` percent-encoded as RFC 5849 §3.6 requires, written out lazily (no
/// allocation when it is displayed straight into a MAC or a header).
fn encoded(value: &str) -> PercentEncode<'_> {
    utf8_percent_encode(value, RFC3986_RESERVED)
}

/// RFC 3986's unreserved characters, the complement of [`RFC3986_RESERVED`].
fn is_unreserved(byte: u8) -> bool {
    UNRESERVED[usize::from(byte)]
}

/// [`is_unreserved`] for every byte, looked up rather than computed: the
/// proxy encodes about a kilobyte per request.
const UNRESERVED: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 256 {
        #[expect(clippy::cast_possible_truncation, reason = "byte < 256")]
        let value = byte as u8;
        table[byte] = value.is_ascii_alphanumeric() || matches!(value, b'-' | b'.' | b'_' | b'~');
        byte += 1;
    }
    table
};

/// `value` percent-encoded once more, written into `scratch` unless that
/// changes nothing: an encoded name or value holds only unreserved
/// characters and `%`, and most (keys, nonces, timestamps) hold no `%`.
fn encoded_again<'a>(value: &'a str, scratch: &'a mut String) -> &'a str {
    if value.bytes().all(is_unreserved) {
        return value;
    }
    scratch.clear();
    encode_into(scratch, value);
    scratch
}

/// Percent-encodes `value`, borrowing it when nothing needs encoding.
fn encoded_cow(value: Cow<'_, str>) -> Cow<'_, str> {
    match value {
        Cow::Borrowed(value) => encoded(value).into(),
        // A borrowed result may be the encoding of a single character (from
        // the encoder's table), not `value` itself: ask about the bytes.
        Cow::Owned(value) if value.bytes().all(is_unreserved) => Cow::Owned(value),
        Cow::Owned(value) => Cow::Owned(percent_encode(&value)),
    }
}

/// The three signature methods the Clever Cloud API accepts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SignatureMethod {
    /// HMAC-SHA512: what the API's documentation recommends for production.
    #[default]
    HmacSha512,
    /// HMAC-SHA1, RFC 5849's original.
    HmacSha1,
    /// PLAINTEXT: the secrets themselves, only safe over TLS.
    Plaintext,
}

impl SignatureMethod {
    /// The `oauth_signature_method` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HmacSha512 => "HMAC-SHA512",
            Self::HmacSha1 => "HMAC-SHA1",
            Self::Plaintext => "PLAINTEXT",
        }
    }
}

impl Display for SignatureMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SignatureMethod {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.to_ascii_uppercase().as_str() {
            "HMAC-SHA512" => Ok(Self::HmacSha512),
            "HMAC-SHA1" => Ok(Self::HmacSha1),
            "PLAINTEXT" => Ok(Self::Plaintext),
            _ => Err(format!(
                "unknown signature method `{value}`: use HMAC-SHA512, HMAC-SHA1 or PLAINTEXT"
            )),
        }
    }
}

/// A key and its secret: the consumer's, or a (request or access) token's.
/// Its `Debug` shows neither: a token's key is a secret too.
#[derive(Clone)]
pub struct Credentials {
    /// The public part (`oauth_consumer_key` or `oauth_token`).
    pub key: String,
    /// The shared secret, used only in the signing key.
    pub secret: Secret,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Credentials([redacted])")
    }
}

impl Credentials {
    /// Pairs a key with its secret.
    pub fn new(key: impl Into<String>, secret: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            secret: Secret::new(secret),
        }
    }
}

/// One request to sign.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// The HTTP method, e.g. `POST`.
    pub method: &'a str,
    /// The full URL, query included (the query's parameters are signed).
    pub url: &'a Url,
    /// An `application/x-www-form-urlencoded` body, whose parameters are signed.
    pub form_body: Option<&'a [u8]>,
    /// The OAuth consumer.
    pub consumer: &'a Credentials,
    /// The request or access token, if any.
    pub token: Option<&'a Credentials>,
    /// `oauth_callback`, for the request-token call.
    pub callback: Option<&'a str>,
    /// `oauth_verifier`, for the access-token call.
    pub verifier: Option<&'a Secret>,
}

/// The nonce and timestamp of one signature; fresh for every request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Freshness {
    /// `oauth_nonce`.
    pub nonce: String,
    /// `oauth_timestamp`, seconds since the Unix epoch.
    pub timestamp: u64,
}

impl Freshness {
    /// A random 32-character nonce (192 bits, URL-safe base64, whose
    /// characters need no encoding) and the current time.
    pub fn now() -> Self {
        let mut random = [0_u8; 24];
        rand::thread_rng().fill(&mut random);
        let nonce = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random);
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| elapsed.as_secs())
            .unwrap_or_default();
        Self { nonce, timestamp }
    }
}

/// The outcome of signing: what goes in the `Authorization` header.
#[derive(Clone)]
pub struct Signed<'a> {
    /// The `oauth_*` protocol parameters, signature included, not encoded;
    /// borrowed from the request and the freshness where they can be.
    pub oauth_params: Vec<(&'static str, Cow<'a, str>)>,
    /// The signature base string (empty for PLAINTEXT, which signs none;
    /// only recorded by [`Signer::sign`]).
    #[cfg_attr(
        not(any(test, feature = "fuzzing")),
        expect(dead_code, reason = "read by the vector tests and the fuzz target")
    )]
    pub base_string: String,
}

impl Signed<'_> {
    /// `OAuth k="v", …` with every value percent-encoded and quoted, as the
    /// Clever Cloud API requires.
    pub fn authorization_header(&self) -> String {
        let mut header = String::with_capacity(512);
        header.push_str("OAuth ");
        for (index, (name, value)) in self.oauth_params.iter().enumerate() {
            if index > 0 {
                header.push_str(", ");
            }
            header.push_str(name);
            header.push_str("=\"");
            encode_into(&mut header, value);
            header.push('"');
        }
        header
    }

    /// The value of `oauth_signature`.
    #[cfg(test)]
    pub(crate) fn signature(&self) -> &str {
        self.oauth_params
            .iter()
            .find(|(name, _)| *name == "oauth_signature")
            .map(|(_, value)| value.as_ref())
            .unwrap_or_default()
    }
}

impl fmt::Debug for Signed<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The PLAINTEXT signature is the secrets themselves.
        f.debug_struct("Signed").finish_non_exhaustive()
    }
}

/// Signs requests with one signature method.
#[derive(Clone, Copy, Debug, Default)]
pub struct Signer {
    method: SignatureMethod,
}

impl Signer {
    /// A signer for `method`.
    pub fn new(method: SignatureMethod) -> Self {
        Self { method }
    }

    /// Signs `request` with a fresh nonce and timestamp, and returns the
    /// `Authorization` header value.
    pub fn authorization(&self, request: &Request<'_>) -> String {
        // Every proxied call comes through here: the base string is only
        // hashed, never written down.
        self.sign_recording(request, &Freshness::now(), false)
            .authorization_header()
    }

    /// Signs `request` with the given nonce and timestamp, keeping the base
    /// string it signed in [`Signed::base_string`].
    #[cfg(any(test, feature = "fuzzing"))]
    pub fn sign<'a>(&self, request: &Request<'a>, freshness: &'a Freshness) -> Signed<'a> {
        self.sign_recording(request, freshness, true)
    }

    fn sign_recording<'a>(
        &self,
        request: &Request<'a>,
        freshness: &'a Freshness,
        record: bool,
    ) -> Signed<'a> {
        let mut oauth_params: Vec<(&'static str, Cow<'a, str>)> = Vec::with_capacity(9);
        oauth_params.push(("oauth_consumer_key", request.consumer.key.as_str().into()));
        if let Some(token) = request.token {
            oauth_params.push(("oauth_token", token.key.as_str().into()));
        }
        oauth_params.push(("oauth_signature_method", self.method.as_str().into()));
        oauth_params.push(("oauth_timestamp", freshness.timestamp.to_string().into()));
        oauth_params.push(("oauth_nonce", freshness.nonce.as_str().into()));
        oauth_params.push(("oauth_version", "1.0".into()));
        if let Some(callback) = request.callback {
            oauth_params.push(("oauth_callback", callback.into()));
        }
        if let Some(verifier) = request.verifier {
            oauth_params.push(("oauth_verifier", verifier.expose().into()));
        }

        let consumer_secret = request.consumer.secret.expose();
        let token_secret = request.token.map(|token| token.secret.expose());
        let (signature, base_string) = {
            let base = BaseString::new(request, &oauth_params);
            let base_string = match self.method {
                SignatureMethod::Plaintext => String::new(),
                _ if record => base.record(),
                _ => String::new(),
            };
            let signature = match self.method {
                SignatureMethod::HmacSha512 => {
                    let mac = base.sign(HmacSha512, consumer_secret, token_secret);
                    base64::engine::general_purpose::STANDARD.encode(mac.0)
                }
                SignatureMethod::HmacSha1 => {
                    // The crate's signatures display percent-encoded.
                    let signature = base.sign(HmacSha1::new(), consumer_secret, token_secret);
                    percent_encoding::percent_decode_str(&signature.to_string())
                        .decode_utf8_lossy()
                        .into_owned()
                }
                SignatureMethod::Plaintext => signing_key(consumer_secret, token_secret),
            };
            (signature, base_string)
        };
        oauth_params.push(("oauth_signature", signature.into()));
        Signed {
            oauth_params,
            base_string,
        }
    }
}

/// The parts of an RFC 5849 §3.4.1 signature base string, each encoded once
/// (and borrowed from the request wherever encoding changes nothing).
struct BaseString<'a> {
    method: Cow<'a, str>,
    base_uri: String,
    /// Name and value pairs, percent-encoded, sorted by name then value.
    parameters: Vec<(Cow<'a, str>, Cow<'a, str>)>,
}

impl<'a> BaseString<'a> {
    fn new(request: &Request<'a>, oauth_params: &'a [(&'static str, Cow<'_, str>)]) -> Self {
        let mut parameters: Vec<(Cow<'a, str>, Cow<'a, str>)> = request
            .url
            .query_pairs()
            .chain(
                request
                    .form_body
                    .into_iter()
                    .flat_map(|body| url::form_urlencoded::parse(body)),
            )
            .map(|(name, value)| (encoded_cow(name), encoded_cow(value)))
            .chain(
                oauth_params
                    .iter()
                    .map(|(name, value)| (Cow::Borrowed(*name), encoded(value).into())),
            )
            .collect();
        parameters.sort_unstable();
        let method = if request.method.bytes().any(|byte| byte.is_ascii_lowercase()) {
            Cow::Owned(request.method.to_ascii_uppercase())
        } else {
            Cow::Borrowed(request.method)
        };
        Self {
            method,
            base_uri: base_string_uri(request.url),
            parameters,
        }
    }

    /// Feeds the base string to `sign`: `METHOD&uri&name%3Dvalue%26…`, each
    /// part encoded a second time on the way, without allocating.
    fn feed<S: Sign>(&self, sign: &mut S) {
        let mut name_twice = String::new();
        let mut value_twice = String::with_capacity(256);
        sign.request_method(&self.method);
        sign.uri(encoded_again(&self.base_uri, &mut value_twice));
        for (index, (name, value)) in self.parameters.iter().enumerate() {
            if index > 0 {
                sign.delimiter();
            }
            let name = encoded_again(name, &mut name_twice);
            sign.parameter(name, encoded_again(value, &mut value_twice));
        }
    }

    /// The base string itself.
    fn record(&self) -> String {
        let mut recorder = BaseStringRecorder::default();
        self.feed(&mut recorder);
        recorder.0
    }

    /// The signature of the base string.
    fn sign<M: CrateSignatureMethod>(
        &self,
        method: M,
        consumer_secret: &str,
        token_secret: Option<&str>,
    ) -> <M::Sign as Sign>::Signature {
        let mut sign = method.sign_with(consumer_secret, Some(token_secret.unwrap_or_default()));
        self.feed(&mut sign);
        sign.end()
    }
}

/// The base string URI (RFC 5849 §3.4.1.2): scheme and host in lower case
/// (`Url` lower-cases them when it parses),
/// the port only when it is not the scheme's default, the path, no query.
pub fn base_string_uri(url: &Url) -> String {
    let mut uri = format!("{}://{}", url.scheme(), url.host_str().unwrap_or_default());
    // `Url::port` is already `None` for a scheme's default port.
    if let Some(port) = url.port() {
        let _ = write!(uri, ":{port}");
    }
    uri.push_str(url.path());
    uri
}

/// A [`Sign`] that only writes down the base string it is fed.
#[derive(Default)]
struct BaseStringRecorder(String);

impl Sign for BaseStringRecorder {
    type Signature = String;

    fn get_signature_method_name(&self) -> &'static str {
        ""
    }

    fn request_method(&mut self, method: &str) {
        self.0.push_str(method);
        self.0.push('&');
    }

    fn uri<T: Display>(&mut self, uri: T) {
        let _ = write!(self.0, "{uri}&");
    }

    fn parameter<V: Display>(&mut self, key: &str, value: V) {
        let _ = write!(self.0, "{key}%3D{value}");
    }

    fn delimiter(&mut self) {
        self.0.push_str("%26");
    }

    fn end(self) -> String {
        self.0
    }
}

/// The signing key of RFC 5849 §3.4.2: both secrets encoded, then joined.
fn signing_key(consumer_secret: &str, token_secret: Option<&str>) -> String {
    format!(
        "{}&{}",
        encoded(consumer_secret),
        encoded(token_secret.unwrap_or_default())
    )
}

/// The HMAC-SHA512 signature method, which `oauth1-request` lacks.
#[derive(Clone, Copy, Debug, Default)]
pub struct HmacSha512;

/// How many prepared HMAC-SHA512 keys each thread keeps.
const PREPARED_KEY_CAPACITY: usize = 16;

thread_local! {
    /// A proxy signs with the same few keys over and over, and preparing a
    /// key (hashing it with the inner and outer pads) costs two of the
    /// seven or so SHA-512 blocks of a signature.
    static PREPARED_KEYS: std::cell::RefCell<PreparedKeys> =
        const { std::cell::RefCell::new(PreparedKeys(VecDeque::new())) };
}

/// The HMAC states of the signing keys used last on this thread, newest
/// last, with the consumer and token secrets each was made of.
struct PreparedKeys(VecDeque<((String, String), Hmac<Sha512>)>);

impl PreparedKeys {
    /// A fresh HMAC keyed with the consumer and token secrets, prepared once
    /// per pair.
    fn get(&mut self, (consumer_secret, token_secret): (&str, &str)) -> Hmac<Sha512> {
        let known = self
            .0
            .iter()
            .find(|((consumer, token), _)| consumer == consumer_secret && token == token_secret);
        if let Some((_, mac)) = known {
            return mac.clone();
        }
        let key = signing_key(consumer_secret, Some(token_secret));
        let mac = Hmac::<Sha512>::new_from_slice(key.as_bytes())
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        if self.0.len() == PREPARED_KEY_CAPACITY {
            self.0.pop_front();
        }
        let secrets = (consumer_secret.to_owned(), token_secret.to_owned());
        self.0.push_back((secrets, mac.clone()));
        mac
    }
}

/// An HMAC-SHA512 computation in progress.
pub struct HmacSha512Sign(Hmac<Sha512>);

/// Lets `write!` feed a MAC directly, with no intermediate `String`.
struct MacWriter<'a, M>(&'a mut M);

impl<M: Mac> fmt::Write for MacWriter<'_, M> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        self.0.update(text.as_bytes());
        Ok(())
    }
}

/// An HMAC-SHA512 signature, displayed base64 then percent-encoded like the
/// crate's own signatures.
pub struct HmacSha512Signature(Vec<u8>);

impl CrateSignatureMethod for HmacSha512 {
    type Sign = HmacSha512Sign;

    fn sign_with(self, client_secret: &str, token_secret: Option<&str>) -> HmacSha512Sign {
        let secrets = (client_secret, token_secret.unwrap_or_default());
        HmacSha512Sign(PREPARED_KEYS.with(|prepared| prepared.borrow_mut().get(secrets)))
    }
}

impl Sign for HmacSha512Sign {
    type Signature = HmacSha512Signature;

    fn get_signature_method_name(&self) -> &'static str {
        "HMAC-SHA512"
    }

    fn request_method(&mut self, method: &str) {
        self.0.update(method.as_bytes());
        self.0.update(b"&");
    }

    fn uri<T: Display>(&mut self, uri: T) {
        let _ = write!(MacWriter(&mut self.0), "{uri}&");
    }

    fn parameter<V: Display>(&mut self, key: &str, value: V) {
        self.0.update(key.as_bytes());
        self.0.update(b"%3D");
        let _ = write!(MacWriter(&mut self.0), "{value}");
    }

    fn delimiter(&mut self) {
        self.0.update(b"%26");
    }

    fn end(self) -> HmacSha512Signature {
        HmacSha512Signature(self.0.finalize().into_bytes().to_vec())
    }
}

impl Display for HmacSha512Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let base64 = base64::engine::general_purpose::STANDARD.encode(&self.0);
        Display::fmt(&encoded(&base64), f)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use serde::Deserialize;

    use super::*;

    #[derive(Deserialize)]
    struct Vectors {
        consumer_key: String,
        consumer_secret: String,
        token: String,
        token_secret: String,
        nonce: String,
        timestamp: String,
        cases: Vec<Case>,
    }

    #[derive(Deserialize)]
    struct Case {
        name: String,
        method: String,
        url: String,
        form_body: Option<String>,
        with_token: bool,
        callback: Option<String>,
        verifier: Option<String>,
        signature_method: String,
        base_string: String,
        signature: String,
        authorization_header: String,
    }

    /// The independent vectors live in the team's shared folder, beside the repo.
    fn vectors() -> Vectors {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/vectors/oauth1.json");
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|error| panic!("cannot read {path}: {error}"));
        serde_json::from_str(&text).unwrap_or_else(|error| panic!("bad {path}: {error}"))
    }

    /// The `oauth_*` parameters of an `OAuth k="v", …` header, decoded.
    fn header_params(header: &str) -> BTreeMap<String, String> {
        header
            .trim_start_matches("OAuth ")
            .split(", ")
            .filter_map(|pair| pair.split_once('='))
            .map(|(name, quoted)| {
                let value = quoted.trim_matches('"');
                let decoded = percent_encoding::percent_decode_str(value)
                    .decode_utf8_lossy()
                    .into_owned();
                (name.to_owned(), decoded)
            })
            .collect()
    }

    #[test]
    fn reproduces_every_independent_vector() {
        let vectors = vectors();
        assert!(vectors.cases.len() >= 39, "the vector file lost cases");
        let consumer = Credentials::new(&vectors.consumer_key, vectors.consumer_secret.as_str());
        let token = Credentials::new(&vectors.token, vectors.token_secret.as_str());
        let freshness = Freshness {
            nonce: vectors.nonce.clone(),
            timestamp: vectors.timestamp.parse().expect("numeric timestamp"),
        };
        for case in &vectors.cases {
            let url = Url::parse(&case.url).expect("vector URL parses");
            let verifier = case.verifier.clone().map(Secret::new);
            let request = Request {
                method: &case.method,
                url: &url,
                form_body: case.form_body.as_deref().map(str::as_bytes),
                consumer: &consumer,
                token: case.with_token.then_some(&token),
                callback: case.callback.as_deref(),
                verifier: verifier.as_ref(),
            };
            let method: SignatureMethod = case.signature_method.parse().expect("known method");
            let signed = Signer::new(method).sign(&request, &freshness);

            assert_eq!(
                signed.base_string, case.base_string,
                "base string of {}",
                case.name
            );
            assert_eq!(
                signed.signature(),
                case.signature,
                "signature of {}",
                case.name
            );
            assert_eq!(
                header_params(&signed.authorization_header()),
                header_params(&case.authorization_header),
                "oauth parameters of {}",
                case.name
            );
        }
    }

    /// Secrets with reserved characters must be encoded into the signing key
    /// the same way by every method (the shared vectors' secrets have none).
    #[test]
    fn secrets_with_reserved_characters_sign_alike_in_every_method() {
        let url = Url::parse("https://api.example.com/v2/oauth/request_token").expect("static URL");
        let consumer = Credentials::new("key", "s&e/c+r! *t");
        let request = Request {
            method: "POST",
            url: &url,
            form_body: None,
            consumer: &consumer,
            token: None,
            callback: Some("http://localhost/callback"),
            verifier: None,
        };
        let freshness = Freshness {
            nonce: "n".into(),
            timestamp: 1,
        };
        let signing_key = "s%26e%2Fc%2Br%21%20%2At&";

        let sha1 = Signer::new(SignatureMethod::HmacSha1).sign(&request, &freshness);
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(signing_key.as_bytes()).expect("any key");
        mac.update(sha1.base_string.as_bytes());
        let expected =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        assert_eq!(sha1.signature(), expected);

        let sha512 = Signer::new(SignatureMethod::HmacSha512).sign(&request, &freshness);
        let mut mac = Hmac::<Sha512>::new_from_slice(signing_key.as_bytes()).expect("any key");
        mac.update(sha512.base_string.as_bytes());
        let expected =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        assert_eq!(sha512.signature(), expected);

        let plaintext = Signer::new(SignatureMethod::Plaintext).sign(&request, &freshness);
        assert_eq!(plaintext.signature(), signing_key);
    }

    /// A parameter that decodes to one reserved character (`%2B` is `+`)
    /// is encoded back, then encoded again in the base string.
    #[test]
    fn decoded_single_characters_are_encoded_again() {
        let url =
            Url::parse("https://api.example.com/v2/self?g=%2B&h=a+b&i=x").expect("static URL");
        let consumer = Credentials::new("key", "secret");
        let freshness = Freshness {
            nonce: "n".into(),
            timestamp: 1,
        };
        let signed = Signer::default().sign(&plain_get(&url, &consumer), &freshness);
        assert!(
            signed
                .base_string
                .contains("&g%3D%252B%26h%3Da%2520b%26i%3Dx%26"),
            "{}",
            signed.base_string
        );
    }

    #[test]
    fn prepared_keys_sign_as_fresh_ones_past_the_capacity() {
        let mut prepared = PreparedKeys(VecDeque::new());
        let tokens: Vec<String> = (0..PREPARED_KEY_CAPACITY + 4)
            .map(|n| format!("token&{n}"))
            .collect();
        // Twice round, so some keys are found and some were evicted.
        for token in tokens.iter().chain(&tokens).chain(tokens.iter().rev()) {
            let mut mac = prepared.get(("consumer", token));
            mac.update(b"base string");
            // Both secrets are encoded, then joined (RFC 5849 §3.4.2).
            let key = format!("consumer&token%26{}", &token["token&".len()..]);
            let mut fresh =
                Hmac::<Sha512>::new_from_slice(key.as_bytes()).unwrap_or_else(|_| unreachable!());
            fresh.update(b"base string");
            assert_eq!(
                mac.finalize().into_bytes(),
                fresh.finalize().into_bytes(),
                "{key}"
            );
            // Another consumer with the same token secret is another key.
            let mut other = prepared.get(("other", token));
            other.update(b"base string");
            let mut again = prepared.get(("consumer", token));
            again.update(b"base string");
            assert_ne!(other.finalize().into_bytes(), again.finalize().into_bytes());
        }
        assert_eq!(prepared.0.len(), PREPARED_KEY_CAPACITY);
    }

    #[test]
    fn percent_encoding_leaves_only_unreserved_characters_bare() {
        assert_eq!(percent_encode("aZ09-._~"), "aZ09-._~");
        assert_eq!(
            percent_encode("!'()* +&=/é"),
            "%21%27%28%29%2A%20%2B%26%3D%2F%C3%A9"
        );
        assert_eq!(percent_encode("a€b😀%"), "a%E2%82%ACb%F0%9F%98%80%25");
        assert_eq!(percent_encode(""), "");
        for ascii in 0..=127_u8 {
            let text = char::from(ascii).to_string();
            assert_eq!(percent_encode(&text), encoded(&text).to_string(), "{ascii}");
        }
        for text in ["é", "x\u{7f}y", "%%", "~~~ ~~~", "中文"] {
            assert_eq!(percent_encode(text), encoded(text).to_string(), "{text}");
        }
    }

    /// A GET with no token, callback or verifier.
    fn plain_get<'a>(url: &'a Url, consumer: &'a Credentials) -> Request<'a> {
        Request {
            method: "GET",
            url,
            form_body: None,
            consumer,
            token: None,
            callback: None,
            verifier: None,
        }
    }

    #[test]
    fn every_signature_has_a_fresh_nonce() {
        let url = Url::parse("https://api.example.com/v2/self").expect("static URL");
        let consumer = Credentials::new("key", "secret");
        let request = plain_get(&url, &consumer);
        let signer = Signer::default();
        assert_ne!(
            signer.authorization(&request),
            signer.authorization(&request)
        );
    }

    #[test]
    fn signature_method_names_round_trip() {
        for method in [
            SignatureMethod::HmacSha512,
            SignatureMethod::HmacSha1,
            SignatureMethod::Plaintext,
        ] {
            assert_eq!(method.as_str().parse::<SignatureMethod>(), Ok(method));
        }
        assert!("RSA-SHA1".parse::<SignatureMethod>().is_err());
    }

    #[test]
    fn debug_output_never_shows_the_plaintext_signature() {
        let url = Url::parse("https://api.example.com/v2/self").expect("static URL");
        let consumer = Credentials::new("key", "consumer-secret");
        let request = plain_get(&url, &consumer);
        let freshness = Freshness::now();
        let signed = Signer::new(SignatureMethod::Plaintext).sign(&request, &freshness);
        assert!(!format!("{signed:?} {request:?}").contains("consumer-secret"));
    }

    /// The base string of a POST whose parameters are `parameters`, the
    /// first `in_query` of them in the query and the rest in a form body.
    fn base_string_of(parameters: &[(String, String)], in_query: usize) -> String {
        let (query, body) = parameters.split_at(in_query.min(parameters.len()));
        let encode = |pairs: &[(String, String)]| {
            url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(pairs)
                .finish()
        };
        let mut url = Url::parse("https://api.example.com/v2/items").expect("static URL");
        url.set_query(Some(&encode(query)));
        let body = encode(body);
        let consumer = Credentials::new("key", "secret");
        let token = Credentials::new("token", "token-secret");
        let request = Request {
            method: "POST",
            form_body: Some(body.as_bytes()),
            token: Some(&token),
            ..plain_get(&url, &consumer)
        };
        let freshness = Freshness {
            nonce: "nonce".to_owned(),
            timestamp: 1_700_000_000,
        };
        Signer::new(SignatureMethod::HmacSha512)
            .sign(&request, &freshness)
            .base_string
    }

    proptest! {
        #[test]
        fn the_base_string_does_not_depend_on_the_parameters_order(
            // Characters that sort differently once encoded, that need
            // encoding, or that a query reads specially; repeated names.
            (parameters, shuffled) in prop::collection::vec(
                ("[a-cA-C0-9 +%&=@~._é-]{0,3}", "[a-c0-9 +%&=@~._é-]{0,3}"),
                0..8,
            )
            .prop_flat_map(|parameters| (Just(parameters.clone()), Just(parameters).prop_shuffle())),
            in_query in 0..8_usize,
            shuffled_in_query in 0..8_usize,
        ) {
            prop_assert_eq!(
                base_string_of(&parameters, in_query),
                base_string_of(&shuffled, shuffled_in_query)
            );
        }
    }
}
