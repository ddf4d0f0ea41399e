//! The reference evaluator: the slow, obviously correct oracle for the compiled classifier.
//!
//! For a flow it decides the source endpoint's egress side and the destination endpoint's
//! ingress side (each only when that endpoint is known) exactly as Felix would, by walking the
//! [`Resolved`] tiers linearly and evaluating every selector against the labels of every
//! endpoint and network set that owns the peer address. Nothing is cached or precompiled beyond
//! what [`Resolved`] holds, so each step can be read against Calico's documentation:
//!
//! 1. **Failsafe** (host endpoints only): traffic to a host endpoint on an inbound failsafe port,
//!    or from it to an outbound failsafe port, is allowed before any policy.
//! 2. **doNotTrack** then **preDNAT** policies (host endpoints only): tiers as below, but a
//!    tier ending without a verdict just continues to the next stage. A doNotTrack Allow or
//!    Deny is final. A preDNAT Deny is final; a preDNAT Allow continues to normal policy (moat
//!    is a single enforcement point, so it keeps the stricter reading).
//! 3. **Tiers** in order. A tier with no policy that applies to the endpoint in this direction
//!    is skipped. Otherwise its policies run in order (`order`, then name), each rule
//!    first-match: Allow and Deny are final, Pass jumps to the next tier, Log is recorded and
//!    evaluation continues. A tier that ends without a verdict applies its default action
//!    (Deny unless the tier says Pass); the trace names the tier's last applicable policy with
//!    rule index -1.
//! 4. **Profiles**, when no tier decided: a pod's namespace profile `kns.<ns>` allows; a host
//!    endpoint uses its `spec.profiles` (`projectcalico-default-allow` and `kns.*` allow) and is
//!    denied when none allows.
//!
//! Staged policies never change the verdict. When a staged policy applies to the endpoint and
//! direction, the side also carries the trace of a second evaluation in which staged policies
//! replace (stagedAction Set) or remove (Delete) the enforced policy of the same name — Calico
//! Enterprise's `pending_policies`.
//!
//! `applyOnForward` is recorded but does not change the verdict here: the evaluator identifies
//! host endpoints by address, so every flow it sees for a host endpoint is host-terminated or
//! host-originated traffic, to which policies apply with or without the flag.
//!
//! Trace entries are `index|tier|name|action|ruleIndex`, the Calico flow-log format; moat's own
//! pseudo-entries use the tiers `__FAILSAFE__` and `__PROFILE__` (with `__NO_MATCH__` when no
//! profile allowed a host endpoint).

mod query;

pub use query::{FlowQuery, FlowVerdictJson, QueryError, SideJson};

use crate::model::{Action, Direction, LabelMap, Model, NamedPort, PolicyId, Port, StagedAction, TierDefaultAction};
use crate::resolve::{Endpoint, EndpointId, Resolved, ResolvedEntity, ResolvedPolicy, ResolvedRule, ResolvedTier};
use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;

/// Allowed or denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Allow,
    Deny,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
        })
    }
}

/// One end of a flow: its address and, when known, the endpoint policy is enforced on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowEnd {
    pub ip: IpAddr,
    pub endpoint: Option<EndpointId>,
}

/// A new connection as the classifier sees it (after service DNAT).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    pub src: FlowEnd,
    pub dst: FlowEnd,
    /// IANA protocol number.
    pub protocol: u8,
    pub src_port: Option<u16>,
    pub dst_port: Option<u16>,
    pub icmp_type: Option<u8>,
    pub icmp_code: Option<u8>,
}

/// What a trace entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceAction {
    Allow,
    Deny,
    Pass,
    Log,
}

impl TraceAction {
    fn from_action(a: Action) -> TraceAction {
        match a {
            Action::Allow => TraceAction::Allow,
            Action::Deny => TraceAction::Deny,
            Action::Pass => TraceAction::Pass,
            Action::Log => TraceAction::Log,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TraceAction::Allow => "allow",
            TraceAction::Deny => "deny",
            TraceAction::Pass => "pass",
            TraceAction::Log => "log",
        }
    }
}

/// One flow-log policy hit: `index|tier|name|action|ruleIndex`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceEntry {
    pub index: usize,
    pub tier: String,
    pub name: String,
    pub action: TraceAction,
    /// Rule index within the policy; -1 for a tier's end-of-tier action.
    pub rule_index: i64,
}

impl fmt::Display for TraceEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}|{}|{}|{}|{}", self.index, self.tier, self.name, self.action.as_str(), self.rule_index)
    }
}

/// The verdict of one side (an endpoint's ingress or egress) with its trace and explanation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SideResult {
    pub endpoint: EndpointId,
    pub direction: Direction,
    pub verdict: Verdict,
    pub policies: Vec<TraceEntry>,
    /// Trace with staged policies in force; empty when no staged policy applies.
    pub staged: Vec<TraceEntry>,
    /// Human-readable steps, for `moat policy explain`.
    pub explanation: Vec<String>,
}

/// The verdict of a flow: allowed iff every known side allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowResult {
    pub verdict: Verdict,
    pub egress: Option<SideResult>,
    pub ingress: Option<SideResult>,
}

/// Which policies take part in an evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Enforced,
    /// Staged policies in force (Calico Enterprise's pending evaluation).
    Pending,
}

/// Which kind of policy a stage evaluates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Untracked,
    PreDnat,
    Normal,
}

/// How a run of tiers ended.
enum TierOutcome {
    Final(Verdict),
    /// No tier decided (or the last decision was Pass).
    Undecided,
}

/// Something owning an address: an endpoint or a network set.
struct Owner<'a> {
    labels: &'a LabelMap,
    named_ports: &'a [NamedPort],
}

/// The reference evaluator over one model snapshot.
#[derive(Debug, Clone)]
pub struct Evaluator {
    resolved: Resolved,
    model: Model,
    /// Enforced policies a staged policy replaces or deletes.
    shadowed: BTreeSet<PolicyId>,
}

impl Evaluator {
    pub fn new(model: &Model) -> Evaluator {
        Evaluator::from_resolved(model, Resolved::new(model))
    }

    pub fn from_resolved(model: &Model, resolved: Resolved) -> Evaluator {
        let shadowed = resolved
            .tiers
            .iter()
            .flat_map(|t| &t.policies)
            .filter(|p| p.staged.is_some())
            .map(ResolvedPolicy::enforced_id)
            .collect();
        Evaluator { resolved, model: model.clone(), shadowed }
    }

    pub fn resolved(&self) -> &Resolved {
        &self.resolved
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The IP pool (zone) name of an address, longest prefix first.
    pub fn zone(&self, ip: IpAddr) -> Option<&str> {
        self.model.ip_pool_for(ip).map(|p| p.name.as_str())
    }

    /// Decide a flow.
    pub fn evaluate(&self, flow: &Flow) -> FlowResult {
        let egress = flow
            .src
            .endpoint
            .as_ref()
            .and_then(|id| self.resolved.endpoint(id))
            .map(|ep| self.evaluate_side(ep, Direction::Egress, flow));
        let ingress = flow
            .dst
            .endpoint
            .as_ref()
            .and_then(|id| self.resolved.endpoint(id))
            .map(|ep| self.evaluate_side(ep, Direction::Ingress, flow));
        let denied = [&egress, &ingress].iter().any(|s| s.as_ref().is_some_and(|s| s.verdict == Verdict::Deny));
        FlowResult { verdict: if denied { Verdict::Deny } else { Verdict::Allow }, egress, ingress }
    }

    /// Decide one side: `ep`'s egress (it is the source) or ingress (it is the destination).
    pub fn evaluate_side(&self, ep: &Endpoint, dir: Direction, flow: &Flow) -> SideResult {
        let mut explanation = Vec::new();
        let (verdict, policies) = self.run(ep, dir, flow, Mode::Enforced, &mut explanation);
        let staged_applies = self
            .resolved
            .tiers
            .iter()
            .flat_map(|t| &t.policies)
            .any(|p| p.staged.is_some() && p.types.contains(&dir) && p.applies_to.evaluate(&ep.labels));
        let staged = if staged_applies {
            let mut notes = Vec::new();
            let (v, trace) = self.run(ep, dir, flow, Mode::Pending, &mut notes);
            explanation.push(format!("with staged policies in force the verdict would be {v}"));
            trace
        } else {
            Vec::new()
        };
        SideResult { endpoint: ep.id.clone(), direction: dir, verdict, policies, staged, explanation }
    }

    fn run(
        &self,
        ep: &Endpoint,
        dir: Direction,
        flow: &Flow,
        mode: Mode,
        notes: &mut Vec<String>,
    ) -> (Verdict, Vec<TraceEntry>) {
        let mut trace = Vec::new();
        if ep.is_host() {
            if let Some(v) = self.failsafe(dir, flow, &mut trace, notes) {
                return (v, trace);
            }
            for stage in [Stage::Untracked, Stage::PreDnat] {
                if stage == Stage::PreDnat && dir == Direction::Egress {
                    continue;
                }
                match self.run_tiers(ep, dir, flow, mode, stage, &mut trace, notes) {
                    TierOutcome::Final(Verdict::Deny) => return (Verdict::Deny, trace),
                    TierOutcome::Final(Verdict::Allow) if stage == Stage::Untracked => {
                        return (Verdict::Allow, trace);
                    }
                    _ => {}
                }
            }
        }
        match self.run_tiers(ep, dir, flow, mode, Stage::Normal, &mut trace, notes) {
            TierOutcome::Final(v) => (v, trace),
            TierOutcome::Undecided => (self.profiles(ep, &mut trace, notes), trace),
        }
    }

    fn failsafe(
        &self,
        dir: Direction,
        flow: &Flow,
        trace: &mut Vec<TraceEntry>,
        notes: &mut Vec<String>,
    ) -> Option<Verdict> {
        let (list, remote, word) = match dir {
            Direction::Ingress => (&self.resolved.failsafe.inbound, flow.src.ip, "inbound"),
            Direction::Egress => (&self.resolved.failsafe.outbound, flow.dst.ip, "outbound"),
        };
        let hit = list.iter().find(|f| {
            f.protocol.number() == flow.protocol
                && flow.dst_port == Some(f.port)
                && f.net.is_none_or(|n| n.contains(remote))
        })?;
        notes.push(format!("failsafe: {word} {} port {} is always allowed for host endpoints", f_proto(hit), hit.port));
        trace.push(TraceEntry {
            index: trace.len(),
            tier: "__FAILSAFE__".into(),
            name: format!("failsafe.{word}.{}.{}", f_proto(hit).to_ascii_lowercase(), hit.port),
            action: TraceAction::Allow,
            rule_index: 0,
        });
        Some(Verdict::Allow)
    }

    fn active(&self, p: &ResolvedPolicy, mode: Mode, stage: Stage) -> bool {
        let in_stage = match stage {
            Stage::Untracked => p.do_not_track,
            Stage::PreDnat => p.pre_dnat,
            Stage::Normal => !p.do_not_track && !p.pre_dnat,
        };
        in_stage
            && match (mode, p.staged) {
                (Mode::Enforced, staged) => staged.is_none(),
                (Mode::Pending, Some(StagedAction::Set)) => true,
                (Mode::Pending, Some(StagedAction::Delete)) => false,
                (Mode::Pending, None) => !self.shadowed.contains(&p.id),
            }
    }

    #[allow(clippy::too_many_arguments)]
    fn run_tiers(
        &self,
        ep: &Endpoint,
        dir: Direction,
        flow: &Flow,
        mode: Mode,
        stage: Stage,
        trace: &mut Vec<TraceEntry>,
        notes: &mut Vec<String>,
    ) -> TierOutcome {
        let stage_word = match stage {
            Stage::Untracked => "doNotTrack ",
            Stage::PreDnat => "preDNAT ",
            Stage::Normal => "",
        };
        for tier in &self.resolved.tiers {
            let applicable: Vec<&ResolvedPolicy> = tier
                .policies
                .iter()
                .filter(|p| self.active(p, mode, stage) && p.types.contains(&dir) && p.applies_to.evaluate(&ep.labels))
                .collect();
            if applicable.is_empty() {
                continue;
            }
            notes.push(format!(
                "{stage_word}tier {} ({}): {} polic{} to {} {dir}",
                tier.name,
                order_text(tier.order),
                applicable.len(),
                if applicable.len() == 1 { "y applies" } else { "ies apply" },
                ep.id
            ));
            match self.run_tier(tier, &applicable, dir, flow, trace, notes) {
                Some(Action::Allow) => return TierOutcome::Final(Verdict::Allow),
                Some(Action::Deny) => return TierOutcome::Final(Verdict::Deny),
                Some(Action::Pass) => continue,
                Some(Action::Log) | None => {}
            }
            // End of tier without a verdict.
            let last = applicable.last().map(|p| p.trace_name.clone()).unwrap_or_default();
            match (stage, tier.default_action) {
                (Stage::Normal, TierDefaultAction::Deny) => {
                    notes.push(format!("  end of tier {}: no rule matched, default action Deny", tier.name));
                    push(trace, &tier.name, &last, TraceAction::Deny, -1);
                    return TierOutcome::Final(Verdict::Deny);
                }
                (Stage::Normal, TierDefaultAction::Pass) => {
                    notes.push(format!("  end of tier {}: no rule matched, default action Pass", tier.name));
                    push(trace, &tier.name, &last, TraceAction::Pass, -1);
                }
                _ => notes.push(format!("  end of {stage_word}tier {}: no rule matched, continuing", tier.name)),
            }
        }
        TierOutcome::Undecided
    }

    /// Run one tier's applicable policies; returns the deciding action (Allow/Deny/Pass).
    fn run_tier(
        &self,
        tier: &ResolvedTier,
        applicable: &[&ResolvedPolicy],
        dir: Direction,
        flow: &Flow,
        trace: &mut Vec<TraceEntry>,
        notes: &mut Vec<String>,
    ) -> Option<Action> {
        for p in applicable {
            let mut matched_any = false;
            for (i, rule) in p.rules(dir).iter().enumerate() {
                if !self.rule_matches(rule, flow) {
                    continue;
                }
                matched_any = true;
                let idx = i64::try_from(i).unwrap_or(i64::MAX);
                push(trace, &tier.name, &p.trace_name, TraceAction::from_action(rule.action), idx);
                notes.push(format!(
                    "  policy {} ({}): {dir} rule {i} matches: {:?}",
                    p.trace_name,
                    order_text(p.order),
                    rule.action
                ));
                match rule.action {
                    Action::Log => continue,
                    a => return Some(a),
                }
            }
            if !matched_any {
                notes.push(format!(
                    "  policy {} ({}): none of its {} {dir} rule(s) match",
                    p.trace_name,
                    order_text(p.order),
                    p.rules(dir).len()
                ));
            }
        }
        None
    }

    fn profiles(&self, ep: &Endpoint, trace: &mut Vec<TraceEntry>, notes: &mut Vec<String>) -> Verdict {
        for profile in &ep.profiles {
            let allows = profile.starts_with(crate::convert::NAMESPACE_PROFILE_PREFIX)
                || profile == "projectcalico-default-allow";
            if allows {
                notes.push(format!("no tier decided: profile {profile} allows"));
                push(trace, "__PROFILE__", &format!("__PROFILE__.{profile}"), TraceAction::Allow, 0);
                return Verdict::Allow;
            }
        }
        notes.push(format!("no tier decided and no profile of {} allows: deny", ep.id));
        push(trace, "__PROFILE__", "__PROFILE__.__NO_MATCH__", TraceAction::Deny, -1);
        Verdict::Deny
    }

    /// Everything that owns the address of a flow end: its endpoint (or the endpoint with that
    /// address) and every network set containing it.
    fn owners<'a>(&'a self, end: &FlowEnd) -> Vec<Owner<'a>> {
        let ep = match &end.endpoint {
            Some(id) => self.resolved.endpoint(id),
            None => self.resolved.endpoint_by_ip(end.ip),
        };
        let mut out: Vec<Owner<'a>> =
            ep.into_iter().map(|e| Owner { labels: &e.labels, named_ports: &e.named_ports }).collect();
        out.extend(
            self.resolved.network_sets_containing(end.ip).map(|s| Owner { labels: &s.labels, named_ports: &[] }),
        );
        out
    }

    /// Whether a rule matches a flow (both sides of the rule, protocol and ICMP fields).
    pub fn rule_matches(&self, r: &ResolvedRule, flow: &Flow) -> bool {
        if let Some(v) = r.ip_version {
            let flow_v = if flow.src.ip.is_ipv4() { 4 } else { 6 };
            if v != flow_v {
                return false;
            }
        }
        if r.protocol.is_some_and(|p| p.number() != flow.protocol) {
            return false;
        }
        if r.not_protocol.is_some_and(|p| p.number() == flow.protocol) {
            return false;
        }
        let icmp_matches = |m: &crate::model::IcmpMatch| {
            m.icmp_type.is_none_or(|t| flow.icmp_type == Some(t)) && m.code.is_none_or(|c| flow.icmp_code == Some(c))
        };
        if r.icmp.as_ref().is_some_and(|m| !icmp_matches(m)) {
            return false;
        }
        if r.not_icmp.as_ref().is_some_and(icmp_matches) {
            return false;
        }
        self.entity_matches(&r.source, &flow.src, flow.src_port, flow.protocol)
            && self.entity_matches(&r.destination, &flow.dst, flow.dst_port, flow.protocol)
    }

    fn entity_matches(&self, e: &ResolvedEntity, end: &FlowEnd, port: Option<u16>, protocol: u8) -> bool {
        if !e.nets.is_empty() && !e.nets.iter().any(|n| n.contains(end.ip)) {
            return false;
        }
        if e.not_nets.iter().any(|n| n.contains(end.ip)) {
            return false;
        }
        let owners = self.owners(end);
        if let Some(sel) = &e.selector {
            if !owners.iter().any(|o| sel.evaluate(o.labels)) {
                return false;
            }
        }
        if let Some(sel) = &e.not_selector {
            if owners.iter().any(|o| sel.evaluate(o.labels)) {
                return false;
            }
        }
        if !e.ports.is_empty() && !ports_match(e, &e.ports, &owners, port, protocol) {
            return false;
        }
        if !e.not_ports.is_empty() && ports_match(e, &e.not_ports, &owners, port, protocol) {
            return false;
        }
        true
    }
}

/// Whether `port` is in the list: numerically, or as a named port of an owner the rule's
/// selector (or `all()`) matches, with the flow's protocol.
fn ports_match(e: &ResolvedEntity, ports: &[Port], owners: &[Owner<'_>], port: Option<u16>, protocol: u8) -> bool {
    let Some(port) = port else { return false };
    ports.iter().any(|p| match p {
        Port::Range { .. } => p.contains(port),
        Port::Named(name) => owners.iter().any(|o| {
            e.selector.as_ref().is_none_or(|s| s.evaluate(o.labels))
                && o.named_ports
                    .iter()
                    .any(|np| &np.name == name && np.port == port && np.protocol.number() == protocol)
        }),
    })
}

fn push(trace: &mut Vec<TraceEntry>, tier: &str, name: &str, action: TraceAction, rule_index: i64) {
    trace.push(TraceEntry { index: trace.len(), tier: tier.to_string(), name: name.to_string(), action, rule_index });
}

fn order_text(order: Option<f64>) -> String {
    match order {
        Some(o) => format!("order {o}"),
        None => "no order".to_string(),
    }
}

fn f_proto(f: &crate::resolve::FailsafePort) -> String {
    f.protocol.to_string()
}

#[cfg(test)]
mod tests;
