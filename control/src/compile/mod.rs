//! The policy compiler: from a [`Resolved`] model (the same resolution the reference evaluator
//! walks, so the two cannot disagree about semantics) to the immutable
//! [`PolicyTable`] the workers consult for each new flow.
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
//! Every field of a [`ResolvedRule`](crate::resolve::ResolvedRule) becomes a set, exactly as the evaluator tests it:
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
//! * **the endpoint's own side** (ingress: destination; egress: source), when it has selectors
//!   or named ports, is intersected with the addresses of the endpoints the policy applies to:
//!   a flow only reaches a policy through the chain of such an endpoint, so the meaning is the
//!   same, the sets are as small as the policy's reach, and the stage depends on its own
//!   endpoints only — a `ports: [http]` ingress rule no longer names every address in the
//!   cluster that declares `http`, nor changes when any of them does. Named ports on that side
//!   are resolved over those endpoints only. Nets and numeric ports are left as written.
//!
//! Log rules are compiled like the others and recorded-and-continued by the lookup; staged
//! policies are not in the table (the flow-log side evaluates them with the evaluator); an
//! undeclared tier is already placed last by the resolution.
//!
//! # Two paths to a table
//!
//! * **Full**: [`Compiler::compile`] builds a table from a [`Resolved`] model. It keeps a
//!   content-addressed cache of compiled stages (keyed by their rule pieces after selector
//!   resolution, trace ids included) and a stable trace table, so a recompile rebuilds only the
//!   stages whose pieces changed — but it resolves the model and every selector again, which is
//!   the cost of a change (about a quarter of a second on the benchmark's 5,000-pod cluster).
//!   It is the oracle the incremental path is tested against.
//! * **Incremental**: an [`IncrementalCompiler`] keeps the model, what the compile derived from
//!   it (owner and selector indices, selector address sets, named-port sets, stage keys,
//!   interned chains) and the last table. A batch of [`Change`]s (upsert or delete of any
//!   resource) recomputes only what the changes reach — the selectors whose members or member
//!   addresses changed, the stages using a changed set (remote side) or applying to a changed
//!   endpoint (own side), the chains of the endpoints whose policies changed — rebuilds a stage
//!   only when its keys differ, and derives the next table with
//!   [`PolicyTable::patched`](moat_fastpath::classify::PolicyTable::patched), which shares
//!   every unchanged part with the previous one. A pod added or relabelled on that cluster is a
//!   few milliseconds (figures in BENCHMARKS.md). Policies are resolved before anything
//!   changes (a policy that cannot be enforced rejects the batch); a later failure undoes the
//!   batch. See the [`incremental`] module docs.
//!
//! Both paths compute rule keys, stages and chains with the same functions (`keys`), so they
//! cannot drift apart; equivalence does not depend on either cache: a cached stage is used
//! only for identical keys.

mod addrs;
mod flows;
pub mod incremental;
mod keys;
#[cfg(test)]
mod tests;

pub use addrs::AddrRanges;
pub use flows::{CompiledEvaluator, KeyError, PORT_PROTOCOLS, flow_key, flow_of_key, side_result, side_trace};
pub use incremental::{Change, IncrementalCompiler, ResourceKey, UpdateError, UpdateStats};

use crate::model::{Direction, LabelMap, Model, NamedPort};
use crate::resolve::{Endpoint, Resolved, ResolvedPolicy, ResolvedTier};
use crate::selector::Selector;
use ipnetwork::IpNetwork;
use keys::{
    ChainPolicy, DIRECTIONS, Local, NamedAddrs, RuleKey, Sets, TraceTable, build_chain, build_stage, dir_index,
    failsafe_keys, named_of, policy_keys, uses_stage,
};
use moat_fastpath::classify::engine::BuildError;
use moat_fastpath::classify::policy::{
    Chain, EndpointInfo, PolicyRules, PolicyTable, PolicyTableError, PolicyTableParts,
};
use std::collections::HashMap;
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

/// The compiler, with what it keeps between compiles (see the module docs).
#[derive(Debug)]
pub struct Compiler {
    /// Policies with at most this many classifier rules are matched linearly
    /// ([`moat_fastpath::classify::policy::LINEAR_MAX_PIECES`] by default; 0 = always a tree).
    pub linear_max_pieces: usize,
    traces: TraceTable,
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

    /// The addresses of endpoints (their first-owned ones).
    fn endpoint_addrs(&self, members: &[u32]) -> AddrRanges {
        let mut all = AddrRanges::default();
        for a in members.iter().filter_map(|&i| self.addrs.get(i as usize)) {
            all.v4.extend_from_slice(&a.v4);
            all.v6.extend_from_slice(&a.v6);
        }
        all.union(&AddrRanges::default())
    }
}

impl<'a> Sets<'a> for Ctx<'a> {
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

    fn named(&mut self, names: &[&str], sel: Option<&'a Selector>) -> Arc<NamedAddrs> {
        let key = (names.iter().map(|n| (*n).to_string()).collect::<Vec<_>>(), sel.cloned());
        if let Some(hit) = self.named_cache.get(&key) {
            return Arc::clone(hit);
        }
        let mut declaring: Vec<u32> =
            names.iter().flat_map(|n| self.by_port_name.get(n).into_iter().flatten().copied()).collect();
        declaring.sort_unstable();
        declaring.dedup();
        let out = Arc::new(named_of(names, sel, self.endpoint_ports_owned(&declaring)));
        self.named_cache.insert(key, Arc::clone(&out));
        out
    }

    fn named_local(&mut self, members: &[u32], names: &[&str], sel: Option<&Selector>) -> Arc<NamedAddrs> {
        Arc::new(named_of(names, sel, self.endpoint_ports_owned(members)))
    }
}

impl<'a> Ctx<'a> {
    fn endpoint_ports_owned<'s>(
        &'s self,
        members: &'s [u32],
    ) -> impl Iterator<Item = (&'s LabelMap, &'s [NamedPort], &'s AddrRanges)> + 's {
        members.iter().filter_map(|&i| {
            let ep = self.r.endpoints.get(i as usize)?;
            Some((&ep.labels, ep.named_ports.as_slice(), self.addrs.get(i as usize)?))
        })
    }
}

impl Default for Compiler {
    fn default() -> Compiler {
        Compiler {
            linear_max_pieces: moat_fastpath::classify::policy::LINEAR_MAX_PIECES,
            traces: TraceTable::default(),
            stages: HashMap::new(),
        }
    }
}

impl Compiler {
    pub fn new() -> Compiler {
        Compiler::default()
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
        let built = build_stage(&keys, self.linear_max_pieces).map_err(|source| {
            let (policy, direction) = what();
            CompileError::Build { policy, direction, source }
        })?;
        stats.built += 1;
        let s = Arc::new(built);
        used.insert(keys, Arc::clone(&s));
        Ok(s)
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

        // Enforced policies in evaluation order, the endpoints each applies to, and per
        // endpoint the ones applying to it.
        let policies: Vec<(&ResolvedTier, &ResolvedPolicy)> = r
            .tiers
            .iter()
            .flat_map(|tier| tier.policies.iter().map(move |p| (tier, p)))
            .filter(|(_, p)| p.staged.is_none())
            .collect();
        let mut members: Vec<Vec<u32>> = Vec::with_capacity(policies.len());
        let mut applying: Vec<Vec<u32>> = vec![Vec::new(); r.endpoints.len()];
        for (g, (_, p)) in policies.iter().enumerate() {
            let g = u32::try_from(g).map_err(|_| CompileError::TooMany("policies"))?;
            let m = ctx.matching(&p.applies_to, true);
            for &e in &m {
                if let Some(v) = applying.get_mut(e as usize) {
                    v.push(g);
                }
            }
            members.push(m);
        }

        let mut parts = PolicyTableParts { zones, ..PolicyTableParts::default() };
        // (policy, direction) → stage index; failsafe stages by direction.
        let mut stage_index: HashMap<(u32, usize), u32> = HashMap::new();
        let mut failsafe_index: [Option<u32>; 2] = [None, None];
        let mut chain_index: HashMap<Chain, u32> = HashMap::new();

        for (ei, ep) in r.endpoints.iter().enumerate() {
            let ei_u32 = u32::try_from(ei).map_err(|_| CompileError::TooMany("endpoints"))?;
            let mine = applying.get(ei).map(Vec::as_slice).unwrap_or_default();
            let mut chains = [0u32; 2];
            for dir in DIRECTIONS {
                let d = dir_index(dir);
                let list = match dir {
                    Direction::Ingress => &r.failsafe.inbound,
                    Direction::Egress => &r.failsafe.outbound,
                };
                let failsafe = match (ep.is_host() && !list.is_empty(), failsafe_index[d]) {
                    (false, _) => None,
                    (true, Some(id)) => Some(id),
                    (true, None) => {
                        let keys = failsafe_keys(&mut self.traces, list, dir)?;
                        let s = self.stage(keys, &mut used, &mut stats, || ("failsafe".into(), dir))?;
                        let id = push_stage(&mut parts, s)?;
                        failsafe_index[d] = Some(id);
                        Some(id)
                    }
                };
                let mut chain_policies = Vec::new();
                for &g in mine {
                    let Some(&(tier, p)) = policies.get(g as usize) else { continue };
                    if !uses_stage(ep.is_host(), p, dir) {
                        continue;
                    }
                    let stage = match stage_index.get(&(g, d)) {
                        Some(&id) => id,
                        None => {
                            let m = members.get(g as usize).map(Vec::as_slice).unwrap_or_default();
                            let local = Local { members: m.to_vec(), addrs: ctx.endpoint_addrs(m) };
                            let keys = policy_keys(&mut ctx, &mut self.traces, &tier.name, p, dir, Some(&local))?;
                            let s = self.stage(keys, &mut used, &mut stats, || (p.trace_name.clone(), dir))?;
                            let id = push_stage(&mut parts, s)?;
                            stage_index.insert((g, d), id);
                            id
                        }
                    };
                    chain_policies.push(ChainPolicy {
                        tier: &tier.name,
                        default_action: tier.default_action,
                        policy: p,
                        stage,
                    });
                }
                let chain = build_chain(ep, dir, failsafe, &chain_policies, &mut self.traces)?;
                let next = u32::try_from(chain_index.len()).map_err(|_| CompileError::TooMany("chains"))?;
                let id = *chain_index.entry(chain.clone()).or_insert_with(|| {
                    parts.chains.push(chain);
                    next
                });
                chains[d] = id;
            }
            parts.endpoints.push(endpoint_info(ep, chains));
            for ip in &ep.ips {
                parts.addresses.entry(*ip).or_insert(ei_u32);
            }
        }
        stats.chains = parts.chains.len();
        stats.policies = parts.policies.len();
        stats.pieces = parts.policies.iter().map(|p| p.pieces()).sum();
        stats.selectors = ctx.selected.len();
        parts.traces = self.traces.list().to_vec();
        // Keep only what this compile used: the cache never grows past one model's worth.
        self.stages = used;
        Ok((PolicyTable::new(parts)?, stats))
    }
}

/// The table's record of an endpoint.
fn endpoint_info(ep: &Endpoint, chains: [u32; 2]) -> EndpointInfo {
    let (name, namespace) = match &ep.id {
        crate::resolve::EndpointId::Workload { namespace, name } => (name.clone(), Some(namespace.clone())),
        crate::resolve::EndpointId::Host { name } => (name.clone(), None),
    };
    EndpointInfo { name, namespace, host: ep.is_host(), chains }
}

fn push_stage(parts: &mut PolicyTableParts, s: Arc<PolicyRules>) -> Result<u32, CompileError> {
    let id = u32::try_from(parts.policies.len()).map_err(|_| CompileError::TooMany("policy stages"))?;
    parts.policies.push(s);
    Ok(id)
}
