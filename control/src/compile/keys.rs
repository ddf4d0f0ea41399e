//! What the full and the incremental compiler share: a rule's classifier pieces from its
//! resolved fields and the address sets its selectors stand for ([`rule_key`]), a policy
//! stage from those pieces ([`build_stage`]), an endpoint's chain from the policies applying
//! to it ([`build_chain`]), and the trace table. Both compilers call exactly these functions,
//! so the incremental path cannot drift from the full one; they differ only in how they find
//! the address sets ([`Sets`]) and which work they skip.

use super::{AddrRanges, CompileError, PORT_PROTOCOLS};
use crate::model::{Action, Direction, LabelMap, NamedPort, Port, TierDefaultAction};
use crate::resolve::{Endpoint, FailsafePort, ResolvedEntity, ResolvedPolicy, ResolvedRule};
use crate::selector::Selector;
use moat_fastpath::classify::Verdict as FastVerdict;
use moat_fastpath::classify::engine::{
    Action as RuleAction, AddrSet, BuildError, IcmpMatch, PortSet, ProtoSet, Rule as ClassifierRule,
};
use moat_fastpath::classify::policy::{Chain, PolicyRules, RuleSpec, Step, StepKind, TraceId, TraceInfo};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Protocol numbers as a 256-bit set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Protos([u64; 4]);

impl Protos {
    pub(super) const ALL: Protos = Protos([u64::MAX; 4]);
    const NONE: Protos = Protos([0; 4]);

    pub(super) fn only(p: u8) -> Protos {
        let mut s = Protos::NONE;
        s.0[usize::from(p / 64)] |= 1 << (p % 64);
        s
    }
    pub(super) fn of(ps: &[u8]) -> Protos {
        ps.iter().fold(Protos::NONE, |acc, &p| acc.or(Protos::only(p)))
    }
    pub(super) fn and(self, o: Protos) -> Protos {
        Protos([self.0[0] & o.0[0], self.0[1] & o.0[1], self.0[2] & o.0[2], self.0[3] & o.0[3]])
    }
    fn or(self, o: Protos) -> Protos {
        Protos([self.0[0] | o.0[0], self.0[1] | o.0[1], self.0[2] | o.0[2], self.0[3] | o.0[3]])
    }
    pub(super) fn not(self) -> Protos {
        Protos([!self.0[0], !self.0[1], !self.0[2], !self.0[3]])
    }
    pub(super) fn is_empty(self) -> bool {
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
pub(super) type Ports = Vec<(u128, u128)>;

pub(super) fn ports_full() -> Ports {
    vec![(0, 65535)]
}

pub(super) fn ports_of(ranges: impl IntoIterator<Item = (u16, u16)>) -> Ports {
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
pub(super) enum Icmp {
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
pub(super) struct Alt {
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

/// One classifier rule before conversion (hashable and comparable: stage caches key on it).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Piece {
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

/// Everything one rule compiles to: equal keys give equal stages.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct RuleKey {
    action: RuleAction,
    trace: TraceId,
    pieces: Vec<Piece>,
    plain: Option<Vec<Piece>>,
}

pub(super) fn rule_action(a: Action) -> RuleAction {
    match a {
        Action::Allow => RuleAction::Allow,
        Action::Deny => RuleAction::Deny,
        Action::Pass => RuleAction::Pass,
        Action::Log => RuleAction::Log,
    }
}

pub(super) fn dir_index(d: Direction) -> usize {
    match d {
        Direction::Ingress => 0,
        Direction::Egress => 1,
    }
}

pub(super) const DIRECTIONS: [Direction; 2] = [Direction::Ingress, Direction::Egress];

/// (protocol, port) → addresses declaring a named port with that value.
pub(super) type NamedAddrs = BTreeMap<(u8, u16), AddrRanges>;

/// Trace entries, interned: an id once given keeps its meaning for the compiler's lifetime, so
/// unchanged stages and chains stay valid across compiles.
#[derive(Debug, Clone, Default)]
pub(super) struct TraceTable {
    list: Vec<TraceInfo>,
    ids: HashMap<TraceInfo, TraceId>,
}

impl TraceTable {
    pub(super) fn id(&mut self, t: TraceInfo) -> Result<TraceId, CompileError> {
        if let Some(&id) = self.ids.get(&t) {
            return Ok(id);
        }
        let id = TraceId::try_from(self.list.len()).map_err(|_| CompileError::TooMany("trace entries"))?;
        self.list.push(t.clone());
        self.ids.insert(t, id);
        Ok(id)
    }

    pub(super) fn len(&self) -> usize {
        self.list.len()
    }

    pub(super) fn list(&self) -> &[TraceInfo] {
        &self.list
    }

    /// Entries from `from` on (those a table built earlier does not have yet).
    pub(super) fn since(&self, from: usize) -> &[TraceInfo] {
        self.list.get(from..).unwrap_or_default()
    }
}

/// Where [`rule_key`] gets the address sets selectors and named ports stand for.
pub(super) trait Sets<'a> {
    /// Addresses whose owner (the endpoint owning it first, or a network set containing it)
    /// matches `sel`.
    fn selected(&mut self, sel: &'a Selector) -> Arc<AddrRanges>;
    /// Named ports over every endpoint matching `sel` (all endpoints when `None`).
    fn named(&mut self, names: &[&str], sel: Option<&'a Selector>) -> Arc<NamedAddrs>;
    /// Named ports over the endpoints `members` (of the policy being compiled) matching `sel`.
    fn named_local(&mut self, members: &[u32], names: &[&str], sel: Option<&Selector>) -> Arc<NamedAddrs>;
}

/// Named ports of endpoints, from what each declares and the addresses it owns.
pub(super) fn named_of<'e>(
    names: &[&str],
    sel: Option<&Selector>,
    endpoints: impl IntoIterator<Item = (&'e LabelMap, &'e [NamedPort], &'e AddrRanges)>,
) -> NamedAddrs {
    // Collect every range first and normalise once per (protocol, port): unions one address at
    // a time would be quadratic in the number of endpoints declaring the name.
    let mut acc: BTreeMap<(u8, u16), AddrRanges> = BTreeMap::new();
    for (labels, ports, addr) in endpoints {
        if addr.is_empty() || !ports.iter().any(|np| names.contains(&np.name.as_str())) {
            continue;
        }
        if !sel.is_none_or(|s| s.evaluate(labels)) {
            continue;
        }
        for np in ports.iter().filter(|np| names.contains(&np.name.as_str())) {
            let e = acc.entry((np.protocol.number(), np.port)).or_default();
            e.v4.extend_from_slice(&addr.v4);
            e.v6.extend_from_slice(&addr.v6);
        }
    }
    acc.into_iter().map(|(k, v)| (k, v.union(&AddrRanges::default()))).collect()
}

/// The endpoints a policy applies to, for the side of its rules that is the endpoint itself
/// (ingress: destination; egress: source).
///
/// A flow only reaches a policy stage through the chain of an endpoint the policy applies to,
/// so on that side the flow's address is one of `addrs` (the addresses those endpoints own
/// first). A selector or named port on that side is therefore intersected with `addrs`: the
/// meaning is the same, the sets stay as small as the policy's reach, and — what makes the
/// incremental path proportional — the stage then depends on its own endpoints only, not on
/// every endpoint in the cluster that declares the port or matches the selector.
#[derive(Debug, Clone, Default)]
pub(super) struct Local {
    /// Endpoints (indices in the compiler's numbering) the policy applies to.
    pub(super) members: Vec<u32>,
    pub(super) addrs: AddrRanges,
}

/// Whether an entity's addresses depend on endpoints (selectors, named ports), so that
/// restricting it to [`Local::addrs`] changes its form; nets and numeric ports are left alone.
pub(super) fn is_dynamic(e: &ResolvedEntity) -> bool {
    let named = |ps: &[Port]| ps.iter().any(|p| matches!(p, Port::Named(_)));
    e.selector.is_some() || e.not_selector.is_some() || named(&e.ports) || named(&e.not_ports)
}

/// Named ports of an entity: over the policy's own endpoints on its local side.
fn named_for<'a>(
    sets: &mut impl Sets<'a>,
    e: &'a ResolvedEntity,
    local: Option<&Local>,
    names: &[&str],
) -> Arc<NamedAddrs> {
    match local {
        Some(l) => sets.named_local(&l.members, names, e.selector.as_ref()),
        None => sets.named(names, e.selector.as_ref()),
    }
}

fn entity<'a>(sets: &mut impl Sets<'a>, e: &'a ResolvedEntity, local: Option<&Local>) -> Vec<Alt> {
    let local = local.filter(|_| is_dynamic(e));
    let mut base = AddrRanges::full();
    if !e.nets.is_empty() {
        base = base.intersect(&AddrRanges::from_nets(&e.nets));
    }
    if !e.not_nets.is_empty() {
        base = base.intersect(&AddrRanges::from_nets(&e.not_nets).complement());
    }
    if let Some(l) = local {
        base = base.intersect(&l.addrs);
    }
    if let Some(s) = &e.selector {
        base = base.intersect(&sets.selected(s));
    }
    if let Some(s) = &e.not_selector {
        base = base.intersect(&sets.selected(s).complement());
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
        for (&(proto, port), addr) in named_for(sets, e, local, &names).iter() {
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
        let named = named_for(sets, e, local, &names);
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

/// Checks what can be checked of a policy without the model: every rule has a compilable
/// ICMP condition. The incremental compiler runs it before it changes anything.
pub(super) fn check_policy(p: &ResolvedPolicy) -> Result<(), CompileError> {
    for r in p.ingress.iter().chain(&p.egress) {
        icmp_condition(r).map_err(|()| CompileError::IcmpCodeWithoutType { policy: p.trace_name.clone() })?;
    }
    Ok(())
}

/// The stage a rule key is computed for.
struct StageOf<'p> {
    tier: &'p str,
    policy: &'p ResolvedPolicy,
    dir: Direction,
    local: Option<&'p Local>,
}

/// One rule's key: its classifier pieces with their trace entry.
fn rule_key<'a>(
    sets: &mut impl Sets<'a>,
    traces: &mut TraceTable,
    stage: &StageOf<'_>,
    index: usize,
    r: &'a ResolvedRule,
) -> Result<RuleKey, CompileError> {
    let StageOf { tier, policy: p, dir, local } = *stage;
    let trace = traces.id(TraceInfo {
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
    let (src_local, dst_local) = match dir {
        Direction::Ingress => (None, local),
        Direction::Egress => (local, None),
    };
    let src = entity(sets, &r.source, src_local);
    let dst = entity(sets, &r.destination, dst_local);
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

/// The keys of one policy stage (policy × direction), in rule order.
pub(super) fn policy_keys<'a>(
    sets: &mut impl Sets<'a>,
    traces: &mut TraceTable,
    tier: &str,
    p: &'a ResolvedPolicy,
    dir: Direction,
    local: Option<&Local>,
) -> Result<Vec<RuleKey>, CompileError> {
    let stage = StageOf { tier, policy: p, dir, local };
    p.rules(dir).iter().enumerate().map(|(i, r)| rule_key(sets, traces, &stage, i, r)).collect()
}

/// The keys of the failsafe stage of one direction.
pub(super) fn failsafe_keys(
    traces: &mut TraceTable,
    list: &[FailsafePort],
    dir: Direction,
) -> Result<Vec<RuleKey>, CompileError> {
    let word = match dir {
        Direction::Ingress => "inbound",
        Direction::Egress => "outbound",
    };
    let mut keys = Vec::new();
    for f in list {
        let trace = traces.id(TraceInfo {
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

/// A policy stage from its keys.
pub(super) fn build_stage(keys: &[RuleKey], linear_max_pieces: usize) -> Result<PolicyRules, BuildError> {
    let specs = keys
        .iter()
        .map(|k| RuleSpec {
            action: k.action,
            trace: k.trace,
            pieces: k.pieces.iter().map(Piece::to_rule).collect(),
            plain_pieces: k.plain.as_ref().map(|v| v.iter().map(Piece::to_rule).collect()),
        })
        .collect();
    PolicyRules::build_with(specs, linear_max_pieces)
}

/// The step kinds an endpoint runs per direction (Felix: failsafe, doNotTrack and preDNAT
/// only for host endpoints; preDNAT only inbound).
pub(super) fn kinds(host: bool, dir: Direction) -> &'static [StepKind] {
    match (host, dir) {
        (true, Direction::Ingress) => &[StepKind::Untracked, StepKind::PreDnat, StepKind::Normal],
        (true, Direction::Egress) => &[StepKind::Untracked, StepKind::Normal],
        (false, _) => &[StepKind::Normal],
    }
}

/// Whether a policy belongs to steps of this kind.
pub(super) fn stage_of(p: &ResolvedPolicy, kind: StepKind) -> bool {
    match kind {
        StepKind::Untracked => p.do_not_track,
        StepKind::PreDnat => p.pre_dnat,
        StepKind::Normal => !p.do_not_track && !p.pre_dnat,
        StepKind::Failsafe => false,
    }
}

/// Whether an endpoint's chain for `dir` uses the policy's stage for `dir`.
pub(super) fn uses_stage(host: bool, p: &ResolvedPolicy, dir: Direction) -> bool {
    p.types.contains(&dir) && kinds(host, dir).iter().any(|&k| stage_of(p, k))
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

/// A policy as a chain sees it: its tier (name, default action) and its stage for the
/// chain's direction.
#[derive(Debug, Clone, Copy)]
pub(super) struct ChainPolicy<'p> {
    pub(super) tier: &'p str,
    pub(super) default_action: TierDefaultAction,
    pub(super) policy: &'p ResolvedPolicy,
    pub(super) stage: u32,
}

/// One endpoint's chain for one direction. `applying` holds the policies applying to the
/// endpoint whose stage for `dir` it uses ([`uses_stage`]), in evaluation order (tiers in
/// order, policies in order within a tier).
pub(super) fn build_chain(
    ep: &Endpoint,
    dir: Direction,
    failsafe: Option<u32>,
    applying: &[ChainPolicy<'_>],
    traces: &mut TraceTable,
) -> Result<Chain, CompileError> {
    let mut steps = Vec::new();
    if let (true, Some(id)) = (ep.is_host(), failsafe) {
        steps.push(Step { kind: StepKind::Failsafe, policies: vec![id], end: None });
    }
    for &kind in kinds(ep.is_host(), dir) {
        let mut i = 0;
        while let Some(first) = applying.get(i) {
            // One step per tier: the run of consecutive policies of the same tier.
            let run = applying.get(i..).unwrap_or_default().iter().take_while(|c| c.tier == first.tier).count();
            let tier: Vec<&ChainPolicy<'_>> =
                applying.get(i..i + run).unwrap_or_default().iter().filter(|c| stage_of(c.policy, kind)).collect();
            i += run.max(1);
            let Some(last) = tier.last() else { continue };
            let end = if kind == StepKind::Normal {
                let action = match last.default_action {
                    TierDefaultAction::Deny => RuleAction::Deny,
                    TierDefaultAction::Pass => RuleAction::Pass,
                };
                let id = traces.id(TraceInfo {
                    tier: last.tier.to_string(),
                    name: last.policy.trace_name.clone(),
                    action,
                    rule_index: -1,
                })?;
                Some((action, id))
            } else {
                None
            };
            steps.push(Step { kind, policies: tier.iter().map(|c| c.stage).collect(), end });
        }
    }
    let (verdict, info) = profile_trace(ep);
    Ok(Chain { steps, profile: (verdict, traces.id(info)?) })
}
