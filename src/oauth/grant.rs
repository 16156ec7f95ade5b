//! What a login produces and what is kept of it: the consumer, the login in
//! progress, the access grant and whom the API says it belongs to.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::signature::Credentials;
use crate::secret::Secret;

/// Which consumer a login was made with.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Consumer {
    /// The operator's, from the configuration (its secret is never stored).
    Operator,
    /// One the visitor typed on the login page.
    Visitor {
        /// Consumer key.
        key: String,
        /// Consumer secret.
        secret: Secret,
    },
}

impl Consumer {
    /// The consumer's credentials; the operator's are `operator`, from the
    /// configuration (`Config::operator_consumer`).
    pub fn credentials(&self, operator: Option<Credentials>) -> Option<Credentials> {
        match self {
            Self::Operator => operator,
            Self::Visitor { key, secret } => Some(Credentials {
                key: key.clone(),
                secret: secret.clone(),
            }),
        }
    }

    /// The consumer's name in owner keys: tokens only work with their
    /// consumer, so one person's tokens are kept apart per consumer.
    fn owner_prefix(&self) -> &str {
        match self {
            Self::Operator => "operator",
            Self::Visitor { key, .. } => key,
        }
    }
}

/// A login in progress: between `POST /login` and `GET /callback`. Its
/// `Debug` leaves the request token out.
#[derive(Clone, Serialize, Deserialize)]
pub struct PendingLogin {
    /// The request token the API gave us for this browser.
    pub request_token: String,
    /// Its secret.
    pub request_secret: Secret,
    /// The consumer that asked for it.
    pub consumer: Consumer,
    /// When the login started (Unix seconds): it is forgotten
    /// `LOGIN_PENDING_SECS` later.
    pub started_at: i64,
}

impl std::fmt::Debug for PendingLogin {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("PendingLogin")
            .field("request_token", &"[redacted]")
            .field("consumer", &self.consumer)
            .field("started_at", &self.started_at)
            .finish_non_exhaustive()
    }
}

/// Whom an access token belongs to, as the API's `GET /v2/self` says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiUser {
    /// The Clever Cloud user id (`user_…`).
    pub id: String,
    /// The name on the account, for the page.
    pub name: Option<String>,
    /// The account's email, for the page.
    pub email: Option<String>,
}

/// What a logged-in session holds: the access token and whom it is for.
/// Its `Debug` leaves the token out, as its secret's does.
#[derive(Clone, Serialize, Deserialize)]
pub struct AccessGrant {
    /// The access token.
    pub token: String,
    /// Its secret.
    pub secret: Secret,
    /// The consumer that obtained it (tokens only work with it).
    pub consumer: Consumer,
    /// Whom the API says the token is for; `None` when the consumer may not
    /// read `/v2/self`. Never taken from the browser.
    pub user: Option<ApiUser>,
    /// When the token expires (ISO 8601, as the API gave it).
    pub expiration_date: Option<String>,
}

impl std::fmt::Debug for AccessGrant {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("AccessGrant")
            .field("token", &"[redacted]")
            .field("secret", &self.secret)
            .field("consumer", &self.consumer)
            .field("user", &self.user)
            .field("expiration_date", &self.expiration_date)
            .finish()
    }
}

#[cfg(test)]
impl AccessGrant {
    /// A grant of the operator's consumer with made-up tokens.
    pub(crate) fn for_tests() -> Self {
        Self {
            token: "access".to_owned(),
            secret: Secret::new("access-secret"),
            consumer: Consumer::Operator,
            user: None,
            expiration_date: None,
        }
    }
}

impl AccessGrant {
    /// The access token as signing credentials.
    pub fn token_credentials(&self) -> Credentials {
        Credentials {
            key: self.token.clone(),
            secret: self.secret.clone(),
        }
    }

    /// The Clever Cloud user id, when the API told it.
    pub fn user_id(&self) -> Option<&str> {
        self.user.as_ref().map(|user| user.id.as_str())
    }

    /// Whose proxy tokens and relays these are: the Clever Cloud user (per
    /// consumer), or this one login when the API did not say whom the token
    /// is for. A hash stands for the access token, which is a secret.
    pub fn owner(&self) -> String {
        let consumer = self.consumer.owner_prefix();
        match self.user_id() {
            Some(user) => format!("{consumer}/user/{user}"),
            None => format!(
                "{consumer}/token/{}",
                crate::hex::encode(&Sha256::digest(self.token.as_bytes()))
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(user: Option<&str>) -> AccessGrant {
        AccessGrant {
            token: "access-token-value".to_owned(),
            secret: Secret::new("access-secret-value"),
            consumer: Consumer::Visitor {
                key: "visitor-key".to_owned(),
                secret: Secret::new("consumer-secret-value"),
            },
            user: user.map(|id| ApiUser {
                id: id.to_owned(),
                name: Some("Ada".to_owned()),
                email: None,
            }),
            expiration_date: None,
        }
    }

    #[test]
    fn a_grant_prints_neither_its_token_nor_its_secrets() {
        let printed = format!("{:?}", grant(Some("user_1")));
        for secret in [
            "access-token-value",
            "access-secret-value",
            "consumer-secret-value",
        ] {
            assert!(!printed.contains(secret), "{printed}");
        }
        assert!(printed.contains("user_1"));
    }

    #[test]
    fn the_owner_is_the_user_per_consumer_or_else_the_login() {
        assert_eq!(grant(Some("user_1")).owner(), "visitor-key/user/user_1");
        let anonymous = grant(None).owner();
        assert!(anonymous.starts_with("visitor-key/token/"), "{anonymous}");
        assert!(!anonymous.contains("access-token-value"), "{anonymous}");
        let mut other_login = grant(None);
        other_login.token = "another-access-token".to_owned();
        assert_ne!(other_login.owner(), anonymous);
    }
}
