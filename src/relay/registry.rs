//! Who holds which relays: the limits per caller and per owner, and counts
//! for metrics.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::metrics::gauge::Gauge;
use sha2::{Digest as _, Sha256};

/// Identifies a caller for the per-caller limit without holding its secret:
/// a proxy token's public id, or a hash of the session's access token.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CallerKey(String);

impl CallerKey {
    /// The key of the proxy token whose public id is `id`.
    pub(crate) fn proxy_token(id: &str) -> Self {
        Self(format!("proxy-token/{id}"))
    }

    /// The key of a browser session acting with `access_token`.
    pub(crate) fn session(access_token: &str) -> Self {
        let digest = Sha256::new()
            .chain_update(b"ocs/relay/session/")
            .chain_update(access_token.as_bytes())
            .finalize();
        Self(format!("session/{}", crate::hex::encode(&digest[..16])))
    }
}

/// Identifies the person behind a caller, for the per-owner limit: the
/// same owner as their proxy tokens' (the API's user, per consumer), so a
/// browser session and every proxy token made from it count together.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OwnerKey(String);

impl OwnerKey {
    /// The key of `owner` (`AccessGrant::owner`).
    pub(crate) fn new(owner: String) -> Self {
        Self(owner)
    }
}

/// How many relays may be open at once for one caller and for one owner.
#[derive(Clone, Copy, Debug)]
pub struct RelayLimits {
    /// `RELAY_MAX_PER_CALLER`.
    pub per_caller: usize,
    /// `RELAYS_PER_OWNER`.
    pub per_owner: usize,
}

/// Which limit refused a relay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitReached {
    /// The caller (one session or proxy token) holds this many already.
    Caller(usize),
    /// The owner, across all their callers, holds this many already.
    Owner(usize),
}

/// The open relays of this process.
///
/// Its count of open relays is the `relays_open` gauge of `/metrics` itself
/// (see [`RelayRegistry::counting_into`]): one counter, which the metrics,
/// the tests and the shutdown's wait for the last relays all read.
#[derive(Debug, Default)]
pub struct RelayRegistry {
    open: Gauge,
    backpressure: AtomicU64,
    held: Mutex<Held>,
}

/// Relays held, per caller and per owner; keys leave when they reach zero.
#[derive(Debug, Default)]
struct Held {
    per_caller: HashMap<CallerKey, usize>,
    per_owner: HashMap<OwnerKey, usize>,
}

impl RelayRegistry {
    /// A registry that keeps its count of open relays in `open` (the
    /// metrics' gauge, a shared atomic).
    pub fn counting_into(open: Gauge) -> Self {
        Self {
            open,
            ..Self::default()
        }
    }

    /// Relays open right now (from the upstream handshake to the last close).
    pub fn open(&self) -> usize {
        usize::try_from(self.open.get()).unwrap_or(0)
    }

    /// How many times a relay stopped reading the API because its client
    /// was too slow (since start).
    pub fn backpressure_events(&self) -> u64 {
        self.backpressure.load(Ordering::Relaxed)
    }

    /// Reserves a relay for `caller`, owned by `owner`, unless either
    /// already holds its limit.
    pub fn acquire(
        self: &Arc<Self>,
        caller: CallerKey,
        owner: OwnerKey,
        limits: RelayLimits,
    ) -> Result<RelaySlot, LimitReached> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if count(&held.per_caller, &caller) >= limits.per_caller {
            return Err(LimitReached::Caller(limits.per_caller));
        }
        if count(&held.per_owner, &owner) >= limits.per_owner {
            return Err(LimitReached::Owner(limits.per_owner));
        }
        *held.per_caller.entry(caller.clone()).or_default() += 1;
        *held.per_owner.entry(owner.clone()).or_default() += 1;
        self.open.inc();
        Ok(RelaySlot {
            registry: Arc::clone(self),
            caller,
            owner,
        })
    }

    pub(super) fn note_backpressure(&self) {
        self.backpressure.fetch_add(1, Ordering::Relaxed);
    }

    fn release(&self, caller: &CallerKey, owner: &OwnerKey) {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        give_back(&mut held.per_caller, caller);
        give_back(&mut held.per_owner, owner);
        self.open.dec();
    }
}

fn count<K: Eq + Hash>(held: &HashMap<K, usize>, key: &K) -> usize {
    held.get(key).copied().unwrap_or(0)
}

fn give_back<K: Eq + Hash>(held: &mut HashMap<K, usize>, key: &K) {
    if let Some(count) = held.get_mut(key) {
        *count = count.saturating_sub(1);
        if *count == 0 {
            held.remove(key);
        }
    }
}

/// One open relay; released when dropped.
#[derive(Debug)]
pub struct RelaySlot {
    registry: Arc<RelayRegistry>,
    caller: CallerKey,
    owner: OwnerKey,
}

impl RelaySlot {
    /// The registry this slot belongs to.
    pub fn registry(&self) -> &Arc<RelayRegistry> {
        &self.registry
    }
}

impl Drop for RelaySlot {
    fn drop(&mut self) {
        self.registry.release(&self.caller, &self.owner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: RelayLimits = RelayLimits {
        per_caller: 2,
        per_owner: 3,
    };

    fn caller(name: &str) -> CallerKey {
        CallerKey(format!("proxy-token/{name}"))
    }

    fn owner(name: &str) -> OwnerKey {
        OwnerKey(format!("operator/user/{name}"))
    }

    #[test]
    fn the_limit_is_per_caller_and_slots_give_back() {
        let registry = Arc::new(RelayRegistry::default());
        let ada = caller("ada");
        let bob = caller("bob");

        let first = registry.acquire(ada.clone(), owner("ada"), LIMITS);
        let second = registry.acquire(ada.clone(), owner("ada"), LIMITS);
        assert!(first.is_ok() && second.is_ok());
        assert_eq!(
            registry.acquire(ada.clone(), owner("ada"), LIMITS).err(),
            Some(LimitReached::Caller(2)),
            "third refused"
        );
        let bobs = registry.acquire(bob, owner("bob"), LIMITS);
        assert!(bobs.is_ok(), "another caller is not affected");
        assert_eq!(registry.open(), 3);

        drop(first);
        assert_eq!(registry.open(), 2);
        assert!(
            registry.acquire(ada, owner("ada"), LIMITS).is_ok(),
            "a freed slot is reusable"
        );
        drop((second, bobs));
        assert_eq!(registry.open(), 0);
    }

    #[test]
    fn the_owner_limit_counts_every_caller_of_one_owner() {
        let registry = Arc::new(RelayRegistry::default());
        let held: Vec<_> = ["t1", "t2", "t3"]
            .map(|token| registry.acquire(caller(token), owner("ada"), LIMITS))
            .into_iter()
            .collect();
        assert!(held.iter().all(Result::is_ok));

        let fourth = registry.acquire(caller("t4"), owner("ada"), LIMITS);
        let bobs = registry.acquire(caller("b1"), owner("bob"), LIMITS);

        assert_eq!(fourth.err(), Some(LimitReached::Owner(3)));
        assert!(bobs.is_ok(), "another owner is not affected");
        drop((held, bobs));
        let again = registry.acquire(caller("t4"), owner("ada"), LIMITS);
        assert!(again.is_ok(), "freed slots are reusable");
        let held = registry.held.lock().unwrap_or_else(PoisonError::into_inner);
        assert_eq!(held.per_owner.len(), 1, "owners at zero are forgotten");
    }
}
