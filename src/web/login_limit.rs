//! How often one client address may start a login. Every start costs a
//! call to the API's `request_token` with the operator's consumer, so a
//! flood from one address must not reach the API. The limit is per
//! instance: with several instances an address gets as many starts from
//! each (enough against a flood; no store round trip per start).

use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Past this many addresses, those whose budget is full again are dropped,
/// so the table stays as large as the set of recent callers.
const SHRINK_PAST: usize = 4096;

/// Login starts per client address: GCRA, `per_minute` a minute with a
/// burst of as many.
#[derive(Debug)]
pub(crate) struct LoginLimiter {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
}

impl LoginLimiter {
    pub(crate) fn per_minute(per_minute: u32) -> Self {
        let quota = Quota::per_minute(NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN));
        Self {
            limiter: RateLimiter::keyed(quota),
            clock: DefaultClock::default(),
        }
    }

    /// Counts a start from `client` (unknown: one shared budget); `Err`
    /// holds how long until the next one is allowed.
    pub(crate) fn check(&self, client: Option<IpAddr>) -> Result<(), Duration> {
        if self.limiter.len() > SHRINK_PAST {
            self.limiter.retain_recent();
        }
        let key = client.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        self.limiter
            .check_key(&key)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_has_its_own_budget() {
        let limiter = LoginLimiter::per_minute(3);
        let (one, other) = (
            Some(IpAddr::from([192, 0, 2, 1])),
            Some(IpAddr::from([192, 0, 2, 2])),
        );
        for _ in 0..3 {
            assert!(limiter.check(one).is_ok());
        }
        let wait = limiter.check(one).err().unwrap_or_default();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
        assert!(limiter.check(other).is_ok());
    }
}
