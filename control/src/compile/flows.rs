//! Between the evaluator's [`Flow`] and the dataplane's [`FlowKey`], and the compiled answer in
//! the evaluator's output format (`moat policy eval --compiled`).
//!
//! A [`FlowKey`] is what the parser gives a worker: ports are those of TCP, UDP and SCTP
//! ([`PORT_PROTOCOLS`]) and 0 otherwise, an ICMP header always has a type *and* a code, and the
//! endpoints are found by address. The conversions below are exact between that space and the
//! evaluator's flows whose endpoints are the owners of their addresses.

use super::PolicyTable;
use crate::evaluate::{
    Evaluator, Flow, FlowEnd, FlowResult, FlowVerdictJson, QueryError, SideJson, SideResult, TraceAction, TraceEntry,
    Verdict,
};
use crate::model::Direction;
use crate::resolve::{EndpointId, Resolved};
use moat_fastpath::classify::engine::Action as RuleAction;
use moat_fastpath::classify::policy::{SideDecision, TraceInfo};
use moat_fastpath::classify::{FlowKey, Verdict as FastVerdict};

/// Protocols whose packets carry ports in a [`FlowKey`] (TCP, UDP, SCTP).
pub const PORT_PROTOCOLS: [u8; 3] = [6, 17, 132];

/// Why a flow has no [`FlowKey`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("source and destination are of different address families")]
    Family,
    #[error("a packet of protocol {0} carries ports exactly when it is TCP, UDP or SCTP")]
    Ports(u8),
    #[error("an ICMP header has a type and a code: give both (or neither)")]
    Icmp,
}

/// The key a worker would build for this flow.
pub fn flow_key(flow: &Flow) -> Result<FlowKey, KeyError> {
    if flow.src.ip.is_ipv4() != flow.dst.ip.is_ipv4() {
        return Err(KeyError::Family);
    }
    let has_ports = PORT_PROTOCOLS.contains(&flow.protocol);
    let (src_port, dst_port) = match (has_ports, flow.src_port, flow.dst_port) {
        (true, Some(s), Some(d)) => (s, d),
        (false, None, None) => (0, 0),
        _ => return Err(KeyError::Ports(flow.protocol)),
    };
    let icmp = match (flow.icmp_type, flow.icmp_code) {
        (Some(t), Some(c)) => Some((t, c)),
        (None, None) => None,
        _ => return Err(KeyError::Icmp),
    };
    Ok(FlowKey { src: flow.src.ip, dst: flow.dst.ip, protocol: flow.protocol, src_port, dst_port, icmp })
}

/// The evaluator's flow for a key: endpoints by address, ports for [`PORT_PROTOCOLS`].
pub fn flow_of_key(key: &FlowKey, resolved: &Resolved) -> Flow {
    let end = |ip| FlowEnd { ip, endpoint: resolved.endpoint_by_ip(ip).map(|e| e.id.clone()) };
    let has_ports = PORT_PROTOCOLS.contains(&key.protocol);
    Flow {
        src: end(key.src),
        dst: end(key.dst),
        protocol: key.protocol,
        src_port: has_ports.then_some(key.src_port),
        dst_port: has_ports.then_some(key.dst_port),
        icmp_type: key.icmp.map(|(t, _)| t),
        icmp_code: key.icmp.map(|(_, c)| c),
    }
}

fn trace_action(a: RuleAction) -> TraceAction {
    match a {
        RuleAction::Allow => TraceAction::Allow,
        RuleAction::Deny => TraceAction::Deny,
        RuleAction::Pass => TraceAction::Pass,
        RuleAction::Log => TraceAction::Log,
    }
}

fn entry(index: usize, t: &TraceInfo) -> TraceEntry {
    TraceEntry {
        index,
        tier: t.tier.clone(),
        name: t.name.clone(),
        action: trace_action(t.action),
        rule_index: t.rule_index,
    }
}

/// A side's trace as Calico flow-log strings.
pub fn side_trace(table: &PolicyTable, side: &SideDecision) -> Vec<String> {
    side.trace().iter().enumerate().filter_map(|(i, &id)| table.trace_info(id).map(|t| t.render(i))).collect()
}

fn verdict(v: FastVerdict) -> Verdict {
    match v {
        FastVerdict::Allow => Verdict::Allow,
        FastVerdict::Deny => Verdict::Deny,
    }
}

/// A compiled side in the evaluator's terms (no explanation, no staged trace).
pub fn side_result(table: &PolicyTable, side: &SideDecision, direction: Direction) -> Option<SideResult> {
    let ep = table.endpoints().get(side.endpoint as usize)?;
    let endpoint = match &ep.namespace {
        Some(ns) if !ep.host => EndpointId::Workload { namespace: ns.clone(), name: ep.name.clone() },
        _ => EndpointId::Host { name: ep.name.clone() },
    };
    let policies =
        side.trace().iter().enumerate().filter_map(|(i, &id)| table.trace_info(id).map(|t| entry(i, t))).collect();
    Some(SideResult {
        endpoint,
        direction,
        verdict: verdict(side.verdict),
        policies,
        staged: Vec::new(),
        explanation: Vec::new(),
    })
}

/// `moat policy eval --compiled`: queries answered by the compiled table, in the evaluator's
/// output format. Staged traces are not in the compiled table (they never change a verdict);
/// they come from the evaluator, as the flow-log side would add them.
#[derive(Debug)]
pub struct CompiledEvaluator {
    evaluator: Evaluator,
    table: PolicyTable,
}

impl CompiledEvaluator {
    pub fn new(evaluator: Evaluator, table: PolicyTable) -> CompiledEvaluator {
        CompiledEvaluator { evaluator, table }
    }

    pub fn table(&self) -> &PolicyTable {
        &self.table
    }

    /// The compiled decision of a flow as a [`FlowResult`] (staged traces from the evaluator).
    /// A packet always has a source port: a TCP/UDP/SCTP flow without one is taken with port 0.
    pub fn evaluate(&self, flow: &Flow) -> Result<FlowResult, KeyError> {
        let mut flow = flow.clone();
        if PORT_PROTOCOLS.contains(&flow.protocol) && flow.src_port.is_none() {
            flow.src_port = Some(0);
        }
        let key = flow_key(&flow)?;
        let d = self.table.decide(&key);
        let reference = self.evaluator.evaluate(&flow);
        let side = |s: &Option<SideDecision>, dir, r: &Option<SideResult>| {
            s.as_ref().and_then(|s| side_result(&self.table, s, dir)).map(|mut s| {
                s.staged = r.as_ref().map(|r| r.staged.clone()).unwrap_or_default();
                s
            })
        };
        Ok(FlowResult {
            verdict: verdict(d.verdict),
            egress: side(&d.egress, Direction::Egress, &reference.egress),
            ingress: side(&d.ingress, Direction::Ingress, &reference.ingress),
        })
    }

    /// Same contract as [`Evaluator::answer_line`].
    pub fn answer_line(&self, line: &str) -> Option<String> {
        if line.trim().is_empty() {
            return None;
        }
        let result = serde_json::from_str::<crate::evaluate::FlowQuery>(line)
            .map_err(|e| QueryError::Json(e.to_string()).to_string())
            .and_then(|q| self.evaluator.flow_from_query(&q).map_err(|e| e.to_string()))
            .and_then(|flow| self.evaluate(&flow).map_err(|e| format!("compiled path: {e}")))
            .map(|r| FlowVerdictJson {
                verdict: r.verdict,
                egress: r.egress.as_ref().map(SideJson::from),
                ingress: r.ingress.as_ref().map(SideJson::from),
            });
        let error = |e: String| serde_json::json!({ "error": e }).to_string();
        Some(match result {
            Ok(v) => serde_json::to_string(&v).unwrap_or_else(|e| error(e.to_string())),
            Err(e) => error(e),
        })
    }
}
