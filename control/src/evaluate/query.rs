//! The JSON-lines interface of `moat policy eval`: one flow query in, one verdict (or error)
//! out, in order. A query naming an unknown pod is answered with an error line, never a crash.

use super::{Evaluator, Flow, FlowEnd, FlowResult, SideResult, Verdict};
use crate::model::Protocol;
use crate::resolve::EndpointId;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// One input line: `{"src": "NS/POD"|"IP", "dst": …, "protocol": "TCP"|…|number, "dst_port": n,
/// "src_port": n?, "icmp_type": n?, "icmp_code": n?}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowQuery {
    pub src: String,
    pub dst: String,
    pub protocol: Protocol,
    #[serde(default)]
    pub dst_port: Option<u16>,
    #[serde(default)]
    pub src_port: Option<u16>,
    #[serde(default)]
    pub icmp_type: Option<u8>,
    #[serde(default)]
    pub icmp_code: Option<u8>,
}

/// Why a query could not be evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("invalid flow: {0}")]
    Json(String),
    #[error("unknown pod {0}")]
    UnknownPod(String),
    #[error("{0:?} is neither NS/POD nor an IP address")]
    BadEnd(String),
    #[error("pod {0} has no IP address")]
    NoAddress(String),
    #[error("pod {0} is host-networked: give its node's address instead")]
    HostNetworked(String),
    #[error("source and destination have no IP family in common")]
    FamilyMismatch,
    #[error("protocol {0} needs dst_port")]
    MissingPort(Protocol),
}

/// One side of an output line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SideJson {
    pub verdict: Verdict,
    pub policies: Vec<String>,
    pub staged: Vec<String>,
}

/// One output line: `{"verdict": …, "egress": SIDE|null, "ingress": SIDE|null}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FlowVerdictJson {
    pub verdict: Verdict,
    pub egress: Option<SideJson>,
    pub ingress: Option<SideJson>,
}

impl From<&SideResult> for SideJson {
    fn from(s: &SideResult) -> SideJson {
        SideJson {
            verdict: s.verdict,
            policies: s.policies.iter().map(ToString::to_string).collect(),
            staged: s.staged.iter().map(ToString::to_string).collect(),
        }
    }
}

impl From<&FlowResult> for FlowVerdictJson {
    fn from(r: &FlowResult) -> FlowVerdictJson {
        FlowVerdictJson {
            verdict: r.verdict,
            egress: r.egress.as_ref().map(SideJson::from),
            ingress: r.ingress.as_ref().map(SideJson::from),
        }
    }
}

/// A query end before the address family is chosen.
struct End {
    ips: Vec<IpAddr>,
    endpoint: Option<EndpointId>,
}

impl Evaluator {
    fn end(&self, text: &str) -> Result<End, QueryError> {
        let text = text.trim();
        if let Ok(ip) = text.parse::<IpAddr>() {
            let endpoint = self.resolved().endpoint_by_ip(ip).map(|e| e.id.clone());
            return Ok(End { ips: vec![ip], endpoint });
        }
        let Some((ns, name)) = text.split_once('/') else { return Err(QueryError::BadEnd(text.to_string())) };
        if ns.is_empty() || name.is_empty() || name.contains('/') {
            return Err(QueryError::BadEnd(text.to_string()));
        }
        let pod = self
            .model()
            .pods
            .get(&(ns.to_string(), name.to_string()))
            .ok_or_else(|| QueryError::UnknownPod(text.to_string()))?;
        if pod.host_network {
            return Err(QueryError::HostNetworked(text.to_string()));
        }
        if pod.ips.is_empty() {
            return Err(QueryError::NoAddress(text.to_string()));
        }
        Ok(End {
            ips: pod.ips.clone(),
            endpoint: Some(EndpointId::Workload { namespace: ns.to_string(), name: name.to_string() }),
        })
    }

    /// Turn a query into a flow: resolve pods to addresses (picking a family both ends have,
    /// IPv4 first) and addresses to endpoints.
    pub fn flow_from_query(&self, q: &FlowQuery) -> Result<Flow, QueryError> {
        let src = self.end(&q.src)?;
        let dst = self.end(&q.dst)?;
        let pick = |v4: bool| -> Option<(IpAddr, IpAddr)> {
            let s = src.ips.iter().find(|ip| ip.is_ipv4() == v4)?;
            let d = dst.ips.iter().find(|ip| ip.is_ipv4() == v4)?;
            Some((*s, *d))
        };
        let (src_ip, dst_ip) = pick(true).or_else(|| pick(false)).ok_or(QueryError::FamilyMismatch)?;
        if q.protocol.has_ports() && q.dst_port.is_none() {
            return Err(QueryError::MissingPort(q.protocol));
        }
        let (dst_port, src_port) = if q.protocol.has_ports() { (q.dst_port, q.src_port) } else { (None, None) };
        Ok(Flow {
            src: FlowEnd { ip: src_ip, endpoint: src.endpoint },
            dst: FlowEnd { ip: dst_ip, endpoint: dst.endpoint },
            protocol: q.protocol.number(),
            src_port,
            dst_port,
            icmp_type: q.icmp_type,
            icmp_code: q.icmp_code,
        })
    }

    /// Answer one input line. `None` for blank lines; otherwise the output line (a verdict or
    /// `{"error": …}`), without newline, fields in the documented order.
    pub fn answer_line(&self, line: &str) -> Option<String> {
        if line.trim().is_empty() {
            return None;
        }
        let result = serde_json::from_str::<FlowQuery>(line)
            .map_err(|e| QueryError::Json(e.to_string()))
            .and_then(|q| self.flow_from_query(&q))
            .map(|flow| FlowVerdictJson::from(&self.evaluate(&flow)));
        let error = |e: String| serde_json::json!({ "error": e }).to_string();
        Some(match result {
            Ok(v) => serde_json::to_string(&v).unwrap_or_else(|e| error(e.to_string())),
            Err(e) => error(e.to_string()),
        })
    }
}

impl Evaluator {
    /// A readable account of a query's verdict: which tier, policy and rule decided each side.
    pub fn explain(&self, q: &FlowQuery) -> Result<String, QueryError> {
        use std::fmt::Write as _;
        let flow = self.flow_from_query(q)?;
        let r = self.evaluate(&flow);
        let mut out = String::new();
        let end = |text: &str, ip: IpAddr| {
            let zone = self.zone(ip).map(|z| format!(", zone {z}")).unwrap_or_default();
            if text.trim() == ip.to_string() { format!("{ip}{zone}") } else { format!("{} ({ip}{zone})", text.trim()) }
        };
        let what = match (q.protocol.has_ports(), flow.icmp_type) {
            (true, _) => format!("{} port {}", q.protocol, flow.dst_port.unwrap_or_default()),
            (false, Some(t)) => {
                format!("{} type {t} code {}", q.protocol, flow.icmp_code.map_or("any".into(), |c| c.to_string()))
            }
            (false, None) => q.protocol.to_string(),
        };
        let _ = writeln!(out, "flow:    {} -> {}, {what}", end(&q.src, flow.src.ip), end(&q.dst, flow.dst.ip));
        let _ = writeln!(out, "verdict: {}", r.verdict.to_string().to_uppercase());
        for (label, side, ip) in [("egress", &r.egress, flow.src.ip), ("ingress", &r.ingress, flow.dst.ip)] {
            let _ = writeln!(out);
            match side {
                None => {
                    let _ = writeln!(
                        out,
                        "{label}: {ip} is not a known endpoint, so no {label} policy applies on that side"
                    );
                }
                Some(s) => {
                    let _ = writeln!(out, "{label} of {}: {}", s.endpoint, s.verdict);
                    for line in &s.explanation {
                        let _ = writeln!(out, "  {line}");
                    }
                    let _ = writeln!(out, "  trace: {}", join(&s.policies));
                    if !s.staged.is_empty() {
                        let _ = writeln!(out, "  staged trace: {}", join(&s.staged));
                    }
                }
            }
        }
        Ok(out)
    }
}

fn join(t: &[super::TraceEntry]) -> String {
    t.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}
