//! Who may connect: allow and deny lists of addresses and CIDR ranges, and a
//! limit of connections per address.
//!
//! The rules, applied by every server, the echo service and the room the
//! moment a client is accepted, before a byte of protocol is exchanged:
//!
//! 1. A peer in any [`Config::deny`](crate::Config::deny) range is refused.
//! 2. Otherwise, when [`Config::allow`](crate::Config::allow) is not empty, a
//!    peer outside every allow range is refused.
//! 3. Otherwise a peer that already has
//!    [`Config::max_per_address`](crate::Config::max_per_address) open
//!    connections is refused.
//!
//! A refused peer is closed at once, without a message. An IPv4 peer that
//! reaches an IPv6 (dual-stack) listener as `::ffff:a.b.c.d` is matched as
//! the IPv4 address `a.b.c.d`.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};

/// An IPv4 or IPv6 address range in CIDR notation (`10.0.0.0/8`,
/// `2001:db8::/32`), or a single address (`192.0.2.7`, `::1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// The range of `prefix` leading bits of `addr` (host bits are ignored).
    /// Fails when `prefix` exceeds 32 for IPv4 or 128 for IPv6.
    pub fn new(addr: IpAddr, prefix: u8) -> Result<IpNet> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(Error::invalid(format!("prefix /{prefix} is longer than {max} bits for {addr}")));
        }
        Ok(IpNet { addr: canonical(addr), prefix })
    }

    /// Whether `ip` lies in this range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_eq(&net.octets(), &ip.octets(), self.prefix),
            (IpAddr::V6(net), IpAddr::V6(ip)) => prefix_eq(&net.octets(), &ip.octets(), self.prefix),
            _ => false,
        }
    }
}

/// `::ffff:a.b.c.d` is the IPv4 address `a.b.c.d`.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

fn prefix_eq(a: &[u8], b: &[u8], bits: u8) -> bool {
    let full = (bits / 8) as usize;
    if a[..full] != b[..full] {
        return false;
    }
    let rest = bits % 8;
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    a[full] & mask == b[full] & mask
}

impl FromStr for IpNet {
    type Err = Error;

    /// Parse `ADDR` or `ADDR/PREFIX` (IPv6 may be in brackets).
    fn from_str(s: &str) -> Result<IpNet> {
        let bad = |why: &str| Error::invalid(format!("{s:?} is not an address or CIDR range: {why}"));
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr = addr.trim_start_matches('[').trim_end_matches(']');
        let addr: IpAddr = addr.parse().map_err(|_| bad("bad address"))?;
        let addr = canonical(addr);
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p.parse::<u8>().map_err(|_| bad("bad prefix length"))?,
        };
        IpNet::new(addr, prefix)
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Whether `ip` passes the allow and deny lists (rules 1 and 2 above).
pub fn permitted(allow: &[IpNet], deny: &[IpNet], ip: IpAddr) -> bool {
    if deny.iter().any(|n| n.contains(ip)) {
        return false;
    }
    allow.is_empty() || allow.iter().any(|n| n.contains(ip))
}

/// Counts open connections per address for [`Config::max_per_address`](crate::Config::max_per_address).
#[derive(Clone, Debug, Default)]
pub(crate) struct PerAddress {
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One counted connection; dropping it releases the count.
#[derive(Debug)]
pub(crate) struct AddressSlot {
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl PerAddress {
    /// Take a slot for `ip` unless it already holds `max` (0 = no limit).
    pub(crate) fn acquire(&self, ip: IpAddr, max: usize) -> Option<AddressSlot> {
        let ip = canonical(ip);
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let n = counts.entry(ip).or_insert(0);
        if max > 0 && *n >= max {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            counts: self.counts.clone(),
            ip,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// Parse a list of ranges separated by commas or whitespace (as the
/// examples' `--allow` and `--deny` flags take them).
pub fn parse_list(s: &str) -> Result<Vec<IpNet>> {
    s.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|p| !p.is_empty())
        .map(str::parse)
        .collect()
}

/// The loopback ranges `127.0.0.0/8` and `::1/128`.
pub fn loopback() -> Vec<IpNet> {
    vec![
        IpNet { addr: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)), prefix: 8 },
        IpNet { addr: IpAddr::V6(Ipv6Addr::LOCALHOST), prefix: 128 },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidr_matching() {
        let n: IpNet = "10.1.0.0/16".parse().unwrap();
        assert!(n.contains(ip("10.1.200.3")));
        assert!(!n.contains(ip("10.2.0.1")));
        assert!(n.contains(ip("::ffff:10.1.0.9")), "IPv4-mapped matches IPv4");
        let n: IpNet = "2001:db8::/32".parse().unwrap();
        assert!(n.contains(ip("2001:db8:ffff::1")));
        assert!(!n.contains(ip("2001:db9::1")));
        assert!(!n.contains(ip("10.1.0.1")));
        let n: IpNet = "192.0.2.7".parse().unwrap();
        assert!(n.contains(ip("192.0.2.7")) && !n.contains(ip("192.0.2.8")));
        let n: IpNet = "10.0.0.0/9".parse().unwrap();
        assert!(n.contains(ip("10.127.255.255")) && !n.contains(ip("10.128.0.0")));
        let all: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("203.0.113.1")));
        assert_eq!("[::1]".parse::<IpNet>().unwrap().to_string(), "::1/128");
    }

    #[test]
    fn bad_ranges_are_refused() {
        for bad in ["", "10.0.0.0/33", "::/129", "10.0.0/8", "host", "1.2.3.4/x"] {
            assert!(bad.parse::<IpNet>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn deny_wins_over_allow() {
        let allow = parse_list("127.0.0.0/8, ::1").unwrap();
        let deny = parse_list("127.0.0.2").unwrap();
        assert!(permitted(&allow, &deny, ip("127.0.0.1")));
        assert!(!permitted(&allow, &deny, ip("127.0.0.2")));
        assert!(!permitted(&allow, &deny, ip("192.0.2.1")));
        assert!(permitted(&[], &deny, ip("192.0.2.1")));
    }

    #[test]
    fn per_address_slots_are_released() {
        let p = PerAddress::default();
        let a = p.acquire(ip("127.0.0.1"), 2).unwrap();
        let _b = p.acquire(ip("::ffff:127.0.0.1"), 2).unwrap();
        assert!(p.acquire(ip("127.0.0.1"), 2).is_none());
        assert!(p.acquire(ip("127.0.0.2"), 2).is_some());
        drop(a);
        assert!(p.acquire(ip("127.0.0.1"), 2).is_some());
        assert!(p.acquire(ip("127.0.0.1"), 0).is_some(), "0 = no limit");
    }
}
