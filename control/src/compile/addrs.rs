//! Address sets as sorted, disjoint, merged inclusive ranges per family, with the set algebra the
//! compiler needs (union, intersection, complement) and the conversion to CIDR prefixes.
//!
//! Ranges rather than prefix lists because complement and intersection are then one linear merge,
//! and the canonical form makes equal sets compare equal (the compiler's caches key on it).

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const V4_MAX: u128 = u32::MAX as u128;
const V6_MAX: u128 = u128::MAX;

/// A set of addresses: IPv4 ranges (values ≤ `u32::MAX`) and IPv6 ranges.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct AddrRanges {
    pub v4: Vec<(u128, u128)>,
    pub v6: Vec<(u128, u128)>,
}

fn normalize(mut v: Vec<(u128, u128)>) -> Vec<(u128, u128)> {
    v.retain(|(a, b)| a <= b);
    v.sort_unstable();
    let mut out: Vec<(u128, u128)> = Vec::with_capacity(v.len());
    for (lo, hi) in v {
        match out.last_mut() {
            Some(last) if last.1 == u128::MAX || lo <= last.1 + 1 => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out
}

fn intersect(a: &[(u128, u128)], b: &[(u128, u128)]) -> Vec<(u128, u128)> {
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while let (Some(&(alo, ahi)), Some(&(blo, bhi))) = (a.get(i), b.get(j)) {
        let lo = alo.max(blo);
        let hi = ahi.min(bhi);
        if lo <= hi {
            out.push((lo, hi));
        }
        if ahi < bhi {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

fn complement(a: &[(u128, u128)], max: u128) -> Vec<(u128, u128)> {
    let mut out = Vec::with_capacity(a.len() + 1);
    let mut next = Some(0u128);
    for &(lo, hi) in a {
        if let Some(n) = next {
            if lo > n {
                out.push((n, lo - 1));
            }
        }
        next = hi.checked_add(1);
    }
    if let Some(n) = next {
        if n <= max {
            out.push((n, max));
        }
    }
    out
}

/// The CIDR prefixes covering `[lo, hi]` exactly, for a family of `bits` bits.
fn cidrs(lo: u128, hi: u128, bits: u32, out: &mut Vec<(u128, u8)>) {
    let mut lo = lo;
    loop {
        if lo > hi {
            return;
        }
        let mut k = if lo == 0 { bits } else { lo.trailing_zeros().min(bits) };
        let span = hi - lo;
        let mask = |k: u32| if k >= 128 { u128::MAX } else { (1u128 << k) - 1 };
        while k > 0 && mask(k) > span {
            k -= 1;
        }
        #[allow(clippy::cast_possible_truncation)] // bits - k ≤ 128
        out.push((lo, (bits - k) as u8));
        match lo.checked_add(mask(k)).and_then(|x| x.checked_add(1)) {
            Some(n) => lo = n,
            None => return,
        }
    }
}

impl AddrRanges {
    /// Every address of both families.
    pub fn full() -> AddrRanges {
        AddrRanges { v4: vec![(0, V4_MAX)], v6: vec![(0, V6_MAX)] }
    }

    /// Every address of one family (4 or 6); anything else is the empty set.
    pub fn family(version: u8) -> AddrRanges {
        match version {
            4 => AddrRanges { v4: vec![(0, V4_MAX)], v6: Vec::new() },
            6 => AddrRanges { v4: Vec::new(), v6: vec![(0, V6_MAX)] },
            _ => AddrRanges::default(),
        }
    }

    pub fn from_nets<'a>(nets: impl IntoIterator<Item = &'a IpNetwork>) -> AddrRanges {
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for n in nets {
            match n {
                IpNetwork::V4(n) => v4.push((u128::from(u32::from(n.network())), u128::from(u32::from(n.broadcast())))),
                IpNetwork::V6(n) => {
                    let len = u32::from(n.prefix().min(128));
                    let mask = if len == 0 { 0 } else { u128::MAX << (128 - len) };
                    let lo = u128::from(n.ip()) & mask;
                    v6.push((lo, lo | !mask));
                }
            }
        }
        AddrRanges { v4: normalize(v4), v6: normalize(v6) }
    }

    pub fn from_ips(ips: impl IntoIterator<Item = IpAddr>) -> AddrRanges {
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for ip in ips {
            match ip {
                IpAddr::V4(a) => v4.push((u128::from(u32::from(a)), u128::from(u32::from(a)))),
                IpAddr::V6(a) => v6.push((u128::from(a), u128::from(a))),
            }
        }
        AddrRanges { v4: normalize(v4), v6: normalize(v6) }
    }

    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.v4 == [(0, V4_MAX)] && self.v6 == [(0, V6_MAX)]
    }

    pub fn union(&self, other: &AddrRanges) -> AddrRanges {
        let cat = |a: &[(u128, u128)], b: &[(u128, u128)]| normalize(a.iter().chain(b).copied().collect());
        AddrRanges { v4: cat(&self.v4, &other.v4), v6: cat(&self.v6, &other.v6) }
    }

    pub fn intersect(&self, other: &AddrRanges) -> AddrRanges {
        AddrRanges { v4: intersect(&self.v4, &other.v4), v6: intersect(&self.v6, &other.v6) }
    }

    pub fn complement(&self) -> AddrRanges {
        AddrRanges { v4: complement(&self.v4, V4_MAX), v6: complement(&self.v6, V6_MAX) }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let (v, x) = match ip {
            IpAddr::V4(a) => (&self.v4, u128::from(u32::from(a))),
            IpAddr::V6(a) => (&self.v6, u128::from(a)),
        };
        v.iter().any(|&(lo, hi)| lo <= x && x <= hi)
    }

    /// The set as CIDR prefixes (IPv4 first).
    pub fn to_nets(&self) -> Vec<IpNetwork> {
        let mut out = Vec::new();
        let mut tmp = Vec::new();
        for &(lo, hi) in &self.v4 {
            tmp.clear();
            cidrs(lo, hi, 32, &mut tmp);
            for &(a, len) in &tmp {
                let a = Ipv4Addr::from(u32::try_from(a).unwrap_or(u32::MAX));
                if let Ok(n) = Ipv4Network::new(a, len) {
                    out.push(IpNetwork::V4(n));
                }
            }
        }
        for &(lo, hi) in &self.v6 {
            tmp.clear();
            cidrs(lo, hi, 128, &mut tmp);
            for &(a, len) in &tmp {
                if let Ok(n) = Ipv6Network::new(Ipv6Addr::from(a), len) {
                    out.push(IpNetwork::V6(n));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(s: &[&str]) -> AddrRanges {
        let v: Vec<IpNetwork> = s.iter().map(|n| n.parse().unwrap()).collect();
        AddrRanges::from_nets(&v)
    }

    #[test]
    fn algebra_and_prefixes() {
        let a = nets(&["10.0.0.0/8", "10.1.0.0/16", "192.168.1.1/32", "::/0"]);
        assert_eq!(a.v4.len(), 2);
        let c = a.complement();
        assert!(c.v6.is_empty());
        assert!(c.contains("11.0.0.0".parse().unwrap()));
        assert!(!c.contains("10.2.3.4".parse().unwrap()));
        assert!(a.union(&c).is_full());
        assert!(a.intersect(&c).is_empty());
        let round = AddrRanges::from_nets(&c.to_nets());
        assert_eq!(round, c);
        assert_eq!(nets(&["0.0.0.0/0"]).to_nets(), vec!["0.0.0.0/0".parse::<IpNetwork>().unwrap()]);
        assert_eq!(nets(&["::/0"]).to_nets(), vec!["::/0".parse::<IpNetwork>().unwrap()]);
        let edge = nets(&["255.255.255.255/32", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128"]);
        assert_eq!(AddrRanges::from_nets(&edge.complement().to_nets()), edge.complement());
        assert_eq!(AddrRanges::from_nets(&edge.to_nets()), edge);
    }
}
