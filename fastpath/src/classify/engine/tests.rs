//! Equivalence of the compiled classifier and the linear reference scan, unit tests of the rule
//! semantics, and the ClassBench reader.

// Generators truncate random words to the width they need on purpose.
#![allow(clippy::cast_possible_truncation)]

use super::classbench::*;
use super::reference::first_match;
use super::*;
use ipnetwork::{Ipv4Network, Ipv6Network};
use proptest::prelude::*;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

// ---------------------------------------------------------------------------------------------
// Generators: small universes of values so that rules overlap, nest, duplicate and touch edges.

const V4_BASES: [u32; 8] =
    [0, 0xFFFF_FFFF, 0x0A00_0000, 0x0A00_0080, 0x0A01_0203, 0xC0A8_0101, 0x8000_0000, 0x7FFF_FFFF];
const V4_LENS: [u8; 9] = [0, 1, 8, 16, 24, 25, 30, 31, 32];
const V6_BASES: [u128; 6] = [
    0,
    u128::MAX,
    0xfd00_0000_0000_0000_0000_0000_0000_0000,
    0xfd00_0000_0000_0001_0000_0000_0000_0001,
    0xfd00_0000_0000_0000_8000_0000_ffff_fffe,
    0x2001_0db8_0000_0000_0000_0000_0000_0000,
];
const V6_LENS: [u8; 12] = [0, 1, 16, 31, 32, 33, 48, 64, 65, 96, 127, 128];
const PORT_EDGES: [u16; 11] = [0, 1, 53, 79, 80, 81, 1023, 1024, 8080, 65534, 65535];
const PROTOS: [u8; 7] = [0, 1, 6, 17, 58, 132, 255];
const ICMP_TYPES: [u8; 5] = [0, 3, 8, 128, 255];
const ICMP_CODES: [u8; 4] = [0, 1, 4, 255];

/// xorshift64*: deterministic, seedable, no dependency.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<T: Copy>(&mut self, v: &[T]) -> T {
        v[self.below(v.len())]
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

fn v4net(a: u32, len: u8) -> IpNetwork {
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) };
    IpNetwork::V4(Ipv4Network::new(Ipv4Addr::from(a & mask), len).unwrap())
}

fn v6net(a: u128, len: u8) -> IpNetwork {
    let mask = if len == 0 { 0 } else { u128::MAX << (128 - u32::from(len)) };
    IpNetwork::V6(Ipv6Network::new(Ipv6Addr::from(a & mask), len).unwrap())
}

fn gen_addr_set(r: &mut Rng, v6: bool) -> AddrSet {
    match r.below(10) {
        0..=2 => AddrSet::Any,
        3 => AddrSet::Nets(Vec::new()),
        _ => {
            let n = 1 + r.below(3);
            AddrSet::Nets(
                (0..n)
                    .map(|_| {
                        // mostly the family of the test, sometimes the other one
                        if v6 != r.chance(15) {
                            let jitter = if r.chance(30) { r.next() as u128 } else { 0 };
                            v6net(r.pick(&V6_BASES) ^ (jitter >> r.below(128)), r.pick(&V6_LENS))
                        } else {
                            let jitter = if r.chance(30) { r.next() as u32 } else { 0 };
                            v4net(r.pick(&V4_BASES) ^ (jitter >> r.below(32)), r.pick(&V4_LENS))
                        }
                    })
                    .collect(),
            )
        }
    }
}

fn gen_ports(r: &mut Rng) -> PortSet {
    match r.below(8) {
        0..=2 => PortSet::Any,
        3 if r.chance(30) => PortSet::Ranges(Vec::new()),
        _ => {
            let n = 1 + r.below(3);
            PortSet::Ranges(
                (0..n)
                    .map(|_| {
                        let a = if r.chance(70) { r.pick(&PORT_EDGES) } else { r.next() as u16 };
                        let b = if r.chance(70) { r.pick(&PORT_EDGES) } else { r.next() as u16 };
                        (a.min(b), a.max(b))
                    })
                    .collect(),
            )
        }
    }
}

fn gen_rule(r: &mut Rng, v6: bool, index: u32) -> Rule {
    let protocol = match r.below(6) {
        0 | 1 => ProtoSet::Any,
        2 if r.chance(20) => ProtoSet::Only(Vec::new()),
        // notProtocol
        3 if r.chance(30) => {
            let p = r.pick(&PROTOS);
            ProtoSet::Only((0..=255u8).filter(|&x| x != p).collect())
        }
        _ => ProtoSet::Only((0..1 + r.below(2)).map(|_| r.pick(&PROTOS)).collect()),
    };
    let icmp = match r.below(10) {
        0..=5 => IcmpMatch::Any,
        6 => IcmpMatch::Type(r.pick(&ICMP_TYPES)),
        7 => IcmpMatch::TypeCode(r.pick(&ICMP_TYPES), r.pick(&ICMP_CODES)),
        8 => IcmpMatch::NotType(r.pick(&ICMP_TYPES)),
        _ => IcmpMatch::NotTypeCode(r.pick(&ICMP_TYPES), r.pick(&ICMP_CODES)),
    };
    // ICMP constraints with "any protocol" expand to 256 protocol ranges; keep them but rarer.
    let protocol = if icmp != IcmpMatch::Any && protocol == ProtoSet::Any && r.chance(90) {
        ProtoSet::Only(vec![if v6 { 58 } else { 1 }])
    } else {
        protocol
    };
    Rule {
        src: gen_addr_set(r, v6),
        dst: gen_addr_set(r, v6),
        protocol,
        src_ports: gen_ports(r),
        dst_ports: gen_ports(r),
        icmp,
        action: [Action::Allow, Action::Deny, Action::Pass, Action::Log][r.below(4)],
        payload: index.wrapping_mul(7919),
    }
}

fn gen_rules(r: &mut Rng, n: usize) -> Vec<Rule> {
    let v6 = r.chance(35);
    let mut rules: Vec<Rule> = Vec::with_capacity(n);
    for i in 0..n {
        // duplicates and near-duplicates of earlier rules
        if !rules.is_empty() && r.chance(10) {
            let mut dup = rules[r.below(rules.len())].clone();
            dup.payload = i as u32;
            rules.push(dup);
        } else {
            let family = v6 != r.chance(10);
            rules.push(gen_rule(r, family, i as u32));
        }
    }
    rules
}

/// Values the rules mention, so that keys land on their edges.
#[derive(Debug, Default)]
struct Pools {
    src: [Vec<IpNetwork>; 2],
    dst: [Vec<IpNetwork>; 2],
    ports: Vec<(u16, u16)>,
}

impl Pools {
    fn of(rules: &[Rule]) -> Pools {
        let mut p = Pools::default();
        for rule in rules {
            for (set, pool) in [(&rule.src, &mut p.src), (&rule.dst, &mut p.dst)] {
                if let AddrSet::Nets(nets) = set {
                    for n in nets {
                        pool[usize::from(n.is_ipv6())].push(*n);
                    }
                }
            }
            for ports in [&rule.src_ports, &rule.dst_ports] {
                if let PortSet::Ranges(v) = ports {
                    p.ports.extend(v.iter().copied());
                }
            }
        }
        p
    }
}

/// An address at an edge of one of the rules' prefixes (first, last, just outside) or random.
fn gen_addr(r: &mut Rng, nets: &[IpNetwork], v6: bool) -> IpAddr {
    if !nets.is_empty() && r.chance(85) {
        let n = nets[r.below(nets.len())];
        match n {
            IpNetwork::V4(n) => {
                let lo = u32::from(n.network());
                let hi = u32::from(n.broadcast());
                let a = match r.below(6) {
                    0 => lo,
                    1 => hi,
                    2 => lo.wrapping_sub(1),
                    3 => hi.wrapping_add(1),
                    _ => lo | ((r.next() as u32) & (hi - lo)),
                };
                IpAddr::V4(Ipv4Addr::from(a))
            }
            IpNetwork::V6(n) => {
                let lo = u128::from(n.network());
                let hi = lo | !(if n.prefix() == 0 { 0 } else { u128::MAX << (128 - u32::from(n.prefix())) });
                let a = match r.below(6) {
                    0 => lo,
                    1 => hi,
                    2 => lo.wrapping_sub(1),
                    3 => hi.wrapping_add(1),
                    _ => lo | (((u128::from(r.next()) << 64) | u128::from(r.next())) & (hi - lo)),
                };
                IpAddr::V6(Ipv6Addr::from(a))
            }
        }
    } else if v6 {
        IpAddr::V6(Ipv6Addr::from(r.pick(&V6_BASES) ^ (u128::from(r.next()) << r.below(64))))
    } else {
        IpAddr::V4(Ipv4Addr::from(r.pick(&V4_BASES) ^ ((r.next() as u32) >> r.below(32))))
    }
}

fn gen_port(r: &mut Rng, ranges: &[(u16, u16)]) -> u16 {
    if !ranges.is_empty() && r.chance(70) {
        let (lo, hi) = ranges[r.below(ranges.len())];
        match r.below(4) {
            0 => lo,
            1 => hi,
            2 => lo.wrapping_sub(1),
            _ => hi.wrapping_add(1),
        }
    } else {
        r.pick(&PORT_EDGES)
    }
}

fn gen_key(r: &mut Rng, pools: &Pools) -> FlowKey {
    let v6 = r.chance(40);
    // mixed families (rare): no packet has them, and they must match nothing
    let dst_v6 = if r.chance(2) { !v6 } else { v6 };
    let src = gen_addr(r, &pools.src[usize::from(v6)], v6);
    let dst = gen_addr(r, &pools.dst[usize::from(dst_v6)], dst_v6);
    let protocol = if r.chance(80) { r.pick(&PROTOS) } else { r.next() as u8 };
    let icmp =
        if matches!(protocol, 1 | 58) || r.chance(5) { Some((r.pick(&ICMP_TYPES), r.pick(&ICMP_CODES))) } else { None };
    FlowKey { src, dst, protocol, src_port: gen_port(r, &pools.ports), dst_port: gen_port(r, &pools.ports), icmp }
}

/// Checks `keys` keys against the reference, one at a time and batched; returns the number checked.
fn check_equivalence(rules: &[Rule], options: &BuildOptions, r: &mut Rng, keys: usize) -> usize {
    let c = Classifier::build_with(rules, options).unwrap();
    let pools = Pools::of(rules);
    let keys: Vec<FlowKey> = (0..keys).map(|_| gen_key(r, &pools)).collect();
    let mut batch = vec![None; keys.len()];
    c.lookup_batch(&keys, &mut batch);
    for (key, got_batch) in keys.iter().zip(&batch) {
        let want = first_match(rules, key);
        assert_eq!(c.lookup(key), want, "lookup: key {key:?}\nrules {rules:#?}");
        assert_eq!(*got_batch, want, "lookup_batch: key {key:?}\nrules {rules:#?}");
    }
    keys.len()
}

/// Options that force deep trees and tiny leaves on small rule sets, so the property tests reach
/// the tree code and not only single leaves.
fn stress_options(r: &mut Rng) -> BuildOptions {
    BuildOptions {
        binth: 1 + r.below(4),
        // (leaf_max below 4 with binth 1 makes every unseparable pair a deep, wide subtree)
        spfac: [1.0, 2.0, 4.0, 8.0][r.below(4)],
        max_bits: 1 + r.below(8) as u32,
        root_max_bits: 1 + r.below(12) as u32,
        small_prefix: [0, 8, 16, 24, 32][r.below(5)],
        merge_below: [0, 4, 1000][r.below(3)],
        leaf_max: [4, 8, 16][r.below(3)],
    }
}

/// Debug builds (plain `cargo test`) run a fraction of the optimised size: the reference scan is
/// the slow part there. `cargo test --release` runs the full size (millions of keys).
const FULL: bool = !cfg!(debug_assertions);

proptest! {
    #![proptest_config(ProptestConfig { cases: if FULL { 256 } else { 48 }, ..ProptestConfig::default() })]

    /// Generated rule lists (0–48 rules), default and stress options, 2,000 keys each.
    #[test]
    fn classifier_equals_linear_scan(seed in any::<u64>(), n in 0usize..48, stress in any::<bool>()) {
        let mut r = Rng(seed | 1);
        let rules = gen_rules(&mut r, n);
        let options = if stress { stress_options(&mut r) } else { BuildOptions::default() };
        check_equivalence(&rules, &options, &mut r, 2000);
    }
}

/// One large seeded run over many rule lists: 3 M keys with lists of up to 200 rules optimised,
/// 150 K keys with up to 60 rules in debug builds (`MOAT_EQUIV_KEYS` overrides the total).
#[test]
fn classifier_equals_linear_scan_seeded() {
    let default_total = if FULL { 3_000_000 } else { 150_000 };
    let total: usize = std::env::var("MOAT_EQUIV_KEYS").ok().and_then(|v| v.parse().ok()).unwrap_or(default_total);
    let sizes: &[usize] = if FULL { &[0, 1, 2, 5, 20, 60, 200] } else { &[0, 1, 2, 5, 20, 40, 60] };
    let mut r = Rng(0x5EED_C1A5_51F1_E500);
    let mut checked = 0;
    let mut sets = 0;
    while checked < total {
        let n = sizes[sets % sizes.len()];
        let rules = gen_rules(&mut r, n);
        let options = if sets % 3 == 2 { stress_options(&mut r) } else { BuildOptions::default() };
        let keys = (4000 * (1 + n / 20)).min(total - checked);
        checked += check_equivalence(&rules, &options, &mut r, keys);
        sets += 1;
    }
    eprintln!("seeded equivalence: {checked} keys over {sets} rule lists, 0 mismatches");
}

// ---------------------------------------------------------------------------------------------
// Semantics by example.

fn k4(src: &str, dst: &str, protocol: u8, sp: u16, dp: u16) -> FlowKey {
    FlowKey { src: src.parse().unwrap(), dst: dst.parse().unwrap(), protocol, src_port: sp, dst_port: dp, icmp: None }
}

fn nets(s: &[&str]) -> AddrSet {
    AddrSet::Nets(s.iter().map(|n| n.parse().unwrap()).collect())
}

#[test]
fn empty_rule_list_matches_nothing() {
    let c = Classifier::build(&[]).unwrap();
    assert!(c.is_empty());
    assert_eq!(c.lookup(&k4("10.0.0.1", "10.0.0.2", 6, 1, 2)), None);
    assert_eq!(c.lookup(&k4("::1", "::2", 6, 1, 2)), None);
    let mut out = [Some(Match { rule_index: 0, payload: 0, action: Action::Deny })];
    c.lookup_batch(&[k4("10.0.0.1", "10.0.0.2", 6, 1, 2)], &mut out);
    assert_eq!(out, [None]);
}

#[test]
fn first_match_wins_and_carries_payload_and_action() {
    let rules = vec![
        Rule {
            dst: nets(&["10.0.0.0/24"]),
            dst_ports: PortSet::Ranges(vec![(80, 80)]),
            action: Action::Deny,
            payload: 11,
            ..Rule::default()
        },
        Rule { dst: nets(&["10.0.0.0/16", "fd00::/64"]), action: Action::Allow, payload: 22, ..Rule::default() },
        Rule { action: Action::Log, payload: 33, ..Rule::default() },
    ];
    let c = Classifier::build(&rules).unwrap();
    let m = |i, p, a| Some(Match { rule_index: i, payload: p, action: a });
    assert_eq!(c.lookup(&k4("1.2.3.4", "10.0.0.9", 6, 5, 80)), m(0, 11, Action::Deny));
    assert_eq!(c.lookup(&k4("1.2.3.4", "10.0.0.9", 6, 5, 81)), m(1, 22, Action::Allow));
    assert_eq!(c.lookup(&k4("1.2.3.4", "10.0.1.9", 17, 5, 80)), m(1, 22, Action::Allow));
    assert_eq!(c.lookup(&k4("::1", "fd00::5", 17, 5, 80)), m(1, 22, Action::Allow));
    assert_eq!(c.lookup(&k4("1.2.3.4", "10.1.0.9", 6, 5, 80)), m(2, 33, Action::Log));
}

#[test]
fn address_edges_v4_and_v6() {
    let rules = vec![
        Rule { src: nets(&["255.255.255.255/32"]), payload: 0, ..Rule::default() },
        Rule { src: nets(&["0.0.0.0/32"]), payload: 1, ..Rule::default() },
        Rule { src: nets(&["ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128"]), payload: 2, ..Rule::default() },
        Rule { src: nets(&["::/128"]), payload: 3, ..Rule::default() },
        Rule { src: nets(&["128.0.0.0/1", "8000::/1"]), payload: 4, ..Rule::default() },
        Rule { src: nets(&["0.0.0.0/0"]), payload: 5, ..Rule::default() },
        Rule { src: nets(&["::/0"]), payload: 6, ..Rule::default() },
    ];
    let c = Classifier::build(&rules).unwrap();
    let idx = |s: &str, d: &str| c.lookup(&k4(s, d, 6, 0, 65535)).map(|m| m.rule_index);
    assert_eq!(idx("255.255.255.255", "1.1.1.1"), Some(0));
    assert_eq!(idx("0.0.0.0", "1.1.1.1"), Some(1));
    assert_eq!(idx("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "::9"), Some(2));
    assert_eq!(idx("::", "::9"), Some(3));
    assert_eq!(idx("128.0.0.0", "1.1.1.1"), Some(4));
    assert_eq!(idx("127.255.255.255", "1.1.1.1"), Some(5));
    assert_eq!(idx("8000::", "::9"), Some(4));
    assert_eq!(idx("7fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "::9"), Some(6));
    // mixed families match nothing, not even "any"
    assert_eq!(idx("1.1.1.1", "::9"), None);
}

#[test]
fn empty_sets_match_nothing() {
    let rules = vec![
        Rule { src: AddrSet::Nets(vec![]), payload: 0, ..Rule::default() },
        Rule { dst_ports: PortSet::Ranges(vec![]), payload: 1, ..Rule::default() },
        Rule { protocol: ProtoSet::Only(vec![]), payload: 2, ..Rule::default() },
        // only IPv6 sources: no IPv4 key matches
        Rule { src: nets(&["::/0"]), payload: 3, ..Rule::default() },
        Rule { payload: 4, ..Rule::default() },
    ];
    let c = Classifier::build(&rules).unwrap();
    assert_eq!(c.lookup(&k4("10.0.0.1", "10.0.0.2", 6, 1, 2)).map(|m| m.rule_index), Some(4));
    assert_eq!(c.lookup(&k4("::1", "::2", 6, 1, 2)).map(|m| m.rule_index), Some(3));
}

#[test]
fn icmp_type_and_code() {
    let icmp = |t, c| FlowKey { icmp: Some((t, c)), ..k4("10.0.0.1", "10.0.0.2", 1, 0, 0) };
    let rules = vec![
        Rule { protocol: ProtoSet::Only(vec![1]), icmp: IcmpMatch::TypeCode(3, 4), payload: 0, ..Rule::default() },
        Rule { protocol: ProtoSet::Only(vec![1]), icmp: IcmpMatch::Type(8), payload: 1, ..Rule::default() },
        Rule { protocol: ProtoSet::Only(vec![1]), icmp: IcmpMatch::NotType(0), payload: 2, ..Rule::default() },
        Rule { icmp: IcmpMatch::NotTypeCode(0, 0), payload: 3, ..Rule::default() },
        Rule { protocol: ProtoSet::Only(vec![1]), payload: 4, ..Rule::default() },
    ];
    let c = Classifier::build(&rules).unwrap();
    let idx = |k: FlowKey| c.lookup(&k).map(|m| m.rule_index);
    assert_eq!(idx(icmp(3, 4)), Some(0));
    assert_eq!(idx(icmp(3, 5)), Some(2));
    assert_eq!(idx(icmp(8, 0)), Some(1));
    assert_eq!(idx(icmp(0, 1)), Some(3));
    assert_eq!(idx(icmp(0, 0)), Some(4));
    // ICMP without a parsed header (a later fragment): only "any" ICMP rules
    assert_eq!(idx(FlowKey { icmp: None, ..icmp(0, 0) }), Some(4));
    // TCP: neither the ICMP rules nor protocol 1
    assert_eq!(idx(k4("10.0.0.1", "10.0.0.2", 6, 0, 0)), None);
}

#[test]
fn port_range_edges() {
    let rules = vec![
        Rule { src_ports: PortSet::Ranges(vec![(0, 0), (65535, 65535)]), payload: 0, ..Rule::default() },
        Rule { dst_ports: PortSet::Ranges(vec![(1024, 65535)]), payload: 1, ..Rule::default() },
        Rule { dst_ports: PortSet::Ranges(vec![(80, 80), (443, 443), (8000, 8080)]), payload: 2, ..Rule::default() },
    ];
    let c = Classifier::build(&rules).unwrap();
    let idx = |sp, dp| c.lookup(&k4("10.0.0.1", "10.0.0.2", 6, sp, dp)).map(|m| m.rule_index);
    assert_eq!(idx(0, 1), Some(0));
    assert_eq!(idx(65535, 1), Some(0));
    assert_eq!(idx(1, 1024), Some(1));
    assert_eq!(idx(1, 1023), None);
    assert_eq!(idx(1, 65535), Some(1));
    assert_eq!(idx(1, 80), Some(2));
    assert_eq!(idx(1, 79), None);
    assert_eq!(idx(1, 443), Some(2));
    assert_eq!(idx(1, 444), None);
}

#[test]
fn too_large_cross_product_is_an_error() {
    let many: Vec<IpNetwork> = (0..2000u32).map(|i| v4net(i << 9, 24)).collect();
    let rule = Rule {
        src: AddrSet::Nets(many),
        dst: AddrSet::Nets((0..2000u32).map(|i| v4net((i << 9) | 1, 32)).collect()),
        dst_ports: PortSet::Ranges((0..300).map(|p| (p * 2, p * 2)).collect()),
        ..Rule::default()
    };
    assert!(matches!(Classifier::build(&[rule]), Err(BuildError::RuleTooLarge { rule: 0, .. })));
}

#[test]
fn batch_mixes_families_and_lengths() {
    let mut r = Rng(7);
    let rules = gen_rules(&mut r, 60);
    let pools = Pools::of(&rules);
    let c = Classifier::build(&rules).unwrap();
    for len in [0, 1, 31, 32, 33, 100] {
        let keys: Vec<FlowKey> = (0..len).map(|_| gen_key(&mut r, &pools)).collect();
        let mut out = vec![None; len];
        c.lookup_batch(&keys, &mut out);
        for (k, o) in keys.iter().zip(&out) {
            assert_eq!(*o, first_match(&rules, k));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// ClassBench reader.

#[test]
fn classbench_filters_parse() {
    let text = "@237.73.3.4/32\t67.236.63.210/32\t0 : 65535\t1711 : 1711\t0x06/0xFF\t0x0000/0x0200\t\n\
                @0.0.0.0/0\t10.0.0.0/8\t1024 : 65535\t0 : 65535\t0x00/0x00\t0x0000/0x0000\n";
    let f = parse_filters(text, "t").unwrap();
    assert_eq!(f.len(), 2);
    assert_eq!(
        f[0],
        Filter {
            src: u32::from(Ipv4Addr::new(237, 73, 3, 4)),
            src_len: 32,
            dst: u32::from(Ipv4Addr::new(67, 236, 63, 210)),
            dst_len: 32,
            src_ports: (0, 65535),
            dst_ports: (1711, 1711),
            proto: 6,
            proto_mask: 0xFF,
        }
    );
    let rules = to_rules(&f);
    assert_eq!(rules[1].src, AddrSet::Any);
    assert_eq!(rules[1].protocol, ProtoSet::Any);
    assert_eq!(rules[1].src_ports, PortSet::Ranges(vec![(1024, 65535)]));
    assert_eq!(rules[1].payload, 1);
}

#[test]
fn classbench_errors_name_file_and_line() {
    let cases = [
        (
            "@1.2.3.4/32\t5.6.7.8/32\t0 : 65535\t80 : 80\t0x06/0xFF\n@1.2.3.4/33\t5.6.7.8/32\t0 : 1\t0 : 1\t0x06/0xFF\n",
            2,
            "prefix length",
        ),
        ("1.2.3.4/32\t5.6.7.8/32\t0 : 65535\t80 : 80\t0x06/0xFF\n", 1, "'@'"),
        ("@1.2.3.4/32\t5.6.7.8/32\t9 : 1\t80 : 80\t0x06/0xFF\n", 1, "9 > 1"),
        ("@1.2.3.4/32\t5.6.7.8/32\t0 - 1\t80 : 80\t0x06/0xFF\n", 1, "LO : HI"),
        ("\n\n@1.2.3.4/32\t5.6.7.8/32\t0 : 1\t80 : 80\t0x106/0xFF\n", 3, "protocol"),
        ("@1.2.3.4/32\t5.6.7.8/32\t0 : 1\n", 1, "fields"),
    ];
    for (text, line, needle) in cases {
        let e = parse_filters(text, "rules.txt").unwrap_err();
        assert_eq!((e.file.as_str(), e.line), ("rules.txt", line), "{e}");
        assert!(e.to_string().starts_with(&format!("rules.txt:{line}: ")), "{e}");
        assert!(e.message.contains(needle), "{e} should mention {needle}");
    }
    let e = parse_trace("1\t2\t3\t4\t6\t0\t1\n1\t2\t3\t70000\t6\n", "trace.txt").unwrap_err();
    assert_eq!((e.file.as_str(), e.line), ("trace.txt", 2));
    let e = parse_trace("1\t2\t3\n", "trace.txt").unwrap_err();
    assert_eq!(e.line, 1);
    let e = read_filters(Path::new("/nonexistent/classbench")).unwrap_err();
    assert_eq!(e.line, 0);
}

#[test]
fn classbench_trace_parses_and_matches_filter_semantics() {
    let filters = parse_filters(
        "@10.0.0.0/8\t0.0.0.0/0\t0 : 65535\t80 : 80\t0x06/0xFF\t0x0000/0x0000\n\
         @0.0.0.0/0\t0.0.0.0/0\t0 : 65535\t0 : 65535\t0x00/0x00\t0x0000/0x0000\n",
        "f",
    )
    .unwrap();
    let trace =
        parse_trace("167772161\t3232235777\t1000\t80\t6\t0\t0\n167772161\t3232235777\t1000\t81\t6\t0\t0\n", "t")
            .unwrap();
    assert_eq!(trace[0].src, 0x0A00_0001);
    assert_eq!(trace[0].filter, Some(0));
    let lin = LinearScan::new(&filters);
    assert_eq!(lin.first_match(&trace[0]), Some(0));
    // column 7 claims filter 0, but the first match is filter 1
    assert_eq!(lin.first_match(&trace[1]), Some(1));
    let c = Classifier::build(&to_rules(&filters)).unwrap();
    for h in &trace {
        assert_eq!(c.lookup(&h.key()).map(|m| m.rule_index), lin.first_match(h));
        assert!(filters.iter().position(|f| f.matches(h)).map(|i| i as u32) == lin.first_match(h));
    }
}

// ---------------------------------------------------------------------------------------------
// The shared ClassBench sets: every trace header against the linear scan.

fn classbench_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/classbench");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!("SKIPPED: {} is absent; the ClassBench equivalence test did not run", dir.display());
        None
    }
}

/// The trace of a set (`<set>_trace`, or `<set>_trace.GENERATED`).
pub(crate) fn trace_of(set: &Path) -> Option<PathBuf> {
    let name = set.file_name()?.to_str()?;
    [format!("{name}_trace"), format!("{name}_trace.GENERATED")]
        .into_iter()
        .map(|t| set.with_file_name(t))
        .find(|p| p.is_file())
}

/// Checks every `step`-th header of the set's trace (1 = all).
fn check_set(set: &Path, step: usize) -> (usize, usize) {
    let filters = read_filters(set).unwrap();
    let rules = to_rules(&filters);
    let c = Classifier::build(&rules).unwrap();
    let trace: Vec<Header> = read_trace(&trace_of(set).unwrap()).unwrap().into_iter().step_by(step).collect();
    let lin = LinearScan::new(&filters);
    let keys: Vec<FlowKey> = trace.iter().map(Header::key).collect();
    let mut got = vec![None; keys.len()];
    c.lookup_batch(&keys, &mut got);
    let mut mismatches = 0;
    for ((h, k), g) in trace.iter().zip(&keys).zip(&got) {
        let want = lin.first_match(h);
        let single = c.lookup(k).map(|m| m.rule_index);
        if g.map(|m| m.rule_index) != want || single != want {
            mismatches += 1;
            if mismatches < 5 {
                eprintln!("{}: header {h:?}: linear {want:?}, batch {g:?}, single {single:?}", set.display());
            }
        }
    }
    (trace.len(), mismatches)
}

/// Every header of every shared 1K and 10K trace (the 100K sets: `moat bench classify`). Debug
/// builds check every header of the 1K traces and every 25th of the 10K traces (the linear scan
/// over 10K rules is the cost); `cargo test --release` or `MOAT_CLASSBENCH_FULL=1` checks all.
#[test]
fn classbench_shared_sets_equal_linear_scan() {
    let full = FULL || std::env::var_os("MOAT_CLASSBENCH_FULL").is_some();
    let Some(dir) = classbench_dir() else { return };
    let mut sets: Vec<PathBuf> = std::fs::read_dir(dir.join("lyxocs_ruleSet"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.to_string_lossy().contains("trace") && trace_of(p).is_some())
        .collect();
    sets.sort();
    assert!(!sets.is_empty(), "no ClassBench set with a trace under {}", dir.display());
    for set in &sets {
        let t = std::time::Instant::now();
        let small = set.file_name().is_some_and(|n| n.to_string_lossy().ends_with("_1k"));
        let step = if full || small { 1 } else { 25 };
        let (headers, mismatches) = check_set(set, step);
        eprintln!("{}: {headers} headers, {mismatches} mismatches ({:?})", set.display(), t.elapsed());
        assert_eq!(mismatches, 0, "{}", set.display());
    }
}

/// Tuning aid (release only): `SETS=lyxocs_ruleSet/fw1_10k,... cargo test --release -p moat-fastpath
/// --lib classbench_tuning_report -- --ignored --nocapture`, with `BINTH`, `SPFAC`, `MAXB`, `ROOTB`,
/// `SMALL`, `MERGE`, `LEAFMAX` overriding [`BuildOptions`]. Prints shape, work per lookup and speed.
#[test]
#[ignore]
fn classbench_tuning_report() {
    let Some(dir) = classbench_dir() else { return };
    let sets = std::env::var("SETS").unwrap_or_else(|_| "lyxocs_ruleSet/acl1_10k".into());
    let env = |k: &str| std::env::var(k).ok().map(|v| v.parse::<f64>().unwrap());
    let mut o = BuildOptions::default();
    if let Some(v) = env("BINTH") {
        o.binth = v as usize;
    }
    if let Some(v) = env("SPFAC") {
        o.spfac = v;
    }
    if let Some(v) = env("MAXB") {
        o.max_bits = v as u32;
    }
    if let Some(v) = env("ROOTB") {
        o.root_max_bits = v as u32;
    }
    if let Some(v) = env("SMALL") {
        o.small_prefix = v as u32;
    }
    if let Some(v) = env("MERGE") {
        o.merge_below = v as usize;
    }
    if let Some(v) = env("LEAFMAX") {
        o.leaf_max = v as usize;
    }
    for name in sets.split(',') {
        let set = dir.join(name);
        let filters = read_filters(&set).unwrap();
        let rules = to_rules(&filters);
        let t = std::time::Instant::now();
        let c = Classifier::build_with(&rules, &o).unwrap();
        let build = t.elapsed();
        let mut trace = read_trace(&trace_of(&set).unwrap()).unwrap();
        let mut r = Rng(0x9e37_79b9_7f4a_7c15);
        for i in (1..trace.len()).rev() {
            trace.swap(i, r.below(i + 1));
        }
        let keys: Vec<[u32; 8]> = trace.iter().map(|h| Classifier::ipv4_key(&h.key()).unwrap()).collect();
        let mut out = vec![0u32; keys.len()];
        let iters: usize = std::env::var("ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
        let t = std::time::Instant::now();
        for _ in 0..iters {
            c.lookup_batch_ipv4(&keys, &mut out);
        }
        let batch_ns = t.elapsed().as_nanos() as f64 / (iters * keys.len()) as f64;
        // the same 32 keys over and over: everything in L1, what remains is instructions
        let hot: Vec<[u32; 8]> = keys.iter().take(32).cycle().take(keys.len()).copied().collect();
        let t = std::time::Instant::now();
        for _ in 0..iters * usize::from(std::env::var("HOT").map_or(true, |v| v != "0")) {
            c.lookup_batch_ipv4(&hot, &mut out);
        }
        let hot_ns = t.elapsed().as_nanos() as f64 / (iters * keys.len()) as f64;
        println!("  hot-cache batch {hot_ns:.1} ns");
        let fk: Vec<FlowKey> = trace.iter().map(Header::key).collect();
        let t = std::time::Instant::now();
        let mut sum = 0u64;
        for k in &fk {
            sum = sum.wrapping_add(c.lookup(k).map_or(0, |m| u64::from(m.rule_index)));
        }
        let single_ns = t.elapsed().as_nanos() as f64 / fk.len() as f64;
        let (mut steps, mut blocks, mut trees) = (0, 0, 0);
        for k in &fk {
            let (a, b, t) = c.cost(k);
            steps += a;
            blocks += b;
            trees += t;
        }
        let n = fk.len() as f64;
        println!(
            "{name}: rules={} build={build:.1?} bytes={} {:?}\n  per lookup: steps={:.2} blocks={:.2} trees={:.2}; batch {batch_ns:.1} ns, single {single_ns:.1} ns ({sum})",
            rules.len(),
            c.bytes(),
            c.stats(),
            steps as f64 / n,
            blocks as f64 / n,
            trees as f64 / n
        );
    }
}
