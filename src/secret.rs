//! A string that must never be printed.

use std::fmt;

use serde::{Deserialize, Serialize};
/// A secret value (consumer secret, token secret, verifier, proxy token).
///
/// `Debug` and `Display` print `[redacted]`, so a secret that ends up in a
/// `tracing` field or an error message does not leak; read it with
/// [`Secret::expose`] only where it is used.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret value itself, for signing or for showing to its owner.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self::new(value)
    }
}

impl From<Secret> for String {
    fn from(secret: Secret) -> Self {
        secret.expose().to_owned()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_hide_the_value() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?} {secret}"), "[redacted] [redacted]");
        assert_eq!(secret.expose(), "hunter2");
    }

    #[test]
    fn serializes_as_plain_string_for_the_session_store() {
        let secret = Secret::new("s3cr3t");
        let json = serde_json::to_string(&secret).unwrap_or_default();
        assert_eq!(json, "\"s3cr3t\"");
        let back: Secret = serde_json::from_str(&json).unwrap_or_default();
        assert_eq!(back.expose(), "s3cr3t");
    }
}
