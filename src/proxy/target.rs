//! Where a proxied request goes: `API_HOST` followed by the path after
//! `/api`, with the client's query string as it came. A path that could
//! reach anything but a path under `API_HOST`, or that a server along the
//! way might read differently from how we checked it, is refused before a
//! byte leaves.

use std::borrow::Cow;

use axum::http::Uri;
use percent_encoding::percent_decode_str;
use url::Url;

/// The prefix of every proxied path: `/api/v2/self` goes to `API_HOST/v2/self`.
pub const PREFIX: &str = "/api";

/// Why a request target was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// `GET http://host/… HTTP/1.1`: the client tried to choose the host.
    #[error("absolute-form request targets are refused: send only the path, like /api/v2/self")]
    AbsoluteForm,
    /// The path is not under `/api/`.
    #[error("proxied paths start with /api/")]
    NotUnderPrefix,
    /// `.` or `..`, plain or percent-encoded in any case.
    #[error("dot segments (`.` or `..`, plain or percent-encoded) are refused in proxied paths")]
    DotSegment,
    /// `//`: an empty segment, which some servers read as the start of a host.
    #[error("empty path segments (`//`) are refused in proxied paths")]
    EmptySegment,
    /// `\` or `%5C`, which some servers read as `/`.
    #[error("backslashes (plain or `%5C`) are refused in proxied paths")]
    Backslash,
    /// `;` or `%3B`: some servers drop what follows as path parameters
    /// before they resolve dot segments (`..;/x`).
    #[error("semicolons (plain or `%3B`) are refused in proxied paths")]
    Semicolon,
    /// A path outside the API's versions.
    #[error("only the API's /v2/… and /v4/… paths are proxied")]
    NotAnApiVersion,
}

/// The first path segments the API answers under.
const API_VERSIONS: [&str; 2] = ["v2", "v4"];

/// The API URL a request for `uri` goes to: `api_host` + the path after
/// [`PREFIX`] (still percent-encoded, as the client wrote it) + the raw query.
pub fn target_url(api_host: &Url, uri: &Uri) -> Result<Url, TargetError> {
    if uri.scheme().is_some() || uri.authority().is_some() {
        return Err(TargetError::AbsoluteForm);
    }
    let path = uri
        .path()
        .strip_prefix(PREFIX)
        .filter(|rest| rest.starts_with('/'))
        .ok_or(TargetError::NotUnderPrefix)?;
    check_path(path)?;
    // `api_host` is a bare origin (the configuration checks it), and a
    // checked path has nothing `set_path` could resolve: the target stays a
    // path under API_HOST.
    let mut url = api_host.clone();
    url.set_path(path);
    url.set_query(uri.query());
    Ok(url)
}

/// The request target sent to the API for `url` (one [`target_url`] made):
/// its path and query, in origin form.
pub fn request_target(url: &Url) -> Result<Uri, TargetError> {
    // Anything `url` holds was checked, and is a valid origin-form target.
    Uri::try_from(&url[url::Position::BeforePath..]).map_err(|_| TargetError::NotUnderPrefix)
}

/// Checks a path (starting with `/`) segment by segment, each also
/// percent-decoded, since the API or a proxy before it may decode it.
pub fn check_path(path: &str) -> Result<(), TargetError> {
    let rest = path.strip_prefix('/').unwrap_or(path);
    let segments = rest.split('/');
    let mut segments = segments.peekable();
    while let Some(segment) = segments.next() {
        // Only the last segment may be empty: `/v2/events/` keeps its slash.
        if segment.is_empty() {
            if segments.peek().is_some() || path == "/" {
                return Err(TargetError::EmptySegment);
            }
            continue;
        }
        let decoded: Cow<'_, [u8]> = percent_decode_str(segment).into();
        if decoded.contains(&b'\\') {
            return Err(TargetError::Backslash);
        }
        if decoded.contains(&b';') {
            return Err(TargetError::Semicolon);
        }
        // `%2F` decodes to `/`: `..%2Fx` is a dot segment to a decoding server.
        if decoded
            .split(|byte| *byte == b'/')
            .any(|piece| piece == b"." || piece == b"..")
        {
            return Err(TargetError::DotSegment);
        }
    }
    // Last, so that a path refused for its shape says so.
    if !API_VERSIONS
        .iter()
        .any(|version| rest.split('/').next() == Some(*version))
    {
        return Err(TargetError::NotAnApiVersion);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn api_host() -> Url {
        Url::parse("https://api.example.com").unwrap_or_else(|_| unreachable!())
    }

    fn target(uri: &str) -> Result<String, TargetError> {
        let uri: Uri = uri.parse().unwrap_or_else(|_| panic!("test URI {uri}"));
        target_url(&api_host(), &uri).map(String::from)
    }

    #[test]
    fn paths_and_queries_pass_as_written() {
        assert_eq!(
            target("/api/v2/self"),
            Ok("https://api.example.com/v2/self".to_owned())
        );
        assert_eq!(
            target("/api/v4/logs/organisations/o/applications/a/logs?since=x&limit=10"),
            Ok(
                "https://api.example.com/v4/logs/organisations/o/applications/a/logs?since=x&limit=10"
                    .to_owned()
            )
        );
        let tricky = "a=1&a=2&b=x%26y%3Dz&c=%E2%9C%93&d=a+b&e=&A=1&a-b=2&a.b=3&a_b=4&f=x=y";
        assert_eq!(
            target(&format!("/api/v2/echo?{tricky}")),
            Ok(format!("https://api.example.com/v2/echo?{tricky}"))
        );
        assert_eq!(
            target("/api/v2/apps/a%2Fb/"),
            Ok("https://api.example.com/v2/apps/a%2Fb/".to_owned()),
            "encoded slashes stay encoded, the trailing slash stays"
        );
        assert_eq!(
            target("/api/v2/self?"),
            Ok("https://api.example.com/v2/self?".to_owned()),
            "an empty query stays"
        );
    }

    #[test]
    fn the_target_keeps_the_api_port_and_scheme() {
        let host = Url::parse("http://127.0.0.1:8123").unwrap_or_else(|_| unreachable!());
        let uri: Uri = "/api/v2/self".parse().unwrap_or_else(|_| unreachable!());
        assert_eq!(
            target_url(&host, &uri).map(String::from),
            Ok("http://127.0.0.1:8123/v2/self".to_owned())
        );
    }

    #[test]
    fn dot_segments_are_refused_in_every_spelling() {
        for path in [
            "/api/..",
            "/api/../x",
            "/api/v2/../../x",
            "/api/v2/./self",
            "/api/%2e%2e/x",
            "/api/%2E%2E/x",
            "/api/.%2E/x",
            "/api/%2e./x",
            "/api/%2e/x",
            "/api/v2/..%2Fx",
            "/api/v2/x%2F..%2Fy",
            "/api/v2/x%2f..",
        ] {
            assert_eq!(target(path), Err(TargetError::DotSegment), "{path}");
        }
        // Dots inside a name are just characters.
        assert!(target("/api/v2/a..b/.c/d.").is_ok());
    }

    #[test]
    fn semicolons_and_paths_outside_the_versions_are_refused() {
        for path in [
            "/api/v4/logs/organisations/o/applications/app_1/..;/app_2/logs",
            "/api/v2/self;x",
            "/api/v2/a%3Bb",
            "/api/v2/a%3bb",
        ] {
            assert_eq!(target(path), Err(TargetError::Semicolon), "{path}");
        }
        for path in [
            "/api/v3/self",
            "/api/anything",
            "/api/V2/self",
            "/api/v2x/self",
        ] {
            assert_eq!(target(path), Err(TargetError::NotAnApiVersion), "{path}");
        }
        assert!(target("/api/v4/logs").is_ok());
    }

    #[test]
    fn empty_segments_and_backslashes_are_refused() {
        for path in ["/api//evil.example/x", "/api/v2//self", "/api/"] {
            assert_eq!(target(path), Err(TargetError::EmptySegment), "{path}");
        }
        for path in ["/api/%5cevil/x", "/api/v2/%5C%5Cevil", "/api/v2/a%5Cb"] {
            assert_eq!(target(path), Err(TargetError::Backslash), "{path}");
        }
        assert_eq!(target("/api/\\evil/x"), Err(TargetError::Backslash));
    }

    #[test]
    fn absolute_form_and_foreign_prefixes_are_refused() {
        assert_eq!(
            target("http://evil.example/api/v2/self"),
            Err(TargetError::AbsoluteForm)
        );
        assert_eq!(
            target("https://api.example.com/api/v2/self"),
            Err(TargetError::AbsoluteForm),
            "even naming the API host itself"
        );
        assert_eq!(target("/apiv2/self"), Err(TargetError::NotUnderPrefix));
        assert_eq!(target("/v2/self"), Err(TargetError::NotUnderPrefix));
    }

    /// Whether `path` holds a segment that is `.` or `..` once decoded.
    fn has_dot_segment(path: &str) -> bool {
        path.split('/').any(|segment| {
            let decoded: Vec<u8> = percent_decode_str(segment).collect();
            decoded
                .split(|byte| *byte == b'/')
                .any(|piece| piece == b"." || piece == b"..")
        })
    }

    proptest! {
        #[test]
        fn accepted_paths_stay_under_their_version_without_dot_segments(
            version in prop_oneof![Just("v2"), Just("v4")],
            // Dots, slashes, backslashes and the pieces of their encodings.
            segments in prop::collection::vec(r"[a-c0-9.%25eEfFcC/\\]{0,6}", 0..5),
            query in "[a-z.%/=&]{0,6}",
        ) {
            let uri = format!("/api/{version}/{}?{query}", segments.join("/"));
            let Ok(uri) = uri.parse::<Uri>() else {
                return Ok(());
            };
            if let Ok(url) = target_url(&api_host(), &uri) {
                prop_assert_eq!(url.origin(), api_host().origin());
                let version_prefix = format!("/{version}/");
                prop_assert!(url.path().starts_with(&version_prefix), "{} from {}", url, uri);
                prop_assert!(!has_dot_segment(url.path()), "{} from {}", url, uri);
            }
        }

        #[test]
        fn plain_segments_are_always_accepted(
            version in prop_oneof![Just("v2"), Just("v4")],
            segments in prop::collection::vec("[a-zA-Z0-9_~-][a-zA-Z0-9._~-]{0,8}", 0..5),
        ) {
            let path = format!("/{version}/{}", segments.join("/"));
            let uri: Uri = format!("{PREFIX}{path}").parse().map_err(|_| TestCaseError::reject("not a URI"))?;
            let url = target_url(&api_host(), &uri);
            prop_assert_eq!(url.map(|url| url.path().to_owned()), Ok(path));
        }
    }
}
