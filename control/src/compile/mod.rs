//! The policy compiler: from a [`Resolved`] model (the same resolution the reference evaluator
//! walks, so the two cannot disagree about semantics) to the immutable
//! [`PolicyTable`](moat_fastpath::classify::PolicyTable) the workers consult for each new flow.
//!
//! # Shape (and why)
//!
//! Per known endpoint and direction the table holds a **chain**: the steps Felix would run —
//! failsafe ports, doNotTrack and preDNAT tiers (host endpoints), then the tiers in order — each
//! step the ordered list of the policies that apply to the endpoint in that tier, and its
//! end-of-tier action; then the profile outcome. Each **policy** (per direction) is compiled once
//! into one multi-field classifier ([`moat_fastpath::classify::engine::Classifier`]) over its
//! terminal rules and shared by every endpoint it applies to. A lookup finds the endpoint by
//! address (hash map) and walks its chain: one classifier lookup per applicable policy until one
//! decides.
//!
//! The alternative the issue suggested — one classifier per (direction, tier) in which each rule
//! carries the addresses of every endpoint it applies to — needs one lookup per tier, but every
//! rule becomes the cross product of its peer address set and its endpoints' address set: a rule
//! "from all pods" in a policy selecting 100 pods is 100 × 5,000 boxes before the tree
//! replicates them, and a pod change touches every tier's classifier. Per-policy classifiers are
//! linear in the policy text (build cost and memory do not multiply with the number of endpoints
//! a policy selects), are content-addressed so a recompile rebuilds only the policies whose
//! compiled rules changed, and a lookup costs a few classifier probes for the few policies an
//! endpoint has (Kubernetes clusters typically have one to three per pod and direction). This
//! is also how Felix programs its dataplanes (per-endpoint chains jumping to per-policy chains).
//!
//! # Rule compilation
//!
//! Every field of a [`ResolvedRule`] becomes a set, exactly as the evaluator tests it:
//! * **selectors** resolve to the addresses whose owners match: the endpoint owning the address
//!   (the *first* endpoint with it, as [`Resolved::endpoint_by_ip`]) and every network set
//!   containing it; `notSelector` is the complement of that set; `nets`/`notNets` intersect.
//!   Candidate owners come from an inverted label index using each selector's label
//!   restrictions, so a selector is only evaluated on owners that can match.
//! * **named ports** resolve per endpoint: `ports: [http]` becomes one piece per distinct
//!   (protocol, port) value, restricted to the addresses of the endpoints (matching the rule's
//!   selector on that side) that declare it; `notPorts` with names becomes the exact complement
//!   (other ports, or that port on another protocol, or that port on an address that does not
//!   declare it). Pieces of one rule share its position, so first-match is unchanged.
//! * **ports** only exist for TCP, UDP and SCTP ([`PORT_PROTOCOLS`], what the parser reads): a
//!   `ports` match implies one of them; `notPorts` matches every other protocol.
//! * **ICMP**: `icmp` becomes a type / type-code match; `notICMP` also matches packets without
//!   an ICMP header, which the classifier gets from a per-policy *plain* variant (see the
//!   fastpath `policy` module).
//! * **ipVersion** restricts both address fields to the family.
//!
//! Log rules are compiled like the others and recorded-and-continued by the lookup; staged
//! policies are not in the table (the flow-log side evaluates them with the evaluator); an
//! undeclared tier is already placed last by the resolution.
//!
//! # Incremental recompilation
//!
//! A [`Compiler`] keeps a content-addressed cache of compiled policies (keyed by their rule
//! pieces after selector resolution, trace ids included) and a stable trace table, so a
//! recompile after a pod change resolves every selector again but rebuilds only the policies
//! whose address sets changed. Equivalence does not depend on the cache: a cached entry is used
//! only for byte-identical input.

mod addrs;
mod flows;
#[cfg(test)]
mod tests;

pub use addrs::AddrRanges;
pub use flows::{CompiledEvaluator, KeyError, PORT_PROTOCOLS, flow_key, flow_of_key, side_result, side_trace};

use crate::model::{Action, Direction, LabelMap, Model, Port, TierDefaultAction};
use crate::resolve::{Endpoint, FailsafePort, Resolved, ResolvedEntity, ResolvedPolicy, ResolvedRule};
use crate::selector::Selector;
use ipnetwork::IpNetwork;
use moat_fastpath::classify::Verdict as FastVerdict;
use moat_fastpath::classify::engine::{
    Action as RuleAction, AddrSet, BuildError, IcmpMatch, PortSet, ProtoSet, Rule as ClassifierRule,
};
use moat_fastpath::classify::policy::{
    Chain, EndpointInfo, PolicyRules, PolicyTable, PolicyTableError, PolicyTableParts, RuleSpec, Step, StepKind,
    TraceId, TraceInfo,
};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

/// Why a model could not be compiled (the previous table stays in force).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    #[error("policy {policy} ({direction:?}): {source}")]
    Build {
        policy: String,
        direction: Direction,
        #[source]
        source: BuildError,
    },
    #[error("policy {policy}: an ICMP code without an ICMP type cannot be compiled")]
    IcmpCodeWithoutType { policy: String },
    #[error("compiled table is inconsistent: {0}")]
    Table(#[from] PolicyTableError),
    #[error("more than 2^32 {0}")]
    TooMany(&'static str),
}

/// What a compile did, for logs and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompileStats {
    pub endpoints: usize,
    pub chains: usize,
    /// Policy stages (policy × direction) in the table.
    pub policies: usize,
    /// Of those, compiled now (not found in the cache).
    pub built: usize,
    /// Classifier rules after splitting (named ports, ICMP variants).
    pub pieces: usize,
    pub selectors: usize,
}

/// Compile a model once (resolution with Felix's default failsafe ports, zones from IP pools).
pub fn compile_model(model: &Model) -> Result<PolicyTable, CompileError> {
    Compiler::new().compile(&Resolved::new(model), zones_of(model)).map(|(t, _)| t)
}

/// IP pools as `(cidr, name)` zones.
pub fn zones_of(model: &Model) -> Vec<(IpNetwork, String)> {
    model.ip_pools.values().map(|p| (p.spec.cidr, p.name.clone())).collect()
}

/// Protocol numbers as a 256-bit set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Protos([u64; 4]);

impl Protos {
    const ALL: Protos = Protos([u64::MAX; 4]);
    const NONE: Protos = Protos([0; 4]);

    fn only(p: u8) -> Protos {
        let mut s = Protos::NONE;
        s.0[usize::from(p / 64)] |= 1 << (p % 64);
        s
    }
    fn of(ps: &[u8]) -> Protos {
        ps.iter().fold(Protos::NONE, |acc, &p| acc.or(Protos::only(p)))
    }
    fn and(self, o: Protos) -> Protos {
        Protos([self.0[0] & o.0[0], self.0[1] & o.0[1], self.0[2] & o.0[2], self.0[3] & o.0[3]])
    }
    fn or(self, o: Protos) -> Protos {
        Protos([self.0[0] | o.0[0], self.0[1] | o.0[1], self.0[2] | o.0[2], self.0[3] | o.0[3]])
    }
    fn not(self) -> Protos {
        Protos([!self.0[0], !self.0[1], !self.0[2], !self.0[3]])
    }
    fn is_empty(self) -> bool {
        self == Protos::NONE
    }
    fn to_set(self) -> ProtoSet {
        if self == Protos::ALL {
            return ProtoSet::Any;
        }
        ProtoSet::Only((0..=255u8).filter(|&p| self.0[usize::from(p / 64)] & (1 << (p % 64)) != 0).collect())
    }
}

/// Port sets as canonical inclusive ranges (in `u128` to share the range algebra).
type Ports = Vec<(u128, u128)>;

fn ports_full() -> Ports {
    vec![(0, 65535)]
}

fn ports_of(ranges: impl IntoIterator<Item = (u16, u16)>) -> Ports {
    AddrRanges { v4: ranges.into_iter().map(|(a, b)| (u128::from(a), u128::from(b))).collect(), v6: Vec::new() }
        .union(&AddrRanges::default())
        .v4
}

fn ports_and(a: &Ports, b: &Ports) -> Ports {
    AddrRanges { v4: a.clone(), v6: Vec::new() }.intersect(&AddrRanges { v4: b.clone(), v6: Vec::new() }).v4
}

fn ports_not(a: &Ports) -> Ports {
    // Complement within 0..=65535: complement in the IPv4 space, then clip.
    let c = AddrRanges { v4: a.clone(), v6: Vec::new() }.complement().v4;
    ports_and(&c, &ports_full())
}

fn port_set(p: &Ports) -> PortSet {
    if *p == ports_full() {
        return PortSet::Any;
    }
    PortSet::Ranges(
        p.iter().map(|&(a, b)| (u16::try_from(a).unwrap_or(u16::MAX), u16::try_from(b).unwrap_or(u16::MAX))).collect(),
    )
}

/// A hashable mirror of the classifier's ICMP match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Icmp {
    Any,
    Type(u8),
    TypeCode(u8, u8),
    NotType(u8),
    NotTypeCode(u8, u8),
}

impl Icmp {
    fn to_match(self) -> IcmpMatch {
        match self {
            Icmp::Any => IcmpMatch::Any,
            Icmp::Type(t) => IcmpMatch::Type(t),
            Icmp::TypeCode(t, c) => IcmpMatch::TypeCode(t, c),
            Icmp::NotType(t) => IcmpMatch::NotType(t),
            Icmp::NotTypeCode(t, c) => IcmpMatch::NotTypeCode(t, c),
        }
    }
}

/// One side of a rule as a disjunction member: address set, port set, protocols.
#[derive(Debug, Clone)]
struct Alt {
    addr: AddrRanges,
    ports: Ports,
    protos: Protos,
}

impl Alt {
    fn and(&self, o: &Alt) -> Option<Alt> {
        let a = Alt {
            addr: self.addr.intersect(&o.addr),
            ports: ports_and(&self.ports, &o.ports),
            protos: self.protos.and(o.protos),
        };
        (!a.addr.is_empty() && !a.ports.is_empty() && !a.protos.is_empty()).then_some(a)
    }
}

/// Numeric ranges and names of a port list.
fn split_ports(ports: &[Port]) -> (Ports, Vec<&str>) {
    let ranges = ports_of(ports.iter().filter_map(|p| match p {
        Port::Range { min, max } => Some((*min, *max)),
        Port::Named(_) => None,
    }));
    let names = ports
        .iter()
        .filter_map(|p| match p {
            Port::Named(n) => Some(n.as_str()),
            Port::Range { .. } => None,
        })
        .collect();
    (ranges, names)
}

fn alts_and(a: &[Alt], b: &[Alt]) -> Vec<Alt> {
    a.iter().flat_map(|x| b.iter().filter_map(move |y| x.and(y))).collect()
}

/// One classifier rule before conversion (hashable, for the content-addressed cache).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Piece {
    src: AddrRanges,
    dst: AddrRanges,
    src_ports: Ports,
    dst_ports: Ports,
    protos: Protos,
    icmp: Icmp,
}

impl Piece {
    fn to_rule(&self) -> ClassifierRule {
        let addr = |a: &AddrRanges| if a.is_full() { AddrSet::Any } else { AddrSet::Nets(a.to_nets()) };
        ClassifierRule {
            src: addr(&self.src),
            dst: addr(&self.dst),
            protocol: self.protos.to_set(),
            src_ports: port_set(&self.src_ports),
            dst_ports: port_set(&self.dst_ports),
            icmp: self.icmp.to_match(),
            action: RuleAction::Allow,
            payload: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct RuleKey {
    action: RuleAction,
    trace: TraceId,
    pieces: Vec<Piece>,
    plain: Option<Vec<Piece>>,
}

fn rule_action(a: Action) -> RuleAction {
    match a {
        Action::Allow => RuleAction::Allow,
        Action::Deny => RuleAction::Deny,
        Action::Pass => RuleAction::Pass,
        Action::Log => RuleAction::Log,
    }
}

fn dir_index(d: Direction) -> usize {
    match d {
        Direction::Ingress => 0,
        Direction::Egress => 1,
    }
}

/// The compiler, with what it keeps between compiles (see the module docs).
#[derive(Debug)]
pub struct Compiler {
    /// Policies with at most this many classifier rules are matched linearly
    /// ([`moat_fastpath::classify::policy::LINEAR_MAX_PIECES`] by default; 0 = always a tree).
    pub linear_max_pieces: usize,
    traces: Vec<TraceInfo>,
    trace_ids: HashMap<TraceInfo, TraceId>,
    stages: HashMap<Vec<RuleKey>, Arc<PolicyRules>>,
}

/// Per-compile indices over the resolved model.
struct Ctx<'a> {
    r: &'a Resolved,
    /// Endpoints, then network sets.
    labels: Vec<&'a LabelMap>,
    /// Addresses each owner stands for: an endpoint's addresses it is the first owner of, a
    /// network set's nets.
    addrs: Vec<AddrRanges>,
    by_kv: HashMap<(&'a str, &'a str), Vec<u32>>,
    by_key: HashMap<&'a str, Vec<u32>>,
    /// Named port name → endpoints declaring it.
    by_port_name: HashMap<&'a str, Vec<u32>>,
    selected: HashMap<&'a Selector, Arc<AddrRanges>>,
    named_cache: HashMap<NamedKey, Arc<NamedAddrs>>,
}

/// (protocol, port) → addresses declaring a named port with that value.
type NamedAddrs = BTreeMap<(u8, u16), AddrRanges>;

/// Named-port names and the selector they are resolved under.
type NamedKey = (Vec<String>, Option<Selector>);

impl<'a> Ctx<'a> {
    fn new(r: &'a Resolved) -> Ctx<'a> {
        let mut first: HashMap<IpAddr, usize> = HashMap::new();
        for (i, e) in r.endpoints.iter().enumerate() {
            for ip in &e.ips {
                first.entry(*ip).or_insert(i);
            }
        }
        let mut addrs: Vec<AddrRanges> = r
            .endpoints
            .iter()
            .enumerate()
            .map(|(i, e)| AddrRanges::from_ips(e.ips.iter().copied().filter(|ip| first.get(ip) == Some(&i))))
            .collect();
        addrs.extend(r.network_sets.iter().map(|s| AddrRanges::from_nets(&s.nets)));
        let labels: Vec<&LabelMap> =
            r.endpoints.iter().map(|e| &e.labels).chain(r.network_sets.iter().map(|s| &s.labels)).collect();
        let mut by_kv: HashMap<(&str, &str), Vec<u32>> = HashMap::new();
        let mut by_key: HashMap<&str, Vec<u32>> = HashMap::new();
        for (i, l) in labels.iter().enumerate() {
            let i = u32::try_from(i).unwrap_or(u32::MAX);
            for (k, v) in l.iter() {
                by_kv.entry((k.as_str(), v.as_str())).or_default().push(i);
                by_key.entry(k.as_str()).or_default().push(i);
            }
        }
        let mut by_port_name: HashMap<&str, Vec<u32>> = HashMap::new();
        for (i, e) in r.endpoints.iter().enumerate() {
            let i = u32::try_from(i).unwrap_or(u32::MAX);
            for np in &e.named_ports {
                let v = by_port_name.entry(np.name.as_str()).or_default();
                if v.last() != Some(&i) {
                    v.push(i);
                }
            }
        }
        Ctx { r, labels, addrs, by_kv, by_key, by_port_name, selected: HashMap::new(), named_cache: HashMap::new() }
    }

    /// Owners (endpoints first, then network sets) matching a selector, in index order; with
    /// `endpoints_only`, only endpoints. Candidates come from the selector's label restrictions
    /// (necessary conditions), the selector itself decides.
    fn matching(&self, sel: &Selector, endpoints_only: bool) -> Vec<u32> {
        let limit = if endpoints_only { self.r.endpoints.len() } else { self.labels.len() };
        let mut best: Option<Vec<u32>> = None;
        for (key, restriction) in sel.label_restrictions() {
            let candidates: Vec<u32> = match (&restriction.must_have_one_of_values, restriction.must_be_present) {
                (Some(values), _) => {
                    let mut v: Vec<u32> = values
                        .iter()
                        .flat_map(|value| self.by_kv.get(&(key, *value)).into_iter().flatten().copied())
                        .collect();
                    v.sort_unstable();
                    v.dedup();
                    v
                }
                (None, true) => self.by_key.get(key).cloned().unwrap_or_default(),
                (None, false) => continue,
            };
            if best.as_ref().is_none_or(|b| candidates.len() < b.len()) {
                best = Some(candidates);
            }
        }
        let all = || (0..u32::try_from(limit).unwrap_or(u32::MAX)).collect::<Vec<u32>>();
        let candidates = best.unwrap_or_else(all);
        candidates
            .into_iter()
            .filter(|&i| (i as usize) < limit)
            .filter(|&i| self.labels.get(i as usize).is_some_and(|l| sel.evaluate(*l)))
            .collect()
    }

    /// Addresses whose owners match `sel`.
    fn selected(&mut self, sel: &'a Selector) -> Arc<AddrRanges> {
        if let Some(a) = self.selected.get(sel) {
            return Arc::clone(a);
        }
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for i in self.matching(sel, false) {
            if let Some(a) = self.addrs.get(i as usize) {
                v4.extend_from_slice(&a.v4);
                v6.extend_from_slice(&a.v6);
            }
        }
        let set = Arc::new(AddrRanges { v4, v6 }.union(&AddrRanges::default()));
        self.selected.insert(sel, Arc::clone(&set));
        set
    }

    /// Named ports: (protocol, port) → addresses of endpoints matching `sel` (all when `None`)
    /// that declare a port of this name.
    fn named(&mut self, names: &[&str], sel: Option<&Selector>) -> Arc<NamedAddrs> {
        let key = (names.iter().map(|n| (*n).to_string()).collect::<Vec<_>>(), sel.cloned());
        if let Some(hit) = self.named_cache.get(&key) {
            return Arc::clone(hit);
        }
        // Collect every range first and normalise once per (protocol, port): unions one address
        // at a time would be quadratic in the number of endpoints declaring the name.
        let mut acc: BTreeMap<(u8, u16), AddrRanges> = BTreeMap::new();
        for name in names {
            for &i in self.by_port_name.get(name).into_iter().flatten() {
                let Some(ep) = self.r.endpoints.get(i as usize) else { continue };
                if !sel.is_none_or(|s| s.evaluate(&ep.labels)) {
                    continue;
                }
                let Some(addr) = self.addrs.get(i as usize) else { continue };
                for np in ep.named_ports.iter().filter(|np| np.name == *name) {
                    let e = acc.entry((np.protocol.number(), np.port)).or_default();
                    e.v4.extend_from_slice(&addr.v4);
                    e.v6.extend_from_slice(&addr.v6);
                }
            }
        }
        let out: BTreeMap<(u8, u16), AddrRanges> =
            acc.into_iter().map(|(k, v)| (k, v.union(&AddrRanges::default()))).collect();
        let out = Arc::new(out);
        self.named_cache.insert(key, Arc::clone(&out));
        out
    }

    fn entity(&mut self, e: &'a ResolvedEntity) -> Vec<Alt> {
        let mut base = AddrRanges::full();
        if !e.nets.is_empty() {
            base = base.intersect(&AddrRanges::from_nets(&e.nets));
        }
        if !e.not_nets.is_empty() {
            base = base.intersect(&AddrRanges::from_nets(&e.not_nets).complement());
        }
        if let Some(s) = &e.selector {
            base = base.intersect(&self.selected(s));
        }
        if let Some(s) = &e.not_selector {
            base = base.intersect(&self.selected(s).complement());
        }
        if base.is_empty() {
            return Vec::new();
        }
        let mut alts = vec![Alt { addr: base, ports: ports_full(), protos: Protos::ALL }];
        let port_protos = Protos::of(&PORT_PROTOCOLS);
        if !e.ports.is_empty() {
            let (ranges, names) = split_ports(&e.ports);
            let mut or = Vec::new();
            if !ranges.is_empty() {
                or.push(Alt { addr: AddrRanges::full(), ports: ranges, protos: port_protos });
            }
            for (&(proto, port), addr) in self.named(&names, e.selector.as_ref()).iter() {
                or.push(Alt {
                    addr: addr.clone(),
                    ports: ports_of([(port, port)]),
                    protos: Protos::only(proto).and(port_protos),
                });
            }
            alts = alts_and(&alts, &or);
        }
        if !e.not_ports.is_empty() {
            let (ranges, names) = split_ports(&e.not_ports);
            let named = self.named(&names, e.selector.as_ref());
            let values = ports_of(named.keys().map(|&(_, p)| (p, p)));
            let mut or = vec![
                Alt { addr: AddrRanges::full(), ports: ports_full(), protos: port_protos.not() },
                Alt {
                    addr: AddrRanges::full(),
                    ports: ports_not(
                        &AddrRanges { v4: ranges.clone(), v6: Vec::new() }
                            .union(&AddrRanges { v4: values.clone(), v6: Vec::new() })
                            .v4,
                    ),
                    protos: port_protos,
                },
            ];
            let mut ports: Vec<u16> = named.keys().map(|&(_, p)| p).collect();
            ports.sort_unstable();
            ports.dedup();
            for port in ports {
                if ranges.iter().any(|&(a, b)| a <= u128::from(port) && u128::from(port) <= b) {
                    continue;
                }
                for proto in PORT_PROTOCOLS {
                    let declared = named.get(&(proto, port)).cloned().unwrap_or_default();
                    or.push(Alt {
                        addr: declared.complement(),
                        ports: ports_of([(port, port)]),
                        protos: Protos::only(proto),
                    });
                }
            }
            alts = alts_and(&alts, &or);
        }
        alts
    }
}

/// The ICMP condition of a rule: (matches packets without an ICMP header, pieces for packets
/// with one — empty for none).
fn icmp_condition(r: &ResolvedRule) -> Result<(bool, Vec<Icmp>), ()> {
    let positive = match r.icmp {
        None => (true, vec![Icmp::Any]),
        Some(m) => match (m.icmp_type, m.code) {
            (None, None) => (true, vec![Icmp::Any]),
            (Some(t), None) => (false, vec![Icmp::Type(t)]),
            (Some(t), Some(c)) => (false, vec![Icmp::TypeCode(t, c)]),
            (None, Some(_)) => return Err(()),
        },
    };
    let negative = match r.not_icmp {
        None => (true, vec![Icmp::Any]),
        Some(m) => match (m.icmp_type, m.code) {
            (None, None) => (false, vec![]),
            (Some(t), None) => (true, vec![Icmp::NotType(t)]),
            (Some(t), Some(c)) => (true, vec![Icmp::NotTypeCode(t, c)]),
            (None, Some(_)) => return Err(()),
        },
    };
    let plain = positive.0 && negative.0;
    let header = match (positive.1.as_slice(), negative.1.as_slice()) {
        (_, []) | ([], _) => vec![],
        ([Icmp::Any], n) => n.to_vec(),
        (p, [Icmp::Any]) => p.to_vec(),
        ([Icmp::Type(t)], [Icmp::NotType(u)]) => {
            if t == u {
                vec![]
            } else {
                vec![Icmp::Type(*t)]
            }
        }
        ([Icmp::Type(t)], [Icmp::NotTypeCode(u, c)]) => {
            if t == u {
                (0..=255u8).filter(|x| x != c).map(|x| Icmp::TypeCode(*t, x)).collect()
            } else {
                vec![Icmp::Type(*t)]
            }
        }
        ([Icmp::TypeCode(t, c)], [Icmp::NotType(u)]) => {
            if t == u {
                vec![]
            } else {
                vec![Icmp::TypeCode(*t, *c)]
            }
        }
        ([Icmp::TypeCode(t, c)], [Icmp::NotTypeCode(u, d)]) => {
            if (t, c) == (u, d) {
                vec![]
            } else {
                vec![Icmp::TypeCode(*t, *c)]
            }
        }
        _ => return Err(()),
    };
    Ok((plain, header))
}

fn stage_of(p: &ResolvedPolicy, kind: StepKind) -> bool {
    match kind {
        StepKind::Untracked => p.do_not_track,
        StepKind::PreDnat => p.pre_dnat,
        StepKind::Normal => !p.do_not_track && !p.pre_dnat,
        StepKind::Failsafe => false,
    }
}

fn profile_trace(ep: &Endpoint) -> (FastVerdict, TraceInfo) {
    for profile in &ep.profiles {
        if profile.starts_with(crate::convert::NAMESPACE_PROFILE_PREFIX) || profile == "projectcalico-default-allow" {
            return (
                FastVerdict::Allow,
                TraceInfo {
                    tier: "__PROFILE__".into(),
                    name: format!("__PROFILE__.{profile}"),
                    action: RuleAction::Allow,
                    rule_index: 0,
                },
            );
        }
    }
    (
        FastVerdict::Deny,
        TraceInfo {
            tier: "__PROFILE__".into(),
            name: "__PROFILE__.__NO_MATCH__".into(),
            action: RuleAction::Deny,
            rule_index: -1,
        },
    )
}

impl Default for Compiler {
    fn default() -> Compiler {
        Compiler {
            linear_max_pieces: moat_fastpath::classify::policy::LINEAR_MAX_PIECES,
            traces: Vec::new(),
            trace_ids: HashMap::new(),
            stages: HashMap::new(),
        }
    }
}

impl Compiler {
    pub fn new() -> Compiler {
        Compiler::default()
    }

    fn trace(&mut self, t: TraceInfo) -> Result<TraceId, CompileError> {
        if let Some(&id) = self.trace_ids.get(&t) {
            return Ok(id);
        }
        let id = TraceId::try_from(self.traces.len()).map_err(|_| CompileError::TooMany("trace entries"))?;
        self.traces.push(t.clone());
        self.trace_ids.insert(t, id);
        Ok(id)
    }

    /// A policy stage from its rule keys, from the cache when the same input was compiled before.
    fn stage(
        &mut self,
        keys: Vec<RuleKey>,
        used: &mut HashMap<Vec<RuleKey>, Arc<PolicyRules>>,
        stats: &mut CompileStats,
        what: impl Fn() -> (String, Direction),
    ) -> Result<Arc<PolicyRules>, CompileError> {
        if let Some(s) = used.get(&keys).or_else(|| self.stages.get(&keys)) {
            let s = Arc::clone(s);
            used.insert(keys, Arc::clone(&s));
            return Ok(s);
        }
        let specs = keys
            .iter()
            .map(|k| RuleSpec {
                action: k.action,
                trace: k.trace,
                pieces: k.pieces.iter().map(Piece::to_rule).collect(),
                plain_pieces: k.plain.as_ref().map(|v| v.iter().map(Piece::to_rule).collect()),
            })
            .collect();
        let built = PolicyRules::build_with(specs, self.linear_max_pieces).map_err(|source| {
            let (policy, direction) = what();
            CompileError::Build { policy, direction, source }
        })?;
        stats.built += 1;
        let s = Arc::new(built);
        used.insert(keys, Arc::clone(&s));
        Ok(s)
    }

    fn rule_key<'a>(
        &mut self,
        ctx: &mut Ctx<'a>,
        tier: &str,
        p: &ResolvedPolicy,
        index: usize,
        r: &'a ResolvedRule,
    ) -> Result<RuleKey, CompileError> {
        let trace = self.trace(TraceInfo {
            tier: tier.to_string(),
            name: p.trace_name.clone(),
            action: rule_action(r.action),
            rule_index: i64::try_from(index).unwrap_or(i64::MAX),
        })?;
        let mut key = RuleKey { action: rule_action(r.action), trace, pieces: Vec::new(), plain: None };
        let (plain_ok, header) =
            icmp_condition(r).map_err(|()| CompileError::IcmpCodeWithoutType { policy: p.trace_name.clone() })?;
        if !plain_ok && header.is_empty() {
            return Ok(key);
        }
        let (src, dst) = (ctx.entity(&r.source), ctx.entity(&r.destination));
        let mut protos = Protos::ALL;
        if let Some(pr) = r.protocol {
            protos = protos.and(Protos::only(pr.number()));
        }
        if let Some(pr) = r.not_protocol {
            protos = protos.and(Protos::only(pr.number()).not());
        }
        let family = r.ip_version.map_or_else(AddrRanges::full, AddrRanges::family);
        let mut base = Vec::new();
        for s in &src {
            for d in &dst {
                let sa = s.addr.intersect(&family);
                let da = d.addr.intersect(&family);
                let pr = protos.and(s.protos).and(d.protos);
                let same_family = (!sa.v4.is_empty() && !da.v4.is_empty()) || (!sa.v6.is_empty() && !da.v6.is_empty());
                if !same_family || pr.is_empty() {
                    continue;
                }
                base.push(Piece {
                    src: sa,
                    dst: da,
                    src_ports: s.ports.clone(),
                    dst_ports: d.ports.clone(),
                    protos: pr,
                    icmp: Icmp::Any,
                });
            }
        }
        for b in &base {
            for &h in &header {
                key.pieces.push(Piece { icmp: h, ..b.clone() });
            }
        }
        if plain_ok && header != [Icmp::Any] {
            key.plain = Some(base);
        }
        Ok(key)
    }

    /// Compile a resolved model. Returns the table and what the compile did.
    pub fn compile(
        &mut self,
        r: &Resolved,
        zones: Vec<(IpNetwork, String)>,
    ) -> Result<(PolicyTable, CompileStats), CompileError> {
        let mut ctx = Ctx::new(r);
        let mut stats = CompileStats { endpoints: r.endpoints.len(), ..CompileStats::default() };
        let mut used: HashMap<Vec<RuleKey>, Arc<PolicyRules>> = HashMap::new();

        // Enforced policies in evaluation order, and per endpoint the ones applying to it.
        let policies: Vec<(usize, &ResolvedPolicy)> = r
            .tiers
            .iter()
            .enumerate()
            .flat_map(|(t, tier)| tier.policies.iter().map(move |p| (t, p)))
            .filter(|(_, p)| p.staged.is_none())
            .collect();
        let mut applying: Vec<Vec<u32>> = vec![Vec::new(); r.endpoints.len()];
        for (g, (_, p)) in policies.iter().enumerate() {
            let g = u32::try_from(g).map_err(|_| CompileError::TooMany("policies"))?;
            for e in ctx.matching(&p.applies_to, true) {
                if let Some(v) = applying.get_mut(e as usize) {
                    v.push(g);
                }
            }
        }

        let mut parts = PolicyTableParts { zones, ..PolicyTableParts::default() };
        // (policy, direction) → stage index; failsafe stages by direction.
        let mut stage_index: HashMap<(u32, usize), u32> = HashMap::new();
        let mut failsafe_index: [Option<u32>; 2] = [None, None];
        let mut chain_index: HashMap<Chain, u32> = HashMap::new();

        for (ei, ep) in r.endpoints.iter().enumerate() {
            let ei_u32 = u32::try_from(ei).map_err(|_| CompileError::TooMany("endpoints"))?;
            let mut chains = [0u32; 2];
            for dir in [Direction::Ingress, Direction::Egress] {
                let d = dir_index(dir);
                let mut steps = Vec::new();
                if ep.is_host() {
                    let list = match dir {
                        Direction::Ingress => &r.failsafe.inbound,
                        Direction::Egress => &r.failsafe.outbound,
                    };
                    if !list.is_empty() {
                        let id = match failsafe_index[d] {
                            Some(id) => id,
                            None => {
                                let keys = self.failsafe_keys(list, dir)?;
                                let s = self.stage(keys, &mut used, &mut stats, || ("failsafe".into(), dir))?;
                                let id = push_stage(&mut parts, s)?;
                                failsafe_index[d] = Some(id);
                                id
                            }
                        };
                        steps.push(Step { kind: StepKind::Failsafe, policies: vec![id], end: None });
                    }
                }
                let kinds: &[StepKind] = match (ep.is_host(), dir) {
                    (true, Direction::Ingress) => &[StepKind::Untracked, StepKind::PreDnat, StepKind::Normal],
                    (true, Direction::Egress) => &[StepKind::Untracked, StepKind::Normal],
                    (false, _) => &[StepKind::Normal],
                };
                let mine = applying.get(ei).map(Vec::as_slice).unwrap_or_default();
                for &kind in kinds {
                    for (t, tier) in r.tiers.iter().enumerate() {
                        let applicable: Vec<u32> = mine
                            .iter()
                            .copied()
                            .filter(|&g| {
                                policies
                                    .get(g as usize)
                                    .is_some_and(|(pt, p)| *pt == t && stage_of(p, kind) && p.types.contains(&dir))
                            })
                            .collect();
                        let Some(&last) = applicable.last() else { continue };
                        let mut ids = Vec::with_capacity(applicable.len());
                        for g in applicable {
                            let id = match stage_index.get(&(g, d)) {
                                Some(&id) => id,
                                None => {
                                    let Some(&(_, p)) = policies.get(g as usize) else { continue };
                                    let keys = self.policy_keys(&mut ctx, &tier.name, p, dir)?;
                                    let s = self.stage(keys, &mut used, &mut stats, || (p.trace_name.clone(), dir))?;
                                    let id = push_stage(&mut parts, s)?;
                                    stage_index.insert((g, d), id);
                                    id
                                }
                            };
                            ids.push(id);
                        }
                        let end = if kind == StepKind::Normal {
                            let last_name =
                                policies.get(last as usize).map(|(_, p)| p.trace_name.clone()).unwrap_or_default();
                            let action = match tier.default_action {
                                TierDefaultAction::Deny => RuleAction::Deny,
                                TierDefaultAction::Pass => RuleAction::Pass,
                            };
                            let id = self.trace(TraceInfo {
                                tier: tier.name.clone(),
                                name: last_name,
                                action,
                                rule_index: -1,
                            })?;
                            Some((action, id))
                        } else {
                            None
                        };
                        steps.push(Step { kind, policies: ids, end });
                    }
                }
                let (verdict, info) = profile_trace(ep);
                let profile = (verdict, self.trace(info)?);
                let chain = Chain { steps, profile };
                let next = u32::try_from(chain_index.len()).map_err(|_| CompileError::TooMany("chains"))?;
                let id = *chain_index.entry(chain.clone()).or_insert_with(|| {
                    parts.chains.push(chain);
                    next
                });
                chains[d] = id;
            }
            let (name, namespace) = match &ep.id {
                crate::resolve::EndpointId::Workload { namespace, name } => (name.clone(), Some(namespace.clone())),
                crate::resolve::EndpointId::Host { name } => (name.clone(), None),
            };
            parts.endpoints.push(EndpointInfo { name, namespace, host: ep.is_host(), chains });
            for ip in &ep.ips {
                parts.addresses.entry(*ip).or_insert(ei_u32);
            }
        }
        stats.chains = parts.chains.len();
        stats.policies = parts.policies.len();
        stats.pieces = parts.policies.iter().map(|p| p.pieces()).sum();
        stats.selectors = ctx.selected.len();
        parts.traces = self.traces.clone();
        // Keep only what this compile used: the cache never grows past one model's worth.
        self.stages = used;
        Ok((PolicyTable::new(parts)?, stats))
    }

    fn policy_keys<'a>(
        &mut self,
        ctx: &mut Ctx<'a>,
        tier: &str,
        p: &'a ResolvedPolicy,
        dir: Direction,
    ) -> Result<Vec<RuleKey>, CompileError> {
        p.rules(dir).iter().enumerate().map(|(i, r)| self.rule_key(ctx, tier, p, i, r)).collect()
    }

    fn failsafe_keys(&mut self, list: &[FailsafePort], dir: Direction) -> Result<Vec<RuleKey>, CompileError> {
        let word = match dir {
            Direction::Ingress => "inbound",
            Direction::Egress => "outbound",
        };
        let mut keys = Vec::new();
        for f in list {
            let trace = self.trace(TraceInfo {
                tier: "__FAILSAFE__".into(),
                name: format!("failsafe.{word}.{}.{}", f.protocol.to_string().to_ascii_lowercase(), f.port),
                action: RuleAction::Allow,
                rule_index: 0,
            })?;
            let remote = f.net.map_or_else(AddrRanges::full, |n| AddrRanges::from_nets([&n]));
            let (src, dst) = match dir {
                Direction::Ingress => (remote, AddrRanges::full()),
                Direction::Egress => (AddrRanges::full(), remote),
            };
            let protos = Protos::only(f.protocol.number()).and(Protos::of(&PORT_PROTOCOLS));
            let pieces = if protos.is_empty() {
                Vec::new()
            } else {
                vec![Piece {
                    src,
                    dst,
                    src_ports: ports_full(),
                    dst_ports: ports_of([(f.port, f.port)]),
                    protos,
                    icmp: Icmp::Any,
                }]
            };
            keys.push(RuleKey { action: RuleAction::Allow, trace, pieces, plain: None });
        }
        Ok(keys)
    }
}

fn push_stage(parts: &mut PolicyTableParts, s: Arc<PolicyRules>) -> Result<u32, CompileError> {
    let id = u32::try_from(parts.policies.len()).map_err(|_| CompileError::TooMany("policy stages"))?;
    parts.policies.push(s);
    Ok(id)
}
