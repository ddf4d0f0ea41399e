//! The precompiled multi-field classifier: first-match over source and destination address (IPv4 and
//! IPv6, sets of prefixes), protocol, source and destination port ranges and ICMP type/code, in one
//! lookup, batched.
//!
//! # Input: what a rule is
//!
//! A [`Rule`] is a conjunction of per-field *sets* ([`AddrSet`], [`ProtoSet`], [`PortSet`],
//! [`IcmpMatch`]); rules are in priority order (index 0 wins), each with an [`Action`] and an opaque
//! `u32` payload (the policy compiler stores the tier/policy/rule trace id there). Sets are what a
//! Calico rule compiles to: a selector or network set resolves to a set of prefixes, `ports` to a set
//! of ranges, and every negation (`notNets`, `notPorts`, `notProtocol`, `notICMP`) to the complement
//! set — so the compiler never has to split a rule to express it. An empty set matches nothing (a
//! selector that selects no endpoint). [`reference::first_match`] states the semantics as a linear
//! scan; the engine is tested against it.
//!
//! # Design: partitioned bit-cutting trees, traversed level-synchronously in batches
//!
//! **Geometry.** Every rule is expanded into boxes (the cross product of its per-field sets) in a
//! per-family key space of 32-bit dimensions: IPv4 `[src, dst, sport, dport, proto·icmp]` (5
//! dimensions), IPv6 the same with each address as four 32-bit words (11 dimensions). Protocol and
//! ICMP share one dimension (`proto << 17 | icmp`, where "no ICMP header" is a value no ICMP match
//! covers), so "protocol 1, type 8" is a single range.
//!
//! **Partitioning (CutSplit).** One decision tree over all rules replicates every wide rule into
//! every leaf its range spans (fw sets: a wildcard-source rule spans the whole source axis). Boxes
//! are therefore split by which address fields are *small* (prefix at least /16 on the first word):
//! small-source-and-destination, small-source, small-destination, neither. Each subset gets its own
//! tree, cut mostly along its small fields, where replication stays low.
//!
//! **Trees (HiCuts with aligned power-of-two cuts).** Every node cuts one dimension into
//! `2^bits` equal, *aligned* pieces, so a node's region is always a prefix in each dimension and the
//! child index is a shift and a mask of key bits — no comparisons, no search inside a node. The
//! number of cuts per node follows HiCuts' space measure (children plus replicated boxes at most
//! `spfac` × boxes), with a wider root; the dimension is the one that minimises the largest child.
//! Before cutting, a node's region is *compacted* to the smallest aligned prefix that holds its
//! boxes in every dimension, so cuts spend their bits where the boxes differ (keys outside that
//! prefix match none of the node's boxes, and leaves check full boxes, so their routing does not
//! matter). A node keeps only the boxes that intersect it, drops every box after the first one that
//! covers its whole region, and in small nodes every box covered by an earlier one. Nodes whose boxes
//! have the same geometry relative to their regions share one subtree; identical leaves share their
//! blocks. A node becomes a leaf at `binth` boxes or fewer, or at `leaf_max` or fewer when no cut
//! halves it; a size budget (per tree, linear in its boxes) turns the remaining nodes into longer
//! leaves instead of letting adversarial sets grow the structure without bound.
//!
//! **Flat memory.** A tree is an arena of 8-byte [`tree::Slot`]s (eight per cache line): a child
//! slot *is* the child's header (dimension, shift, mask, base index of its children), so one step is
//! one random access and a shift-and-mask, with no comparison. Leaves point into arenas of
//! 64-byte-aligned blocks holding eight boxes (or four, for leaves of at most four boxes: half the
//! cache lines) in structure-of-arrays form — per dimension, the lanes' lower bounds and spans —
//! checked with a branch-free `(key - lo) <= span` over all lanes, written so that LLVM vectorises it
//! with baseline SSE2 (no `unsafe`, no intrinsics); the lowest matching rule of the block falls out of
//! a lane-wise minimum (boxes are in priority order). Nothing is allocated at lookup time; the only
//! per-lookup memory is stack arrays.
//!
//! **Batches.** [`Classifier::lookup_batch`] walks each tree *level by level across the batch*
//! (32 keys): the loads of one level are independent of each other, so an out-of-order core has many
//! cache misses in flight instead of one pointer chase at a time — the effect rte_acl gets from its
//! interleaved flows, here without `unsafe` prefetches. Only keys still inside the tree are walked
//! (an active list shrinks as keys reach their leaves). Trees are visited in order of their best
//! rule; a key whose match already beats a tree's best rule skips that tree, and a leaf block whose
//! first rule cannot beat the current match is not checked.
//!
//! **Why this and not the others.** RFC/cross-producting gives the fewest memory accesses but its
//! tables grow with the product of per-field class counts (hundreds of MB for 10K fw sets, minutes
//! to build); tuple-space/TupleMerge needs a hash probe per tuple (tens per lookup on ClassBench);
//! bit-vector schemes touch `rules/8` bytes per field per lookup. Decision trees with partitioning
//! give a handful of accesses per lookup within a few MB, build in milliseconds, and the aligned
//! cuts make each step branch-free arithmetic. rte_acl is itself a multi-trie over bytes of the key
//! (one dependent step per key byte, up to 13 for IPv4); aligned multi-bit cuts take 3–7 steps per
//! lookup in total on the 10K ClassBench sets, plus one or two leaf blocks.
//!
//! # Invariants
//! - A built [`Classifier`] is immutable and `Send + Sync`; lookups never allocate or panic.
//! - `lookup(k)` equals `reference::first_match(rules, k)` for every key (property-tested).
//! - A key whose source and destination address families differ matches no rule (no parsed packet
//!   has one).

pub mod classbench;
pub mod reference;
pub(crate) mod tree;

#[cfg(test)]
mod tests;

use super::FlowKey;
use ipnetwork::IpNetwork;
use std::net::IpAddr;
use tree::{Forest, Params, RBox};

/// What a first-matching rule asks for. The classifier treats every action as terminal: the policy
/// compiler resolves Calico's non-terminal semantics (Pass to the next tier, Log and continue)
/// before it emits rules, and may use these values to tag what it emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
pub enum Action {
    #[default]
    Allow,
    Deny,
    Pass,
    Log,
}

/// A set of addresses: any address, or the union of prefixes (IPv4 and IPv6 may mix; each only
/// matches addresses of its own family). `Nets(vec![])` matches nothing.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum AddrSet {
    #[default]
    Any,
    Nets(Vec<IpNetwork>),
}

/// A set of IP protocol numbers. `Only(vec![])` matches nothing; `notProtocol: X` is `Only` of the
/// other 255 values.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum ProtoSet {
    #[default]
    Any,
    Only(Vec<u8>),
}

/// A set of ports as inclusive ranges. `Ranges(vec![])` matches nothing.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum PortSet {
    #[default]
    Any,
    Ranges(Vec<(u16, u16)>),
}

/// An ICMP type/code constraint. `Any` also matches packets without an ICMP header; every other
/// variant only matches packets that have one (`FlowKey::icmp` is `Some`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum IcmpMatch {
    #[default]
    Any,
    Type(u8),
    TypeCode(u8, u8),
    /// Calico `notICMP: {type}`: an ICMP header whose type differs.
    NotType(u8),
    /// Calico `notICMP: {type, code}`: an ICMP header with another type or code.
    NotTypeCode(u8, u8),
}

/// One classifier rule: every field must match. Priority is the rule's position in the list.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Rule {
    pub src: AddrSet,
    pub dst: AddrSet,
    pub protocol: ProtoSet,
    pub src_ports: PortSet,
    pub dst_ports: PortSet,
    pub icmp: IcmpMatch,
    pub action: Action,
    /// Opaque to the classifier; returned with the match (policy/rule trace id).
    pub payload: u32,
}

/// The first (highest-priority) rule that matches a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Match {
    /// Position of the rule in the list given to [`Classifier::build`].
    pub rule_index: u32,
    pub payload: u32,
    pub action: Action,
}

/// Why a rule list cannot be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error("too many rules: {0} (at most {max})", max = MAX_RULES)]
    TooManyRules(usize),
    #[error("rule {rule} expands to more than {max} boxes (cross product of its address, port and protocol sets)")]
    RuleTooLarge { rule: usize, max: usize },
    #[error("the rule set expands to more than {max} boxes in total")]
    TooManyBoxes { max: usize },
    #[error("the compiled structure exceeds its arena limits ({0})")]
    ArenaOverflow(&'static str),
}

/// Rule indexes are `u32` with `u32::MAX` reserved for "no match".
pub const MAX_RULES: usize = (u32::MAX - 1) as usize;
/// Cross product limit for one rule (a guard against accidental blow-ups in generated policy).
pub const MAX_BOXES_PER_RULE: usize = 1 << 20;
/// Limit for the whole set.
pub const MAX_BOXES: usize = 1 << 24;

/// Tuning of the tree builder; [`BuildOptions::default`] is what was measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BuildOptions {
    /// Largest leaf (boxes); larger nodes are cut.
    pub binth: usize,
    /// HiCuts space factor: a node's children plus replicated boxes stay below `spfac` × its boxes.
    pub spfac: f64,
    /// Largest fan-out of an inner node, in bits.
    pub max_bits: u32,
    /// Largest fan-out of a root, in bits.
    pub root_max_bits: u32,
    /// A prefix at least this long (on the first 32-bit word) makes an address field "small".
    pub small_prefix: u32,
    /// Trees whose subset has fewer boxes than this are merged into the next larger subset.
    pub merge_below: usize,
    /// A node of at most this many boxes becomes a leaf when no cut halves it.
    pub leaf_max: usize,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            binth: 8,
            spfac: 4.0,
            max_bits: 8,
            root_max_bits: 16,
            small_prefix: 16,
            merge_below: 0,
            leaf_max: 24,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct RuleMeta {
    payload: u32,
    action: Action,
}

/// How many keys [`Classifier::lookup_batch`] walks together.
pub const BATCH: usize = 32;

/// IPv4: `[src, dst, sport, dport, proto·icmp]`, padded to 8 (index 7 is always zero).
const D4: usize = 5;
const K4: usize = 8;
/// IPv6: `[src0..3, dst0..3, sport, dport, proto·icmp]`, padded to 16.
const D6: usize = 11;
const K6: usize = 16;

const PORT_BITS: u8 = 16;
const PI_BITS: u8 = 25;
/// Value of the ICMP part of the proto·icmp dimension for a packet without an ICMP header.
const NO_ICMP: u32 = 0x1_0000;
const ICMP_ALL: u32 = 0x1_FFFF;

/// A compiled, immutable rule list.
#[derive(Debug, Clone)]
pub struct Classifier {
    v4: Forest<D4, K4>,
    v6: Forest<D6, K6>,
    meta: Vec<RuleMeta>,
}

#[inline]
fn proto_icmp(key: &FlowKey) -> u32 {
    let icmp = match key.icmp {
        Some((t, c)) => (u32::from(t) << 8) | u32::from(c),
        None => NO_ICMP,
    };
    (u32::from(key.protocol) << 17) | icmp
}

/// The IPv4 key, or `None` when the key is not IPv4 on both sides.
#[inline]
fn key4(key: &FlowKey) -> Option<[u32; K4]> {
    match (key.src, key.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => Some([
            u32::from(s),
            u32::from(d),
            u32::from(key.src_port),
            u32::from(key.dst_port),
            proto_icmp(key),
            0,
            0,
            0,
        ]),
        _ => None,
    }
}

#[inline]
fn words6(a: std::net::Ipv6Addr) -> [u32; 4] {
    let v = u128::from(a);
    #[allow(clippy::cast_possible_truncation)] // deliberate: splitting 128 bits into four words
    [(v >> 96) as u32, (v >> 64) as u32, (v >> 32) as u32, v as u32]
}

#[inline]
fn key6(key: &FlowKey) -> Option<[u32; K6]> {
    match (key.src, key.dst) {
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let s = words6(s);
            let d = words6(d);
            Some([
                s[0],
                s[1],
                s[2],
                s[3],
                d[0],
                d[1],
                d[2],
                d[3],
                u32::from(key.src_port),
                u32::from(key.dst_port),
                proto_icmp(key),
                0,
                0,
                0,
                0,
                0,
            ])
        }
        _ => None,
    }
}

impl Classifier {
    /// Compiles `rules` (priority = position) with the default options.
    pub fn build(rules: &[Rule]) -> Result<Classifier, BuildError> {
        Classifier::build_with(rules, &BuildOptions::default())
    }

    /// Compiles `rules` with explicit tuning.
    pub fn build_with(rules: &[Rule], options: &BuildOptions) -> Result<Classifier, BuildError> {
        if rules.len() > MAX_RULES {
            return Err(BuildError::TooManyRules(rules.len()));
        }
        let mut boxes4: Vec<RBox<D4>> = Vec::new();
        let mut boxes6: Vec<RBox<D6>> = Vec::new();
        for (index, rule) in rules.iter().enumerate() {
            let rule_id = u32::try_from(index).map_err(|_| BuildError::TooManyRules(rules.len()))?;
            expand::rule_boxes(rule, index, rule_id, &mut boxes4, &mut boxes6)?;
            if boxes4.len() > MAX_BOXES || boxes6.len() > MAX_BOXES {
                return Err(BuildError::TooManyBoxes { max: MAX_BOXES });
            }
        }
        let params = Params::from_options(options);
        let small = options.small_prefix.min(32);
        let v4 = Forest::build(boxes4, [32, 32, PORT_BITS, PORT_BITS, PI_BITS], (0, 1), small, &params)?;
        let v6 = Forest::build(
            boxes6,
            [32, 32, 32, 32, 32, 32, 32, 32, PORT_BITS, PORT_BITS, PI_BITS],
            (0, 4),
            small,
            &params,
        )?;
        let meta = rules.iter().map(|r| RuleMeta { payload: r.payload, action: r.action }).collect();
        Ok(Classifier { v4, v6, meta })
    }

    /// Number of rules compiled.
    pub fn len(&self) -> usize {
        self.meta.len()
    }

    pub fn is_empty(&self) -> bool {
        self.meta.is_empty()
    }

    #[inline]
    fn to_match(&self, rule: u32) -> Option<Match> {
        let meta = self.meta.get(rule as usize)?;
        Some(Match { rule_index: rule, payload: meta.payload, action: meta.action })
    }

    /// The first rule matching `key`.
    #[inline]
    pub fn lookup(&self, key: &FlowKey) -> Option<Match> {
        let rule = if let Some(k) = key4(key) {
            self.v4.lookup(&k)
        } else if let Some(k) = key6(key) {
            self.v6.lookup(&k)
        } else {
            tree::NO_RULE
        };
        self.to_match(rule)
    }

    /// `out[i] = lookup(&keys[i])` for `i < min(keys.len(), out.len())`, walking [`BATCH`] keys at a
    /// time so that their memory accesses overlap.
    #[inline(never)]
    pub fn lookup_batch(&self, keys: &[FlowKey], out: &mut [Option<Match>]) {
        let mut k4 = [[0u32; K4]; BATCH];
        let mut i4 = [0usize; BATCH];
        let mut r4 = [tree::NO_RULE; BATCH];
        for (keys, out) in keys.chunks(BATCH).zip(out.chunks_mut(BATCH)) {
            let mut n4 = 0;
            for (i, (key, o)) in keys.iter().zip(out.iter_mut()).enumerate() {
                match key4(key) {
                    Some(k) => {
                        k4[n4] = k;
                        i4[n4] = i;
                        n4 += 1;
                    }
                    // IPv6 and mixed keys are rare on an IPv4 cluster and cheap to take one by one.
                    None => *o = self.lookup(key),
                }
            }
            let n4 = n4.min(BATCH);
            self.v4.lookup_batch(&k4[..n4], &mut r4[..n4]);
            for (&i, &r) in i4[..n4].iter().zip(&r4[..n4]) {
                if let Some(o) = out.get_mut(i) {
                    *o = self.to_match(r);
                }
            }
        }
    }

    /// Batched lookup on keys already in the IPv4 layout (see [`Classifier::ipv4_key`]); the
    /// result is the rule index or `None`. This is what a worker uses after parsing an IPv4 batch.
    #[inline(never)] // one call per batch; keeps the batch loop one unit for profilers
    pub fn lookup_batch_ipv4(&self, keys: &[[u32; 8]], out: &mut [u32]) {
        for (keys, out) in keys.chunks(BATCH).zip(out.chunks_mut(BATCH)) {
            self.v4.lookup_batch(keys, out);
        }
    }

    /// The IPv4 key layout of `key` (`None` unless both addresses are IPv4).
    #[inline]
    pub fn ipv4_key(key: &FlowKey) -> Option<[u32; 8]> {
        key4(key)
    }

    /// The match for a rule index returned by [`Classifier::lookup_batch_ipv4`].
    #[inline]
    pub fn match_of(&self, rule: u32) -> Option<Match> {
        self.to_match(rule)
    }

    /// Bytes of the lookup structure (arenas and rule metadata), excluding the `Classifier` itself.
    pub fn bytes(&self) -> usize {
        self.v4.bytes() + self.v6.bytes() + self.meta.capacity() * std::mem::size_of::<RuleMeta>()
    }

    #[cfg(test)]
    pub(crate) fn cost(&self, key: &FlowKey) -> (usize, usize, usize) {
        key4(key).map_or((0, 0, 0), |k| self.v4.cost(&k))
    }

    /// Shape of the compiled structure, for benchmarks and tuning.
    pub fn stats(&self) -> Stats {
        let a = self.v4.stats();
        let b = self.v6.stats();
        Stats {
            boxes: a.boxes + b.boxes,
            trees: a.trees + b.trees,
            slots: a.slots + b.slots,
            blocks: a.blocks + b.blocks,
            max_depth: a.max_depth.max(b.max_depth),
            tree_sizes: a.tree_sizes.into_iter().chain(b.tree_sizes).collect(),
        }
    }
}

/// Shape of a compiled classifier.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Boxes after expanding rule sets (before replication).
    pub boxes: usize,
    pub trees: usize,
    pub slots: usize,
    pub blocks: usize,
    pub max_depth: u32,
    /// Boxes per tree (IPv4 trees first).
    pub tree_sizes: Vec<usize>,
}

/// Turning rules into boxes.
mod expand {
    use super::*;

    /// Sorted, merged inclusive ranges.
    pub(super) fn merge(mut v: Vec<(u32, u32)>) -> Vec<(u32, u32)> {
        v.sort_unstable();
        let mut out: Vec<(u32, u32)> = Vec::with_capacity(v.len());
        for (lo, hi) in v {
            match out.last_mut() {
                Some(last) if u64::from(lo) <= u64::from(last.1) + 1 => last.1 = last.1.max(hi),
                _ => out.push((lo, hi)),
            }
        }
        out
    }

    fn ports(set: &PortSet) -> Vec<(u32, u32)> {
        match set {
            PortSet::Any => vec![(0, 0xFFFF)],
            PortSet::Ranges(r) => {
                merge(r.iter().filter(|(a, b)| a <= b).map(|&(a, b)| (u32::from(a), u32::from(b))).collect())
            }
        }
    }

    fn icmp_ranges(m: IcmpMatch) -> Vec<(u32, u32)> {
        let tc = |t: u8, c: u8| (u32::from(t) << 8) | u32::from(c);
        match m {
            IcmpMatch::Any => vec![(0, ICMP_ALL)],
            IcmpMatch::Type(t) => vec![(tc(t, 0), tc(t, 255))],
            IcmpMatch::TypeCode(t, c) => vec![(tc(t, c), tc(t, c))],
            IcmpMatch::NotType(t) => {
                let mut v = Vec::new();
                if t > 0 {
                    v.push((0, tc(t, 0) - 1));
                }
                if t < 255 {
                    v.push((tc(t, 255) + 1, 0xFFFF));
                }
                v
            }
            IcmpMatch::NotTypeCode(t, c) => {
                let x = tc(t, c);
                let mut v = Vec::new();
                if x > 0 {
                    v.push((0, x - 1));
                }
                if x < 0xFFFF {
                    v.push((x + 1, 0xFFFF));
                }
                v
            }
        }
    }

    /// Ranges of the proto·icmp dimension.
    fn proto_icmp(protocol: &ProtoSet, icmp: IcmpMatch) -> Vec<(u32, u32)> {
        let protos = match protocol {
            ProtoSet::Any => vec![(0, 255)],
            ProtoSet::Only(p) => merge(p.iter().map(|&p| (u32::from(p), u32::from(p))).collect()),
        };
        let mut out = Vec::new();
        if icmp == IcmpMatch::Any {
            for (a, b) in protos {
                out.push((a << 17, (b << 17) | ICMP_ALL));
            }
        } else {
            let ic = icmp_ranges(icmp);
            for (a, b) in protos {
                for p in a..=b {
                    for &(x, y) in &ic {
                        out.push(((p << 17) | x, (p << 17) | y));
                    }
                }
            }
        }
        merge(out)
    }

    fn v4_ranges(set: &AddrSet) -> Vec<(u32, u32)> {
        match set {
            AddrSet::Any => vec![(0, u32::MAX)],
            AddrSet::Nets(nets) => merge(
                nets.iter()
                    .filter_map(|n| match n {
                        IpNetwork::V4(n) => {
                            let lo = u32::from(n.network());
                            let hi = u32::from(n.broadcast());
                            Some((lo, hi))
                        }
                        IpNetwork::V6(_) => None,
                    })
                    .collect(),
            ),
        }
    }

    /// Per-word ranges of an IPv6 prefix: words fully inside the prefix are exact, the word the prefix
    /// ends in is a range, later words are any.
    pub(super) fn v6_words(addr: u128, len: u8) -> [(u32, u32); 4] {
        let len = u32::from(len.min(128));
        let mask: u128 = if len == 0 { 0 } else { u128::MAX << (128 - len) };
        let lo = addr & mask;
        let hi = lo | !mask;
        let w = |v: u128, i: u32| -> u32 {
            #[allow(clippy::cast_possible_truncation)] // deliberate: one 32-bit word
            let x = (v >> (96 - 32 * i)) as u32;
            x
        };
        [(w(lo, 0), w(hi, 0)), (w(lo, 1), w(hi, 1)), (w(lo, 2), w(hi, 2)), (w(lo, 3), w(hi, 3))]
    }

    fn v6_boxes(set: &AddrSet) -> Vec<[(u32, u32); 4]> {
        match set {
            AddrSet::Any => vec![[(0, u32::MAX); 4]],
            AddrSet::Nets(nets) => {
                let mut v: Vec<[(u32, u32); 4]> = nets
                    .iter()
                    .filter_map(|n| match n {
                        IpNetwork::V6(n) => Some(v6_words(u128::from(n.ip()), n.prefix())),
                        IpNetwork::V4(_) => None,
                    })
                    .collect();
                v.sort_unstable();
                v.dedup();
                // A prefix inside another prefix of the same set adds nothing.
                let all = v.clone();
                v.retain(|b| !all.iter().any(|o| o != b && (0..4).all(|i| o[i].0 <= b[i].0 && b[i].1 <= o[i].1)));
                v
            }
        }
    }

    pub(super) fn rule_boxes(
        rule: &Rule,
        index: usize,
        rule_id: u32,
        boxes4: &mut Vec<RBox<D4>>,
        boxes6: &mut Vec<RBox<D6>>,
    ) -> Result<(), BuildError> {
        let sp = ports(&rule.src_ports);
        let dp = ports(&rule.dst_ports);
        let pi = proto_icmp(&rule.protocol, rule.icmp);
        let common = sp.len().saturating_mul(dp.len()).saturating_mul(pi.len());
        if common == 0 {
            return Ok(());
        }
        let too_large = || BuildError::RuleTooLarge { rule: index, max: MAX_BOXES_PER_RULE };

        let s4 = v4_ranges(&rule.src);
        let d4 = v4_ranges(&rule.dst);
        if s4.len().saturating_mul(d4.len()).saturating_mul(common) > MAX_BOXES_PER_RULE {
            return Err(too_large());
        }
        for &s in &s4 {
            for &d in &d4 {
                for &a in &sp {
                    for &b in &dp {
                        for &p in &pi {
                            boxes4.push(RBox {
                                lo: [s.0, d.0, a.0, b.0, p.0],
                                hi: [s.1, d.1, a.1, b.1, p.1],
                                rule: rule_id,
                            });
                        }
                    }
                }
            }
        }

        let s6 = v6_boxes(&rule.src);
        let d6 = v6_boxes(&rule.dst);
        if s6.len().saturating_mul(d6.len()).saturating_mul(common) > MAX_BOXES_PER_RULE {
            return Err(too_large());
        }
        for s in &s6 {
            for d in &d6 {
                for &a in &sp {
                    for &b in &dp {
                        for &p in &pi {
                            let mut lo = [0u32; D6];
                            let mut hi = [0u32; D6];
                            for i in 0..4 {
                                lo[i] = s[i].0;
                                hi[i] = s[i].1;
                                lo[4 + i] = d[i].0;
                                hi[4 + i] = d[i].1;
                            }
                            lo[8] = a.0;
                            hi[8] = a.1;
                            lo[9] = b.0;
                            hi[9] = b.1;
                            lo[10] = p.0;
                            hi[10] = p.1;
                            boxes6.push(RBox { lo, hi, rule: rule_id });
                        }
                    }
                }
            }
        }
        Ok(())
    }
}
