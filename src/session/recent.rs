//! What this instance remembers of the logged-in sessions it read lately,
//! so that a page's calls to the proxy and the relays do not each load,
//! decrypt and parse the session's record (the proxy tokens' cache does the
//! same for services).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};
use tower_sessions::session::Id;

use crate::oauth::grant::AccessGrant;

/// How long a session read from the store is trusted without reading it
/// again: the longest another instance may accept a session ended
/// elsewhere (the same second as a proxy token's).
pub const RECENT_SESSION_TTL: Duration = Duration::from_secs(1);

/// Past this many remembered sessions, stale ones are dropped (and all of
/// them if none is stale), so the memory stays bounded.
const RECENT_SESSION_CAPACITY: usize = 4096;

/// The key of a session in [`RecentSessions`]: a hash of its id, so the id
/// itself (the browser's credential) is not kept beside the grant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SessionKey([u8; 32]);

impl SessionKey {
    /// The key of session `id`.
    pub fn of(id: &Id) -> Self {
        Self(
            Sha256::new()
                .chain_update(b"ocs/recent-session/")
                .chain_update(id.0.to_le_bytes())
                .finalize()
                .into(),
        )
    }
}

/// Logged-in sessions this instance read lately, with their grants.
#[derive(Debug, Default)]
pub struct RecentSessions(Mutex<Inner>);

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<SessionKey, Remembered>,
    /// Bumped by every deletion, so a read that raced with one is not
    /// remembered after it.
    generation: u64,
}

#[derive(Debug)]
struct Remembered {
    /// Until when the grant may be used without reading the store.
    fresh_until: Instant,
    grant: Arc<AccessGrant>,
}

impl RecentSessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Nothing panics while holding it; a poisoned map is still sound.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The grant of session `key`, if it was read from the store lately.
    pub fn get(&self, key: &SessionKey, now: Instant) -> Option<Arc<AccessGrant>> {
        let inner = self.lock();
        let remembered = inner.entries.get(key)?;
        (now < remembered.fresh_until).then(|| Arc::clone(&remembered.grant))
    }

    /// To be read before the store, and given back to [`Self::remember`].
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Remembers the grant of session `key`, read from the store after
    /// `generation` was, for `fresh_for` (at most [`RECENT_SESSION_TTL`]);
    /// not if a session was deleted meanwhile.
    pub fn remember(
        &self,
        key: SessionKey,
        generation: u64,
        fresh_for: Duration,
        grant: Arc<AccessGrant>,
    ) {
        let now = Instant::now();
        let fresh_until = now + fresh_for.min(RECENT_SESSION_TTL);
        let mut inner = self.lock();
        if inner.generation != generation {
            return;
        }
        if inner.entries.len() >= RECENT_SESSION_CAPACITY {
            inner.entries.retain(|_, kept| now < kept.fresh_until);
            if inner.entries.len() >= RECENT_SESSION_CAPACITY {
                inner.entries.clear();
            }
        }
        inner.entries.insert(key, Remembered { fresh_until, grant });
    }

    /// Forgets session `key`, deleted from the store.
    pub fn forget(&self, key: &SessionKey) {
        let mut inner = self.lock();
        inner.generation = inner.generation.wrapping_add(1);
        inner.entries.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant() -> Arc<AccessGrant> {
        Arc::new(AccessGrant::for_tests())
    }

    #[test]
    fn a_session_is_trusted_until_its_time_and_never_past_the_ttl() {
        let recent = RecentSessions::default();
        let (soon, later) = (SessionKey::of(&Id(1)), SessionKey::of(&Id(2)));
        let now = Instant::now();
        let short = Duration::from_millis(100);

        recent.remember(soon, recent.generation(), short, grant());
        recent.remember(later, recent.generation(), Duration::MAX, grant());

        assert!(recent.get(&soon, now).is_some());
        assert!(recent.get(&soon, now + 2 * short).is_none());
        assert!(
            recent
                .get(&later, now + RECENT_SESSION_TTL - short)
                .is_some()
        );
        assert!(
            recent
                .get(&later, now + RECENT_SESSION_TTL + short)
                .is_none()
        );
        assert!(recent.get(&SessionKey::of(&Id(3)), now).is_none());
    }

    #[test]
    fn a_deleted_session_is_forgotten_and_a_read_racing_the_deletion_is_not_kept() {
        let recent = RecentSessions::default();
        let (ended, racing) = (SessionKey::of(&Id(1)), SessionKey::of(&Id(2)));
        recent.remember(ended, recent.generation(), RECENT_SESSION_TTL, grant());
        let read_before_the_deletion = recent.generation();

        recent.forget(&ended);
        recent.remember(
            racing,
            read_before_the_deletion,
            RECENT_SESSION_TTL,
            grant(),
        );

        assert!(recent.get(&ended, Instant::now()).is_none());
        assert!(recent.get(&racing, Instant::now()).is_none());
    }

    #[test]
    fn keys_differ_per_session_and_hold_no_id() {
        let id = Id(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        assert_eq!(SessionKey::of(&id), SessionKey::of(&id));
        assert_ne!(SessionKey::of(&id), SessionKey::of(&Id(id.0 + 1)));
        let key = SessionKey::of(&id).0;
        let id_bytes = id.0.to_le_bytes();
        assert!(!key.windows(id_bytes.len()).any(|window| window == id_bytes));
    }
}
