//! Who the client is behind a load balancer: `X-Forwarded-For` and
//! `X-Forwarded-Proto`, believed only when the peer is a trusted proxy.
//!
//! Clever Cloud's load balancer appends the address it saw to
//! `X-Forwarded-For`; anything to the left of it came from the client and
//! may be forged. So the client is the rightmost address that is not one of
//! our proxies.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;

/// Clever Cloud's list of its load balancers' addresses.
pub const CC_REVERSE_PROXY_IPS: &str = "CC_REVERSE_PROXY_IPS";

/// One trusted address, or a CIDR block of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpRange {
    network: IpAddr,
    prefix: u8,
}

/// A `TRUSTED_PROXIES` or `CC_REVERSE_PROXY_IPS` entry that is neither an
/// address nor a CIDR block.
#[derive(Debug, thiserror::Error)]
#[error("{variable}: {entry:?} is not an IP address or CIDR block (like 10.0.0.0/8)")]
pub struct BadProxyEntry {
    variable: &'static str,
    entry: String,
}

impl IpRange {
    /// Parses `10.1.2.3`, `10.0.0.0/8`, `::1` or `fd00::/8`.
    pub fn parse(text: &str) -> Option<Self> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address.trim().parse().ok()?;
        let bits = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(prefix) => prefix
                .trim()
                .parse()
                .ok()
                .filter(|prefix| *prefix <= bits)?,
            None => bits,
        };
        Some(Self { network, prefix })
    }

    /// Whether `address` is in this block (IPv4-mapped IPv6 counts as IPv4).
    pub fn contains(&self, address: IpAddr) -> bool {
        match (self.network, address.to_canonical()) {
            (IpAddr::V4(network), IpAddr::V4(address)) => {
                prefix_matches(&network.octets(), &address.octets(), self.prefix)
            }
            (IpAddr::V6(network), IpAddr::V6(address)) => {
                prefix_matches(&network.octets(), &address.octets(), self.prefix)
            }
            // An IPv6 block written over IPv4-mapped addresses
            // (`::ffff:10.0.0.1`, `::/0`) holds their IPv4 forms.
            (IpAddr::V6(network), IpAddr::V4(address)) => prefix_matches(
                &network.octets(),
                &address.to_ipv6_mapped().octets(),
                self.prefix,
            ),
            (IpAddr::V4(_), IpAddr::V6(_)) => false,
        }
    }
}

fn prefix_matches(network: &[u8], address: &[u8], prefix: u8) -> bool {
    let full_bytes = usize::from(prefix / 8);
    let rest_bits = prefix % 8;
    if network[..full_bytes] != address[..full_bytes] {
        return false;
    }
    if rest_bits == 0 {
        return true;
    }
    let mask = 0xff_u8 << (8 - rest_bits);
    network[full_bytes] & mask == address[full_bytes] & mask
}

/// The proxies whose forwarding headers we believe.
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies(Vec<IpRange>);

impl TrustedProxies {
    /// From `TRUSTED_PROXIES` (already split on commas by the configuration)
    /// and the comma-separated `cc_reverse_proxy_ips`.
    pub fn parse(
        trusted_proxies: &[String],
        cc_reverse_proxy_ips: Option<&str>,
    ) -> Result<Self, BadProxyEntry> {
        let configured = trusted_proxies
            .iter()
            .map(|entry| ("TRUSTED_PROXIES", entry.as_str()));
        let platform = cc_reverse_proxy_ips
            .unwrap_or_default()
            .split(',')
            .map(|entry| (CC_REVERSE_PROXY_IPS, entry));
        let mut ranges = Vec::new();
        for (variable, entry) in configured.chain(platform) {
            let entry = entry.trim();
            if entry.is_empty() {
                continue;
            }
            ranges.push(IpRange::parse(entry).ok_or_else(|| BadProxyEntry {
                variable,
                entry: entry.to_owned(),
            })?);
        }
        Ok(Self(ranges))
    }

    /// From the configured list and the `CC_REVERSE_PROXY_IPS` variable.
    pub fn from_config_and_env(trusted_proxies: &[String]) -> Result<Self, BadProxyEntry> {
        let platform = std::env::var(CC_REVERSE_PROXY_IPS).ok();
        Self::parse(trusted_proxies, platform.as_deref())
    }

    /// Whether `address` is one of our proxies.
    pub fn trusts(&self, address: IpAddr) -> bool {
        self.0.iter().any(|range| range.contains(address))
    }

    /// The client of a request that came from `peer` with `headers`.
    pub fn client(&self, peer: SocketAddr, headers: &HeaderMap) -> ClientInfo {
        let peer_ip = peer.ip().to_canonical();
        if !self.trusts(peer_ip) {
            return ClientInfo {
                ip: peer_ip,
                https: false,
            };
        }
        ClientInfo {
            ip: self.rightmost_untrusted(peer_ip, headers),
            https: forwarded_proto(headers)
                .is_some_and(|proto| proto.eq_ignore_ascii_case("https")),
        }
    }

    /// Walks `X-Forwarded-For` from the right, past our own proxies. Stops
    /// at an entry that is not an address (everything left of it is
    /// unknowable), keeping the last proxy seen.
    fn rightmost_untrusted(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = peer;
        let hops = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .collect::<Vec<_>>();
        for hop in hops.into_iter().rev() {
            let Some(address) = parse_hop(hop) else {
                break;
            };
            client = address;
            if !self.trusts(address) {
                break;
            }
        }
        client
    }
}

/// An `X-Forwarded-For` entry: an address, possibly with a port.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|socket| socket.ip()))
        .map(|address| address.to_canonical())
}

/// The last `X-Forwarded-Proto` value: the one our nearest proxy set.
fn forwarded_proto(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all("x-forwarded-proto")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .next_back()
        .map(str::trim)
}

/// Where a request really came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientInfo {
    /// The client's address.
    pub ip: IpAddr,
    /// Whether the client spoke https to our load balancer.
    pub https: bool,
}

impl fmt::Display for ClientInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.ip.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_static(value));
        }
        headers
    }

    fn peer(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap_or(IpAddr::from([0, 0, 0, 0])), 40000)
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
    }

    #[test]
    fn ranges_parse_and_match() {
        let block = IpRange::parse("10.2.0.0/16");
        assert!(block.is_some_and(|block| block.contains(ip("10.2.200.1"))));
        assert!(block.is_some_and(|block| !block.contains(ip("10.3.0.1"))));
        let odd = IpRange::parse("192.168.1.128/25");
        assert!(odd.is_some_and(|odd| odd.contains(ip("192.168.1.200"))));
        assert!(odd.is_some_and(|odd| !odd.contains(ip("192.168.1.100"))));
        let single = IpRange::parse("127.0.0.1");
        assert!(single.is_some_and(|single| single.contains(ip("::ffff:127.0.0.1"))));
        let v6 = IpRange::parse("fd00::/8");
        assert!(v6.is_some_and(|v6| v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1"))));
        assert!(IpRange::parse("0.0.0.0/0").is_some_and(|all| all.contains(ip("8.8.8.8"))));
        assert_eq!(IpRange::parse("10.0.0.0/33"), None);
        assert_eq!(IpRange::parse("example.com"), None);
    }

    #[test]
    fn ipv4_mapped_entries_hold_the_ipv4_addresses() {
        let mapped = IpRange::parse("::ffff:10.0.0.1");
        assert!(mapped.is_some_and(|mapped| mapped.contains(ip("10.0.0.1"))));
        assert!(mapped.is_some_and(|mapped| mapped.contains(ip("::ffff:10.0.0.1"))));
        assert!(mapped.is_some_and(|mapped| !mapped.contains(ip("10.0.0.2"))));
        let block = IpRange::parse("::ffff:10.0.0.0/104");
        assert!(block.is_some_and(|block| block.contains(ip("10.200.0.1"))));
        assert!(block.is_some_and(|block| !block.contains(ip("11.0.0.1"))));
        assert!(IpRange::parse("::/0").is_some_and(|all| all.contains(ip("8.8.8.8"))));
        assert!(IpRange::parse("10.0.0.0/8").is_some_and(|v4| !v4.contains(ip("fd00::1"))));
    }

    #[test]
    fn bad_entries_name_their_variable() {
        let error = TrustedProxies::parse(&["10.0.0.1".into()], Some("10.0.0.2, nope"))
            .err()
            .map(|error| error.to_string())
            .unwrap_or_default();
        assert!(error.starts_with("CC_REVERSE_PROXY_IPS"), "{error}");
        assert!(TrustedProxies::parse(&[], Some("")).is_ok());
    }

    #[test]
    fn untrusted_peers_are_the_client_whatever_they_claim() {
        let proxies = TrustedProxies::parse(&["10.0.0.0/8".into()], None).unwrap_or_default();
        let client = proxies.client(
            peer("203.0.113.9"),
            &headers(&[
                ("x-forwarded-for", "198.51.100.1"),
                ("x-forwarded-proto", "https"),
            ]),
        );
        assert_eq!(
            client,
            ClientInfo {
                ip: ip("203.0.113.9"),
                https: false
            }
        );
    }

    #[test]
    fn behind_trusted_proxies_the_rightmost_untrusted_hop_is_the_client() {
        let proxies =
            TrustedProxies::parse(&["10.0.0.0/8".into()], Some("192.0.2.10")).unwrap_or_default();
        let forwarded = headers(&[
            ("x-forwarded-for", "1.1.1.1, 198.51.100.7"),
            ("x-forwarded-for", "10.1.1.1"),
            ("x-forwarded-proto", "https"),
        ]);
        let client = proxies.client(peer("192.0.2.10"), &forwarded);
        assert_eq!(
            client,
            ClientInfo {
                ip: ip("198.51.100.7"),
                https: true
            },
            "the forged 1.1.1.1 on the left is ignored"
        );

        let all_proxies = headers(&[("x-forwarded-for", "10.9.9.9")]);
        assert_eq!(
            proxies.client(peer("10.0.0.1"), &all_proxies).ip,
            ip("10.9.9.9")
        );

        let garbage = headers(&[("x-forwarded-for", "203.0.113.5, not-an-ip, 10.0.0.3")]);
        assert_eq!(
            proxies.client(peer("10.0.0.1"), &garbage).ip,
            ip("10.0.0.3"),
            "nothing left of a broken entry is believed"
        );

        let none = proxies.client(peer("10.0.0.1"), &HeaderMap::new());
        assert_eq!(
            none,
            ClientInfo {
                ip: ip("10.0.0.1"),
                https: false
            }
        );
    }
}
