//! What the public port trusts of a caller: its address (the TCP peer, or the rightmost
//! `X-Forwarded-For` entry that is not a trusted proxy), how often an address may fail to
//! authenticate before it is refused for a while, and which admin tokens are acceptable.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use ipnetwork::IpNetwork;
use tonic::Status;
use tonic::metadata::MetadataMap;

use crate::GatewayError;

/// Shortest admin token accepted, characters.
pub const MIN_ADMIN_TOKEN: usize = 24;
/// Tokens found in examples and defaults, refused whatever their length.
const KNOWN_TOKENS: &[&str] = &[
    "change-me",
    "changeme",
    "admin",
    "password",
    "secret",
    "token",
];
/// How long an address that failed to authenticate too often is refused.
const BLOCK_FOR: Duration = Duration::from_secs(10);
/// Most blocked addresses remembered; expired blocks are forgotten beyond it, and all of them
/// if every one is still running.
const MAX_BLOCKED: usize = 100_000;
/// Addresses tracked by the failure limiter before idle ones are forgotten.
const MAX_TRACKED: usize = 100_000;

/// The admin token, refused when missing, a known default or shorter than
/// [`MIN_ADMIN_TOKEN`] characters.
pub fn admin_token(token: Option<&str>) -> Result<String, GatewayError> {
    let token = token.map(str::trim).unwrap_or_default();
    let problem = if token.is_empty() {
        "is not set".to_owned()
    } else if KNOWN_TOKENS.contains(&token.to_ascii_lowercase().as_str()) {
        format!("is the well-known value {token:?}")
    } else if token.chars().count() < MIN_ADMIN_TOKEN {
        format!("has {} characters", token.chars().count())
    } else {
        return Ok(token.to_owned());
    };
    Err(GatewayError::AdminToken(format!(
        "BEACON_ADMIN_TOKEN (--admin-token) {problem}: the admin API needs a secret of at least \
         {MIN_ADMIN_TOKEN} characters"
    )))
}

/// Client addresses and the per-address limit on failed authentication.
#[derive(Clone)]
pub struct Edge {
    trusted: Arc<[IpNetwork]>,
    failures: Arc<DefaultKeyedRateLimiter<IpAddr>>,
    blocked: Arc<Mutex<HashMap<IpAddr, Instant>>>,
    per_second: u32,
}

impl Edge {
    /// Trusting the proxies in `trusted`; an address may fail to authenticate `per_second`
    /// times a second (bursts of ten times that) before it is refused for ten seconds.
    pub fn new(trusted: &[IpNetwork], per_second: u32) -> Result<Self, GatewayError> {
        let rate = NonZeroU32::new(per_second)
            .ok_or(GatewayError::ZeroLimit("--failed-auth-per-second"))?;
        let burst = NonZeroU32::new(per_second.saturating_mul(10)).unwrap_or(rate);
        Ok(Self {
            trusted: trusted.into(),
            failures: Arc::new(RateLimiter::keyed(
                Quota::per_second(rate).allow_burst(burst),
            )),
            blocked: Arc::default(),
            per_second,
        })
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(ip))
    }

    /// The key an address is limited under: IPv6 addresses by their /64, since one host
    /// holds a whole /64.
    fn limit_key(ip: IpAddr) -> IpAddr {
        match ip.to_canonical() {
            IpAddr::V6(v6) => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(bits.into())
            }
            v4 => v4,
        }
    }

    /// The client's address: the TCP `peer` unless it is a trusted proxy; then the rightmost
    /// `X-Forwarded-For` entry that is not a trusted proxy (the leftmost when all are).
    pub fn client(&self, peer: Option<IpAddr>, metadata: &MetadataMap) -> Option<IpAddr> {
        let peer = peer?.to_canonical();
        if !self.is_trusted(peer) {
            return Some(peer);
        }
        let header = metadata
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .collect::<Vec<_>>()
            .join(",");
        let mut client = peer;
        for entry in header.rsplit(',') {
            let Some(ip) = parse_forwarded(entry) else {
                break;
            };
            client = ip;
            if !self.is_trusted(ip) {
                break;
            }
        }
        Some(client)
    }

    /// Refuses an address that failed to authenticate too often lately.
    pub fn admit(&self, ip: Option<IpAddr>) -> Result<(), Status> {
        let Some(ip) = ip.map(Self::limit_key) else {
            return Ok(());
        };
        let mut blocked = self.blocked.lock().unwrap_or_else(PoisonError::into_inner);
        match blocked.get(&ip) {
            Some(until) if *until > Instant::now() => Err(Status::resource_exhausted(format!(
                "too many failed authentications from {ip} (more than {} a second); retry in a \
                 few seconds",
                self.per_second
            ))),
            Some(_) => {
                blocked.remove(&ip);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Counts a failed authentication of `ip`; past the limit the address is refused for a while.
    pub fn failed(&self, ip: Option<IpAddr>) {
        let Some(ip) = ip.map(Self::limit_key) else {
            return;
        };
        if self.failures.len() >= MAX_TRACKED {
            self.failures.retain_recent();
        }
        if self.failures.check_key(&ip).is_ok() {
            return;
        }
        let mut blocked = self.blocked.lock().unwrap_or_else(PoisonError::into_inner);
        if blocked.len() >= MAX_BLOCKED {
            let now = Instant::now();
            blocked.retain(|_, until| *until > now);
            if blocked.len() >= MAX_BLOCKED {
                blocked.clear();
            }
        }
        blocked.insert(ip, Instant::now() + BLOCK_FOR);
        tracing::warn!(%ip, "refusing an address that failed to authenticate too often");
    }
}

/// One `X-Forwarded-For` entry: an address, possibly with a port (`1.2.3.4:80`, `[::1]:80`).
fn parse_forwarded(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    entry
        .parse::<IpAddr>()
        .or_else(|_| entry.parse::<std::net::SocketAddr>().map(|addr| addr.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge(trusted: &[&str]) -> Edge {
        let nets: Vec<IpNetwork> = trusted.iter().map(|n| n.parse().expect("net")).collect();
        Edge::new(&nets, 1).expect("edge")
    }

    fn xff(value: &str) -> MetadataMap {
        let mut metadata = MetadataMap::new();
        metadata.insert("x-forwarded-for", value.parse().expect("ascii"));
        metadata
    }

    fn ip(text: &str) -> Option<IpAddr> {
        text.parse().ok()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let edge = edge(&["10.0.0.0/8"]);
        let got = edge.client(ip("198.51.100.7"), &xff("203.0.113.9"));
        assert_eq!(got, ip("198.51.100.7"));
    }

    #[test]
    fn the_rightmost_untrusted_forwarded_address_is_the_client() {
        let edge = edge(&["10.0.0.0/8", "127.0.0.1/32"]);
        let spoofed_then_real = xff("203.0.113.9, 198.51.100.7, 10.1.2.3");
        assert_eq!(
            edge.client(ip("127.0.0.1"), &spoofed_then_real),
            ip("198.51.100.7")
        );
        assert_eq!(
            edge.client(ip("127.0.0.1"), &MetadataMap::new()),
            ip("127.0.0.1")
        );
        assert_eq!(
            edge.client(ip("10.9.9.9"), &xff("10.1.1.1")),
            ip("10.1.1.1")
        );
        assert_eq!(
            edge.client(ip("10.9.9.9"), &xff("garbage, 10.1.1.1")),
            ip("10.1.1.1")
        );
        // A dual-stack listener sees IPv4 peers as mapped IPv6; entries may carry ports.
        assert_eq!(
            edge.client(ip("::ffff:127.0.0.1"), &xff("198.51.100.7:5555")),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn an_ipv6_host_is_limited_by_its_64() {
        let edge = edge(&[]);
        for n in 0..11u16 {
            edge.failed(ip(&format!("2001:db8::{n:x}")));
        }
        assert!(edge.admit(ip("2001:db8::ffff")).is_err());
        assert!(edge.admit(ip("2001:db8:0:1::1")).is_ok());
    }

    #[test]
    fn repeated_failures_block_an_address_for_a_while() {
        let edge = edge(&[]);
        let caller = ip("198.51.100.7");
        for _ in 0..10 {
            edge.failed(caller);
        }
        assert!(edge.admit(caller).is_ok(), "a burst of ten is allowed");
        edge.failed(caller);
        assert!(edge.admit(caller).is_err());
        assert!(
            edge.admit(ip("198.51.100.8")).is_ok(),
            "other addresses are not"
        );
    }

    #[test]
    fn weak_admin_tokens_are_refused() {
        assert!(admin_token(None).is_err());
        assert!(admin_token(Some("change-me")).is_err());
        assert!(admin_token(Some("short-token")).is_err());
        let good = "a-secret-of-at-least-24-characters";
        assert_eq!(admin_token(Some(good)).expect("good"), good);
    }
}
