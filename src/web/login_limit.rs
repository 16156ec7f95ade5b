//! How often one client address may start a login. Every start costs a
//! call to the API's `request_token` with the operator's consumer, so a
//! flood from one address must not reach the API. The limit is per
//! instance: with several instances an address gets as many starts from
//! each (enough against a flood; no store round trip per start).

use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Past this many addresses, those whose budget is full again are dropped,
/// so the table stays as large as the set of recent callers.
const SHRINK_PAST: usize = 4096;
/// How many starts go by between two looks at the table's size.
const SHRINK_EVERY: usize = 64;

/// Whose budget a start counts against: the address, or for IPv6 its /64,
/// since one host commonly holds a whole /64 and could pick a fresh
/// address for every start.
fn budget_of(client: IpAddr) -> IpAddr {
    match client.to_canonical() {
        IpAddr::V6(address) => {
            let network = u128::from(address) & !u128::from(u64::MAX);
            IpAddr::V6(network.into())
        }
        v4 => v4,
    }
}

/// Login starts per client address: GCRA, `per_minute` a minute with a
/// burst of as many.
#[derive(Debug)]
pub(crate) struct LoginLimiter {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
    /// Starts checked, to look at the table's size now and then.
    checks: AtomicUsize,
}

impl LoginLimiter {
    pub(crate) fn per_minute(per_minute: u32) -> Self {
        let quota = Quota::per_minute(NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN));
        Self {
            limiter: RateLimiter::keyed(quota),
            clock: DefaultClock::default(),
            checks: AtomicUsize::new(0),
        }
    }

    /// Counts a start from `client` (unknown: one shared budget); `Err`
    /// holds how long until the next one is allowed.
    pub(crate) fn check(&self, client: Option<IpAddr>) -> Result<(), Duration> {
        // Looking at the table's size on every start would cost as much as
        // the check: once every SHRINK_EVERY starts is enough.
        if self
            .checks
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(SHRINK_EVERY)
            && self.limiter.len() > SHRINK_PAST
        {
            self.limiter.retain_recent();
        }
        let key = budget_of(client.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)));
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

    #[test]
    fn an_ipv6_host_has_one_budget_for_its_whole_64() {
        let limiter = LoginLimiter::per_minute(2);
        let address = |last: u16| Some(IpAddr::from([0x2001, 0xdb8, 0, 1, 0, 0, 0, last]));
        assert!(limiter.check(address(1)).is_ok());
        assert!(limiter.check(address(2)).is_ok());
        assert!(limiter.check(address(3)).is_err(), "same /64");
        assert!(
            limiter
                .check(Some(IpAddr::from([0x2001, 0xdb8, 0, 2, 0, 0, 0, 1])))
                .is_ok(),
            "another /64"
        );
        let mapped = Some(IpAddr::from([0, 0, 0, 0, 0, 0xffff, 0xc000, 0x0201]));
        assert!(limiter.check(Some(IpAddr::from([192, 0, 2, 1]))).is_ok());
        assert!(limiter.check(mapped).is_ok());
        assert!(
            limiter.check(mapped).is_err(),
            "an IPv4-mapped address is its IPv4"
        );
    }
}
