//! What this instance remembers of the proxy tokens it authenticated
//! lately, so that a busy service's calls do not each read and decrypt the
//! token's record.

use std::collections::HashMap;
use std::sync::PoisonError;
use std::time::Instant;

use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;

use std::sync::Arc;

use super::TokenInfo;
use crate::oauth::grant::AccessGrant;

/// How long an authenticated token is trusted without reading the store
/// again: the longest another instance may accept a token revoked elsewhere.
pub const RECENT_TOKEN_TTL: std::time::Duration = std::time::Duration::from_secs(1);

/// Past this many recently authenticated tokens, stale ones are dropped (and
/// all of them if none is stale), so the memory stays bounded.
const RECENT_TOKEN_CAPACITY: usize = 4096;

/// Tokens this instance authenticated lately, by a hash of the token (never
/// by the token itself).
#[derive(Debug, Default)]
pub(super) struct RecentTokens(std::sync::Mutex<RecentInner>);

/// The key of a token in [`RecentTokens`]: the SHA-256 of the token alone,
/// one block to hash (the stored verifier's domain prefix makes it two),
/// kept in this process only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct RecentKey([u8; 32]);

impl RecentKey {
    pub(super) fn of(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }
}

/// Hashes a [`RecentKey`] by its first bytes: it is already a SHA-256.
#[derive(Clone, Copy, Debug, Default)]
struct PrehashedKey(u64);

impl std::hash::Hasher for PrehashedKey {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for (index, byte) in bytes.iter().take(8).enumerate() {
            self.0 ^= u64::from(*byte) << (8 * index);
        }
    }
}

#[derive(Debug, Default)]
struct RecentInner {
    entries: HashMap<RecentKey, Recent, std::hash::BuildHasherDefault<PrehashedKey>>,
    /// Bumped by every revocation, so a look-up that raced with one is not
    /// remembered after it.
    generation: u64,
}

#[derive(Debug)]
pub(super) struct Recent {
    /// [`RECENT_TOKEN_TTL`] after the check, or the record's own expiry if
    /// sooner: a remembered token does not outlive its record.
    fresh_until: Instant,
    info: Arc<TokenInfo>,
    grant: Arc<AccessGrant>,
}

impl Recent {
    pub(super) fn new(
        checked_at: Instant,
        expiry_date: OffsetDateTime,
        info: Arc<TokenInfo>,
        grant: Arc<AccessGrant>,
    ) -> Self {
        // Converted once here, so that a look-up reads one clock, not the
        // calendar's.
        let left = (expiry_date - OffsetDateTime::now_utc()).max(time::Duration::ZERO);
        let left = std::time::Duration::try_from(left).unwrap_or_default();
        Self {
            fresh_until: checked_at + RECENT_TOKEN_TTL.min(left),
            info,
            grant,
        }
    }

    fn is_fresh(&self, now: Instant) -> bool {
        now < self.fresh_until
    }
}

impl RecentTokens {
    fn lock(&self) -> std::sync::MutexGuard<'_, RecentInner> {
        // Nothing panics while holding it; a poisoned map is still sound.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn get(
        &self,
        key: &RecentKey,
        now: Instant,
    ) -> Option<(Arc<TokenInfo>, Arc<AccessGrant>)> {
        let inner = self.lock();
        let recent = inner.entries.get(key)?;
        recent
            .is_fresh(now)
            .then(|| (Arc::clone(&recent.info), Arc::clone(&recent.grant)))
    }

    pub(super) fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Remembers a token checked against the store, unless a revocation
    /// happened since `generation` was read.
    pub(super) fn remember(&self, key: RecentKey, generation: u64, recent: Recent) {
        let mut inner = self.lock();
        if inner.generation != generation {
            return;
        }
        if inner.entries.len() >= RECENT_TOKEN_CAPACITY {
            let now = Instant::now();
            inner.entries.retain(|_, kept| kept.is_fresh(now));
            if inner.entries.len() >= RECENT_TOKEN_CAPACITY {
                inner.entries.clear();
            }
        }
        inner.entries.insert(key, recent);
    }

    /// Forgets the token whose public id is `id`.
    pub(super) fn forget(&self, id: &str) {
        let mut inner = self.lock();
        inner.generation = inner.generation.wrapping_add(1);
        inner.entries.retain(|_, kept| kept.info.id != id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::grant::Consumer;
    use crate::secret::Secret;

    fn grant() -> AccessGrant {
        AccessGrant {
            token: "access".to_owned(),
            secret: Secret::new("access-secret"),
            consumer: Consumer::Operator,
            user: None,
            expiration_date: None,
        }
    }

    #[test]
    fn a_remembered_token_is_trusted_for_the_ttl_and_never_past_its_record() {
        let info = Arc::new(TokenInfo::new(
            "id".to_owned(),
            "name".to_owned(),
            OffsetDateTime::UNIX_EPOCH,
        ));
        let remembered = |expires_in: time::Duration| {
            let now = Instant::now();
            let recent = Recent::new(
                now,
                OffsetDateTime::now_utc() + expires_in,
                info.clone(),
                Arc::new(grant()),
            );
            (now, recent)
        };
        let short = std::time::Duration::from_millis(200);

        let (now, far) = remembered(time::Duration::days(1));
        assert!(far.is_fresh(now + RECENT_TOKEN_TTL - short));
        assert!(!far.is_fresh(now + RECENT_TOKEN_TTL));

        let (now, soon) = remembered(time::Duration::milliseconds(400));
        assert!(soon.is_fresh(now + short));
        assert!(!soon.is_fresh(now + 3 * short));

        let (now, past) = remembered(time::Duration::seconds(-1));
        assert!(!past.is_fresh(now));
    }
}
