//! The compiled Calico policy the workers consult for each new flow: [`PolicyTable`] and its
//! allocation-free lookup [`PolicyTable::decide`].
//!
//! The table is built by `moat_control::compile` from the same resolution the reference evaluator
//! uses; this module only defines the immutable structure and walks it. Its shape mirrors how
//! Felix programs a dataplane — per endpoint and direction, a chain of tiers, each an ordered list
//! of policies — with every policy's rules precompiled into one multi-field [`Classifier`]:
//!
//! ```text
//! address ──HashMap──► endpoint ──► chain[direction] ──► steps (tiers in order)
//!                                                         │  policies in order: Classifier lookup
//!                                                         │  (first terminal rule) + Log rules
//!                                                         │  end of tier: Deny / Pass with trace
//!                                                         └► profile: Allow / Deny with trace
//! ```
//!
//! * A **policy stage** ([`PolicyRules`]) holds one policy's rules for one direction. Terminal
//!   rules (Allow, Deny, Pass) go into a first-match matcher whose payload is the rule's
//!   position: a linear scan (address sets bisected) up to [`LINEAR_MAX_PIECES`] classifier
//!   rules — most policies have a handful, and a decision-tree [`Classifier`] costs milliseconds
//!   and tens of kilobytes to build even for one rule — and the multi-field [`Classifier`] above
//!   that. Log rules (record and continue) are kept beside it and checked linearly, only those
//!   positioned before the deciding rule — Log rules are rare, and a first-match classifier
//!   cannot express "match and continue".
//! * A **step** is one tier for one endpoint: the policies that apply to it in order, and the
//!   end-of-tier action (Deny or Pass with its trace entry). Failsafe, doNotTrack and preDNAT
//!   steps (host endpoints) have no end-of-tier entry: they fall through.
//! * **Verdict semantics per step kind**: Allow is final except in a preDNAT step, where it skips
//!   the remaining preDNAT steps and continues with normal policy; Deny is final everywhere; Pass
//!   moves to the next step.
//! * **Keys without an ICMP header** (every non-ICMP packet, and later fragments of ICMP ones) are
//!   looked up in a policy's *plain* classifier when it has one: a `notICMP` rule matches such keys
//!   unconditionally, which the classifier's ICMP dimension cannot say together with "ICMP, other
//!   type". Policies without `notICMP` rules have no plain variant.
//!
//! Traces are indices into the table's [`TraceInfo`] list (Calico's flow-log string without its
//! position), at most [`MAX_TRACE`] per side; a longer trace (only possible with many matching Log
//! rules) keeps its first entries and sets [`SideDecision::truncated`], the verdict is unaffected.
//!
//! # Invariants
//! - [`PolicyTable::new`] checks every index (chains, steps, policies, traces), so a lookup never
//!   indexes out of range; a lookup that still meets an inconsistency denies (fail closed).
//! - [`PolicyTable::patched`] derives the next generation from a [`PolicyTableDelta`]: elements
//!   are replaced or appended, never removed, so it checks only what the delta writes (and
//!   everything in debug builds). Unchanged parts are shared with the previous table
//!   ([`SharedVec`] chunks, `Arc`s), so an incremental update costs what it changes.
//! - `decide` never allocates, never panics.

use super::engine::{Action, AddrSet, BuildError, Classifier, IcmpMatch, PortSet, ProtoSet, Rule};
use super::{FlowKey, Verdict};
use ipnetwork::IpNetwork;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

/// Index into [`PolicyTable::traces`].
pub type TraceId = u32;

/// Longest trace kept per side.
pub const MAX_TRACE: usize = 24;

/// One flow-log policy hit without its position: `tier|name|action|ruleIndex`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct TraceInfo {
    pub tier: String,
    pub name: String,
    pub action: Action,
    /// Rule index in the policy; -1 for end-of-tier and no-match entries.
    pub rule_index: i64,
}

impl TraceInfo {
    pub fn action_str(&self) -> &'static str {
        match self.action {
            Action::Allow => "allow",
            Action::Deny => "deny",
            Action::Pass => "pass",
            Action::Log => "log",
        }
    }

    /// The Calico flow-log string at position `index` of a trace.
    pub fn render(&self, index: usize) -> String {
        format!("{index}|{}|{}|{}|{}", self.tier, self.name, self.action_str(), self.rule_index)
    }
}

/// One rule of a policy stage, as the compiler hands it over. `pieces` are the classifier rules
/// whose union is the rule (named ports split a rule by port value); `plain_pieces`, when given,
/// replace them for keys without an ICMP header. The pieces' `action` and `payload` are set by
/// [`PolicyRules::build`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RuleSpec {
    pub action: Action,
    pub trace: TraceId,
    pub pieces: Vec<Rule>,
    pub plain_pieces: Option<Vec<Rule>>,
}

/// Address set for the linear matcher: sorted, disjoint ranges searched by bisection.
#[derive(Debug, Clone)]
struct Addrs {
    any: bool,
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

fn merged<T: Ord + Copy>(mut v: Vec<(T, T)>, next: impl Fn(T) -> Option<T>) -> Vec<(T, T)> {
    v.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(v.len());
    for (lo, hi) in v {
        match out.last_mut() {
            Some(last) if next(last.1).is_none_or(|n| lo <= n) => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out
}

impl Addrs {
    fn new(set: &AddrSet) -> Addrs {
        let AddrSet::Nets(nets) = set else { return Addrs { any: true, v4: Vec::new(), v6: Vec::new() } };
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for n in nets {
            match n {
                IpNetwork::V4(n) => v4.push((u32::from(n.network()), u32::from(n.broadcast()))),
                IpNetwork::V6(n) => {
                    let len = u32::from(n.prefix().min(128));
                    let mask = if len == 0 { 0 } else { u128::MAX << (128 - len) };
                    let lo = u128::from(n.ip()) & mask;
                    v6.push((lo, lo | !mask));
                }
            }
        }
        Addrs { any: false, v4: merged(v4, |x: u32| x.checked_add(1)), v6: merged(v6, |x: u128| x.checked_add(1)) }
    }

    #[inline]
    fn contains(&self, ip: IpAddr) -> bool {
        if self.any {
            return true;
        }
        match ip {
            IpAddr::V4(a) => {
                let x = u32::from(a);
                let i = self.v4.partition_point(|r| r.1 < x);
                self.v4.get(i).is_some_and(|r| r.0 <= x)
            }
            IpAddr::V6(a) => {
                let x = u128::from(a);
                let i = self.v6.partition_point(|r| r.1 < x);
                self.v6.get(i).is_some_and(|r| r.0 <= x)
            }
        }
    }
}

fn ports_match(p: &Option<Vec<(u16, u16)>>, port: u16) -> bool {
    p.as_ref().is_none_or(|r| r.iter().any(|&(lo, hi)| lo <= port && port <= hi))
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

/// A classifier rule in the form the linear matcher checks: the same meaning as
/// `engine::reference::matches`, with address sets bisected instead of scanned.
#[derive(Debug, Clone)]
struct LinearRule {
    src: Addrs,
    dst: Addrs,
    protos: [u64; 4],
    src_ports: Option<Vec<(u16, u16)>>,
    dst_ports: Option<Vec<(u16, u16)>>,
    icmp: IcmpMatch,
    action: Action,
    position: u32,
}

impl LinearRule {
    fn new(r: &Rule) -> LinearRule {
        let protos = match &r.protocol {
            ProtoSet::Any => [u64::MAX; 4],
            ProtoSet::Only(v) => v.iter().fold([0u64; 4], |mut acc, &p| {
                if let Some(w) = acc.get_mut(usize::from(p / 64)) {
                    *w |= 1 << (p % 64);
                }
                acc
            }),
        };
        let ports = |p: &PortSet| match p {
            PortSet::Any => None,
            PortSet::Ranges(r) => Some(r.clone()),
        };
        LinearRule {
            src: Addrs::new(&r.src),
            dst: Addrs::new(&r.dst),
            protos,
            src_ports: ports(&r.src_ports),
            dst_ports: ports(&r.dst_ports),
            icmp: r.icmp,
            action: r.action,
            position: r.payload,
        }
    }

    #[inline]
    fn matches(&self, key: &FlowKey) -> bool {
        let proto_ok =
            self.protos.get(usize::from(key.protocol / 64)).is_some_and(|w| w & (1 << (key.protocol % 64)) != 0);
        proto_ok
            && key.src.is_ipv4() == key.dst.is_ipv4()
            && ports_match(&self.dst_ports, key.dst_port)
            && ports_match(&self.src_ports, key.src_port)
            && icmp_matches(self.icmp, key.icmp)
            && self.src.contains(key.src)
            && self.dst.contains(key.dst)
    }
}

/// Policies with few classifier rules (almost all of them) are matched linearly: building a
/// decision-tree classifier costs milliseconds and tens of kilobytes even for one rule, while a
/// scan of a handful of rules with bisected address sets is a few nanoseconds per rule.
pub const LINEAR_MAX_PIECES: usize = 16;

/// First-match over one policy's terminal rules.
#[derive(Debug, Clone)]
enum Matcher {
    Linear(Vec<LinearRule>),
    // Boxed: a classifier is large inline, and most policies are linear.
    Tree(Box<Classifier>),
}

impl Matcher {
    fn build(rules: &[Rule], linear_max: usize) -> Result<Option<Matcher>, BuildError> {
        if rules.is_empty() {
            Ok(None)
        } else if rules.len() <= linear_max {
            Ok(Some(Matcher::Linear(rules.iter().map(LinearRule::new).collect())))
        } else {
            Classifier::build(rules).map(|c| Some(Matcher::Tree(Box::new(c))))
        }
    }

    /// `(position, action)` of the first matching rule.
    #[inline]
    fn first(&self, key: &FlowKey) -> Option<(u32, Action)> {
        match self {
            Matcher::Linear(rules) => rules.iter().find(|r| r.matches(key)).map(|r| (r.position, r.action)),
            Matcher::Tree(c) => c.lookup(key).map(|m| (m.payload, m.action)),
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Matcher::Linear(rules) => rules
                .iter()
                .map(|r| {
                    std::mem::size_of::<LinearRule>()
                        + (r.src.v4.len() + r.dst.v4.len()) * 8
                        + (r.src.v6.len() + r.dst.v6.len()) * 32
                })
                .sum(),
            Matcher::Tree(c) => c.bytes(),
        }
    }
}

#[derive(Debug, Clone)]
struct LogRule {
    position: u32,
    trace: TraceId,
    pieces: Vec<LinearRule>,
    plain_pieces: Vec<LinearRule>,
}

/// One policy's rules for one direction, compiled.
#[derive(Debug, Clone)]
pub struct PolicyRules {
    main: Option<Matcher>,
    /// Variant for keys without an ICMP header; `None` when it would equal `main`.
    plain: Option<Option<Matcher>>,
    /// Trace id per rule position.
    traces: Vec<TraceId>,
    logs: Vec<LogRule>,
    rules: usize,
    pieces: usize,
    /// The rule specs the stage was built from, when kept: the control side sends them to a
    /// separate fastpath process, which rebuilds the stage from them (`control_link`). The
    /// fastpath itself drops them ([`PolicyRules::build_without_specs`]).
    specs: Option<Arc<[RuleSpec]>>,
}

impl PolicyRules {
    /// Compiles one policy's rules (priority = position), linearly up to
    /// [`LINEAR_MAX_PIECES`] classifier rules, as a decision tree above. The specs are kept
    /// ([`PolicyRules::specs`]) so that the stage can be sent to a fastpath process.
    pub fn build(rules: Vec<RuleSpec>) -> Result<PolicyRules, BuildError> {
        PolicyRules::build_with(rules, LINEAR_MAX_PIECES)
    }

    /// [`PolicyRules::build`] with an explicit linear/tree threshold (0: always a tree; tests use
    /// it to check both matchers against the evaluator).
    pub fn build_with(rules: Vec<RuleSpec>, linear_max: usize) -> Result<PolicyRules, BuildError> {
        let mut built = PolicyRules::compile(&rules, linear_max)?;
        built.specs = Some(Arc::from(rules));
        Ok(built)
    }

    /// [`PolicyRules::build`] without keeping the specs: what a fastpath that only enforces the
    /// stage needs (it never sends it on).
    pub fn build_without_specs(rules: &[RuleSpec]) -> Result<PolicyRules, BuildError> {
        PolicyRules::compile(rules, LINEAR_MAX_PIECES)
    }

    /// The specs the stage was built from, when kept (see [`PolicyRules::build`]).
    pub fn specs(&self) -> Option<&[RuleSpec]> {
        self.specs.as_deref()
    }

    fn compile(rules: &[RuleSpec], linear_max: usize) -> Result<PolicyRules, BuildError> {
        let mut main = Vec::new();
        let mut plain = Vec::new();
        let mut need_plain = false;
        let mut traces = Vec::with_capacity(rules.len());
        let mut logs = Vec::new();
        let mut pieces = 0;
        let n = rules.len();
        for (position, spec) in rules.iter().enumerate() {
            let position = u32::try_from(position).map_err(|_| BuildError::TooManyRules(n))?;
            traces.push(spec.trace);
            need_plain |= spec.plain_pieces.is_some();
            let tag = |r: &Rule| {
                let mut r = r.clone();
                r.action = spec.action;
                r.payload = position;
                r
            };
            let p: Vec<Rule> = spec.pieces.iter().map(tag).collect();
            let pp: Vec<Rule> = match &spec.plain_pieces {
                Some(v) => v.iter().map(tag).collect(),
                None => p.clone(),
            };
            pieces += p.len();
            if spec.action == Action::Log {
                logs.push(LogRule {
                    position,
                    trace: spec.trace,
                    pieces: p.iter().map(LinearRule::new).collect(),
                    plain_pieces: pp.iter().map(LinearRule::new).collect(),
                });
            } else {
                main.extend(p);
                plain.extend(pp);
            }
        }
        let plain = if need_plain { Some(Matcher::build(&plain, linear_max)?) } else { None };
        Ok(PolicyRules { main: Matcher::build(&main, linear_max)?, plain, traces, logs, rules: n, pieces, specs: None })
    }

    /// Number of rules (Log included).
    pub fn len(&self) -> usize {
        self.rules
    }

    pub fn is_empty(&self) -> bool {
        self.rules == 0
    }

    /// Classifier rules after splitting (named ports), Log rules included.
    pub fn pieces(&self) -> usize {
        self.pieces
    }

    /// Whether the policy's terminal rules are in a decision-tree classifier (else linear).
    pub fn uses_tree(&self) -> bool {
        matches!(self.main, Some(Matcher::Tree(_)))
    }

    /// Bytes of the compiled matchers (approximate for linear ones).
    pub fn bytes(&self) -> usize {
        let c = |c: &Option<Matcher>| c.as_ref().map_or(0, Matcher::bytes);
        c(&self.main) + self.plain.as_ref().map_or(0, c)
    }

    /// Heap bytes of the kept specs (0 when not kept): the memory price of being able to send the
    /// stage to a fastpath process.
    pub fn spec_bytes(&self) -> usize {
        fn rule_bytes(r: &Rule) -> usize {
            let nets = |a: &AddrSet| match a {
                AddrSet::Any => 0,
                AddrSet::Nets(n) => n.len() * std::mem::size_of::<IpNetwork>(),
            };
            let ports = |p: &PortSet| match p {
                PortSet::Any => 0,
                PortSet::Ranges(r) => r.len() * 4,
            };
            let protos = match &r.protocol {
                ProtoSet::Any => 0,
                ProtoSet::Only(v) => v.len(),
            };
            std::mem::size_of::<Rule>()
                + nets(&r.src)
                + nets(&r.dst)
                + ports(&r.src_ports)
                + ports(&r.dst_ports)
                + protos
        }
        self.specs.as_deref().map_or(0, |specs| {
            specs
                .iter()
                .map(|s| {
                    std::mem::size_of::<RuleSpec>()
                        + s.pieces.iter().chain(s.plain_pieces.iter().flatten()).map(rule_bytes).sum::<usize>()
                })
                .sum()
        })
    }

    /// The first terminal rule matching `key` as `(action, trace)`; every Log rule before it
    /// that matches is recorded into `trace` first.
    #[inline]
    fn first(&self, key: &FlowKey, trace: &mut SideDecision) -> Option<(Action, TraceId)> {
        let plain = key.icmp.is_none() && self.plain.is_some();
        let matcher = match (&self.plain, plain) {
            (Some(p), true) => p.as_ref(),
            _ => self.main.as_ref(),
        };
        let hit = matcher.and_then(|m| m.first(key));
        let decided_at = hit.map_or(u32::MAX, |(position, _)| position);
        for log in self.logs.iter().take_while(|l| l.position < decided_at) {
            let pieces = if plain { &log.plain_pieces } else { &log.pieces };
            if pieces.iter().any(|r| r.matches(key)) {
                trace.push(log.trace);
            }
        }
        let (position, action) = hit?;
        let id = self.traces.get(position as usize).copied().unwrap_or(TraceId::MAX);
        Some((action, id))
    }
}

/// What kind of stage a step is; decides what Allow means and whether the end of a tier counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum StepKind {
    /// Host-endpoint failsafe ports: Allow is final.
    Failsafe,
    /// doNotTrack policies: Allow and Deny final, the end of a tier falls through.
    Untracked,
    /// preDNAT policies: Deny final, Allow skips to normal policy, the end of a tier falls through.
    PreDnat,
    /// Normal policy: Allow and Deny final, the end of a tier applies `end`.
    Normal,
}

/// One tier (or the failsafe list) for one endpoint and direction.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Step {
    pub kind: StepKind,
    /// Indices into [`PolicyTable`]'s policy stages, in evaluation order.
    pub policies: Vec<u32>,
    /// End of tier: `Deny` (final) or `Pass` (continue) with its trace entry; `None` to fall
    /// through silently.
    pub end: Option<(Action, TraceId)>,
}

/// The whole decision for one endpoint and direction: steps, then the profile outcome.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Chain {
    pub steps: Vec<Step>,
    pub profile: (Verdict, TraceId),
}

/// An endpoint policy is enforced on, for flow logs and for the walk.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EndpointInfo {
    pub name: String,
    /// `None` for host endpoints.
    pub namespace: Option<String>,
    pub host: bool,
    /// Chain indices: `[ingress, egress]`.
    pub chains: [u32; 2],
}

/// Which side of a flow a decision is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    Ingress = 0,
    Egress = 1,
}

/// The verdict of one side with its trace (indices into [`PolicyTable::trace_info`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SideDecision {
    /// Index into [`PolicyTable::endpoints`].
    pub endpoint: u32,
    pub verdict: Verdict,
    /// More than [`MAX_TRACE`] entries: the trace holds the first ones.
    pub truncated: bool,
    len: u8,
    ids: [TraceId; MAX_TRACE],
}

impl SideDecision {
    fn new(endpoint: u32) -> SideDecision {
        SideDecision { endpoint, verdict: Verdict::Deny, truncated: false, len: 0, ids: [0; MAX_TRACE] }
    }

    #[inline]
    fn push(&mut self, id: TraceId) {
        match self.ids.get_mut(usize::from(self.len)) {
            Some(slot) => {
                *slot = id;
                self.len += 1;
            }
            None => self.truncated = true,
        }
    }

    /// Trace entries in order.
    pub fn trace(&self) -> &[TraceId] {
        self.ids.get(..usize::from(self.len)).unwrap_or(&[])
    }
}

/// The decision for a new flow: allowed iff every known side allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowDecision {
    pub verdict: Verdict,
    pub egress: Option<SideDecision>,
    pub ingress: Option<SideDecision>,
}

/// Everything a [`PolicyTable`] is made of; checked by [`PolicyTable::new`].
#[derive(Debug, Clone, Default)]
pub struct PolicyTableParts {
    pub endpoints: Vec<EndpointInfo>,
    /// Address → endpoint index (the first endpoint owning the address).
    pub addresses: HashMap<IpAddr, u32>,
    pub chains: Vec<Chain>,
    pub policies: Vec<Arc<PolicyRules>>,
    pub traces: Vec<TraceInfo>,
    /// IP pools: `(cidr, name)`; the longest prefix containing an address is its zone.
    pub zones: Vec<(IpNetwork, String)>,
}

/// What changes between one table and the next, for [`PolicyTable::patched`]. Index writes
/// replace an element, or append one when the index equals the current length (writes are
/// applied in the order given); nothing is ever removed, so every index an unchanged element
/// holds stays in range and only the written elements need checking.
#[derive(Debug, Clone, Default)]
pub struct PolicyTableDelta {
    pub endpoints: Vec<(u32, EndpointInfo)>,
    /// `None` removes the address (no endpoint owns it any more).
    pub addresses: Vec<(IpAddr, Option<u32>)>,
    pub chains: Vec<(u32, Chain)>,
    pub policies: Vec<(u32, Arc<PolicyRules>)>,
    /// Appended to the trace list.
    pub traces: Vec<TraceInfo>,
    /// Replaces the zones when given.
    pub zones: Option<Vec<(IpNetwork, String)>>,
}

impl PolicyTableDelta {
    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
            && self.addresses.is_empty()
            && self.chains.is_empty()
            && self.policies.is_empty()
            && self.traces.is_empty()
            && self.zones.is_none()
    }
}

/// Why parts do not make a table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyTableError {
    #[error("{what} {index} refers to missing {missing} {target}")]
    Dangling { what: &'static str, index: usize, missing: &'static str, target: u64 },
    #[error("{what} {index} written past the end (length {len})")]
    Gap { what: &'static str, index: usize, len: usize },
}

/// Elements per chunk of a [`SharedVec`]: small enough that copying one on a write is cheap,
/// large enough that the chunk list of a large table stays short.
const SHARED_CHUNK: usize = 64;

/// A vector that table generations share: fixed-size chunks behind `Arc`s. A new generation
/// that rewrites a few elements copies only their chunks and the (short) chunk list, so an
/// incremental update costs what it changes rather than the size of the table, and a table in
/// use by the workers is never mutated.
#[derive(Debug, Clone)]
pub struct SharedVec<T> {
    chunks: Vec<Arc<[T]>>,
    len: usize,
}

impl<T> Default for SharedVec<T> {
    fn default() -> SharedVec<T> {
        SharedVec { chunks: Vec::new(), len: 0 }
    }
}

impl<T> SharedVec<T> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    pub fn get(&self, index: usize) -> Option<&T> {
        self.chunks.get(index / SHARED_CHUNK)?.get(index % SHARED_CHUNK)
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> + '_ {
        self.chunks.iter().flat_map(|c| c.iter())
    }

    /// Elements per chunk: [`SharedVec::shares_chunk_with`] answers for this many at a time.
    pub const CHUNK: usize = SHARED_CHUNK;

    /// Whether the chunk holding `index` is the same allocation in `other` (then the elements of
    /// that chunk are equal in both without comparing them): how a sender finds what changed
    /// between two generations derived by [`PolicyTable::patched`].
    pub fn shares_chunk_with(&self, other: &SharedVec<T>, index: usize) -> bool {
        let c = index / SHARED_CHUNK;
        match (self.chunks.get(c), other.chunks.get(c)) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl<T: Clone> SharedVec<T> {
    fn from_vec(v: Vec<T>) -> SharedVec<T> {
        let len = v.len();
        SharedVec { chunks: v.chunks(SHARED_CHUNK).map(Arc::from).collect(), len }
    }

    /// Replaces element `index`, or appends when `index` is the length; `false` past the end.
    fn set(&mut self, index: usize, value: T) -> bool {
        if index > self.len {
            return false;
        }
        let (c, i) = (index / SHARED_CHUNK, index % SHARED_CHUNK);
        match self.chunks.get_mut(c) {
            Some(chunk) => match Arc::get_mut(chunk).and_then(|c| c.get_mut(i)) {
                // Already copied by an earlier write of the same delta.
                Some(slot) => *slot = value,
                None => {
                    // Copy-on-write: the chunk is shared with the table in force (or grows).
                    let mut v = chunk.to_vec();
                    match v.get_mut(i) {
                        Some(slot) => *slot = value,
                        None => v.push(value),
                    }
                    *chunk = Arc::from(v);
                }
            },
            None => self.chunks.push(Arc::from(vec![value])),
        }
        self.len = self.len.max(index + 1);
        true
    }

    /// Appends, copying at most the last (partial) chunk.
    fn extend(&mut self, items: Vec<T>) {
        if items.is_empty() {
            return;
        }
        let mut tail: Vec<T> = match self.chunks.last() {
            Some(c) if c.len() < SHARED_CHUNK => {
                let v = c.to_vec();
                self.chunks.pop();
                v
            }
            _ => Vec::new(),
        };
        for item in items {
            tail.push(item);
            self.len += 1;
            if tail.len() == SHARED_CHUNK {
                self.chunks.push(Arc::from(std::mem::take(&mut tail)));
            }
        }
        if !tail.is_empty() {
            self.chunks.push(Arc::from(tail));
        }
    }

    fn to_vec(&self) -> Vec<T> {
        self.iter().cloned().collect()
    }
}

impl<T> std::ops::Index<usize> for SharedVec<T> {
    type Output = T;

    /// Panics when out of range, like a slice; the lookup path uses [`SharedVec::get`].
    fn index(&self, index: usize) -> &T {
        match self.get(index) {
            Some(v) => v,
            None => panic!("index {index} out of range for a SharedVec of length {}", self.len),
        }
    }
}

/// The compiled policy of a cluster; immutable, `Send + Sync`. Its parts are shared (`Arc`)
/// with the tables derived from it by [`PolicyTable::patched`].
#[derive(Debug, Clone)]
pub struct PolicyTable {
    endpoints: SharedVec<EndpointInfo>,
    addresses: Arc<HashMap<IpAddr, u32>>,
    chains: SharedVec<Chain>,
    policies: SharedVec<Arc<PolicyRules>>,
    traces: SharedVec<TraceInfo>,
    /// Longest prefix first.
    zones: Arc<[(IpNetwork, String)]>,
}

fn dangling(what: &'static str, index: usize, missing: &'static str, target: u32) -> PolicyTableError {
    PolicyTableError::Dangling { what, index, missing, target: u64::from(target) }
}

fn check_endpoint(index: usize, e: &EndpointInfo, chains: usize) -> Result<(), PolicyTableError> {
    match e.chains.iter().find(|&&c| c as usize >= chains) {
        Some(&c) => Err(dangling("endpoint", index, "chain", c)),
        None => Ok(()),
    }
}

fn check_chain(index: usize, c: &Chain, policies: usize, traces: usize) -> Result<(), PolicyTableError> {
    if c.profile.1 as usize >= traces {
        return Err(dangling("chain", index, "trace", c.profile.1));
    }
    for s in &c.steps {
        if let Some(&p) = s.policies.iter().find(|&&p| p as usize >= policies) {
            return Err(dangling("chain", index, "policy", p));
        }
        if let Some((_, t)) = s.end {
            if t as usize >= traces {
                return Err(dangling("chain", index, "trace", t));
            }
        }
    }
    Ok(())
}

fn check_policy(index: usize, p: &PolicyRules, traces: usize) -> Result<(), PolicyTableError> {
    match p.traces.iter().chain(p.logs.iter().map(|l| &l.trace)).find(|&&t| t as usize >= traces) {
        Some(&t) => Err(dangling("policy", index, "trace", t)),
        None => Ok(()),
    }
}

fn sort_zones(mut zones: Vec<(IpNetwork, String)>) -> Arc<[(IpNetwork, String)]> {
    zones.sort_by(|a, b| b.0.prefix().cmp(&a.0.prefix()).then_with(|| a.1.cmp(&b.1)));
    Arc::from(zones)
}

impl PolicyTable {
    /// Checks every index and sorts the zones for longest-prefix lookup.
    pub fn new(parts: PolicyTableParts) -> Result<PolicyTable, PolicyTableError> {
        let table = PolicyTable {
            endpoints: SharedVec::from_vec(parts.endpoints),
            addresses: Arc::new(parts.addresses),
            chains: SharedVec::from_vec(parts.chains),
            policies: SharedVec::from_vec(parts.policies),
            traces: SharedVec::from_vec(parts.traces),
            zones: sort_zones(parts.zones),
        };
        table.check()?;
        Ok(table)
    }

    /// Every index of the table (what [`PolicyTable::new`] checks).
    fn check(&self) -> Result<(), PolicyTableError> {
        if let Some(&e) = self.addresses.values().find(|&&e| e as usize >= self.endpoints.len()) {
            return Err(dangling("address", 0, "endpoint", e));
        }
        for (i, e) in self.endpoints.iter().enumerate() {
            check_endpoint(i, e, self.chains.len())?;
        }
        for (i, c) in self.chains.iter().enumerate() {
            check_chain(i, c, self.policies.len(), self.traces.len())?;
        }
        for (i, p) in self.policies.iter().enumerate() {
            check_policy(i, p, self.traces.len())?;
        }
        Ok(())
    }

    /// The next table: this one with `delta` applied, sharing every unchanged part. Only what
    /// the delta writes is checked (the rest was checked when it was written and no length
    /// shrinks); debug builds check the whole result as well.
    pub fn patched(&self, delta: PolicyTableDelta) -> Result<PolicyTable, PolicyTableError> {
        fn write<T: Clone>(
            v: &mut SharedVec<T>,
            what: &'static str,
            writes: Vec<(u32, T)>,
        ) -> Result<Vec<usize>, PolicyTableError> {
            let mut written = Vec::with_capacity(writes.len());
            for (i, value) in writes {
                let i = i as usize;
                if !v.set(i, value) {
                    return Err(PolicyTableError::Gap { what, index: i, len: v.len() });
                }
                written.push(i);
            }
            Ok(written)
        }
        let mut next = self.clone();
        next.traces.extend(delta.traces);
        let policies = write(&mut next.policies, "policy", delta.policies)?;
        let chains = write(&mut next.chains, "chain", delta.chains)?;
        let endpoints = write(&mut next.endpoints, "endpoint", delta.endpoints)?;
        if !delta.addresses.is_empty() {
            let map = Arc::make_mut(&mut next.addresses);
            for (ip, e) in delta.addresses {
                match e {
                    Some(e) if e as usize >= next.endpoints.len() => return Err(dangling("address", 0, "endpoint", e)),
                    Some(e) => map.insert(ip, e),
                    None => map.remove(&ip),
                };
            }
        }
        if let Some(zones) = delta.zones {
            next.zones = sort_zones(zones);
        }
        for i in policies {
            if let Some(p) = next.policies.get(i) {
                check_policy(i, p, next.traces.len())?;
            }
        }
        for i in chains {
            if let Some(c) = next.chains.get(i) {
                check_chain(i, c, next.policies.len(), next.traces.len())?;
            }
        }
        for i in endpoints {
            if let Some(e) = next.endpoints.get(i) {
                check_endpoint(i, e, next.chains.len())?;
            }
        }
        if cfg!(debug_assertions) {
            next.check()?;
        }
        Ok(next)
    }

    /// Endpoints by index ([`SideDecision::endpoint`]).
    pub fn endpoints(&self) -> &SharedVec<EndpointInfo> {
        &self.endpoints
    }

    pub fn trace_info(&self, id: TraceId) -> Option<&TraceInfo> {
        self.traces.get(id as usize)
    }

    pub fn traces(&self) -> &SharedVec<TraceInfo> {
        &self.traces
    }

    /// Compiled policy stages (for sizes and statistics).
    pub fn policies(&self) -> &SharedVec<Arc<PolicyRules>> {
        &self.policies
    }

    pub fn chains(&self) -> &SharedVec<Chain> {
        &self.chains
    }

    /// The parts, as [`PolicyTable::new`] takes them (a copy: the table stores them shared).
    pub fn parts(&self) -> PolicyTableParts {
        PolicyTableParts {
            endpoints: self.endpoints.to_vec(),
            addresses: HashMap::clone(&self.addresses),
            chains: self.chains.to_vec(),
            policies: self.policies.to_vec(),
            traces: self.traces.to_vec(),
            zones: self.zones.to_vec(),
        }
    }

    /// Address → endpoint index.
    pub fn addresses(&self) -> &HashMap<IpAddr, u32> {
        &self.addresses
    }

    /// Whether both tables hold the very same address map (then it is unchanged).
    pub fn shares_addresses_with(&self, other: &PolicyTable) -> bool {
        Arc::ptr_eq(&self.addresses, &other.addresses)
    }

    /// IP pools, longest prefix first.
    pub fn zones(&self) -> &[(IpNetwork, String)] {
        &self.zones
    }

    /// The endpoint owning an address.
    #[inline]
    pub fn endpoint_of(&self, ip: IpAddr) -> Option<u32> {
        self.addresses.get(&ip).copied()
    }

    /// The IP pool (zone) containing an address, longest prefix first.
    pub fn zone(&self, ip: IpAddr) -> Option<&str> {
        self.zones.iter().find(|(n, _)| n.contains(ip)).map(|(_, z)| z.as_str())
    }

    /// Bytes of the compiled classifiers (the bulk of the structure).
    pub fn classifier_bytes(&self) -> usize {
        self.policies.iter().map(|p| p.bytes()).sum()
    }

    /// Decides a new flow: the source's egress side and the destination's ingress side, each
    /// when the address belongs to a known endpoint.
    #[inline]
    pub fn decide(&self, key: &FlowKey) -> FlowDecision {
        let egress = self.endpoint_of(key.src).map(|e| self.side(e, Side::Egress, key));
        let ingress = self.endpoint_of(key.dst).map(|e| self.side(e, Side::Ingress, key));
        let denied = [&egress, &ingress].iter().any(|s| s.is_some_and(|s| s.verdict == Verdict::Deny));
        FlowDecision { verdict: if denied { Verdict::Deny } else { Verdict::Allow }, egress, ingress }
    }

    /// Only the verdict (what a worker needs).
    #[inline]
    pub fn verdict(&self, key: &FlowKey) -> Verdict {
        self.decide(key).verdict
    }

    /// Decides one side for endpoint `endpoint`.
    pub fn side(&self, endpoint: u32, side: Side, key: &FlowKey) -> SideDecision {
        let mut out = SideDecision::new(endpoint);
        out.verdict = self.walk(endpoint, side, key, &mut out).unwrap_or(Verdict::Deny);
        out
    }

    /// `None` only for an inconsistent table (denied by the caller).
    fn walk(&self, endpoint: u32, side: Side, key: &FlowKey, out: &mut SideDecision) -> Option<Verdict> {
        let ep = self.endpoints.get(endpoint as usize)?;
        let chain = self.chains.get(*ep.chains.get(side as usize)? as usize)?;
        let mut pre_dnat_allowed = false;
        'steps: for step in &chain.steps {
            if pre_dnat_allowed && step.kind == StepKind::PreDnat {
                continue;
            }
            for &p in &step.policies {
                let policy = self.policies.get(p as usize)?;
                let Some((action, trace)) = policy.first(key, out) else { continue };
                out.push(trace);
                match (action, step.kind) {
                    (Action::Allow, StepKind::PreDnat) => {
                        pre_dnat_allowed = true;
                        continue 'steps;
                    }
                    (Action::Allow, _) => return Some(Verdict::Allow),
                    (Action::Deny, _) => return Some(Verdict::Deny),
                    (Action::Pass, _) => continue 'steps,
                    // Log rules are never in a classifier.
                    (Action::Log, _) => return None,
                }
            }
            match step.end {
                Some((Action::Deny, t)) => {
                    out.push(t);
                    return Some(Verdict::Deny);
                }
                Some((_, t)) => out.push(t),
                None => {}
            }
        }
        out.push(chain.profile.1);
        Some(chain.profile.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::engine::{AddrSet, PortSet, ProtoSet};

    fn key(src: &str, dst: &str, port: u16) -> FlowKey {
        FlowKey {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            protocol: 6,
            src_port: 1,
            dst_port: port,
            icmp: None,
        }
    }

    fn trace(tier: &str, name: &str, action: Action, rule_index: i64) -> TraceInfo {
        TraceInfo { tier: tier.into(), name: name.into(), action, rule_index }
    }

    /// One pod 10.0.0.2 with one tier: a Log rule, then allow port 80 from 10.0.0.1; end of tier deny.
    fn table() -> PolicyTable {
        let from = Rule { src: AddrSet::Nets(vec!["10.0.0.1/32".parse().unwrap()]), ..Rule::default() };
        let p = PolicyRules::build(vec![
            RuleSpec { action: Action::Log, trace: 0, pieces: vec![Rule::default()], plain_pieces: None },
            RuleSpec {
                action: Action::Allow,
                trace: 1,
                pieces: vec![Rule {
                    protocol: ProtoSet::Only(vec![6]),
                    dst_ports: PortSet::Ranges(vec![(80, 80)]),
                    ..from
                }],
                plain_pieces: None,
            },
        ])
        .unwrap();
        let parts = PolicyTableParts {
            endpoints: vec![EndpointInfo {
                name: "b".into(),
                namespace: Some("ns".into()),
                host: false,
                chains: [0, 1],
            }],
            addresses: HashMap::from([("10.0.0.2".parse().unwrap(), 0)]),
            chains: vec![
                Chain {
                    steps: vec![Step { kind: StepKind::Normal, policies: vec![0], end: Some((Action::Deny, 2)) }],
                    profile: (Verdict::Allow, 3),
                },
                Chain { steps: vec![], profile: (Verdict::Allow, 3) },
            ],
            policies: vec![Arc::new(p)],
            traces: vec![
                trace("default", "ns/default.p", Action::Log, 0),
                trace("default", "ns/default.p", Action::Allow, 1),
                trace("default", "ns/default.p", Action::Deny, -1),
                trace("__PROFILE__", "__PROFILE__.kns.ns", Action::Allow, 0),
            ],
            zones: vec![
                ("10.0.0.0/8".parse().unwrap(), "wide".into()),
                ("10.0.0.0/24".parse().unwrap(), "pods".into()),
            ],
        };
        PolicyTable::new(parts).unwrap()
    }

    #[test]
    fn walks_log_allow_end_of_tier_and_profile() {
        let t = table();
        let d = t.decide(&key("10.0.0.1", "10.0.0.2", 80));
        assert_eq!(d.verdict, Verdict::Allow);
        assert!(d.egress.is_none());
        assert_eq!(d.ingress.unwrap().trace(), &[0, 1]);
        let d = t.decide(&key("10.0.0.1", "10.0.0.2", 81));
        assert_eq!(d.verdict, Verdict::Deny);
        assert_eq!(d.ingress.unwrap().trace(), &[0, 2]);
        // Egress of the pod: no tier applies, the profile allows.
        let d = t.decide(&key("10.0.0.2", "10.9.9.9", 81));
        assert_eq!(d.verdict, Verdict::Allow);
        assert_eq!(d.egress.unwrap().trace(), &[3]);
        assert_eq!(t.trace_info(2).unwrap().render(1), "1|default|ns/default.p|deny|-1");
        assert_eq!(t.zone("10.0.0.9".parse().unwrap()), Some("pods"));
        assert_eq!(t.zone("10.1.0.9".parse().unwrap()), Some("wide"));
        assert_eq!(t.zone("11.1.0.9".parse().unwrap()), None);
    }

    #[test]
    fn dangling_indices_are_refused() {
        let mut parts = table().parts().clone();
        parts.chains[0].steps[0].policies.push(7);
        assert!(PolicyTable::new(parts).is_err());
        let mut parts = table().parts().clone();
        parts.endpoints[0].chains[1] = 9;
        assert!(PolicyTable::new(parts).is_err());
    }

    #[test]
    fn patches_share_what_they_do_not_change_and_check_what_they_write() {
        let t = table();
        // A second pod 10.0.0.3 with the first pod's chains, a new trace, and a new zone list.
        let delta = PolicyTableDelta {
            endpoints: vec![(
                1,
                EndpointInfo { name: "c".into(), namespace: Some("ns".into()), host: false, chains: [1, 1] },
            )],
            addresses: vec![("10.0.0.3".parse().unwrap(), Some(1)), ("10.0.0.2".parse().unwrap(), None)],
            traces: vec![trace("__PROFILE__", "__PROFILE__.kns.other", Action::Allow, 0)],
            chains: vec![(1, Chain { steps: vec![], profile: (Verdict::Allow, 4) })],
            zones: Some(vec![("10.0.0.0/8".parse().unwrap(), "wide".into())]),
            ..PolicyTableDelta::default()
        };
        let next = t.patched(delta).unwrap();
        assert_eq!(next.endpoint_of("10.0.0.3".parse().unwrap()), Some(1));
        assert_eq!(next.endpoint_of("10.0.0.2".parse().unwrap()), None);
        assert_eq!(next.endpoints().len(), 2);
        assert_eq!(next.traces().len(), 5);
        assert_eq!(next.zone("10.0.0.9".parse().unwrap()), Some("wide"));
        let d = next.decide(&key("10.0.0.3", "10.9.9.9", 80));
        assert_eq!(d.egress.unwrap().trace(), &[4]);
        // The old table is untouched; the policy stage is the same allocation in both.
        assert_eq!(t.endpoint_of("10.0.0.2".parse().unwrap()), Some(0));
        assert_eq!(t.traces().len(), 4);
        assert!(Arc::ptr_eq(&t.policies()[0], &next.policies()[0]));
        assert_eq!(PolicyTable::new(next.parts()).unwrap().parts().endpoints, next.parts().endpoints);

        let bad = |delta: PolicyTableDelta| t.patched(delta).is_err();
        let ep = |chains| EndpointInfo { name: "x".into(), namespace: None, host: true, chains };
        assert!(bad(PolicyTableDelta { endpoints: vec![(0, ep([0, 2]))], ..PolicyTableDelta::default() }));
        assert!(bad(PolicyTableDelta { endpoints: vec![(2, ep([0, 1]))], ..PolicyTableDelta::default() }));
        assert!(bad(PolicyTableDelta {
            addresses: vec![("10.0.0.9".parse().unwrap(), Some(1))],
            ..PolicyTableDelta::default()
        }));
        assert!(bad(PolicyTableDelta {
            chains: vec![(0, Chain { steps: vec![], profile: (Verdict::Allow, 4) })],
            ..PolicyTableDelta::default()
        }));
        let p =
            PolicyRules::build(vec![RuleSpec { action: Action::Deny, trace: 9, pieces: vec![], plain_pieces: None }]);
        assert!(bad(PolicyTableDelta { policies: vec![(0, Arc::new(p.unwrap()))], ..PolicyTableDelta::default() }));
    }

    #[test]
    fn shared_vectors_copy_only_written_chunks() {
        let v: Vec<u32> = (0..200).collect();
        let a = SharedVec::from_vec(v.clone());
        let mut b = a.clone();
        assert!(b.set(130, 7));
        assert!(b.set(200, 8));
        assert!(!b.set(202, 9));
        b.extend((0..70).collect());
        assert_eq!(a.to_vec(), v);
        assert_eq!(b.len(), 271);
        assert_eq!((b[130], b[200], b[201], b[270]), (7, 8, 0, 69));
        assert!(Arc::ptr_eq(&a.chunks[0], &b.chunks[0]));
        assert!(!Arc::ptr_eq(&a.chunks[2], &b.chunks[2]));
        assert_eq!(b.iter().count(), 271);
        assert!(b.chunks.iter().rev().skip(1).all(|c| c.len() == SHARED_CHUNK));
    }

    #[test]
    fn long_traces_truncate_without_changing_the_verdict() {
        let mut s = SideDecision::new(0);
        for i in 0..(u32::try_from(MAX_TRACE).unwrap() + 3) {
            s.push(i);
        }
        assert!(s.truncated);
        assert_eq!(s.trace().len(), MAX_TRACE);
    }
}
