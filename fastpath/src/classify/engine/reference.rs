//! The meaning of a rule list, as the most obvious linear first-match scan.
//!
//! This is the oracle the compiled [`Classifier`](super::Classifier) is tested against and the
//! "linear" baseline of `moat bench classify`. It reads the [`Rule`]s as given, with no
//! preprocessing, so that its correctness can be checked by reading it.

use super::{AddrSet, IcmpMatch, Match, PortSet, ProtoSet, Rule};
use crate::classify::FlowKey;
use std::net::IpAddr;

fn addr_matches(set: &AddrSet, addr: IpAddr) -> bool {
    match set {
        AddrSet::Any => true,
        AddrSet::Nets(nets) => nets.iter().any(|n| n.contains(addr)),
    }
}

fn proto_matches(set: &ProtoSet, protocol: u8) -> bool {
    match set {
        ProtoSet::Any => true,
        ProtoSet::Only(p) => p.contains(&protocol),
    }
}

fn port_matches(set: &PortSet, port: u16) -> bool {
    match set {
        PortSet::Any => true,
        PortSet::Ranges(r) => r.iter().any(|&(lo, hi)| lo <= port && port <= hi),
    }
}

fn icmp_matches(m: IcmpMatch, icmp: Option<(u8, u8)>) -> bool {
    match (m, icmp) {
        (IcmpMatch::Any, _) => true,
        (_, None) => false,
        (IcmpMatch::Type(t), Some((kt, _))) => kt == t,
        (IcmpMatch::TypeCode(t, c), Some(k)) => k == (t, c),
        (IcmpMatch::NotType(t), Some((kt, _))) => kt != t,
        (IcmpMatch::NotTypeCode(t, c), Some(k)) => k != (t, c),
    }
}

/// Whether `rule` matches `key`. A key whose two addresses are of different families matches
/// nothing.
pub fn matches(rule: &Rule, key: &FlowKey) -> bool {
    key.src.is_ipv4() == key.dst.is_ipv4()
        && addr_matches(&rule.src, key.src)
        && addr_matches(&rule.dst, key.dst)
        && proto_matches(&rule.protocol, key.protocol)
        && port_matches(&rule.src_ports, key.src_port)
        && port_matches(&rule.dst_ports, key.dst_port)
        && icmp_matches(rule.icmp, key.icmp)
}

/// The first rule of `rules` that matches `key`.
pub fn first_match(rules: &[Rule], key: &FlowKey) -> Option<Match> {
    let (index, rule) = rules.iter().enumerate().find(|(_, r)| matches(r, key))?;
    let rule_index = u32::try_from(index).ok()?;
    Some(Match { rule_index, payload: rule.payload, action: rule.action })
}
