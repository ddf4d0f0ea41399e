//! The incremental path: an [`IncrementalCompiler`] holds the model, what the compile derived
//! from it and the last [`PolicyTable`], takes [`Change`]s (upserts and deletes of any model
//! resource) and returns the next table, doing only the work the change implies.
//!
//! # State kept between changes
//!
//! * **Owners** (endpoints and network sets) in stable slots, with their resolved labels, the
//!   addresses each *owns first* (an address shared by two endpoints belongs to the first in
//!   [`Resolved`] order, as [`Resolved::endpoint_by_ip`] decides) and an inverted label index.
//!   An endpoint's slot is its index in the table, so it stays the same while it exists.
//! * **Selectors** in use (policy `applies_to`, rule selectors), each with its member owners and
//!   the address set they stand for, and an index from labels to selectors built from each
//!   selector's label restrictions: the selectors an owner change can affect are found from the
//!   owner's old and new labels, not by evaluating every selector.
//! * **Named ports** over a remote selector (`named(names, selector)`), per name.
//! * **Policies** (enforced ones) with their stage slots and dependencies: the selectors and
//!   named ports on the *remote* side of their rules (ingress source, egress destination), the
//!   selectors on the *local* side, and whether the local side depends on endpoints at all.
//! * **Stages** with the rule keys they were built from, and **chains** interned with
//!   reference counts; trace ids never change meaning.
//!
//! # What a change does
//!
//! An owner change (pod, host endpoint, network set; a namespace or service account change is
//! the change of the owners whose labels it gives) updates the owner's memberships. A selector
//! whose members or member addresses changed gets its address set recomputed; when that set
//! differs, the stages using it on their remote side are recomputed. The policies whose
//! `applies_to` the owner enters, leaves or stays in get their local-side stages recomputed
//! (the local side of a rule is intersected with the addresses of the endpoints the policy
//! applies to — see `keys::Local` — so it depends on those endpoints only), and the endpoint's
//! own chains are rebuilt. A recomputed stage is rebuilt only when its rule keys differ. A
//! policy change re-resolves that policy only; a tier change rebuilds the chains of the
//! endpoints with policies in it. The result is a [`PolicyTableDelta`] applied with
//! [`PolicyTable::patched`], which shares every unchanged part with the previous table.
//!
//! # Errors
//!
//! A change batch is all or nothing. Policies are resolved and checked before anything changes;
//! one that cannot be enforced rejects the batch ([`UpdateError::Policy`]) and nothing changes.
//! A failure later (a stage the classifier cannot build) undoes the batch on the model and
//! rebuilds the derived state from it ([`UpdateError::Compile`]); the caller keeps the table
//! in force, and the compiler's own table stays equivalent to it.
//!
//! The full compile ([`super::Compiler`]) remains the oracle: the tests apply random change
//! sequences here and compare every decision with a full compile of the resulting model.

use super::keys::{
    ChainPolicy, DIRECTIONS, Local, NamedAddrs, RuleKey, Sets, TraceTable, build_chain, build_stage, check_policy,
    dir_index, failsafe_keys, is_dynamic, named_of, policy_keys, uses_stage,
};
use super::{AddrRanges, CompileError, endpoint_info, zones_of};
use crate::model::{
    DEFAULT_TIER, DEFAULT_TIER_ORDER, Direction, LabelMap, Model, NamedPort, PolicyId, Port, Resource,
    TierDefaultAction,
};
use crate::resolve::{
    Endpoint, EndpointId, Failsafe, LabelledNets, Resolved, ResolvedEntity, ResolvedPolicy, cmp_order, cmp_policies,
    host_endpoint, network_set, resolve_calico_policy, resolve_k8s_policy, workload_endpoint,
};
use crate::selector::Selector;
use moat_fastpath::classify::Verdict;
use moat_fastpath::classify::engine::Action as RuleAction;
use moat_fastpath::classify::policy::{
    Chain, EndpointInfo, PolicyRules, PolicyTable, PolicyTableDelta, PolicyTableParts, TraceInfo,
};
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

/// Identity of a model resource (what a delete names).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceKey {
    Namespace(String),
    ServiceAccount {
        namespace: String,
        name: String,
    },
    Pod {
        namespace: String,
        name: String,
    },
    K8sNetworkPolicy {
        staged: bool,
        namespace: String,
        name: String,
    },
    /// Any of the four Calico policy kinds.
    CalicoPolicy(PolicyId),
    Tier(String),
    /// `namespace: None` for a GlobalNetworkSet.
    NetworkSet {
        namespace: Option<String>,
        name: String,
    },
    HostEndpoint(String),
    IpPool(String),
}

impl ResourceKey {
    /// The identity of a resource, as [`Model::insert`] keys it.
    pub fn of(r: &Resource) -> ResourceKey {
        match r {
            Resource::Namespace(n) => ResourceKey::Namespace(n.name.clone()),
            Resource::ServiceAccount(s) => {
                ResourceKey::ServiceAccount { namespace: s.namespace.clone(), name: s.name.clone() }
            }
            Resource::Pod(p) => ResourceKey::Pod { namespace: p.namespace.clone(), name: p.name.clone() },
            Resource::K8sNetworkPolicy { staged, policy } => ResourceKey::K8sNetworkPolicy {
                staged: *staged,
                namespace: policy.namespace.clone(),
                name: policy.name.clone(),
            },
            Resource::CalicoPolicy(p) => ResourceKey::CalicoPolicy(p.id.clone()),
            Resource::Tier(t) => ResourceKey::Tier(t.name.clone()),
            Resource::NetworkSet(s) => ResourceKey::NetworkSet { namespace: s.namespace.clone(), name: s.name.clone() },
            Resource::HostEndpoint(h) => ResourceKey::HostEndpoint(h.name.clone()),
            Resource::IpPool(p) => ResourceKey::IpPool(p.name.clone()),
        }
    }
}

impl fmt::Display for ResourceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResourceKey::Namespace(n) => write!(f, "Namespace {n}"),
            ResourceKey::ServiceAccount { namespace, name } => write!(f, "ServiceAccount {namespace}/{name}"),
            ResourceKey::Pod { namespace, name } => write!(f, "Pod {namespace}/{name}"),
            ResourceKey::K8sNetworkPolicy { staged, namespace, name } => {
                let staged = if *staged { "Staged" } else { "" };
                write!(f, "{staged}NetworkPolicy (Kubernetes) {namespace}/{name}")
            }
            ResourceKey::CalicoPolicy(id) => write!(f, "{id}"),
            ResourceKey::Tier(n) => write!(f, "Tier {n}"),
            ResourceKey::NetworkSet { namespace: Some(ns), name } => write!(f, "NetworkSet {ns}/{name}"),
            ResourceKey::NetworkSet { namespace: None, name } => write!(f, "GlobalNetworkSet {name}"),
            ResourceKey::HostEndpoint(n) => write!(f, "HostEndpoint {n}"),
            ResourceKey::IpPool(n) => write!(f, "IPPool {n}"),
        }
    }
}

/// One model change: a resource created or replaced, or deleted by identity.
// Not boxed: a change is built once and moved into the model; a box would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Upsert(Resource),
    Delete(ResourceKey),
}

impl Change {
    pub fn key(&self) -> ResourceKey {
        match self {
            Change::Upsert(r) => ResourceKey::of(r),
            Change::Delete(k) => k.clone(),
        }
    }
}

/// Why a change batch was not applied; the table in force stays as it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpdateError {
    /// A changed policy cannot be enforced (it does not resolve, or cannot be compiled).
    /// Nothing was changed.
    #[error("change {index} ({key}): {message}; no change applied")]
    Policy { index: usize, key: ResourceKey, message: String },
    /// The batch did not compile; it was undone.
    #[error("changes {keys}: {source}; the batch was undone")]
    Compile {
        /// The batch's resources, for the report.
        keys: String,
        #[source]
        source: CompileError,
    },
}

/// What an update did, for logs and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpdateStats {
    pub changes: usize,
    /// Built from scratch (first build, or recovery after an error).
    pub full: bool,
    /// Endpoints and network sets whose labels, addresses or named ports changed.
    pub owners_changed: usize,
    /// Selectors whose address set was recomputed / of those, changed.
    pub selectors_recomputed: usize,
    pub selectors_changed: usize,
    /// Named-port sets recomputed.
    pub named_recomputed: usize,
    /// Policy stages whose rule keys were recomputed / of those, built (keys new or changed).
    pub stages_recomputed: usize,
    pub stages_built: usize,
    /// Endpoints whose chains were recomputed.
    pub endpoints_rechained: usize,
    /// Table elements written: endpoints, chains, stages, addresses; trace entries added.
    pub endpoints_written: usize,
    pub chains_written: usize,
    pub stages_written: usize,
    pub addresses_written: usize,
    pub traces_added: usize,
    /// Sizes after the update.
    pub endpoints: usize,
    pub stages: usize,
    pub chains: usize,
    pub selectors: usize,
}

/// An endpoint or a network set, by slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Owner {
    Ep(u32),
    Set(u32),
}

#[derive(Debug, Clone)]
struct EpState {
    ep: Endpoint,
    /// The addresses this endpoint owns first.
    addrs: AddrRanges,
    /// Policy slots applying to it.
    applying: BTreeSet<u32>,
    /// Chain slots held (`None` until its first chain build).
    chains: Option<[u32; 2]>,
}

#[derive(Debug, Clone)]
struct SetState {
    set: LabelledNets,
    addrs: AddrRanges,
}

/// What selectors and named ports see of an owner.
#[derive(Debug, Clone)]
struct Facts {
    labels: LabelMap,
    addrs: AddrRanges,
    ports: Vec<NamedPort>,
}

#[derive(Debug, Clone)]
struct SelEntry {
    sel: Selector,
    members: BTreeSet<Owner>,
    /// Address set of the members; `None` until computed.
    addrs: Option<Arc<AddrRanges>>,
    /// Addresses of the endpoint members (for policies applying through this selector).
    ep_addrs: Option<Arc<AddrRanges>>,
    /// Policies applying through it, stages using it on the remote and on the local side.
    applies: BTreeSet<u32>,
    remote: BTreeSet<u32>,
    local: BTreeSet<u32>,
}

impl SelEntry {
    fn unused(&self) -> bool {
        self.applies.is_empty() && self.remote.is_empty() && self.local.is_empty()
    }
}

type NamedKey = (Vec<String>, Option<Selector>);

#[derive(Debug, Clone)]
struct NamedEntry {
    names: Vec<String>,
    sel: Option<Selector>,
    value: Option<Arc<NamedAddrs>>,
    users: BTreeSet<u32>,
}

/// What one stage of a policy depends on besides the policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct StageDeps {
    remote: BTreeSet<u32>,
    local: BTreeSet<u32>,
    named: BTreeSet<u32>,
    /// The local side has selectors or named ports (restricted to the policy's endpoints).
    local_dynamic: bool,
}

#[derive(Debug, Clone)]
struct PolicyState {
    p: ResolvedPolicy,
    applies: u32,
    /// Stage slot per direction, when the policy has that type.
    stages: [Option<u32>; 2],
    deps: [StageDeps; 2],
}

#[derive(Debug, Clone)]
enum StageOwner {
    Free,
    Failsafe(Direction),
    Policy(u32, Direction),
}

#[derive(Debug, Clone)]
struct StageState {
    owner: StageOwner,
    /// The keys the stage in the table was built from; `None` while not built.
    keys: Option<Vec<RuleKey>>,
}

#[derive(Debug, Clone, Default)]
struct ChainSlot {
    chain: Option<Arc<Chain>>,
    refs: u32,
}

/// Labels → values → items, and labels → items (for presence).
#[derive(Debug, Clone)]
struct LabelIndex<T> {
    kv: HashMap<String, HashMap<String, BTreeSet<T>>>,
    key: HashMap<String, BTreeSet<T>>,
}

impl<T> Default for LabelIndex<T> {
    fn default() -> LabelIndex<T> {
        LabelIndex { kv: HashMap::new(), key: HashMap::new() }
    }
}

impl<T: Ord + Copy> LabelIndex<T> {
    fn insert_kv(&mut self, k: &str, v: &str, t: T) {
        self.kv.entry(k.to_string()).or_default().entry(v.to_string()).or_default().insert(t);
    }
    fn insert_key(&mut self, k: &str, t: T) {
        self.key.entry(k.to_string()).or_default().insert(t);
    }
    fn remove_kv(&mut self, k: &str, v: &str, t: T) {
        if let Some(m) = self.kv.get_mut(k) {
            if let Some(s) = m.get_mut(v) {
                s.remove(&t);
                if s.is_empty() {
                    m.remove(v);
                }
            }
            if m.is_empty() {
                self.kv.remove(k);
            }
        }
    }
    fn remove_key(&mut self, k: &str, t: T) {
        if let Some(s) = self.key.get_mut(k) {
            s.remove(&t);
            if s.is_empty() {
                self.key.remove(k);
            }
        }
    }
    fn get_kv(&self, k: &str, v: &str) -> Option<&BTreeSet<T>> {
        self.kv.get(k)?.get(v)
    }
    fn get_key(&self, k: &str) -> Option<&BTreeSet<T>> {
        self.key.get(k)
    }
}

/// How a selector is indexed for owner changes: a necessary condition of its label
/// restrictions (one of these label values, or this label present), or none.
enum SelIndexKey {
    Values(String, Vec<String>),
    Present(String),
    Never,
    Any,
}

fn sel_index_key(sel: &Selector) -> SelIndexKey {
    let restrictions = sel.label_restrictions();
    let mut present = None;
    for (key, r) in &restrictions {
        match &r.must_have_one_of_values {
            Some(values) if values.is_empty() => return SelIndexKey::Never,
            Some(values) => {
                return SelIndexKey::Values((*key).to_string(), values.iter().map(|v| (*v).to_string()).collect());
            }
            None if r.must_be_present && present.is_none() => present = Some((*key).to_string()),
            None => {}
        }
    }
    present.map_or(SelIndexKey::Any, SelIndexKey::Present)
}

/// Work found by changes, done when the batch is finished.
#[derive(Debug, Default)]
struct Dirty {
    owners: usize,
    /// Selectors whose members or member addresses changed.
    sels: BTreeSet<u32>,
    /// Of those, changed through a network set (local users are affected too).
    sels_local: BTreeSet<u32>,
    named: BTreeSet<u32>,
    stages: BTreeSet<u32>,
    /// Endpoint slots whose chains to recompute.
    chains: BTreeSet<u32>,
    /// Endpoint slots whose table record to write.
    endpoints: BTreeSet<u32>,
    addresses: BTreeMap<IpAddr, Option<u32>>,
    zones: bool,
    /// Selector and named entries that may have lost their last user.
    unused_sels: BTreeSet<u32>,
    unused_named: BTreeSet<u32>,
    stage_writes: BTreeMap<u32, Arc<PolicyRules>>,
    chain_writes: BTreeMap<u32, Arc<Chain>>,
}

/// Everything derived from the model (rebuilt wholesale by a full build).
#[derive(Debug, Default)]
struct State {
    traces: TraceTable,
    /// Trace entries the table has.
    published_traces: usize,
    eps: Vec<Option<EpState>>,
    ep_slots: HashMap<EndpointId, u32>,
    free_eps: Vec<u32>,
    sets: Vec<Option<SetState>>,
    set_slots: HashMap<(Option<String>, String), u32>,
    free_sets: Vec<u32>,
    /// Owners of each endpoint address, in [`Resolved`] order (the first owns it).
    ip_owners: HashMap<IpAddr, Vec<(EndpointId, u32)>>,
    owner_index: LabelIndex<Owner>,
    /// Named-port name → endpoints declaring it.
    ep_by_port: HashMap<String, BTreeSet<u32>>,
    sels: Vec<Option<SelEntry>>,
    sel_ids: HashMap<Selector, u32>,
    free_sels: Vec<u32>,
    sel_index: LabelIndex<u32>,
    sel_any: BTreeSet<u32>,
    named: Vec<Option<NamedEntry>>,
    named_ids: HashMap<NamedKey, u32>,
    free_named: Vec<u32>,
    named_by_name: HashMap<String, BTreeSet<u32>>,
    pols: Vec<Option<PolicyState>>,
    pol_slots: HashMap<PolicyId, u32>,
    free_pols: Vec<u32>,
    tier_pols: HashMap<String, BTreeSet<u32>>,
    stages: Vec<StageState>,
    free_stages: Vec<u32>,
    failsafe: [Option<u32>; 2],
    chains: Vec<ChainSlot>,
    chain_ids: HashMap<Arc<Chain>, u32>,
    free_chains: Vec<u32>,
    /// Policies in the model that are not enforced, and conversion warnings, by policy.
    warnings: BTreeMap<PolicyId, String>,
    dirty: Dirty,
    /// Lengths of the table's endpoint and stage vectors.
    table_endpoints: usize,
    table_stages: usize,
}

impl State {
    /// After `table` was made from this state's delta.
    fn published(&mut self, table: &PolicyTable) {
        self.dirty = Dirty::default();
        self.published_traces = self.traces.len();
        self.table_endpoints = table.endpoints().len();
        self.table_stages = table.policies().len();
    }
}

/// The table record of a deleted endpoint's slot: no address maps to it; its chains are the
/// reserved chain 0.
fn tombstone() -> EndpointInfo {
    EndpointInfo { name: String::new(), namespace: None, host: false, chains: [0, 0] }
}

/// Chain slot 0, held forever: what tombstones point to (deny, no step).
const RESERVED_CHAIN: u32 = 0;

fn slot(n: usize, what: &'static str) -> Result<u32, CompileError> {
    u32::try_from(n).map_err(|_| CompileError::TooMany(what))
}

fn alloc<T>(v: &mut Vec<T>, free: &mut Vec<u32>, value: T, what: &'static str) -> Result<u32, CompileError> {
    if let Some(i) = free.pop() {
        if let Some(s) = v.get_mut(i as usize) {
            *s = value;
            return Ok(i);
        }
    }
    let i = slot(v.len(), what)?;
    v.push(value);
    Ok(i)
}

fn get<T>(v: &[Option<T>], i: u32) -> Option<&T> {
    v.get(i as usize).and_then(Option::as_ref)
}

fn get_mut<T>(v: &mut [Option<T>], i: u32) -> Option<&mut T> {
    v.get_mut(i as usize).and_then(Option::as_mut)
}

fn union_of<'x>(sets: impl Iterator<Item = &'x AddrRanges>) -> AddrRanges {
    let mut all = AddrRanges::default();
    for a in sets {
        all.v4.extend_from_slice(&a.v4);
        all.v6.extend_from_slice(&a.v6);
    }
    all.union(&AddrRanges::default())
}

/// Named-port names of a port list (as [`super::keys`] looks them up), when any.
fn port_names(ports: &[Port]) -> Option<Vec<String>> {
    let names: Vec<String> = ports
        .iter()
        .filter_map(|p| match p {
            Port::Named(n) => Some(n.clone()),
            Port::Range { .. } => None,
        })
        .collect();
    (!names.is_empty()).then_some(names)
}

/// The attributes of a policy that decide chains (not stages).
fn chain_attributes_equal(a: &ResolvedPolicy, b: &ResolvedPolicy) -> bool {
    a.id == b.id
        && a.applies_to == b.applies_to
        && a.tier == b.tier
        && cmp_order(a.order, b.order) == Ordering::Equal
        && a.sort_name == b.sort_name
        && a.trace_name == b.trace_name
        && a.types == b.types
        && a.do_not_track == b.do_not_track
        && a.pre_dnat == b.pre_dnat
}

/// Read access to the sets for rule keys (everything is refreshed before keys are computed;
/// a miss is computed on the spot, so the answer never depends on the refresh).
struct View<'s> {
    sels: &'s [Option<SelEntry>],
    sel_ids: &'s HashMap<Selector, u32>,
    named: &'s [Option<NamedEntry>],
    named_ids: &'s HashMap<NamedKey, u32>,
    eps: &'s [Option<EpState>],
    sets: &'s [Option<SetState>],
}

impl View<'_> {
    fn owners(&self) -> impl Iterator<Item = (&LabelMap, &AddrRanges)> + '_ {
        let eps = self.eps.iter().flatten().map(|e| (&e.ep.labels, &e.addrs));
        eps.chain(self.sets.iter().flatten().map(|s| (&s.set.labels, &s.addrs)))
    }
}

impl<'a> Sets<'a> for View<'_> {
    fn selected(&mut self, sel: &'a Selector) -> Arc<AddrRanges> {
        let cached = self.sel_ids.get(sel).and_then(|&i| get(self.sels, i)).and_then(|e| e.addrs.clone());
        cached.unwrap_or_else(|| Arc::new(union_of(self.owners().filter(|(l, _)| sel.evaluate(*l)).map(|(_, a)| a))))
    }

    fn named(&mut self, names: &[&str], sel: Option<&'a Selector>) -> Arc<NamedAddrs> {
        if names.is_empty() {
            return Arc::default();
        }
        let key: NamedKey = (names.iter().map(|n| (*n).to_string()).collect(), sel.cloned());
        let cached = self.named_ids.get(&key).and_then(|&i| get(self.named, i)).and_then(|e| e.value.clone());
        cached.unwrap_or_else(|| {
            let eps = self.eps.iter().flatten().map(|e| (&e.ep.labels, e.ep.named_ports.as_slice(), &e.addrs));
            Arc::new(named_of(names, sel, eps))
        })
    }

    fn named_local(&mut self, members: &[u32], names: &[&str], sel: Option<&Selector>) -> Arc<NamedAddrs> {
        let eps = members
            .iter()
            .filter_map(|&m| get(self.eps, m))
            .map(|e| (&e.ep.labels, e.ep.named_ports.as_slice(), &e.addrs));
        Arc::new(named_of(names, sel, eps))
    }
}

/// The incremental compiler (see the module docs).
#[derive(Debug)]
pub struct IncrementalCompiler {
    model: Model,
    failsafe: Failsafe,
    linear_max_pieces: usize,
    st: State,
    table: Arc<PolicyTable>,
    /// A stage with no rules, written over the stages of deleted policies (frees their memory).
    empty_stage: Arc<PolicyRules>,
    /// The state could not be rebuilt after a failed batch: the next batch rebuilds first.
    broken: bool,
}

impl IncrementalCompiler {
    /// Compiles `model` in full (Felix's default failsafe ports, the default linear threshold).
    pub fn new(model: Model) -> Result<(IncrementalCompiler, UpdateStats), CompileError> {
        IncrementalCompiler::with_options(
            model,
            Failsafe::default(),
            moat_fastpath::classify::policy::LINEAR_MAX_PIECES,
        )
    }

    /// [`IncrementalCompiler::new`] with explicit failsafe ports and linear-matcher threshold
    /// (see [`super::Compiler::linear_max_pieces`]).
    pub fn with_options(
        model: Model,
        failsafe: Failsafe,
        linear_max_pieces: usize,
    ) -> Result<(IncrementalCompiler, UpdateStats), CompileError> {
        let empty_stage = Arc::new(PolicyRules::build(Vec::new()).map_err(|source| CompileError::Build {
            policy: "(empty)".into(),
            direction: Direction::Ingress,
            source,
        })?);
        let mut c = IncrementalCompiler {
            model,
            failsafe,
            linear_max_pieces,
            st: State::default(),
            table: Arc::new(PolicyTable::new(PolicyTableParts::default())?),
            empty_stage,
            broken: false,
        };
        let stats = c.rebuild()?;
        Ok((c, stats))
    }

    /// The model the table was compiled from.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The last table.
    pub fn table(&self) -> &Arc<PolicyTable> {
        &self.table
    }

    /// The resolution of the model (computed: for the evaluator and explanations).
    pub fn resolved(&self) -> Resolved {
        Resolved::with_failsafe(&self.model, self.failsafe.clone())
    }

    /// Policies not enforced (and why) and conversion warnings.
    pub fn warnings(&self) -> Vec<String> {
        self.st.warnings.values().cloned().collect()
    }

    /// Recompiles everything from the model: a fresh state and table (the full path). Also a
    /// way to compact: slots of deleted objects and unused trace entries are dropped.
    pub fn rebuild(&mut self) -> Result<UpdateStats, CompileError> {
        let empty = PolicyTable::new(PolicyTableParts::default())?;
        let mut stats = UpdateStats { full: true, ..UpdateStats::default() };
        let previous = std::mem::take(&mut self.st);
        let built = (|| {
            let mut b = self.builder();
            b.load()?;
            let delta = b.finish(&mut stats)?;
            Ok::<PolicyTable, CompileError>(empty.patched(delta)?)
        })();
        match built {
            Ok(table) => {
                self.st.published(&table);
                fill_sizes(&mut stats, &self.st);
                self.table = Arc::new(table);
                Ok(stats)
            }
            Err(e) => {
                self.st = previous;
                Err(e)
            }
        }
    }

    /// Applies one change; see [`IncrementalCompiler::apply`].
    pub fn apply_one(&mut self, change: Change) -> Result<(Arc<PolicyTable>, UpdateStats), UpdateError> {
        self.apply(vec![change])
    }

    /// Applies a batch of changes (all or none) and returns the next table.
    pub fn apply(&mut self, changes: Vec<Change>) -> Result<(Arc<PolicyTable>, UpdateStats), UpdateError> {
        if self.broken {
            let keys = "(rebuild before the batch)".to_string();
            self.rebuild().map_err(|source| UpdateError::Compile { keys, source })?;
            self.broken = false;
        }
        // Resolve and check every changed policy first: a policy that cannot be enforced
        // rejects the batch before anything changes.
        let mut resolved: Vec<Option<(ResolvedPolicy, Option<String>)>> = Vec::with_capacity(changes.len());
        for (index, change) in changes.iter().enumerate() {
            let reject = |message: String| UpdateError::Policy { index, key: change.key(), message };
            let p = match change {
                Change::Upsert(Resource::K8sNetworkPolicy { staged: false, policy }) => {
                    Some(resolve_k8s_policy(false, policy).map_err(reject)?)
                }
                Change::Upsert(Resource::CalicoPolicy(p)) if !p.id.kind.is_staged() => {
                    Some((resolve_calico_policy(p).map_err(reject)?, None))
                }
                _ => None,
            };
            if let Some((p, _)) = &p {
                check_policy(p).map_err(|e| reject(e.to_string()))?;
            }
            resolved.push(p);
        }
        let mut stats = UpdateStats { changes: changes.len(), ..UpdateStats::default() };
        let keys: Vec<ResourceKey> = changes.iter().map(Change::key).collect();
        let mut undo = Vec::with_capacity(changes.len());
        let outcome = self.apply_checked(changes, resolved, &mut undo, &mut stats);
        match outcome {
            Ok(table) => {
                self.st.published(&table);
                fill_sizes(&mut stats, &self.st);
                self.table = Arc::new(table);
                Ok((Arc::clone(&self.table), stats))
            }
            Err(source) => {
                // Undo on the model, then derive everything again from it: the model compiled
                // before, so this succeeds; the table it gives means what the one in force does.
                for change in undo.into_iter().rev().flatten() {
                    apply_to_model(&mut self.model, change);
                }
                let names: Vec<String> = keys.iter().take(5).map(ToString::to_string).collect();
                let more = keys.len().saturating_sub(5);
                let keys = if more > 0 { format!("{} and {more} more", names.join(", ")) } else { names.join(", ") };
                if self.rebuild().is_err() {
                    // Not expected (the model compiled before): try again at the next batch.
                    self.broken = true;
                }
                Err(UpdateError::Compile { keys, source })
            }
        }
    }
}

impl IncrementalCompiler {
    fn builder(&mut self) -> Builder<'_> {
        Builder {
            model: &self.model,
            failsafe: &self.failsafe,
            linear_max_pieces: self.linear_max_pieces,
            st: &mut self.st,
            empty_stage: &self.empty_stage,
        }
    }

    /// Applies checked changes to the model and the state; the next table.
    fn apply_checked(
        &mut self,
        changes: Vec<Change>,
        resolved: Vec<Option<(ResolvedPolicy, Option<String>)>>,
        undo: &mut Vec<Option<Change>>,
        stats: &mut UpdateStats,
    ) -> Result<PolicyTable, CompileError> {
        for (change, p) in changes.into_iter().zip(resolved) {
            undo.push(inverse(&self.model, &change));
            let key = change.key();
            apply_to_model(&mut self.model, change);
            self.builder().change(&key, p)?;
        }
        let delta = self.builder().finish(stats)?;
        Ok(self.table.patched(delta)?)
    }
}

fn fill_sizes(stats: &mut UpdateStats, st: &State) {
    stats.endpoints = st.eps.iter().flatten().count();
    stats.stages = st.stages.iter().filter(|s| s.keys.is_some()).count();
    stats.chains = st.chains.iter().filter(|c| c.refs > 0).count();
    stats.selectors = st.sels.iter().flatten().count();
}

/// The change that undoes `change` on `model` (`None`: nothing to undo).
fn inverse(model: &Model, change: &Change) -> Option<Change> {
    let key = change.key();
    match (model_get(model, &key), change) {
        (Some(old), _) => Some(Change::Upsert(old)),
        (None, Change::Upsert(_)) => Some(Change::Delete(key)),
        (None, Change::Delete(_)) => None,
    }
}

fn model_get(m: &Model, key: &ResourceKey) -> Option<Resource> {
    let s = |x: &str| x.to_string();
    match key {
        ResourceKey::Namespace(n) => m.namespaces.get(n).cloned().map(Resource::Namespace),
        ResourceKey::ServiceAccount { namespace, name } => {
            m.service_accounts.get(&(s(namespace), s(name))).cloned().map(Resource::ServiceAccount)
        }
        ResourceKey::Pod { namespace, name } => m.pods.get(&(s(namespace), s(name))).cloned().map(Resource::Pod),
        ResourceKey::K8sNetworkPolicy { staged, namespace, name } => m
            .k8s_policies
            .get(&(*staged, s(namespace), s(name)))
            .cloned()
            .map(|policy| Resource::K8sNetworkPolicy { staged: *staged, policy }),
        ResourceKey::CalicoPolicy(id) => m.policies.get(id).cloned().map(Resource::CalicoPolicy),
        ResourceKey::Tier(n) => m.tiers.get(n).cloned().map(Resource::Tier),
        ResourceKey::NetworkSet { namespace, name } => {
            m.network_sets.get(&(namespace.clone(), s(name))).cloned().map(Resource::NetworkSet)
        }
        ResourceKey::HostEndpoint(n) => m.host_endpoints.get(n).cloned().map(Resource::HostEndpoint),
        ResourceKey::IpPool(n) => m.ip_pools.get(n).cloned().map(Resource::IpPool),
    }
}

fn apply_to_model(m: &mut Model, change: Change) {
    let s = |x: &str| x.to_string();
    match change {
        Change::Upsert(r) => m.insert(r),
        Change::Delete(key) => {
            match key {
                ResourceKey::Namespace(n) => m.namespaces.remove(&n).map(drop),
                ResourceKey::ServiceAccount { namespace, name } => {
                    m.service_accounts.remove(&(namespace, name)).map(drop)
                }
                ResourceKey::Pod { namespace, name } => m.pods.remove(&(namespace, name)).map(drop),
                ResourceKey::K8sNetworkPolicy { staged, namespace, name } => {
                    m.k8s_policies.remove(&(staged, namespace, s(&name))).map(drop)
                }
                ResourceKey::CalicoPolicy(id) => m.policies.remove(&id).map(drop),
                ResourceKey::Tier(n) => m.tiers.remove(&n).map(drop),
                ResourceKey::NetworkSet { namespace, name } => m.network_sets.remove(&(namespace, name)).map(drop),
                ResourceKey::HostEndpoint(n) => m.host_endpoints.remove(&n).map(drop),
                ResourceKey::IpPool(n) => m.ip_pools.remove(&n).map(drop),
            };
        }
    }
}

/// The state being changed, with what it needs from the compiler.
struct Builder<'c> {
    model: &'c Model,
    failsafe: &'c Failsafe,
    linear_max_pieces: usize,
    st: &'c mut State,
    empty_stage: &'c Arc<PolicyRules>,
}

impl Builder<'_> {
    /// Everything in the model, for a full build: owners first (no selector yet, so no
    /// membership work), then the policies (each selector's members from the label index).
    fn load(&mut self) -> Result<(), CompileError> {
        let model = self.model;
        let nothing = self.st.traces.id(TraceInfo {
            tier: "__PROFILE__".into(),
            name: "__PROFILE__.__NO_MATCH__".into(),
            action: RuleAction::Deny,
            rule_index: -1,
        })?;
        let reserved = self.intern_chain(Chain { steps: Vec::new(), profile: (Verdict::Deny, nothing) })?;
        if let Some(c) = self.st.chains.get_mut(reserved as usize) {
            c.refs = 1;
        }
        debug_assert_eq!(reserved, RESERVED_CHAIN);
        for dir in DIRECTIONS {
            let list = match dir {
                Direction::Ingress => &self.failsafe.inbound,
                Direction::Egress => &self.failsafe.outbound,
            };
            if !list.is_empty() {
                let keys = failsafe_keys(&mut self.st.traces, list, dir)?;
                let state = StageState { owner: StageOwner::Failsafe(dir), keys: None };
                let id = alloc(&mut self.st.stages, &mut self.st.free_stages, state, "policy stages")?;
                self.build_stage_keys(id, keys, &mut UpdateStats::default())?;
                self.st.failsafe[dir_index(dir)] = Some(id);
            }
        }
        for pod in model.pods.values() {
            if let Some(ep) = workload_endpoint(model, pod) {
                self.upsert_endpoint(ep)?;
            }
        }
        for h in model.host_endpoints.values() {
            self.upsert_endpoint(host_endpoint(h))?;
        }
        for s in model.network_sets.values() {
            self.upsert_set(network_set(model, s))?;
        }
        for ((staged, _, _), np) in &model.k8s_policies {
            if *staged {
                continue;
            }
            match resolve_k8s_policy(false, np) {
                Ok((p, warning)) => self.upsert_policy(p, warning)?,
                Err(e) => {
                    let id = PolicyId {
                        kind: crate::model::PolicyKind::KubernetesNetworkPolicy,
                        namespace: Some(np.namespace.clone()),
                        name: np.name.clone(),
                    };
                    self.st.warnings.insert(id, e);
                }
            }
        }
        for p in model.policies.values().filter(|p| !p.id.kind.is_staged()) {
            match resolve_calico_policy(p) {
                Ok(r) => self.upsert_policy(r, None)?,
                Err(e) => {
                    self.st.warnings.insert(p.id.clone(), e);
                }
            }
        }
        self.st.dirty.zones = true;
        Ok(())
    }

    /// One change, already applied to the model.
    fn change(
        &mut self,
        key: &ResourceKey,
        resolved: Option<(ResolvedPolicy, Option<String>)>,
    ) -> Result<(), CompileError> {
        let model = self.model;
        match key {
            ResourceKey::Pod { namespace, name } => {
                let id = EndpointId::Workload { namespace: namespace.clone(), name: name.clone() };
                match model.pods.get(&(namespace.clone(), name.clone())).and_then(|p| workload_endpoint(model, p)) {
                    Some(ep) => self.upsert_endpoint(ep)?,
                    None => self.delete_endpoint(&id),
                }
            }
            ResourceKey::HostEndpoint(name) => match model.host_endpoints.get(name) {
                Some(h) => self.upsert_endpoint(host_endpoint(h))?,
                None => self.delete_endpoint(&EndpointId::Host { name: name.clone() }),
            },
            ResourceKey::NetworkSet { namespace, name } => {
                match model.network_sets.get(&(namespace.clone(), name.clone())) {
                    Some(s) => self.upsert_set(network_set(model, s))?,
                    None => self.delete_set(&(namespace.clone(), name.clone())),
                }
            }
            ResourceKey::Namespace(ns) => {
                // The namespace's labels are on its pods and network sets.
                let pods: Vec<Endpoint> = model
                    .pods
                    .range((ns.clone(), String::new())..)
                    .take_while(|((n, _), _)| n == ns)
                    .filter_map(|(_, p)| workload_endpoint(model, p))
                    .collect();
                for ep in pods {
                    self.upsert_endpoint(ep)?;
                }
                let sets: Vec<LabelledNets> = model
                    .network_sets
                    .range((Some(ns.clone()), String::new())..)
                    .take_while(|((n, _), _)| n.as_ref() == Some(ns))
                    .map(|(_, s)| network_set(model, s))
                    .collect();
                for s in sets {
                    self.upsert_set(s)?;
                }
            }
            ResourceKey::ServiceAccount { namespace, name } => {
                let pods: Vec<Endpoint> = model
                    .pods
                    .range((namespace.clone(), String::new())..)
                    .take_while(|((n, _), _)| n == namespace)
                    .filter(|(_, p)| &p.service_account == name)
                    .filter_map(|(_, p)| workload_endpoint(model, p))
                    .collect();
                for ep in pods {
                    self.upsert_endpoint(ep)?;
                }
            }
            ResourceKey::K8sNetworkPolicy { staged: true, .. } => {}
            ResourceKey::CalicoPolicy(id) if id.kind.is_staged() => {}
            ResourceKey::K8sNetworkPolicy { staged: false, namespace, name } => {
                let id = PolicyId {
                    kind: crate::model::PolicyKind::KubernetesNetworkPolicy,
                    namespace: Some(namespace.clone()),
                    name: name.clone(),
                };
                match resolved {
                    Some((p, warning)) => self.upsert_policy(p, warning)?,
                    None => self.delete_policy(&id),
                }
            }
            ResourceKey::CalicoPolicy(id) => match resolved {
                Some((p, warning)) => self.upsert_policy(p, warning)?,
                None => self.delete_policy(id),
            },
            ResourceKey::Tier(name) => {
                let pols = self.st.tier_pols.get(name).cloned().unwrap_or_default();
                for pol in pols {
                    self.rechain_members(pol);
                }
            }
            ResourceKey::IpPool(_) => self.st.dirty.zones = true,
        }
        Ok(())
    }

    // ---- owners ---------------------------------------------------------------------------

    fn owner_labels(&self, o: Owner) -> Option<&LabelMap> {
        match o {
            Owner::Ep(i) => get(&self.st.eps, i).map(|e| &e.ep.labels),
            Owner::Set(i) => get(&self.st.sets, i).map(|s| &s.set.labels),
        }
    }

    /// The addresses endpoint `slot` owns first.
    fn first_owned(&self, slot: u32, ips: &[IpAddr]) -> AddrRanges {
        let first = |ip: &IpAddr| self.st.ip_owners.get(ip).and_then(|v| v.first()).map(|(_, s)| *s);
        AddrRanges::from_ips(ips.iter().copied().filter(|ip| first(ip) == Some(slot)))
    }

    fn upsert_endpoint(&mut self, ep: Endpoint) -> Result<(), CompileError> {
        let existing = self.st.ep_slots.get(&ep.id).copied();
        if let Some(s) = existing {
            if get(&self.st.eps, s).is_some_and(|old| old.ep == ep) {
                return Ok(());
            }
        }
        let (s, old) = match existing {
            Some(s) => {
                let old = get(&self.st.eps, s).map(|e| (e.ep.clone(), e.addrs.clone()));
                (s, old)
            }
            None => {
                let s = alloc(&mut self.st.eps, &mut self.st.free_eps, None, "endpoints")?;
                self.st.ep_slots.insert(ep.id.clone(), s);
                (s, None)
            }
        };
        let old_ips: Vec<IpAddr> = old.as_ref().map(|(e, _)| e.ips.clone()).unwrap_or_default();
        let others = self.move_ips(&ep.id, s, &old_ips, &ep.ips);
        let addrs = self.first_owned(s, &ep.ips);
        let old_facts = old.map(|(e, a)| Facts { labels: e.labels, addrs: a, ports: e.named_ports });
        let new_facts = Facts { labels: ep.labels.clone(), addrs: addrs.clone(), ports: ep.named_ports.clone() };
        match get_mut(&mut self.st.eps, s) {
            Some(e) => {
                e.ep = ep;
                e.addrs = addrs;
            }
            None => {
                if let Some(cell) = self.st.eps.get_mut(s as usize) {
                    *cell = Some(EpState { ep, addrs, applying: BTreeSet::new(), chains: None });
                }
            }
        }
        if existing.is_none() {
            // Its record is written once its chains are known.
            self.st.dirty.endpoints.insert(s);
        }
        self.owner_changed(Owner::Ep(s), old_facts, Some(new_facts));
        self.readdress(others);
        Ok(())
    }

    fn delete_endpoint(&mut self, id: &EndpointId) {
        let Some(s) = self.st.ep_slots.remove(id) else { return };
        let Some(old) = self.st.eps.get_mut(s as usize).and_then(Option::take) else { return };
        let others = self.move_ips(id, s, &old.ep.ips, &[]);
        let facts =
            Facts { labels: old.ep.labels.clone(), addrs: old.addrs.clone(), ports: old.ep.named_ports.clone() };
        // Its policies lose an endpoint: their local sides change.
        self.mark_local_stages(&old.applying);
        self.owner_changed(Owner::Ep(s), Some(facts), None);
        if let Some(chains) = old.chains {
            for c in chains {
                self.release_chain(c);
            }
        }
        // Unreachable (no address maps to it); rewritten so it holds no released chain.
        self.st.dirty.endpoints.insert(s);
        self.st.free_eps.push(s);
        self.readdress(others);
    }

    /// Records `slot`'s address change in the ownership lists and the table's address map;
    /// returns the other endpoints whose first-owned addresses changed.
    fn move_ips(&mut self, id: &EndpointId, slot: u32, old: &[IpAddr], new: &[IpAddr]) -> BTreeSet<u32> {
        let mut others = BTreeSet::new();
        let touched: BTreeSet<IpAddr> = old.iter().chain(new).copied().collect();
        for ip in touched {
            let list = self.st.ip_owners.entry(ip).or_default();
            let before = list.first().map(|(_, s)| *s);
            list.retain(|(_, s)| *s != slot);
            if new.contains(&ip) {
                let at = list.partition_point(|(other, _)| other < id);
                list.insert(at, (id.clone(), slot));
            }
            let after = list.first().map(|(_, s)| *s);
            if list.is_empty() {
                self.st.ip_owners.remove(&ip);
            }
            if before != after {
                others.extend(before.iter().chain(after.iter()).copied().filter(|&s| s != slot));
                self.st.dirty.addresses.insert(ip, after);
            }
        }
        others
    }

    /// Endpoints whose first-owned addresses changed through another endpoint.
    fn readdress(&mut self, others: BTreeSet<u32>) {
        for o in others {
            let Some(e) = get(&self.st.eps, o) else { continue };
            let ips = e.ep.ips.clone();
            let addrs = self.first_owned(o, &ips);
            let Some(e) = get_mut(&mut self.st.eps, o) else { continue };
            if e.addrs == addrs {
                continue;
            }
            let old = Facts { labels: e.ep.labels.clone(), addrs: e.addrs.clone(), ports: e.ep.named_ports.clone() };
            e.addrs = addrs.clone();
            let new = Facts { addrs, ..old.clone() };
            self.owner_changed(Owner::Ep(o), Some(old), Some(new));
        }
    }

    fn upsert_set(&mut self, set: LabelledNets) -> Result<(), CompileError> {
        let key = (set.namespace.clone(), set.name.clone());
        let existing = self.st.set_slots.get(&key).copied();
        if let Some(s) = existing {
            if get(&self.st.sets, s).is_some_and(|old| old.set == set) {
                return Ok(());
            }
        }
        let addrs = AddrRanges::from_nets(&set.nets);
        let new_facts = Facts { labels: set.labels.clone(), addrs: addrs.clone(), ports: Vec::new() };
        let (s, old) = match existing {
            Some(s) => (s, self.st.sets.get_mut(s as usize).and_then(Option::take)),
            None => {
                let s = alloc(&mut self.st.sets, &mut self.st.free_sets, None, "network sets")?;
                self.st.set_slots.insert(key, s);
                (s, None)
            }
        };
        if let Some(cell) = self.st.sets.get_mut(s as usize) {
            *cell = Some(SetState { set, addrs });
        }
        let old_facts = old.map(|o| Facts { labels: o.set.labels, addrs: o.addrs, ports: Vec::new() });
        self.owner_changed(Owner::Set(s), old_facts, Some(new_facts));
        Ok(())
    }

    fn delete_set(&mut self, key: &(Option<String>, String)) {
        let Some(s) = self.st.set_slots.remove(key) else { return };
        let Some(old) = self.st.sets.get_mut(s as usize).and_then(Option::take) else { return };
        self.owner_changed(
            Owner::Set(s),
            Some(Facts { labels: old.set.labels, addrs: old.addrs, ports: Vec::new() }),
            None,
        );
        self.st.free_sets.push(s);
    }

    /// An owner's labels, addresses or named ports changed (`None`: it did not exist / no
    /// longer exists). Updates memberships and marks what must be recomputed.
    fn owner_changed(&mut self, owner: Owner, old: Option<Facts>, new: Option<Facts>) {
        self.st.dirty.owners += 1;
        if let Some(o) = &old {
            for (k, v) in &o.labels {
                self.st.owner_index.remove_kv(k, v, owner);
                self.st.owner_index.remove_key(k, owner);
            }
        }
        if let Some(n) = &new {
            for (k, v) in &n.labels {
                self.st.owner_index.insert_kv(k, v, owner);
                self.st.owner_index.insert_key(k, owner);
            }
        }
        let applying_before: BTreeSet<u32> = match owner {
            Owner::Ep(s) => get(&self.st.eps, s).map(|e| e.applying.clone()).unwrap_or_default(),
            Owner::Set(_) => BTreeSet::new(),
        };
        // Selectors that could match the owner before or after.
        let mut candidates: BTreeSet<u32> = self.st.sel_any.clone();
        for f in old.iter().chain(new.iter()) {
            for (k, v) in &f.labels {
                candidates.extend(self.st.sel_index.get_kv(k, v).into_iter().flatten());
                candidates.extend(self.st.sel_index.get_key(k).into_iter().flatten());
            }
        }
        let addrs_changed = old.as_ref().map(|f| &f.addrs) != new.as_ref().map(|f| &f.addrs);
        for c in candidates {
            let Some(entry) = get_mut(&mut self.st.sels, c) else { continue };
            let was = entry.members.contains(&owner);
            let now = new.as_ref().is_some_and(|n| entry.sel.evaluate(&n.labels));
            if was == now && !(now && addrs_changed) {
                continue;
            }
            if was != now {
                if now {
                    entry.members.insert(owner);
                } else {
                    entry.members.remove(&owner);
                }
            }
            // Recomputed (and compared with the current set) when the batch is finished.
            self.st.dirty.sels.insert(c);
            if let Owner::Set(_) = owner {
                self.st.dirty.sels_local.insert(c);
            }
            if let Owner::Ep(s) = owner {
                entry.ep_addrs = None;
                if was != now {
                    let applies: Vec<u32> = entry.applies.iter().copied().collect();
                    if let Some(e) = get_mut(&mut self.st.eps, s) {
                        for p in applies {
                            if now {
                                e.applying.insert(p);
                            } else {
                                e.applying.remove(&p);
                            }
                        }
                    }
                }
            }
        }
        if let Owner::Ep(s) = owner {
            for p in old.iter().flat_map(|f| &f.ports) {
                if let Some(set) = self.st.ep_by_port.get_mut(&p.name) {
                    set.remove(&s);
                    if set.is_empty() {
                        self.st.ep_by_port.remove(&p.name);
                    }
                }
            }
            for p in new.iter().flat_map(|f| &f.ports) {
                self.st.ep_by_port.entry(p.name.clone()).or_default().insert(s);
            }
            // Named ports over remote selectors that the endpoint declares (before or after).
            let mut names: BTreeSet<&str> = BTreeSet::new();
            for f in old.iter().chain(new.iter()) {
                names.extend(f.ports.iter().map(|p| p.name.as_str()));
            }
            for name in names {
                for &n in self.st.named_by_name.get(name).into_iter().flatten() {
                    let Some(entry) = get(&self.st.named, n) else { continue };
                    let hit = |f: &Option<Facts>| {
                        f.as_ref().is_some_and(|f| entry.sel.as_ref().is_none_or(|s| s.evaluate(&f.labels)))
                    };
                    if hit(&old) || hit(&new) {
                        self.st.dirty.named.insert(n);
                    }
                }
            }
            let applying_after = get(&self.st.eps, s).map(|e| e.applying.clone()).unwrap_or_default();
            let all: BTreeSet<u32> = applying_before.union(&applying_after).copied().collect();
            self.mark_local_stages(&all);
            if new.is_some() {
                self.st.dirty.chains.insert(s);
            }
        }
    }

    /// The built stages of these policies whose local side depends on their endpoints.
    fn mark_local_stages(&mut self, policies: &BTreeSet<u32>) {
        for &p in policies {
            let Some(pol) = get(&self.st.pols, p) else { continue };
            for d in 0..2 {
                if let (Some(stage), Some(deps)) = (pol.stages.get(d).copied().flatten(), pol.deps.get(d)) {
                    if deps.local_dynamic {
                        self.st.dirty.stages.insert(stage);
                    }
                }
            }
        }
    }

    // ---- selectors ------------------------------------------------------------------------

    /// The owners matching a selector, from the label index.
    fn members_of(&self, sel: &Selector) -> BTreeSet<Owner> {
        let mut best: Option<BTreeSet<Owner>> = None;
        for (key, r) in sel.label_restrictions() {
            let candidates: BTreeSet<Owner> = match (&r.must_have_one_of_values, r.must_be_present) {
                (Some(values), _) => values
                    .iter()
                    .flat_map(|v| self.st.owner_index.get_kv(key, v).into_iter().flatten().copied())
                    .collect(),
                (None, true) => self.st.owner_index.get_key(key).cloned().unwrap_or_default(),
                (None, false) => continue,
            };
            if best.as_ref().is_none_or(|b| candidates.len() < b.len()) {
                best = Some(candidates);
            }
        }
        let candidates = best.unwrap_or_else(|| {
            let eps = self.st.eps.iter().enumerate().filter(|(_, e)| e.is_some()).map(|(i, _)| i);
            let sets = self.st.sets.iter().enumerate().filter(|(_, s)| s.is_some()).map(|(i, _)| i);
            let eps = eps.filter_map(|i| u32::try_from(i).ok()).map(Owner::Ep);
            eps.chain(sets.filter_map(|i| u32::try_from(i).ok()).map(Owner::Set)).collect()
        });
        candidates.into_iter().filter(|&o| self.owner_labels(o).is_some_and(|l| sel.evaluate(l))).collect()
    }

    /// The entry of a selector, created (members from the index) when new.
    fn selector(&mut self, sel: &Selector) -> Result<u32, CompileError> {
        if let Some(&id) = self.st.sel_ids.get(sel) {
            return Ok(id);
        }
        let members = self.members_of(sel);
        let entry = SelEntry {
            sel: sel.clone(),
            members,
            addrs: None,
            ep_addrs: None,
            applies: BTreeSet::new(),
            remote: BTreeSet::new(),
            local: BTreeSet::new(),
        };
        let id = alloc(&mut self.st.sels, &mut self.st.free_sels, Some(entry), "selectors")?;
        self.st.sel_ids.insert(sel.clone(), id);
        match sel_index_key(sel) {
            SelIndexKey::Values(k, values) => {
                for v in values {
                    self.st.sel_index.insert_kv(&k, &v, id);
                }
            }
            SelIndexKey::Present(k) => self.st.sel_index.insert_key(&k, id),
            SelIndexKey::Any => {
                self.st.sel_any.insert(id);
            }
            SelIndexKey::Never => {}
        }
        // Unused until a user registers; collected at the end of the batch otherwise.
        self.st.dirty.unused_sels.insert(id);
        Ok(id)
    }

    fn named_entry(&mut self, names: Vec<String>, sel: Option<Selector>) -> Result<u32, CompileError> {
        let key: NamedKey = (names, sel);
        if let Some(&id) = self.st.named_ids.get(&key) {
            return Ok(id);
        }
        let entry = NamedEntry { names: key.0.clone(), sel: key.1.clone(), value: None, users: BTreeSet::new() };
        let id = alloc(&mut self.st.named, &mut self.st.free_named, Some(entry), "named-port sets")?;
        for n in &key.0 {
            self.st.named_by_name.entry(n.clone()).or_default().insert(id);
        }
        self.st.named_ids.insert(key, id);
        self.st.dirty.named.insert(id);
        self.st.dirty.unused_named.insert(id);
        Ok(id)
    }

    /// Drops selector and named-port entries no one uses any more.
    fn collect_unused(&mut self) {
        for id in std::mem::take(&mut self.st.dirty.unused_sels) {
            let Some(e) = get(&self.st.sels, id) else { continue };
            if !e.unused() {
                continue;
            }
            let sel = e.sel.clone();
            match sel_index_key(&sel) {
                SelIndexKey::Values(k, values) => {
                    for v in values {
                        self.st.sel_index.remove_kv(&k, &v, id);
                    }
                }
                SelIndexKey::Present(k) => self.st.sel_index.remove_key(&k, id),
                SelIndexKey::Any => {
                    self.st.sel_any.remove(&id);
                }
                SelIndexKey::Never => {}
            }
            self.st.sel_ids.remove(&sel);
            if let Some(cell) = self.st.sels.get_mut(id as usize) {
                *cell = None;
            }
            self.st.free_sels.push(id);
            self.st.dirty.sels.remove(&id);
        }
        for id in std::mem::take(&mut self.st.dirty.unused_named) {
            let Some(e) = get(&self.st.named, id) else { continue };
            if !e.users.is_empty() {
                continue;
            }
            let key: NamedKey = (e.names.clone(), e.sel.clone());
            for n in &key.0 {
                if let Some(s) = self.st.named_by_name.get_mut(n) {
                    s.remove(&id);
                    if s.is_empty() {
                        self.st.named_by_name.remove(n);
                    }
                }
            }
            self.st.named_ids.remove(&key);
            if let Some(cell) = self.st.named.get_mut(id as usize) {
                *cell = None;
            }
            self.st.free_named.push(id);
            self.st.dirty.named.remove(&id);
        }
    }

    // ---- policies -------------------------------------------------------------------------

    /// A stage's dependencies, registering its selectors and named-port sets.
    fn stage_deps(&mut self, p: &ResolvedPolicy, dir: Direction, stage: u32) -> Result<StageDeps, CompileError> {
        let mut deps = StageDeps::default();
        for r in p.rules(dir) {
            let (remote, local): (&ResolvedEntity, &ResolvedEntity) = match dir {
                Direction::Ingress => (&r.source, &r.destination),
                Direction::Egress => (&r.destination, &r.source),
            };
            for s in remote.selector.iter().chain(remote.not_selector.iter()) {
                let id = self.selector(s)?;
                deps.remote.insert(id);
            }
            for names in [port_names(&remote.ports), port_names(&remote.not_ports)].into_iter().flatten() {
                let id = self.named_entry(names, remote.selector.clone())?;
                deps.named.insert(id);
            }
            for s in local.selector.iter().chain(local.not_selector.iter()) {
                let id = self.selector(s)?;
                deps.local.insert(id);
            }
            deps.local_dynamic |= is_dynamic(local);
        }
        for &id in &deps.remote {
            if let Some(e) = get_mut(&mut self.st.sels, id) {
                e.remote.insert(stage);
            }
        }
        for &id in &deps.local {
            if let Some(e) = get_mut(&mut self.st.sels, id) {
                e.local.insert(stage);
            }
        }
        for &id in &deps.named {
            if let Some(e) = get_mut(&mut self.st.named, id) {
                e.users.insert(stage);
            }
        }
        Ok(deps)
    }

    fn drop_deps(&mut self, deps: &StageDeps, stage: u32) {
        for &id in &deps.remote {
            if let Some(e) = get_mut(&mut self.st.sels, id) {
                e.remote.remove(&stage);
            }
            self.st.dirty.unused_sels.insert(id);
        }
        for &id in &deps.local {
            if let Some(e) = get_mut(&mut self.st.sels, id) {
                e.local.remove(&stage);
            }
            self.st.dirty.unused_sels.insert(id);
        }
        for &id in &deps.named {
            if let Some(e) = get_mut(&mut self.st.named, id) {
                e.users.remove(&stage);
            }
            self.st.dirty.unused_named.insert(id);
        }
    }

    /// Adds policy `pol` to (`on`) or removes it from the endpoints its selector matches.
    fn set_applies(&mut self, pol: u32, sel: u32, on: bool) {
        let Some(entry) = get_mut(&mut self.st.sels, sel) else { return };
        if on {
            entry.applies.insert(pol);
        } else {
            entry.applies.remove(&pol);
            self.st.dirty.unused_sels.insert(sel);
        }
        let members: Vec<u32> = entry
            .members
            .iter()
            .filter_map(|o| match o {
                Owner::Ep(s) => Some(*s),
                Owner::Set(_) => None,
            })
            .collect();
        for s in members {
            if let Some(e) = get_mut(&mut self.st.eps, s) {
                if on {
                    e.applying.insert(pol);
                } else {
                    e.applying.remove(&pol);
                }
                self.st.dirty.chains.insert(s);
            }
        }
    }

    fn upsert_policy(&mut self, p: ResolvedPolicy, warning: Option<String>) -> Result<(), CompileError> {
        match warning {
            Some(w) => self.st.warnings.insert(p.id.clone(), w),
            None => self.st.warnings.remove(&p.id),
        };
        let existing = self.st.pol_slots.get(&p.id).copied();
        let old = existing.and_then(|s| self.st.pols.get_mut(s as usize).and_then(Option::take));
        if let (Some(s), Some(old)) = (existing, &old) {
            if old.p == p {
                if let Some(cell) = self.st.pols.get_mut(s as usize) {
                    *cell = Some(old.clone());
                }
                return Ok(());
            }
        }
        let s = match existing {
            Some(s) => s,
            None => {
                let s = alloc(&mut self.st.pols, &mut self.st.free_pols, None, "policies")?;
                self.st.pol_slots.insert(p.id.clone(), s);
                s
            }
        };
        // Stage slots: kept per direction the policy still has, so chains need not change.
        let mut stages = [None, None];
        for dir in DIRECTIONS {
            let d = dir_index(dir);
            let kept = old.as_ref().and_then(|o| o.stages.get(d).copied().flatten());
            let want = p.types.contains(&dir);
            stages[d] = match (kept, want) {
                (Some(id), true) => Some(id),
                (Some(id), false) => {
                    self.free_stage(id);
                    None
                }
                (None, true) => {
                    let state = StageState { owner: StageOwner::Policy(s, dir), keys: None };
                    Some(alloc(&mut self.st.stages, &mut self.st.free_stages, state, "policy stages")?)
                }
                (None, false) => None,
            };
        }
        if let Some(o) = &old {
            for (d, deps) in o.deps.iter().enumerate() {
                if let Some(stage) = o.stages.get(d).copied().flatten() {
                    self.drop_deps(deps, stage);
                }
            }
        }
        let mut deps: [StageDeps; 2] = Default::default();
        for dir in DIRECTIONS {
            let d = dir_index(dir);
            if let Some(stage) = stages[d] {
                deps[d] = self.stage_deps(&p, dir, stage)?;
                // Rebuilt when in use (now, or when a chain first needs it).
                self.st.dirty.stages.insert(stage);
            }
        }
        let same_chains = old.as_ref().is_some_and(|o| chain_attributes_equal(&o.p, &p) && o.stages == stages);
        let applies = match (&old, same_chains) {
            (Some(o), true) => o.applies,
            _ => {
                if let Some(o) = &old {
                    self.set_applies(s, o.applies, false);
                    if let Some(set) = self.st.tier_pols.get_mut(&o.p.tier) {
                        set.remove(&s);
                    }
                }
                let id = self.selector(&p.applies_to)?;
                self.set_applies(s, id, true);
                self.st.tier_pols.entry(p.tier.clone()).or_default().insert(s);
                id
            }
        };
        if let Some(cell) = self.st.pols.get_mut(s as usize) {
            *cell = Some(PolicyState { p, applies, stages, deps });
        }
        Ok(())
    }

    fn delete_policy(&mut self, id: &PolicyId) {
        self.st.warnings.remove(id);
        let Some(s) = self.st.pol_slots.remove(id) else { return };
        let Some(old) = self.st.pols.get_mut(s as usize).and_then(Option::take) else { return };
        self.set_applies(s, old.applies, false);
        if let Some(set) = self.st.tier_pols.get_mut(&old.p.tier) {
            set.remove(&s);
            if set.is_empty() {
                self.st.tier_pols.remove(&old.p.tier);
            }
        }
        for (d, deps) in old.deps.iter().enumerate() {
            if let Some(stage) = old.stages.get(d).copied().flatten() {
                self.drop_deps(deps, stage);
                self.free_stage(stage);
            }
        }
        self.st.free_pols.push(s);
    }

    fn free_stage(&mut self, id: u32) {
        if let Some(st) = self.st.stages.get_mut(id as usize) {
            let was_built = st.keys.is_some();
            *st = StageState { owner: StageOwner::Free, keys: None };
            if was_built {
                // No chain refers to it any more (its policy's endpoints are rechained); free
                // the matchers now rather than when the slot is reused.
                self.st.dirty.stage_writes.insert(id, Arc::clone(self.empty_stage));
            }
        }
        self.st.dirty.stages.remove(&id);
        self.st.free_stages.push(id);
    }

    /// Marks the chains of every endpoint a policy applies to.
    fn rechain_members(&mut self, pol: u32) {
        let Some(p) = get(&self.st.pols, pol) else { return };
        let Some(entry) = get(&self.st.sels, p.applies) else { return };
        for o in &entry.members {
            if let Owner::Ep(s) = o {
                self.st.dirty.chains.insert(*s);
            }
        }
    }

    // ---- finishing a batch ----------------------------------------------------------------

    /// The address set of a selector (computed when stale).
    fn refresh_selector(&mut self, id: u32) -> Option<(Option<Arc<AddrRanges>>, Arc<AddrRanges>)> {
        let entry = get(&self.st.sels, id)?;
        let before = entry.addrs.clone();
        let addrs = {
            let eps = entry.members.iter().filter_map(|o| match o {
                Owner::Ep(s) => get(&self.st.eps, *s).map(|e| &e.addrs),
                Owner::Set(s) => get(&self.st.sets, *s).map(|x| &x.addrs),
            });
            Arc::new(union_of(eps))
        };
        let entry = get_mut(&mut self.st.sels, id)?;
        entry.addrs = Some(Arc::clone(&addrs));
        Some((before, addrs))
    }

    fn finish(&mut self, stats: &mut UpdateStats) -> Result<PolicyTableDelta, CompileError> {
        self.collect_unused();
        stats.owners_changed = self.st.dirty.owners;
        // Selectors: recompute those whose members changed (and new ones); when the set
        // differs, the stages using it on their remote side (and local side, for network sets).
        let mut sels = std::mem::take(&mut self.st.dirty.sels);
        sels.extend(
            self.st
                .sels
                .iter()
                .enumerate()
                .filter(|(_, e)| e.as_ref().is_some_and(|e| e.addrs.is_none()))
                .filter_map(|(i, _)| u32::try_from(i).ok()),
        );
        for id in sels {
            let Some((before, after)) = self.refresh_selector(id) else { continue };
            stats.selectors_recomputed += 1;
            // A new selector has no users but new stages, which are recomputed anyway.
            if before.is_none_or(|b| *b == *after) {
                continue;
            }
            stats.selectors_changed += 1;
            let Some(entry) = get(&self.st.sels, id) else { continue };
            let mut users: Vec<u32> = entry.remote.iter().copied().collect();
            if self.st.dirty.sels_local.contains(&id) {
                users.extend(entry.local.iter().copied());
            }
            self.st.dirty.stages.extend(users);
        }
        self.st.dirty.sels_local.clear();
        // Named ports over remote selectors.
        for id in std::mem::take(&mut self.st.dirty.named) {
            let Some(entry) = get(&self.st.named, id) else { continue };
            stats.named_recomputed += 1;
            let names: Vec<&str> = entry.names.iter().map(String::as_str).collect();
            // Candidates: the endpoints declaring one of the names, or the selector's members
            // when it has an entry (then they match already); the smaller set.
            let declaring: BTreeSet<u32> =
                names.iter().flat_map(|n| self.st.ep_by_port.get(*n).into_iter().flatten().copied()).collect();
            let members = entry.sel.as_ref().and_then(|s| self.st.sel_ids.get(s)).and_then(|&i| get(&self.st.sels, i));
            let (candidates, sel): (Vec<u32>, Option<&Selector>) = match members {
                Some(m) if m.members.len() < declaring.len() => (
                    m.members
                        .iter()
                        .filter_map(|o| match o {
                            Owner::Ep(s) => Some(*s),
                            Owner::Set(_) => None,
                        })
                        .collect(),
                    None,
                ),
                _ => (declaring.into_iter().collect(), entry.sel.as_ref()),
            };
            let eps = candidates
                .iter()
                .filter_map(|&c| get(&self.st.eps, c))
                .map(|e| (&e.ep.labels, e.ep.named_ports.as_slice(), &e.addrs));
            let value = Arc::new(named_of(&names, sel, eps));
            let changed = entry.value.as_deref() != Some(&*value);
            let users: Vec<u32> = entry.users.iter().copied().collect();
            if let Some(e) = get_mut(&mut self.st.named, id) {
                e.value = Some(value);
            }
            if changed {
                self.st.dirty.stages.extend(users);
            }
        }
        // Stages that are built (in use): recompute their keys; rebuild those that differ.
        for stage in std::mem::take(&mut self.st.dirty.stages) {
            if self.st.stages.get(stage as usize).is_some_and(|s| s.keys.is_some()) {
                self.recompute_stage(stage, stats)?;
            }
        }
        // Chains.
        for s in std::mem::take(&mut self.st.dirty.chains) {
            if get(&self.st.eps, s).is_some() {
                stats.endpoints_rechained += 1;
                self.rechain(s, stats)?;
            }
        }
        // The delta.
        let mut delta = PolicyTableDelta::default();
        // Slots the table does not have yet are all written (a new slot freed again in the
        // same batch, or a stage no chain uses yet, gets a placeholder), so the table's
        // vectors grow without gaps.
        let mut endpoints = std::mem::take(&mut self.st.dirty.endpoints);
        endpoints.extend((self.st.table_endpoints..self.st.eps.len()).filter_map(|i| u32::try_from(i).ok()));
        for s in endpoints {
            match get(&self.st.eps, s).and_then(|e| Some((e, e.chains?))) {
                Some((e, chains)) => delta.endpoints.push((s, endpoint_info(&e.ep, chains))),
                None => delta.endpoints.push((s, tombstone())),
            }
        }
        for i in (self.st.table_stages..self.st.stages.len()).filter_map(|i| u32::try_from(i).ok()) {
            self.st.dirty.stage_writes.entry(i).or_insert_with(|| Arc::clone(self.empty_stage));
        }
        delta.addresses = std::mem::take(&mut self.st.dirty.addresses).into_iter().collect();
        delta.policies = std::mem::take(&mut self.st.dirty.stage_writes).into_iter().collect();
        delta.chains =
            std::mem::take(&mut self.st.dirty.chain_writes).into_iter().map(|(i, c)| (i, Chain::clone(&c))).collect();
        delta.traces = self.st.traces.since(self.st.published_traces).to_vec();
        if std::mem::take(&mut self.st.dirty.zones) {
            delta.zones = Some(zones_of(self.model));
        }
        stats.endpoints_written = delta.endpoints.len();
        stats.chains_written = delta.chains.len();
        stats.stages_written = delta.policies.len();
        stats.addresses_written = delta.addresses.len();
        stats.traces_added = delta.traces.len();
        Ok(delta)
    }

    /// The [`Local`] of a policy: its endpoints and their addresses.
    fn local_of(&mut self, applies: u32) -> Local {
        let Some(entry) = get(&self.st.sels, applies) else { return Local::default() };
        let members: Vec<u32> = entry
            .members
            .iter()
            .filter_map(|o| match o {
                Owner::Ep(s) => Some(*s),
                Owner::Set(_) => None,
            })
            .collect();
        let addrs = match &entry.ep_addrs {
            Some(a) => Arc::clone(a),
            None => {
                let a = Arc::new(union_of(members.iter().filter_map(|&s| get(&self.st.eps, s)).map(|e| &e.addrs)));
                if let Some(e) = get_mut(&mut self.st.sels, applies) {
                    e.ep_addrs = Some(Arc::clone(&a));
                }
                a
            }
        };
        Local { members, addrs: AddrRanges::clone(&addrs) }
    }

    /// Recomputes a policy stage's keys; builds and writes it when they changed.
    fn recompute_stage(&mut self, stage: u32, stats: &mut UpdateStats) -> Result<(), CompileError> {
        let Some(state) = self.st.stages.get(stage as usize) else { return Ok(()) };
        let StageOwner::Policy(pol, dir) = state.owner else { return Ok(()) };
        let Some(applies) = get(&self.st.pols, pol).map(|p| p.applies) else { return Ok(()) };
        stats.stages_recomputed += 1;
        let local = self.local_of(applies);
        let st = &mut *self.st;
        let Some(p) = st.pols.get(pol as usize).and_then(Option::as_ref) else { return Ok(()) };
        let mut view = View {
            sels: &st.sels,
            sel_ids: &st.sel_ids,
            named: &st.named,
            named_ids: &st.named_ids,
            eps: &st.eps,
            sets: &st.sets,
        };
        let keys = policy_keys(&mut view, &mut st.traces, &p.p.tier, &p.p, dir, Some(&local))?;
        self.build_stage_keys(stage, keys, stats)
    }

    fn build_stage_keys(
        &mut self,
        stage: u32,
        keys: Vec<RuleKey>,
        stats: &mut UpdateStats,
    ) -> Result<(), CompileError> {
        let Some(state) = self.st.stages.get(stage as usize) else { return Ok(()) };
        if state.keys.as_ref() == Some(&keys) {
            return Ok(());
        }
        let what = match &state.owner {
            StageOwner::Policy(pol, dir) => {
                (get(&self.st.pols, *pol).map(|p| p.p.trace_name.clone()).unwrap_or_default(), *dir)
            }
            StageOwner::Failsafe(dir) => ("failsafe".to_string(), *dir),
            StageOwner::Free => ("(free)".to_string(), Direction::Ingress),
        };
        let built = build_stage(&keys, self.linear_max_pieces).map_err(|source| CompileError::Build {
            policy: what.0,
            direction: what.1,
            source,
        })?;
        stats.stages_built += 1;
        self.st.dirty.stage_writes.insert(stage, Arc::new(built));
        if let Some(state) = self.st.stages.get_mut(stage as usize) {
            state.keys = Some(keys);
        }
        Ok(())
    }

    /// Tier order and default action by name (declared, or as an undeclared tier).
    fn tier_info(&self, name: &str) -> (Option<f64>, TierDefaultAction) {
        match self.model.tiers.get(name) {
            Some(t) if t.name == DEFAULT_TIER && t.spec.order.is_none() => {
                (Some(DEFAULT_TIER_ORDER), t.spec.default_action)
            }
            Some(t) => (t.spec.order, t.spec.default_action),
            None if name == DEFAULT_TIER => (Some(DEFAULT_TIER_ORDER), TierDefaultAction::Deny),
            None => (None, TierDefaultAction::Deny),
        }
    }

    /// Recomputes an endpoint's chains, interning them; writes its record when they changed.
    fn rechain(&mut self, s: u32, stats: &mut UpdateStats) -> Result<(), CompileError> {
        let Some(e) = get(&self.st.eps, s) else { return Ok(()) };
        let host = e.ep.is_host();
        // Policies in evaluation order: tiers by order then name, policies in tier order.
        let mut applying: Vec<(Option<f64>, TierDefaultAction, u32)> = e
            .applying
            .iter()
            .filter_map(|&p| get(&self.st.pols, p).map(|x| (&x.p.tier, p)))
            .map(|(tier, p)| {
                let (order, action) = self.tier_info(tier);
                (order, action, p)
            })
            .collect();
        let pols = &self.st.pols;
        applying.sort_by(|a, b| {
            let (pa, pb) = (get(pols, a.2), get(pols, b.2));
            cmp_order(a.0, b.0).then_with(|| match (pa, pb) {
                (Some(x), Some(y)) => x.p.tier.cmp(&y.p.tier).then_with(|| cmp_policies(&x.p, &y.p)),
                _ => Ordering::Equal,
            })
        });
        let mut ids = [0u32; 2];
        for dir in DIRECTIONS {
            let d = dir_index(dir);
            // Stages this chain uses, built now if no chain used them before.
            let mut used: Vec<(u32, u32, TierDefaultAction)> = Vec::new();
            for &(_, action, p) in &applying {
                let Some(pol) = get(&self.st.pols, p) else { continue };
                if !uses_stage(host, &pol.p, dir) {
                    continue;
                }
                let Some(stage) = pol.stages.get(d).copied().flatten() else { continue };
                used.push((p, stage, action));
            }
            for &(_, stage, _) in &used {
                if self.st.stages.get(stage as usize).is_some_and(|x| x.keys.is_none()) {
                    self.recompute_stage(stage, stats)?;
                }
            }
            let st = &mut *self.st;
            let Some(e) = get(&st.eps, s) else { return Ok(()) };
            let chain_policies: Vec<ChainPolicy<'_>> = used
                .iter()
                .filter_map(|&(p, stage, default_action)| {
                    let pol = get(&st.pols, p)?;
                    Some(ChainPolicy { tier: &pol.p.tier, default_action, policy: &pol.p, stage })
                })
                .collect();
            let chain = build_chain(&e.ep, dir, st.failsafe[d], &chain_policies, &mut st.traces)?;
            ids[d] = self.intern_chain(chain)?;
        }
        let Some(e) = get_mut(&mut self.st.eps, s) else { return Ok(()) };
        let old = e.chains.replace(ids);
        if old != Some(ids) {
            self.st.dirty.endpoints.insert(s);
        }
        // Hold the new chains before releasing the old ones (they may be the same).
        for id in ids {
            if let Some(c) = self.st.chains.get_mut(id as usize) {
                c.refs += 1;
            }
        }
        for id in old.into_iter().flatten() {
            self.release_chain(id);
        }
        Ok(())
    }

    /// The slot of a chain with this content (a new one written when none has it).
    fn intern_chain(&mut self, chain: Chain) -> Result<u32, CompileError> {
        if let Some(&id) = self.st.chain_ids.get(&chain) {
            return Ok(id);
        }
        let chain = Arc::new(chain);
        let id = alloc(
            &mut self.st.chains,
            &mut self.st.free_chains,
            ChainSlot { chain: Some(Arc::clone(&chain)), refs: 0 },
            "chains",
        )?;
        self.st.chain_ids.insert(Arc::clone(&chain), id);
        self.st.dirty.chain_writes.insert(id, chain);
        Ok(id)
    }

    fn release_chain(&mut self, id: u32) {
        let Some(c) = self.st.chains.get_mut(id as usize) else { return };
        c.refs = c.refs.saturating_sub(1);
        if c.refs == 0 {
            if let Some(chain) = c.chain.take() {
                self.st.chain_ids.remove(&chain);
            }
            self.st.free_chains.push(id);
        }
    }
}

#[cfg(test)]
mod tests;
