//! What a proxy token may do: everything (`full`), only read
//! (`read-only`), or what a list of rules names. Pure: parsing, matching and
//! the JSON shape, no I/O.
//!
//! A rule is `METHODS PATH-PATTERN`. METHODS is `*` or a comma list of
//! methods the proxy forwards. The pattern is matched segment by segment
//! against the proxied path (after the path guard): `*` matches one
//! segment, `**` (last only) any rest, anything else that segment exactly,
//! case-sensitive, both sides percent-decoded once. The relays are named
//! apart: whether `/ws/events` may open, and which apps' `/ws/logs/{app}`.

use std::borrow::Cow;
use std::fmt;

use percent_encoding::percent_decode_str;
use serde::{Deserialize, Serialize};

/// The methods a rule may name: those the proxy forwards.
const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// Most rules one token may carry, and longest rule.
const MAX_RULES: usize = 100;
const MAX_RULE_LEN: usize = 500;
/// Most apps one token's logs relay may name.
const MAX_LOG_APPS: usize = 100;

/// A token's rights.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Everything its owner may do (tokens made before scopes, too).
    Full,
    /// `GET` and `HEAD` only, and both relays.
    ReadOnly,
    /// What the rules allow, and the relays named.
    Rules(RuleSet),
}

/// The parts of a scope made of rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleSet {
    rules: Vec<Rule>,
    /// The rules as written, for showing them back.
    written: Vec<String>,
    /// Whether `/ws/events` may open.
    events: bool,
    /// The apps whose `/ws/logs/{app}` may open.
    logs: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Rule {
    /// `None`: any method.
    methods: Option<Vec<&'static str>>,
    segments: Vec<Segment>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    /// This segment, percent-decoded once (as bytes: no two spellings of
    /// invalid UTF-8 meet).
    Exact(Vec<u8>),
    /// `*`: any one segment.
    One,
    /// `**`: any rest, nothing included (last only).
    Rest,
}

/// Why a scope was refused: which rule (from 1), and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    /// A rule that does not parse.
    #[error("rule {line} `{rule}`: {reason}")]
    Rule {
        /// Its place in the list, from 1 (a line of the form's text area).
        line: usize,
        /// The rule as written (cut at 80 characters).
        rule: String,
        /// What is wrong and what is expected.
        reason: String,
    },
    /// Something else about the scope.
    #[error("{0}")]
    Other(String),
}

impl Scope {
    /// Whether a call with `method` to `path` (the proxied path, such as
    /// `/v2/self`, after the path guard) is allowed.
    pub fn allows(&self, method: &str, path: &str) -> bool {
        match self {
            Self::Full => true,
            Self::ReadOnly => matches!(method, "GET" | "HEAD"),
            Self::Rules(set) => {
                let segments: Vec<Cow<'_, [u8]>> = path_segments(path).collect();
                set.rules.iter().any(|rule| rule.matches(method, &segments))
            }
        }
    }

    /// Whether the events relay may open.
    pub fn allows_events(&self) -> bool {
        match self {
            Self::Full | Self::ReadOnly => true,
            Self::Rules(set) => set.events,
        }
    }

    /// Whether the logs relay of `app` may open.
    pub fn allows_logs(&self, app: &str) -> bool {
        match self {
            Self::Full | Self::ReadOnly => true,
            Self::Rules(set) => set.logs.iter().any(|allowed| allowed == app),
        }
    }

    /// A scope of `rules` (one rule a line), `events` and `logs`, or why
    /// not.
    pub fn from_rules(
        rules: &[String],
        events: bool,
        logs: Vec<String>,
    ) -> Result<Self, ScopeError> {
        if rules.len() > MAX_RULES {
            return Err(ScopeError::Other(format!(
                "a scope holds at most {MAX_RULES} rules"
            )));
        }
        if logs.len() > MAX_LOG_APPS || logs.iter().any(|app| !is_app_id(app)) {
            return Err(ScopeError::Other(format!(
                "`logs` lists at most {MAX_LOG_APPS} application ids (letters, digits, `-` and `_`)"
            )));
        }
        let mut parsed = Vec::with_capacity(rules.len());
        let mut written = Vec::with_capacity(rules.len());
        for (index, text) in rules.iter().enumerate() {
            let text = text.trim();
            parsed.push(Rule::parse(text).map_err(|reason| ScopeError::Rule {
                line: index + 1,
                rule: text.chars().take(80).collect(),
                reason,
            })?);
            written.push(text.to_owned());
        }
        Ok(Self::Rules(RuleSet {
            rules: parsed,
            written,
            events,
            logs,
        }))
    }

    /// The scope's name in logs and metrics: `full`, `read-only`, `rules`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::ReadOnly => "read-only",
            Self::Rules(_) => "rules",
        }
    }
}

impl Rule {
    fn parse(text: &str) -> Result<Self, String> {
        if text.len() > MAX_RULE_LEN {
            return Err(format!("a rule is at most {MAX_RULE_LEN} characters"));
        }
        let mut words = text.split_whitespace();
        let (Some(methods), Some(pattern), None) = (words.next(), words.next(), words.next())
        else {
            return Err("expected `METHODS /PATH`, such as `GET /v2/self`".to_owned());
        };
        let methods = if methods == "*" {
            None
        } else {
            let mut listed = Vec::new();
            for method in methods.split(',') {
                let known = METHODS
                    .iter()
                    .find(|known| **known == method)
                    .ok_or_else(|| {
                        format!(
                            "unknown method `{method}`: use `*` or some of {}",
                            METHODS.join(", ")
                        )
                    })?;
                listed.push(*known);
            }
            Some(listed)
        };
        let Some(rest) = pattern.strip_prefix('/') else {
            return Err("the path pattern starts with `/`".to_owned());
        };
        let parts: Vec<&str> = rest.split('/').collect();
        let mut segments = Vec::with_capacity(parts.len());
        for (index, part) in parts.iter().enumerate() {
            segments.push(match *part {
                "**" if index + 1 == parts.len() => Segment::Rest,
                "**" => return Err("`**` may only end a pattern".to_owned()),
                "*" => Segment::One,
                "" => return Err("empty path segment (`//` or a trailing `/`)".to_owned()),
                "." | ".." => return Err("dot segments never match a proxied path".to_owned()),
                part if part.contains('*') => {
                    return Err("`*` stands for a whole segment, not part of one".to_owned());
                }
                part => Segment::Exact(decode_once(part).into_owned()),
            });
        }
        Ok(Self { methods, segments })
    }

    fn matches(&self, method: &str, path: &[Cow<'_, [u8]>]) -> bool {
        let method_ok = self
            .methods
            .as_ref()
            .is_none_or(|methods| methods.contains(&method));
        method_ok && segments_match(&self.segments, path)
    }
}

fn segments_match(pattern: &[Segment], path: &[Cow<'_, [u8]>]) -> bool {
    match (pattern.split_first(), path.split_first()) {
        (Some((Segment::Rest, _)), _) => true,
        (None, None) => true,
        // `*` is one segment: an encoded `/` inside would be two to an API
        // that decodes it.
        (Some((Segment::One, pattern)), Some((segment, path))) => {
            !segment.contains(&b'/') && segments_match(pattern, path)
        }
        (Some((Segment::Exact(expected), pattern)), Some((segment, path))) => {
            expected.as_slice() == segment.as_ref() && segments_match(pattern, path)
        }
        _ => false,
    }
}

/// The segments of `/a/b/c`, each percent-decoded once.
fn path_segments(path: &str) -> impl Iterator<Item = Cow<'_, [u8]>> {
    path.strip_prefix('/')
        .unwrap_or(path)
        .split('/')
        .filter(|segment| !segment.is_empty())
        .map(decode_once)
}

fn decode_once(segment: &str) -> Cow<'_, [u8]> {
    percent_decode_str(segment).into()
}

fn is_app_id(app: &str) -> bool {
    !app.is_empty()
        && app.len() <= 100
        && app
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
}

/// The JSON shape of a scope: `"full"`, `"read-only"`, or
/// `{"rules": […], "events": bool, "logs": […]}`.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum ScopeJson {
    Named(String),
    Rules {
        #[serde(default)]
        rules: Vec<String>,
        #[serde(default)]
        events: bool,
        #[serde(default)]
        logs: Vec<String>,
    },
}

impl TryFrom<ScopeJson> for Scope {
    type Error = ScopeError;

    fn try_from(json: ScopeJson) -> Result<Self, ScopeError> {
        match json {
            ScopeJson::Named(name) => match name.as_str() {
                "full" => Ok(Self::Full),
                "read-only" => Ok(Self::ReadOnly),
                other => Err(ScopeError::Other(format!(
                    "unknown scope `{}`: use \"full\", \"read-only\" or {{\"rules\": […], \"events\": false, \"logs\": […]}}",
                    other.chars().take(40).collect::<String>()
                ))),
            },
            ScopeJson::Rules {
                rules,
                events,
                logs,
            } => Self::from_rules(&rules, events, logs),
        }
    }
}

impl From<&Scope> for ScopeJson {
    fn from(scope: &Scope) -> Self {
        match scope {
            Scope::Full => Self::Named("full".to_owned()),
            Scope::ReadOnly => Self::Named("read-only".to_owned()),
            Scope::Rules(set) => Self::Rules {
                rules: set.written.clone(),
                events: set.events,
                logs: set.logs.clone(),
            },
        }
    }
}

impl Serialize for Scope {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        ScopeJson::from(self).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Scope {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let json = ScopeJson::deserialize(deserializer)?;
        Scope::try_from(json).map_err(serde::de::Error::custom)
    }
}

impl Default for Scope {
    /// Tokens made before scopes existed keep working as they did.
    fn default() -> Self {
        Self::Full
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(rules: &[&str]) -> Scope {
        let rules: Vec<String> = rules.iter().map(|&rule| rule.to_owned()).collect();
        Scope::from_rules(&rules, false, Vec::new()).unwrap_or_else(|error| panic!("{error}"))
    }

    #[test]
    fn segments_match_whole_segments_only() {
        let scope = rules(&["GET /v2/organisations/orga_1/applications/*"]);
        assert!(scope.allows("GET", "/v2/organisations/orga_1/applications/app_1"));
        assert!(!scope.allows("GET", "/v2/organisations/orga_1/applications"));
        assert!(!scope.allows("GET", "/v2/organisations/orga_1/applications/app_1/env"));
        assert!(!scope.allows("GET", "/v2/organisations/orga_12/applications/app_1"));
        assert!(!scope.allows("GET", "/v2/organisations/orga/applications/app_1"));
    }

    #[test]
    fn a_double_star_matches_any_rest_and_only_ends_a_pattern() {
        let scope = rules(&["GET /v4/logs/organisations/orga_1/applications/app_1/**"]);
        assert!(scope.allows(
            "GET",
            "/v4/logs/organisations/orga_1/applications/app_1/logs"
        ));
        assert!(scope.allows("GET", "/v4/logs/organisations/orga_1/applications/app_1"));
        assert!(!scope.allows(
            "GET",
            "/v4/logs/organisations/orga_1/applications/app_2/logs"
        ));
        for bad in [
            "GET /v2/**/self",
            "GET /v2/**/**",
            "GET /v2/a*",
            "GET /v2/**x",
        ] {
            let error = Scope::from_rules(&[bad.to_owned()], false, Vec::new());
            assert!(
                matches!(error, Err(ScopeError::Rule { line: 1, .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn percent_encoded_segments_are_compared_after_one_decoding() {
        let scope = rules(&["GET /v2/a%20b/c%2Fd"]);
        assert!(scope.allows("GET", "/v2/a%20b/c%2Fd"));
        assert!(
            !scope.allows("GET", "/v2/a%20b/c%252Fd"),
            "decoded once only"
        );
        let encoded = rules(&["GET /v2/x%2541"]);
        assert!(
            encoded.allows("GET", "/v2/x%2541"),
            "both sides decode to x%41"
        );
        assert!(!encoded.allows("GET", "/v2/xA"));
    }

    #[test]
    fn a_star_never_matches_an_encoded_slash_nor_two_invalid_spellings_meet() {
        let scope = rules(&[
            "GET /v2/organisations/orga_1/applications/*",
            "GET /v2/x%FF",
        ]);
        assert!(!scope.allows("GET", "/v2/organisations/orga_1/applications/app_1%2Fenv"));
        assert!(scope.allows("GET", "/v2/x%FF"));
        assert!(!scope.allows("GET", "/v2/x%FE"));
    }

    #[test]
    fn matching_is_case_sensitive() {
        let scope = rules(&["GET /v2/self"]);
        assert!(scope.allows("GET", "/v2/self"));
        assert!(!scope.allows("GET", "/v2/Self"));
        assert!(!scope.allows("get", "/v2/self"));
        assert!(Scope::from_rules(&["get /v2/self".to_owned()], false, vec![]).is_err());
    }

    #[test]
    fn methods_are_a_star_or_a_list() {
        let scope = rules(&["GET,HEAD /v2/self", "* /v2/summary"]);
        assert!(scope.allows("HEAD", "/v2/self"));
        assert!(!scope.allows("POST", "/v2/self"));
        assert!(scope.allows("DELETE", "/v2/summary"));
    }

    #[test]
    fn errors_name_the_rule_and_its_line() {
        let error = Scope::from_rules(
            &["GET /v2/self".to_owned(), "FETCH /v2/x".to_owned()],
            false,
            vec![],
        )
        .err()
        .map(|error| error.to_string())
        .unwrap_or_default();
        assert!(
            error.starts_with("rule 2 `FETCH /v2/x`: unknown method `FETCH`"),
            "{error}"
        );
        for bad in [
            "GET",
            "GET v2/self",
            "GET /v2/self extra",
            "GET /v2//self",
            "GET /v2/../x",
        ] {
            assert!(
                Scope::from_rules(&[bad.to_owned()], false, vec![]).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn read_only_reads_and_opens_the_relays() {
        assert!(Scope::ReadOnly.allows("GET", "/v2/anything"));
        assert!(Scope::ReadOnly.allows("HEAD", "/v2/anything"));
        assert!(!Scope::ReadOnly.allows("POST", "/v2/anything"));
        assert!(!Scope::ReadOnly.allows("OPTIONS", "/v2/anything"));
        assert!(Scope::ReadOnly.allows_events() && Scope::ReadOnly.allows_logs("app_1"));
    }

    #[test]
    fn relays_are_named_apart() {
        let scope = Scope::from_rules(&[], false, vec!["app_1".to_owned()]).unwrap_or(Scope::Full);
        assert!(scope.allows_logs("app_1"));
        assert!(!scope.allows_logs("app_2"));
        assert!(!scope.allows_events());
        assert!(!scope.allows("GET", "/v2/self"));
    }

    #[test]
    fn the_json_shape_round_trips() {
        for json in [
            r#""full""#,
            r#""read-only""#,
            r#"{"rules":["GET /v2/self","POST /v2/organisations/orga_1/applications/app_1/instances"],"events":false,"logs":["app_1"]}"#,
        ] {
            let scope: Scope = serde_json::from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"));
            assert_eq!(serde_json::to_string(&scope).unwrap_or_default(), json);
        }
        for bad in [
            r#""everything""#,
            r#"{"rules":["BAD"]}"#,
            "42",
            r#"{"logs":["a/b"]}"#,
        ] {
            assert!(serde_json::from_str::<Scope>(bad).is_err(), "{bad}");
        }
    }
}
