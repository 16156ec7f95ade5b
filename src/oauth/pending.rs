//! The logins a browser has in progress: a few at once (one per tab), each
//! known by its request token, each good once and for a limited time.

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq as _;

use super::grant::PendingLogin;

/// Logins one browser may have in progress; a further start forgets the
/// oldest.
pub const MAX_PENDING_LOGINS: usize = 5;

/// A browser's logins in progress, oldest first.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PendingLogins(Vec<PendingLogin>);

/// What a callback's request token finds among a browser's logins.
#[derive(Debug)]
pub enum Lookup<'a> {
    /// One of this browser's own logins, still in time.
    Found(&'a PendingLogin),
    /// The browser has no login in progress (none started, all finished or
    /// too old).
    NoneInProgress,
    /// The browser has logins in progress, but not this one.
    NotThisBrowsers,
}

impl PendingLogins {
    /// Adds `login`, forgetting those older than `max_age_secs` at `now`
    /// and, past [`MAX_PENDING_LOGINS`], the oldest.
    pub fn start(&mut self, login: PendingLogin, now: i64, max_age_secs: i64) {
        self.forget_stale(now, max_age_secs);
        self.0.push(login);
        let excess = self.0.len().saturating_sub(MAX_PENDING_LOGINS);
        self.0.drain(..excess);
    }

    /// The login whose request token is `token` (compared in constant time),
    /// if it started less than `max_age_secs` before `now`.
    pub fn find(&self, token: &str, now: i64, max_age_secs: i64) -> Lookup<'_> {
        let mut live = self
            .0
            .iter()
            .filter(|login| is_fresh(login, now, max_age_secs))
            .peekable();
        if live.peek().is_none() {
            return Lookup::NoneInProgress;
        }
        live.find(|login| {
            login
                .request_token
                .as_bytes()
                .ct_eq(token.as_bytes())
                .into()
        })
        .map_or(Lookup::NotThisBrowsers, Lookup::Found)
    }

    /// Forgets the login of request token `token`, and the stale ones.
    pub fn finish(&mut self, token: &str, now: i64, max_age_secs: i64) {
        self.0.retain(|login| login.request_token != token);
        self.forget_stale(now, max_age_secs);
    }

    /// How many logins are in progress (stale ones included).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn forget_stale(&mut self, now: i64, max_age_secs: i64) {
        self.0.retain(|login| is_fresh(login, now, max_age_secs));
    }
}

fn is_fresh(login: &PendingLogin, now: i64, max_age_secs: i64) -> bool {
    now.saturating_sub(login.started_at) < max_age_secs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::grant::Consumer;
    use crate::secret::Secret;

    const MAX_AGE: i64 = 600;

    fn login(token: &str, started_at: i64) -> PendingLogin {
        PendingLogin {
            request_token: token.to_owned(),
            request_secret: Secret::new("request-secret"),
            consumer: Consumer::Operator,
            started_at,
        }
    }

    fn found(logins: &PendingLogins, token: &str, now: i64) -> bool {
        matches!(logins.find(token, now, MAX_AGE), Lookup::Found(login) if login.request_token == token)
    }

    #[test]
    fn each_tab_finds_its_own_login_once() {
        let mut logins = PendingLogins::default();
        logins.start(login("tab-1", 100), 100, MAX_AGE);
        logins.start(login("tab-2", 101), 101, MAX_AGE);

        assert!(found(&logins, "tab-1", 102));
        logins.finish("tab-1", 102, MAX_AGE);
        assert!(
            found(&logins, "tab-2", 103),
            "finishing one keeps the other"
        );
        assert!(matches!(
            logins.find("tab-1", 103, MAX_AGE),
            Lookup::NotThisBrowsers
        ));
        logins.finish("tab-2", 103, MAX_AGE);
        assert!(matches!(
            logins.find("tab-2", 104, MAX_AGE),
            Lookup::NoneInProgress
        ));
    }

    #[test]
    fn a_sixth_start_forgets_the_oldest() {
        let mut logins = PendingLogins::default();
        for tab in 0..=MAX_PENDING_LOGINS {
            logins.start(login(&format!("tab-{tab}"), 100), 100, MAX_AGE);
        }
        assert_eq!(logins.len(), MAX_PENDING_LOGINS);
        assert!(!found(&logins, "tab-0", 100));
        assert!(found(&logins, "tab-1", 100));
        assert!(found(&logins, &format!("tab-{MAX_PENDING_LOGINS}"), 100));
    }

    #[test]
    fn logins_are_forgotten_when_too_old() {
        let mut logins = PendingLogins::default();
        logins.start(login("old", 0), 0, MAX_AGE);
        assert!(found(&logins, "old", MAX_AGE - 1));
        assert!(matches!(
            logins.find("old", MAX_AGE, MAX_AGE),
            Lookup::NoneInProgress
        ));
        logins.start(login("new", MAX_AGE), MAX_AGE, MAX_AGE);
        assert_eq!(logins.len(), 1, "starting a login drops stale ones");
    }

    #[test]
    fn near_misses_are_not_this_browsers() {
        let mut logins = PendingLogins::default();
        logins.start(login("request-token", 0), 0, MAX_AGE);
        for other in ["request-toke", "request-tokenX", "", "REQUEST-TOKEN"] {
            assert!(
                matches!(logins.find(other, 1, MAX_AGE), Lookup::NotThisBrowsers),
                "{other}"
            );
        }
    }
}
