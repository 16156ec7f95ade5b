//! The fake API's own OAuth 1.0a verifier against the independent vectors in
//! `shared/vectors/oauth1.json` (signed by oauthlib).

use std::path::PathBuf;

use serde::Deserialize;

use crate::support::fake_api::verify::{
    RequestParts, SignatureMethod, SignedRequest, TestCredentials, VerifyError,
    parse_authorization_header, sign_for_tests,
};

#[derive(Debug, Deserialize)]
struct Vectors {
    consumer_key: String,
    consumer_secret: String,
    token: String,
    token_secret: String,
    nonce: String,
    timestamp: String,
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
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

impl Case {
    fn request<'a>(&'a self, url: &'a str, authorization: &'a str) -> RequestParts<'a> {
        RequestParts::from_url(
            &self.method,
            url,
            self.form_body.as_deref(),
            Some(authorization),
        )
        .unwrap_or_else(|error| panic!("{}: bad vector URL: {error}", self.name))
    }

    fn is_plaintext(&self) -> bool {
        self.signature_method == SignatureMethod::Plaintext.as_str()
    }
}

/// `$OAUTH_VECTORS`, else `shared/` beside the repository, else the shared
/// checkout on the development machine.
fn vectors_path() -> PathBuf {
    if let Some(path) = std::env::var_os("OAUTH_VECTORS") {
        return path.into();
    }
    let beside_repo =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/vectors/oauth1.json");
    if beside_repo.exists() {
        beside_repo
    } else {
        PathBuf::from("/work/shared/vectors/oauth1.json")
    }
}

fn load_vectors() -> Vectors {
    let path = vectors_path();
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|error| panic!("cannot parse {}: {error}", path.display()))
}

impl Vectors {
    fn token_secret(&self, case: &Case) -> &str {
        if case.with_token {
            &self.token_secret
        } else {
            ""
        }
    }

    /// Parses and verifies `case` with its URL and header swapped for these.
    fn verify(
        &self,
        case: &Case,
        url: &str,
        authorization: &str,
    ) -> Result<SignedRequest, VerifyError> {
        let request = SignedRequest::parse(&case.request(url, authorization))?;
        request.verify(&self.consumer_secret, self.token_secret(case))?;
        Ok(request)
    }
}

/// The case's URL with its first query value changed (or a parameter added).
fn tampered_url(url: &str) -> String {
    match url.split_once('?') {
        Some((base, query)) => match query.split_once('=') {
            Some((name, value)) => format!("{base}?{name}=tampered{value}"),
            None => format!("{base}?{query}=tampered"),
        },
        None => format!("{url}?tampered=1"),
    }
}

/// The header with its `oauth_signature` value changed.
fn tampered_signature(header: &str) -> String {
    header.replacen("oauth_signature=\"", "oauth_signature=\"AA", 1)
}

#[test]
fn verifier_accepts_every_vector_and_rejects_tampered_copies() {
    let vectors = load_vectors();
    assert!(!vectors.cases.is_empty(), "no cases in the vectors file");

    for case in &vectors.cases {
        let request = vectors
            .verify(case, &case.url, &case.authorization_header)
            .unwrap_or_else(|error| panic!("{}: rejected: {error}", case.name));
        if !case.is_plaintext() {
            assert_eq!(
                request.base_string(),
                case.base_string,
                "{}: base string",
                case.name
            );
        }

        assert_eq!(
            vectors
                .verify(
                    case,
                    &case.url,
                    &tampered_signature(&case.authorization_header)
                )
                .err(),
            Some(VerifyError::BadSignature),
            "{}: a changed signature must be rejected",
            case.name
        );
        if !case.is_plaintext() {
            assert_eq!(
                vectors
                    .verify(case, &tampered_url(&case.url), &case.authorization_header)
                    .err(),
                Some(VerifyError::BadSignature),
                "{}: a changed query must be rejected",
                case.name
            );
        }
    }
}

#[test]
fn test_signer_reproduces_every_vector_signature() {
    let vectors = load_vectors();
    for case in &vectors.cases {
        let method = [
            SignatureMethod::HmacSha1,
            SignatureMethod::HmacSha512,
            SignatureMethod::Plaintext,
        ]
        .into_iter()
        .find(|method| method.as_str() == case.signature_method)
        .unwrap_or_else(|| panic!("{}: unknown method", case.name));
        let extra: Vec<(&str, &str)> = [
            ("oauth_callback", case.callback.as_deref()),
            ("oauth_verifier", case.verifier.as_deref()),
        ]
        .into_iter()
        .filter_map(|(name, value)| Some((name, value?)))
        .collect();
        let credentials = TestCredentials {
            consumer_key: &vectors.consumer_key,
            consumer_secret: &vectors.consumer_secret,
            token: case
                .with_token
                .then_some((vectors.token.as_str(), vectors.token_secret.as_str())),
        };

        let header = sign_for_tests(
            &case.request(&case.url, ""),
            method,
            credentials,
            &extra,
            vectors
                .timestamp
                .parse()
                .expect("the vectors' timestamp is a number"),
            &vectors.nonce,
        )
        .unwrap_or_else(|error| panic!("{}: cannot sign: {error}", case.name));

        let params = parse_authorization_header(&header)
            .unwrap_or_else(|error| panic!("{}: own header unparsable: {error}", case.name));
        let signature = params
            .iter()
            .find(|(name, _)| name == "oauth_signature")
            .map(|(_, value)| value.as_str());
        assert_eq!(
            signature,
            Some(case.signature.as_str()),
            "{}: signature",
            case.name
        );
        vectors
            .verify(case, &case.url, &header)
            .unwrap_or_else(|error| panic!("{}: own header rejected: {error}", case.name));
    }
}

#[test]
fn verifier_rejects_headers_without_oauth_scheme_or_quotes() {
    let malformed = [
        "oauth_consumer_key=\"k\", oauth_signature=\"s\"",
        "Bearer oauth_consumer_key=\"k\"",
        "OAuth oauth_consumer_key=k, oauth_signature=\"s\"",
        "OAuth oauth_consumer_key=\"k\", oauth_signature=s",
        "OAuth oauth_consumer_key=\"k\" oauth_signature=\"s\"",
        "OAuth oauth_consumer_key=\"k",
    ];
    for header in malformed {
        assert!(
            matches!(
                parse_authorization_header(header),
                Err(VerifyError::MalformedHeader(_))
            ),
            "accepted {header:?}"
        );
        let request = RequestParts::from_url("GET", "http://example.com/", None, Some(header))
            .expect("a fixed URL splits");
        assert!(SignedRequest::parse(&request).is_err(), "parsed {header:?}");
    }
}
