//! Tables as data: the agent encodes a [`RuleTable`] into a [`TableMsg`] ([`TableEncoder`]); the
//! fastpath validates a received one and rebuilds it ([`build_table`]), with a cache of policy
//! stages by content id ([`StageCache`]).

use super::message::{PatchMsg, PolicyMsg, StageId, StageMsg, TableBody, TableMsg};
use crate::classify::RuleTable;
use crate::classify::engine::{AddrSet, PortSet, ProtoSet, Rule};
use crate::classify::policy::{PolicyRules, PolicyTable, PolicyTableDelta, PolicyTableParts, RuleSpec, SharedVec};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// The content id of a stage from its encoded specs.
pub fn stage_id(encoded_specs: &[u8]) -> StageId {
    let digest = Sha256::digest(encoded_specs);
    let mut id = [0u8; 16];
    id.copy_from_slice(digest.get(..16).unwrap_or(&[0; 16]));
    StageId(id)
}

/// Encodes a stage's specs (deterministic: postcard has no maps or padding).
pub fn encode_specs(specs: &[RuleSpec]) -> Result<Vec<u8>, postcard::Error> {
    postcard::to_allocvec(specs)
}

/// Why a table could not be encoded (agent side).
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("policy stage {0} was built without its rule specs and cannot be sent")]
    NoSpecs(usize),
    #[error("encoding: {0}")]
    Postcard(#[from] postcard::Error),
}

/// Agent side: turns rule tables into messages, remembering the content id of every stage it
/// encoded (by allocation: the compiler shares unchanged stages between tables as the same `Arc`),
/// so that an unchanged stage is neither re-encoded nor re-hashed, and the stage ids of the last
/// tables it encoded, so that a patch touches only what changed.
#[derive(Debug, Default)]
pub struct TableEncoder {
    /// `Arc::as_ptr` → (the stage, kept alive so the address cannot be reused; its id).
    ids: HashMap<usize, (Arc<PolicyRules>, StageId)>,
    /// The last tables encoded (kept alive: they are matched by allocation) with their stage ids
    /// by index; the newest last. Two: the one in flight and the one acknowledged before it.
    recent: Vec<(Arc<RuleTable>, Arc<[StageId]>)>,
}

/// Tables remembered by [`TableEncoder`].
const RECENT: usize = 2;

impl TableEncoder {
    pub fn new() -> TableEncoder {
        TableEncoder::default()
    }

    /// The id of `stage` and, when the fastpath lacks it and it was not sent yet, its specs.
    fn stage(
        &mut self,
        index: usize,
        stage: &Arc<PolicyRules>,
        fastpath_has: &HashSet<StageId>,
        sent: &mut HashSet<StageId>,
    ) -> Result<(StageId, Option<StageMsg>), EncodeError> {
        let key = Arc::as_ptr(stage) as usize;
        let (sid, bytes) = match self.ids.get(&key) {
            Some((_, sid)) if fastpath_has.contains(sid) || sent.contains(sid) => (*sid, None),
            _ => {
                let specs = stage.specs().ok_or(EncodeError::NoSpecs(index))?;
                let bytes = encode_specs(specs)?;
                let sid = stage_id(&bytes);
                self.ids.insert(key, (Arc::clone(stage), sid));
                (sid, (!fastpath_has.contains(&sid) && !sent.contains(&sid)).then_some(bytes))
            }
        };
        let msg = bytes.map(|specs| {
            sent.insert(sid);
            StageMsg { id: sid, specs }
        });
        Ok((sid, msg))
    }

    /// The message for `table`; stages whose id is in `fastpath_has` travel as their id only.
    /// With `base` (the table the fastpath has in force and its generation), a policy table that
    /// derives from it (the incremental compiler's tables do) travels as a patch: only what changed.
    pub fn encode(
        &mut self,
        table: &Arc<RuleTable>,
        id: u64,
        fastpath_has: &HashSet<StageId>,
        base: Option<(&Arc<RuleTable>, u64)>,
    ) -> Result<TableMsg, EncodeError> {
        let origin = table.origin().to_owned();
        let Some(policy) = table.policy() else {
            self.remember(table, Arc::from(Vec::new()));
            return Ok(TableMsg {
                id,
                origin,
                body: TableBody::Acl { rules: table.rules().to_vec(), default: table.default_verdict() },
            });
        };
        let mut sent: HashSet<StageId> = HashSet::new();
        let mut new_stages = Vec::new();
        // A patch: only the written stages need an id, the others keep the base's.
        let based = base.and_then(|(b, generation)| {
            let order = self.recent.iter().find(|(t, _)| Arc::ptr_eq(t, b)).map(|(_, o)| Arc::clone(o))?;
            Some((Arc::clone(b), generation, order))
        });
        if let Some((base_table, generation, base_order)) = based
            && let Some(old) = base_table.policy()
            && let Some(mut patch) = patch_between(old, policy)
        {
            let mut order = base_order.to_vec();
            for (i, sid) in &mut patch.stages {
                let index = *i as usize;
                let Some(stage) = policy.policies().get(index) else { continue };
                let (stage_id, msg) = self.stage(index, stage, fastpath_has, &mut sent)?;
                *sid = stage_id;
                new_stages.extend(msg);
                match order.get_mut(index) {
                    Some(slot) => *slot = stage_id,
                    None => order.push(stage_id),
                }
            }
            patch.base = generation;
            patch.new_stages = new_stages;
            self.remember(table, Arc::from(order));
            return Ok(TableMsg { id, origin, body: TableBody::Patch(patch) });
        }
        let mut order = Vec::with_capacity(policy.policies().len());
        for (i, stage) in policy.policies().iter().enumerate() {
            let (stage_id, msg) = self.stage(i, stage, fastpath_has, &mut sent)?;
            order.push(stage_id);
            new_stages.extend(msg);
        }
        self.remember(table, Arc::from(order.clone()));
        let parts = policy.parts();
        let mut addresses: Vec<_> = parts.addresses.into_iter().collect();
        // Deterministic messages (the map's order is random): equal tables encode equally.
        addresses.sort_unstable();
        let msg = PolicyMsg {
            new_stages,
            stages: order,
            endpoints: parts.endpoints,
            addresses,
            chains: parts.chains,
            traces: parts.traces,
            zones: parts.zones,
        };
        Ok(TableMsg { id, origin, body: TableBody::Policy(msg) })
    }

    /// Keeps `order` for `table`, and trims the id cache to the stages of the remembered tables
    /// once it has grown past twice their size (amortised: a patch does not walk every stage).
    fn remember(&mut self, table: &Arc<RuleTable>, order: Arc<[StageId]>) {
        self.recent.retain(|(t, _)| !Arc::ptr_eq(t, table));
        self.recent.push((Arc::clone(table), order));
        if self.recent.len() > RECENT {
            self.recent.remove(0);
        }
        let live: usize = self.recent.iter().map(|(t, _)| t.policy().map_or(0, |p| p.policies().len())).sum();
        if self.ids.len() > 2 * live + 64 {
            let keep: HashSet<usize> = self
                .recent
                .iter()
                .filter_map(|(t, _)| t.policy())
                .flat_map(|p| p.policies().iter().map(|s| Arc::as_ptr(s) as usize))
                .collect();
            self.ids.retain(|k, _| keep.contains(k));
        }
    }

    /// The stage ids of the last table encoded (what the fastpath holds once it applied it).
    pub fn stage_ids(&self) -> HashSet<StageId> {
        self.recent.last().map(|(_, o)| o.iter().copied().collect()).unwrap_or_default()
    }
}

/// Writes turning `old` into `new` (elements of chunks both share are equal without a look);
/// `None` when `new` is shorter (a patch never removes).
fn writes<T: Clone>(old: &SharedVec<T>, new: &SharedVec<T>, eq: impl Fn(&T, &T) -> bool) -> Option<Vec<(u32, T)>> {
    if new.len() < old.len() {
        return None;
    }
    let chunk = SharedVec::<T>::CHUNK;
    let mut out = Vec::new();
    let mut i = 0;
    while i < new.len() {
        let end = ((i / chunk + 1) * chunk).min(new.len());
        if i >= old.len() || !new.shares_chunk_with(old, i) {
            for j in i..end {
                let n = new.get(j)?;
                if !old.get(j).is_some_and(|o| eq(o, n)) {
                    out.push((u32::try_from(j).ok()?, n.clone()));
                }
            }
        }
        i = end;
    }
    Some(out)
}

/// The patch from `old` to `new`, stage ids still to be filled in; `None` when `new` does not
/// derive from `old` by replacing and appending.
fn patch_between(old: &PolicyTable, new: &PolicyTable) -> Option<PatchMsg> {
    let stages =
        writes(old.policies(), new.policies(), Arc::ptr_eq)?.into_iter().map(|(i, _)| (i, StageId([0; 16]))).collect();
    let endpoints = writes(old.endpoints(), new.endpoints(), PartialEq::eq)?;
    let chains = writes(old.chains(), new.chains(), PartialEq::eq)?;
    // Traces are only appended.
    let mut traces = writes(old.traces(), new.traces(), PartialEq::eq)?;
    if traces.iter().any(|(i, _)| (*i as usize) < old.traces().len()) {
        return None;
    }
    let traces = traces.drain(..).map(|(_, t)| t).collect();
    let mut addresses = Vec::new();
    if !new.shares_addresses_with(old) {
        for (ip, e) in new.addresses() {
            if old.addresses().get(ip) != Some(e) {
                addresses.push((*ip, Some(*e)));
            }
        }
        for ip in old.addresses().keys() {
            if !new.addresses().contains_key(ip) {
                addresses.push((*ip, None));
            }
        }
        addresses.sort_unstable();
    }
    let zones = (old.zones() != new.zones()).then(|| new.zones().to_vec());
    Some(PatchMsg { base: 0, new_stages: Vec::new(), stages, endpoints, addresses, chains, traces, zones })
}

/// What the fastpath accepts in one table, against memory blow-ups from a buggy or hostile
/// sender. Decoding is bounded by the frame limit (the link's `max_frame`); these bound what is
/// built from it. Defaults are far above a 10,000-pod cluster's table (ARCHITECTURE.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_endpoints: usize,
    pub max_addresses: usize,
    pub max_chains: usize,
    pub max_traces: usize,
    pub max_stages: usize,
    pub max_zones: usize,
    pub max_acl_rules: usize,
    /// Rules of one stage.
    pub max_stage_rules: usize,
    /// Classifier boxes (cross product of a piece's address, port and protocol sets), summed
    /// over the stages built from one message: what the classifier's memory grows with.
    pub max_boxes: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_endpoints: 1 << 20,
            max_addresses: 1 << 21,
            max_chains: 1 << 21,
            max_traces: 1 << 21,
            max_stages: 1 << 20,
            max_zones: 1 << 16,
            max_acl_rules: 1 << 20,
            max_stage_rules: 1 << 16,
            max_boxes: 1 << 24,
        }
    }
}

/// Why a table was refused; the text goes back to the agent in the Nack.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

fn refuse(text: impl Into<String>) -> Refusal {
    Refusal(text.into())
}

/// Fastpath side: built policy stages by content id (those of the table in force), and the id of
/// each stage index of that table (what a patch's stage writes apply to).
#[derive(Debug, Default)]
pub struct StageCache {
    stages: HashMap<StageId, Arc<PolicyRules>>,
    order: Vec<StageId>,
}

impl StageCache {
    pub fn ids(&self) -> Vec<StageId> {
        let mut v: Vec<StageId> = self.stages.keys().copied().collect();
        v.sort_unstable();
        v
    }

    pub fn len(&self) -> usize {
        self.stages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.stages.is_empty()
    }

    /// After a swap: exactly the stages of the table now in force (unused ones are freed).
    pub fn replace(&mut self, built: &mut BuiltTable) {
        self.stages = std::mem::take(&mut built.stages);
        self.order = std::mem::take(&mut built.order);
    }
}

/// A validated table, ready to publish, with the stages it uses (for the cache).
#[derive(Debug)]
pub struct BuiltTable {
    pub table: RuleTable,
    pub stages: HashMap<StageId, Arc<PolicyRules>>,
    /// Stage id per stage index of `table`.
    pub order: Vec<StageId>,
    pub stages_built: u32,
    pub stages_reused: u32,
    /// Applied as a patch to the table in force (else built whole).
    pub patch: bool,
}

fn count_of(set: &AddrSet) -> u64 {
    match set {
        AddrSet::Any => 1,
        AddrSet::Nets(n) => n.len() as u64,
    }
}

fn ports_of(set: &PortSet) -> u64 {
    match set {
        PortSet::Any => 1,
        PortSet::Ranges(r) => r.len() as u64,
    }
}

/// Upper bound of the boxes a classifier rule expands into.
fn boxes(r: &Rule) -> u64 {
    let protos = match &r.protocol {
        ProtoSet::Any => 1,
        ProtoSet::Only(v) => v.len() as u64,
    };
    count_of(&r.src)
        .saturating_mul(count_of(&r.dst))
        .saturating_mul(ports_of(&r.src_ports))
        .saturating_mul(ports_of(&r.dst_ports))
        .saturating_mul(protos.max(1))
}

fn check_count(what: &str, n: usize, max: usize) -> Result<(), Refusal> {
    if n > max {
        return Err(refuse(format!("{n} {what}, more than the limit of {max}")));
    }
    Ok(())
}

/// Checks and builds the stages a message brings.
fn build_stages(new_stages: &[StageMsg], limits: &Limits) -> Result<HashMap<StageId, Arc<PolicyRules>>, Refusal> {
    check_count("new policy stages", new_stages.len(), limits.max_stages)?;
    let mut built: HashMap<StageId, Arc<PolicyRules>> = HashMap::with_capacity(new_stages.len());
    let mut total_boxes: u64 = 0;
    for stage in new_stages {
        if stage_id(&stage.specs) != stage.id {
            return Err(refuse(format!("policy stage {}: its content does not match its id", stage.id)));
        }
        if built.contains_key(&stage.id) {
            continue;
        }
        let specs: Vec<RuleSpec> = postcard::from_bytes(&stage.specs)
            .map_err(|e| refuse(format!("policy stage {}: cannot decode its rules: {e}", stage.id)))?;
        check_count(&format!("rules in policy stage {}", stage.id), specs.len(), limits.max_stage_rules)?;
        for spec in &specs {
            for piece in spec.pieces.iter().chain(spec.plain_pieces.iter().flatten()) {
                total_boxes = total_boxes.saturating_add(boxes(piece));
            }
        }
        if total_boxes > limits.max_boxes {
            return Err(refuse(format!(
                "the new policy stages expand to more than {} classifier boxes (limit)",
                limits.max_boxes
            )));
        }
        let rules =
            PolicyRules::build_without_specs(&specs).map_err(|e| refuse(format!("policy stage {}: {e}", stage.id)))?;
        built.insert(stage.id, Arc::new(rules));
    }
    Ok(built)
}

/// The stage with id `sid`: just built, or held.
fn stage_of(
    sid: &StageId,
    index: usize,
    built: &HashMap<StageId, Arc<PolicyRules>>,
    cache: &StageCache,
) -> Result<Arc<PolicyRules>, Refusal> {
    built
        .get(sid)
        .or_else(|| cache.stages.get(sid))
        .cloned()
        .ok_or_else(|| refuse(format!("policy stage {index} ({sid}) was neither sent nor held by the fastpath")))
}

/// The stages of a table with stage ids `order`, and how many came from the cache.
fn used_stages(
    order: &[StageId],
    built: &HashMap<StageId, Arc<PolicyRules>>,
    cache: &StageCache,
) -> Result<(HashMap<StageId, Arc<PolicyRules>>, u32), Refusal> {
    let mut used: HashMap<StageId, Arc<PolicyRules>> = HashMap::with_capacity(order.len());
    let mut reused = 0u32;
    for (i, sid) in order.iter().enumerate() {
        if used.contains_key(sid) {
            continue;
        }
        if !built.contains_key(sid) {
            reused += 1;
        }
        used.insert(*sid, stage_of(sid, i, built, cache)?);
    }
    Ok((used, reused))
}

/// Validates `msg` completely and builds the table it describes from it and, for a patch, from
/// `in_force` (the table the workers use now); nothing is published here. Every stage's id is
/// checked against its content, every stage is built by this process from its specs, every index
/// is checked (`PolicyTable::new`, or `PolicyTable::patched` for what a patch writes), and sizes
/// are held to `limits`.
pub fn build_table(
    msg: TableMsg,
    cache: &StageCache,
    in_force: &RuleTable,
    limits: &Limits,
) -> Result<BuiltTable, Refusal> {
    let TableMsg { origin, body, .. } = msg;
    let p = match body {
        TableBody::Acl { rules, default } => {
            check_count("ACL rules", rules.len(), limits.max_acl_rules)?;
            return Ok(BuiltTable {
                table: RuleTable::new(rules, default, origin),
                stages: HashMap::new(),
                order: Vec::new(),
                stages_built: 0,
                stages_reused: 0,
                patch: false,
            });
        }
        TableBody::Patch(patch) => return build_patch(patch, origin, cache, in_force, limits),
        TableBody::Policy(p) => p,
    };
    check_count("endpoints", p.endpoints.len(), limits.max_endpoints)?;
    check_count("addresses", p.addresses.len(), limits.max_addresses)?;
    check_count("chains", p.chains.len(), limits.max_chains)?;
    check_count("traces", p.traces.len(), limits.max_traces)?;
    check_count("policy stages", p.stages.len(), limits.max_stages)?;
    check_count("zones", p.zones.len(), limits.max_zones)?;
    let built = build_stages(&p.new_stages, limits)?;
    let stages_built = u32::try_from(built.len()).unwrap_or(u32::MAX);
    let (used, stages_reused) = used_stages(&p.stages, &built, cache)?;
    let policies =
        p.stages.iter().enumerate().map(|(i, sid)| stage_of(sid, i, &built, cache)).collect::<Result<Vec<_>, _>>()?;

    let mut addresses = HashMap::with_capacity(p.addresses.len());
    for (ip, e) in p.addresses {
        if addresses.insert(ip, e).is_some() {
            return Err(refuse(format!("address {ip} is listed twice")));
        }
    }
    let parts = PolicyTableParts {
        endpoints: p.endpoints,
        addresses,
        chains: p.chains,
        policies,
        traces: p.traces,
        zones: p.zones,
    };
    let table = PolicyTable::new(parts).map_err(|e| refuse(format!("inconsistent table: {e}")))?;
    Ok(BuiltTable {
        table: RuleTable::from_policy(Arc::new(table), origin),
        stages: used,
        order: p.stages,
        stages_built,
        stages_reused,
        patch: false,
    })
}

fn build_patch(
    p: PatchMsg,
    origin: String,
    cache: &StageCache,
    in_force: &RuleTable,
    limits: &Limits,
) -> Result<BuiltTable, Refusal> {
    if p.base != in_force.generation() {
        return Err(refuse(format!(
            "patch for generation {}, but generation {} is in force",
            p.base,
            in_force.generation()
        )));
    }
    let Some(old) = in_force.policy() else {
        return Err(refuse("patch, but the table in force is not a policy table"));
    };
    if cache.order.len() != old.policies().len() {
        return Err(refuse("patch, but the stages of the table in force are not known by id"));
    }
    let grown = |what: &str, len: usize, writes: usize, max: usize| check_count(what, len.saturating_add(writes), max);
    grown("endpoints", old.endpoints().len(), p.endpoints.len(), limits.max_endpoints)?;
    grown("addresses", old.addresses().len(), p.addresses.len(), limits.max_addresses)?;
    grown("chains", old.chains().len(), p.chains.len(), limits.max_chains)?;
    grown("traces", old.traces().len(), p.traces.len(), limits.max_traces)?;
    grown("policy stages", old.policies().len(), p.stages.len(), limits.max_stages)?;
    check_count("zones", p.zones.as_ref().map_or(0, Vec::len), limits.max_zones)?;
    let built = build_stages(&p.new_stages, limits)?;
    let stages_built = u32::try_from(built.len()).unwrap_or(u32::MAX);
    let mut order = cache.order.clone();
    let mut policies = Vec::with_capacity(p.stages.len());
    for (i, sid) in &p.stages {
        let index = *i as usize;
        match index.cmp(&order.len()) {
            std::cmp::Ordering::Less => order[index] = *sid,
            std::cmp::Ordering::Equal => order.push(*sid),
            std::cmp::Ordering::Greater => {
                return Err(refuse(format!("policy stage {index} written past the end ({})", order.len())));
            }
        }
        policies.push((*i, stage_of(sid, index, &built, cache)?));
    }
    let (used, stages_reused) = used_stages(&order, &built, cache)?;
    let delta = PolicyTableDelta {
        endpoints: p.endpoints,
        addresses: p.addresses,
        chains: p.chains,
        policies,
        traces: p.traces,
        zones: p.zones,
    };
    let table = old.patched(delta).map_err(|e| refuse(format!("inconsistent patch: {e}")))?;
    Ok(BuiltTable {
        table: RuleTable::from_policy(Arc::new(table), origin),
        stages: used,
        order,
        stages_built,
        stages_reused,
        patch: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::engine::Action;
    use crate::classify::policy::{Chain, EndpointInfo, Step, StepKind, TraceInfo};
    use crate::classify::{FlowKey, Verdict};

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

    /// Pod 10.0.0.2: ingress allows TCP `port` from 10.0.0.1, end of tier deny.
    fn table(port: u16) -> Arc<RuleTable> {
        let stage = PolicyRules::build(vec![RuleSpec {
            action: Action::Allow,
            trace: 0,
            pieces: vec![Rule {
                src: AddrSet::Nets(vec!["10.0.0.1/32".parse().unwrap()]),
                protocol: ProtoSet::Only(vec![6]),
                dst_ports: PortSet::Ranges(vec![(port, port)]),
                ..Rule::default()
            }],
            plain_pieces: None,
        }])
        .unwrap();
        let trace = |action, rule_index| TraceInfo { tier: "default".into(), name: "ns/p".into(), action, rule_index };
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
                    steps: vec![Step { kind: StepKind::Normal, policies: vec![0], end: Some((Action::Deny, 1)) }],
                    profile: (Verdict::Allow, 2),
                },
                Chain { steps: vec![], profile: (Verdict::Allow, 2) },
            ],
            policies: vec![Arc::new(stage)],
            traces: vec![trace(Action::Allow, 0), trace(Action::Deny, -1), trace(Action::Allow, 0)],
            zones: vec![("10.0.0.0/24".parse().unwrap(), "pods".into())],
        };
        Arc::new(RuleTable::from_policy(Arc::new(PolicyTable::new(parts).unwrap()), "test"))
    }

    fn roundtrip(msg: &TableMsg) -> TableMsg {
        let bytes = postcard::to_allocvec(msg).unwrap();
        postcard::from_bytes(&bytes).unwrap()
    }

    #[test]
    fn a_table_travels_and_decides_alike_and_later_tables_send_only_new_stages() {
        let mut enc = TableEncoder::new();
        let original = table(80);
        let msg = enc.encode(&original, 1, &HashSet::new(), None).unwrap();
        let TableBody::Policy(p) = &msg.body else { panic!() };
        assert_eq!(p.new_stages.len(), 1);
        let mut cache = StageCache::default();
        let mut built = build_table(roundtrip(&msg), &cache, &RuleTable::fail_closed(), &Limits::default()).unwrap();
        assert_eq!((built.stages_built, built.stages_reused), (1, 0));
        for k in [key("10.0.0.1", "10.0.0.2", 80), key("10.0.0.1", "10.0.0.2", 81), key("10.0.0.2", "10.0.0.9", 5)] {
            assert_eq!(built.table.admit(&k), original.admit(&k), "{k:?}");
        }
        // The fastpath keeps no specs of its own.
        assert!(built.table.policy().unwrap().policies()[0].specs().is_none());
        cache.replace(&mut built);

        // The same content from a fresh encoder (a restarted agent) is known by its id.
        let has: HashSet<StageId> = cache.ids().into_iter().collect();
        let again = TableEncoder::new().encode(&table(80), 2, &has, None).unwrap();
        let TableBody::Policy(p2) = &again.body else { panic!() };
        assert!(p2.new_stages.is_empty());
        assert_eq!(p2.stages, p.stages);
        let built = build_table(roundtrip(&again), &cache, &RuleTable::fail_closed(), &Limits::default()).unwrap();
        assert_eq!((built.stages_built, built.stages_reused), (0, 1));

        // Changed content: a new stage; the unused one leaves the cache after the swap.
        let changed = enc.encode(&table(81), 3, &has, None).unwrap();
        let mut built =
            build_table(roundtrip(&changed), &cache, &RuleTable::fail_closed(), &Limits::default()).unwrap();
        assert_eq!((built.stages_built, built.stages_reused), (1, 0));
        assert_eq!(built.table.classify(&key("10.0.0.1", "10.0.0.2", 81)), Verdict::Allow);
        cache.replace(&mut built);
        assert_eq!(cache.len(), 1);
        assert!(!cache.ids().contains(&p.stages[0]));
    }

    #[test]
    fn bad_tables_are_refused_with_a_reason() {
        let cache = StageCache::default();
        let limits = Limits::default();
        let good = TableEncoder::new().encode(&table(80), 1, &HashSet::new(), None).unwrap();
        let with = |f: &dyn Fn(&mut PolicyMsg)| {
            let mut m = good.clone();
            let TableBody::Policy(p) = &mut m.body else { panic!() };
            f(p);
            build_table(m, &cache, &RuleTable::fail_closed(), &limits).unwrap_err().0
        };
        let e = with(&|p| p.chains[0].steps[0].policies.push(7));
        assert!(e.contains("chain 0 refers to missing policy 7"), "{e}");
        let e = with(&|p| p.endpoints[0].chains[1] = 9);
        assert!(e.contains("missing chain 9"), "{e}");
        let e = with(&|p| p.addresses.push(("10.0.0.9".parse().unwrap(), 3)));
        assert!(e.contains("missing endpoint 3"), "{e}");
        let e = with(&|p| p.addresses.push(p.addresses[0]));
        assert!(e.contains("listed twice"), "{e}");
        let e = with(&|p| p.new_stages[0].specs.push(0));
        assert!(e.contains("does not match its id"), "{e}");
        let e = with(&|p| {
            p.new_stages[0].specs = vec![0xff; 9];
            p.new_stages[0].id = stage_id(&p.new_stages[0].specs);
            p.stages[0] = p.new_stages[0].id;
        });
        assert!(e.contains("cannot decode"), "{e}");
        let e = with(&|p| p.new_stages.clear());
        assert!(e.contains("neither sent nor held"), "{e}");
        let e = with(&|p| p.traces.truncate(1));
        assert!(e.contains("missing trace"), "{e}");
        let small = Limits { max_endpoints: 0, ..Limits::default() };
        let e = build_table(good.clone(), &cache, &RuleTable::fail_closed(), &small).unwrap_err().0;
        assert!(e.contains("1 endpoints, more than the limit of 0"), "{e}");
        let small = Limits { max_boxes: 0, ..Limits::default() };
        let e = build_table(good, &cache, &RuleTable::fail_closed(), &small).unwrap_err().0;
        assert!(e.contains("classifier boxes"), "{e}");
    }

    #[test]
    fn a_derived_table_travels_as_a_patch_and_a_stale_base_is_refused() {
        use crate::classify::TableHandle;
        let t1 = table(80);
        let mut enc = TableEncoder::new();
        let mut cache = StageCache::default();
        let handle = TableHandle::new(RuleTable::fail_closed());
        let msg = enc.encode(&t1, 1, &HashSet::new(), None).unwrap();
        let mut built = build_table(roundtrip(&msg), &cache, &handle.load(), &Limits::default()).unwrap();
        cache.replace(&mut built);
        assert_eq!(handle.publish(built.table), 1);

        // The incremental compiler's way: a second pod 10.0.0.3 with the first pod's chains, and a
        // new stage appended.
        let stage = PolicyRules::build(vec![RuleSpec {
            action: Action::Deny,
            trace: 1,
            pieces: vec![Rule::default()],
            plain_pieces: None,
        }])
        .unwrap();
        let delta = PolicyTableDelta {
            endpoints: vec![(
                1,
                EndpointInfo { name: "c".into(), namespace: Some("ns".into()), host: false, chains: [0, 1] },
            )],
            addresses: vec![("10.0.0.3".parse().unwrap(), Some(1))],
            policies: vec![(1, Arc::new(stage))],
            ..PolicyTableDelta::default()
        };
        let t2 = Arc::new(RuleTable::from_policy(Arc::new(t1.policy().unwrap().patched(delta).unwrap()), "test"));
        let has: HashSet<StageId> = cache.ids().into_iter().collect();
        let msg = enc.encode(&t2, 2, &has, Some((&t1, 1))).unwrap();
        let TableBody::Patch(p) = &msg.body else { panic!("not a patch: {msg:?}") };
        assert_eq!((p.endpoints.len(), p.addresses.len(), p.stages.len(), p.new_stages.len()), (1, 1, 1, 1));
        assert!(p.chains.is_empty() && p.traces.is_empty() && p.zones.is_none());
        let built = build_table(roundtrip(&msg), &cache, &handle.load(), &Limits::default()).unwrap();
        assert!(built.patch);
        assert_eq!(built.order.len(), 2);
        for k in [key("10.0.0.1", "10.0.0.3", 80), key("10.0.0.1", "10.0.0.2", 80), key("10.0.0.3", "10.0.0.9", 1)] {
            assert_eq!(built.table.admit(&k), t2.admit(&k), "{k:?}");
        }
        // Against another generation, or writing past the end: refused.
        let mut stale = roundtrip(&msg);
        if let TableBody::Patch(p) = &mut stale.body {
            p.base = 7;
        }
        let e = build_table(stale, &cache, &handle.load(), &Limits::default()).unwrap_err().0;
        assert!(e.contains("generation 1 is in force"), "{e}");
        let mut gap = roundtrip(&msg);
        if let TableBody::Patch(p) = &mut gap.body {
            p.endpoints[0].0 = 5;
        }
        let e = build_table(gap, &cache, &handle.load(), &Limits::default()).unwrap_err().0;
        assert!(e.contains("past the end"), "{e}");
    }

    #[test]
    fn acl_tables_travel_too() {
        let rules = crate::classify::acl::parse("allow tcp 10.0.0.1/32 any 80\n", "t.acl").unwrap();
        let t = Arc::new(RuleTable::new(rules, Verdict::Deny, "acl"));
        let msg = TableEncoder::new().encode(&t, 1, &HashSet::new(), None).unwrap();
        let built = build_table(roundtrip(&msg), &StageCache::default(), &RuleTable::fail_closed(), &Limits::default())
            .unwrap();
        assert_eq!(built.table.classify(&key("10.0.0.1", "10.0.0.2", 80)), Verdict::Allow);
        assert_eq!(built.table.classify(&key("10.0.0.1", "10.0.0.2", 81)), Verdict::Deny);
        assert_eq!(built.table.origin(), "acl");
    }
}
