//! Who holds which relays: the per-caller limit, and counts for metrics.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::metrics::gauge::Gauge;
use sha2::{Digest as _, Sha256};

use crate::auth::{Caller, Credential};

/// Identifies a caller for the per-caller limit without holding its secret:
/// a proxy token's public id, or a hash of the session's access token.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CallerKey(String);

impl CallerKey {
    /// The key of `caller`.
    pub fn of(caller: &Caller) -> Self {
        match &caller.credential {
            Credential::ProxyToken(id) => Self(format!("proxy-token/{id}")),
            Credential::Session => {
                let digest = Sha256::new()
                    .chain_update(b"ocs/relay/session/")
                    .chain_update(caller.grant.token.as_bytes())
                    .finalize();
                Self(format!("session/{}", crate::hex::encode(&digest[..16])))
            }
        }
    }
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
    per_caller: Mutex<HashMap<CallerKey, usize>>,
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

    /// Reserves a relay for `key`, unless it already holds `limit`.
    pub fn acquire(self: &Arc<Self>, key: CallerKey, limit: usize) -> Option<RelaySlot> {
        let mut per_caller = self
            .per_caller
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let held = per_caller.entry(key.clone()).or_default();
        if *held >= limit {
            return None;
        }
        *held += 1;
        self.open.inc();
        Some(RelaySlot {
            registry: Arc::clone(self),
            key,
        })
    }

    pub(super) fn note_backpressure(&self) {
        self.backpressure.fetch_add(1, Ordering::Relaxed);
    }

    fn release(&self, key: &CallerKey) {
        let mut per_caller = self
            .per_caller
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(held) = per_caller.get_mut(key) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                per_caller.remove(key);
            }
        }
        self.open.dec();
    }
}

/// One open relay; released when dropped.
#[derive(Debug)]
pub struct RelaySlot {
    registry: Arc<RelayRegistry>,
    key: CallerKey,
}

impl RelaySlot {
    /// The registry this slot belongs to.
    pub fn registry(&self) -> &Arc<RelayRegistry> {
        &self.registry
    }
}

impl Drop for RelaySlot {
    fn drop(&mut self) {
        self.registry.release(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_is_per_caller_and_slots_give_back() {
        let registry = Arc::new(RelayRegistry::default());
        let ada = CallerKey("session/ada".into());
        let bob = CallerKey("session/bob".into());

        let first = registry.acquire(ada.clone(), 2);
        let second = registry.acquire(ada.clone(), 2);
        assert!(first.is_some() && second.is_some());
        assert!(registry.acquire(ada.clone(), 2).is_none(), "third refused");
        let bobs = registry.acquire(bob, 2);
        assert!(bobs.is_some(), "another caller is not affected");
        assert_eq!(registry.open(), 3);

        drop(first);
        assert_eq!(registry.open(), 2);
        assert!(
            registry.acquire(ada, 2).is_some(),
            "a freed slot is reusable"
        );
        drop((second, bobs));
        assert_eq!(registry.open(), 0);
    }
}
