//! CSRF protection without a stored session (double submit): a random
//! value in a cookie, and in each form a signed, expiring token bound to
//! that value. A forged form from another site cannot read the cookie, so
//! cannot present a token bound to it; an anonymous visitor costs the
//! store nothing.
//!
//! The cookie's value changes at login, and with it every form token.

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac as _};
use sha2::Sha256;
use subtle::ConstantTimeEq as _;

use crate::config::Config;

/// The cookie over http.
pub(crate) const COOKIE_NAME: &str = "ocs_csrf";
/// The cookie when `APP_URL` is https (Secure, `/`, no Domain).
pub(crate) const HOST_COOKIE_NAME: &str = "__Host-ocs_csrf";

/// Length of a cookie value: 32 random bytes, base64url without padding.
const BINDING_LEN: usize = 43;

/// The key that signs form tokens, derived from `SESSION_KEY` so every
/// instance accepts the others' forms.
#[derive(Clone)]
pub(crate) struct CsrfKey {
    key: [u8; 32],
    /// How long a form token is good for, in seconds.
    lifetime_secs: i64,
    cookie_name: &'static str,
    secure: bool,
}

impl std::fmt::Debug for CsrfKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CsrfKey([redacted])")
    }
}

impl CsrfKey {
    /// The key and cookie settings for `config`.
    pub(crate) fn new(config: &Config) -> Self {
        let derived = crate::session::derived_key(config, "csrf");
        let mut key = [0_u8; 32];
        key.copy_from_slice(&derived.signing()[..32]);
        Self {
            key,
            lifetime_secs: i64::try_from(config.session_idle_secs).unwrap_or(i64::MAX),
            cookie_name: if config.secure_cookies() {
                HOST_COOKIE_NAME
            } else {
                COOKIE_NAME
            },
            secure: config.secure_cookies(),
        }
    }

    /// A key of fixed bytes, good for an hour (tests and fuzzing).
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn for_tests(key: [u8; 32]) -> Self {
        Self {
            key,
            lifetime_secs: 3600,
            cookie_name: COOKIE_NAME,
            secure: false,
        }
    }

    fn mac(&self, binding: &str, expires_at: i64) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as hmac::Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(b"ocs/csrf/v1/");
        mac.update(binding.as_bytes());
        mac.update(b"/");
        mac.update(expires_at.to_string().as_bytes());
        mac
    }

    /// The form token for cookie value `binding`, good until `now` plus the
    /// lifetime: `EXPIRY.SIGNATURE`.
    pub(crate) fn form_token(&self, binding: &str, now: i64) -> String {
        self.token_until(binding, now.saturating_add(self.lifetime_secs))
    }

    /// The form token for `binding` that expires at `expires_at`.
    pub(crate) fn token_until(&self, binding: &str, expires_at: i64) -> String {
        let signature = self.mac(binding, expires_at).finalize().into_bytes();
        format!("{expires_at}.{}", URL_SAFE_NO_PAD.encode(signature))
    }

    /// How long a form token is good for, in seconds.
    #[cfg(feature = "fuzzing")]
    pub(crate) fn lifetime_secs(&self) -> i64 {
        self.lifetime_secs
    }

    /// Whether `token` was made for cookie value `binding` and is still
    /// good at `now` (signature compared in constant time).
    pub(crate) fn accepts(&self, binding: &str, token: &str, now: i64) -> bool {
        if !is_binding(binding) {
            return false;
        }
        let Some((expiry, signature)) = token.split_once('.') else {
            return false;
        };
        let Ok(expires_at) = expiry.parse::<i64>() else {
            return false;
        };
        // A leading '+' or zero would let one signature stand for several
        // spellings of a time; only the canonical one is ever issued.
        if expires_at.to_string() != expiry || expires_at <= now {
            return false;
        }
        let Ok(signature) = URL_SAFE_NO_PAD.decode(signature) else {
            return false;
        };
        let expected = self.mac(binding, expires_at).finalize().into_bytes();
        expected.as_slice().ct_eq(&signature).into()
    }
}

/// Whether `value` has the shape of a cookie value this server makes.
pub(crate) fn is_binding(value: &str) -> bool {
    value.len() == BINDING_LEN
        && value
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
}

/// The value of cookie `name` in `headers`, if any.
pub(crate) fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find_map(|(key, value)| (key == name).then_some(value))
}

/// This browser's CSRF cookie, as the request brought it or freshly made.
/// Handlers that render a form call [`Csrf::form_token`] and pass their
/// answer through [`Csrf::set_cookie`], which sets the cookie when it is new.
#[derive(Debug)]
pub(crate) struct Csrf {
    key: CsrfKey,
    binding: String,
    /// The request brought no usable cookie: this one is new.
    fresh: bool,
    now: i64,
}

impl<S: Send + Sync> FromRequestParts<S> for Csrf
where
    CsrfKey: FromRef<S>,
{
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let key = CsrfKey::from_ref(state);
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        Ok(match cookie_value(&parts.headers, key.cookie_name) {
            Some(binding) if is_binding(binding) => Self {
                binding: binding.to_owned(),
                key,
                fresh: false,
                now,
            },
            _ => Self::new_binding(key, now),
        })
    }
}

impl Csrf {
    fn new_binding(key: CsrfKey, now: i64) -> Self {
        Self {
            key,
            binding: crate::session::random_token(),
            fresh: true,
            now,
        }
    }

    /// The token to put in this browser's forms.
    pub(crate) fn form_token(&self) -> String {
        self.key.form_token(&self.binding, self.now)
    }

    /// Whether a submitted form carries this browser's token. A browser
    /// that brought no cookie never passes.
    pub(crate) fn accepts(&self, submitted: &str) -> bool {
        !self.fresh && self.key.accepts(&self.binding, submitted, self.now)
    }

    /// A new cookie value, so that forms from before (login) stop working.
    pub(crate) fn rotate(self) -> Self {
        Self::new_binding(self.key, self.now)
    }

    /// `response`, setting the cookie when its value is new.
    pub(crate) fn set_cookie(&self, mut response: Response) -> Response {
        if self.fresh {
            let secure = if self.key.secure { "; Secure" } else { "" };
            let cookie = format!(
                "{}={}; Path=/; HttpOnly; SameSite=Lax{secure}",
                self.key.cookie_name, self.binding
            );
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                response.headers_mut().append(header::SET_COOKIE, value);
            }
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn binding() -> String {
        crate::session::random_token()
    }

    #[test]
    fn a_token_is_good_for_its_cookie_until_it_expires() {
        let key = CsrfKey::for_tests([7; 32]);
        let cookie = binding();
        let token = key.form_token(&cookie, NOW);
        assert!(key.accepts(&cookie, &token, NOW));
        assert!(key.accepts(&cookie, &token, NOW + 3599));
        assert!(!key.accepts(&cookie, &token, NOW + 3600), "expired");
    }

    #[test]
    fn another_cookie_key_or_altered_token_is_refused() {
        let key = CsrfKey::for_tests([7; 32]);
        let cookie = binding();
        let token = key.form_token(&cookie, NOW);
        assert!(!key.accepts(&binding(), &token, NOW), "another browser");
        assert!(!CsrfKey::for_tests([8; 32]).accepts(&cookie, &token, NOW));

        let (expiry, signature) = token.split_once('.').unwrap_or_default();
        let later = expiry.parse::<i64>().unwrap_or_default() + 1000;
        for forged in [
            format!("{later}.{signature}"),
            format!("+{expiry}.{signature}"),
            format!("0{expiry}.{signature}"),
            format!("{expiry}.{}", &signature[1..]),
            format!("{expiry}{signature}"),
            String::new(),
            ".".to_owned(),
        ] {
            assert!(!key.accepts(&cookie, &forged, NOW), "{forged}");
        }
    }

    #[test]
    fn only_cookie_values_of_our_shape_count() {
        let key = CsrfKey::for_tests([7; 32]);
        for cookie in [
            "",
            "short",
            &"a".repeat(44),
            &format!("{}!", "a".repeat(42)),
        ] {
            let token = key.form_token(cookie, NOW);
            assert!(!key.accepts(cookie, &token, NOW), "{cookie:?}");
        }
    }

    #[test]
    fn the_cookie_is_read_by_its_exact_name() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("x_ocs_csrf=no; ocs_csrf=yes; other=1"),
        );
        assert_eq!(cookie_value(&headers, COOKIE_NAME), Some("yes"));
        assert_eq!(cookie_value(&headers, HOST_COOKIE_NAME), None);
    }
}
