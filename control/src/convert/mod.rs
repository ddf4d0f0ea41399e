//! Kubernetes → Calico conversion, as libcalico-go does it (`conversion.go`:
//! `K8sNetworkPolicyToCalico`, `k8sSelectorToCalico`, `k8sRuleToCalico`, `SimplifyPorts`,
//! `NamespaceToProfile`, `ServiceAccountToProfile`).
//!
//! A Kubernetes NetworkPolicy becomes a Calico NetworkPolicy in tier `default` at order 1000,
//! named `knp.default.<name>` (the name flow logs show). Its pod selector is prefixed with
//! `projectcalico.org/orchestrator == 'k8s'`; each k8s rule becomes one Calico rule per
//! (protocol, peer), protocols in sorted order, with TCP made explicit when ports are given
//! without protocol. A rule whose ports cannot be parsed is dropped and reported in
//! [`ConversionError`], and the rest of the policy still converts — exactly as Calico does.
//!
//! One deliberate addition: when `policyTypes` is absent the API server's defaulting is applied
//! first (Ingress, plus Egress when there are egress rules), because manifests read from disk
//! never went through the API server.

use crate::model::k8s::{LabelSelectorOperator, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicyRule};
use crate::model::{
    Action, DEFAULT_TIER, Direction, EntityRule, K8sNetworkPolicy, LabelMap, LabelSelector, Namespace, PolicySpec,
    Port, Protocol, Rule, ServiceAccount, labels,
};
use crate::selector::Selector;
use ipnetwork::IpNetwork;
use std::collections::BTreeMap;

/// Prefix of converted Kubernetes policy names (Calico ≤ 3.31 and flow logs).
pub const K8S_POLICY_PREFIX: &str = "knp.default.";
/// Order every converted Kubernetes policy gets.
pub const K8S_POLICY_ORDER: f64 = 1000.0;
/// Prefix of namespace profiles.
pub const NAMESPACE_PROFILE_PREFIX: &str = "kns.";
/// Prefix of service-account profiles.
pub const SERVICE_ACCOUNT_PROFILE_PREFIX: &str = "ksa.";

/// Whether a k8s label selector selects pods (prefixed with the orchestrator term) or namespaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelectorType {
    Pod,
    Namespace,
}

/// A rule Calico could not convert (and dropped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRule {
    pub direction: Direction,
    pub rule_index: usize,
    pub reason: String,
}

/// Rules dropped while converting one policy (`ErrorPolicyConversion` upstream).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("policy {policy_name}: {} rule(s) could not be converted: {}", bad_rules.len(), describe(bad_rules))]
pub struct ConversionError {
    pub policy_name: String,
    pub bad_rules: Vec<BadRule>,
}

fn describe(rules: &[BadRule]) -> String {
    rules.iter().map(|r| format!("{}[{}]: {}", r.direction, r.rule_index, r.reason)).collect::<Vec<_>>().join("; ")
}

/// The result of converting one Kubernetes NetworkPolicy.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvertedPolicy {
    /// `knp.default.<name>`.
    pub name: String,
    pub namespace: String,
    /// The policy selector as Calico writes it (before parsing), for comparison with upstream.
    pub selector_text: String,
    pub spec: PolicySpec,
    /// Rules that were dropped, if any.
    pub error: Option<ConversionError>,
}

/// Convert a Kubernetes NetworkPolicy into the Calico policy Felix would enforce.
pub fn k8s_policy_to_calico(np: &K8sNetworkPolicy) -> Result<ConvertedPolicy, String> {
    let spec = &np.spec;
    let mut bad = Vec::new();
    let mut ingress = Vec::new();
    for (i, r) in spec.ingress.iter().flatten().enumerate() {
        match k8s_rule_to_calico(r, &np.namespace, Direction::Ingress) {
            Ok(mut rules) => ingress.append(&mut rules),
            Err(e) => bad.push(BadRule {
                direction: Direction::Ingress,
                rule_index: i,
                reason: format!("k8s rule couldn't be converted: {e}"),
            }),
        }
    }
    let mut egress = Vec::new();
    for (i, r) in spec.egress.iter().flatten().enumerate() {
        match k8s_rule_to_calico(r, &np.namespace, Direction::Egress) {
            Ok(mut rules) => egress.append(&mut rules),
            Err(e) => bad.push(BadRule {
                direction: Direction::Egress,
                rule_index: i,
                reason: format!("k8s rule couldn't be converted: {e}"),
            }),
        }
    }

    let declared: Vec<String> = match &spec.policy_types {
        Some(t) => t.clone(),
        None => {
            // API-server defaulting (the object never went through one).
            let mut t = vec!["Ingress".to_string()];
            if spec.egress.as_ref().is_some_and(|e| !e.is_empty()) {
                t.push("Egress".to_string());
            }
            t
        }
    };
    let has_ingress = declared.iter().any(|t| t == "Ingress");
    let has_egress = declared.iter().any(|t| t == "Egress");
    let mut types = Vec::new();
    if has_ingress {
        types.push(Direction::Ingress);
    }
    if has_egress {
        types.push(Direction::Egress);
    }
    if types.is_empty() {
        types.push(Direction::Ingress);
    }

    let selector_text = k8s_selector_to_calico(Some(&spec.pod_selector), SelectorType::Pod);
    let selector = parse_generated(&selector_text)?;
    Ok(ConvertedPolicy {
        name: format!("{K8S_POLICY_PREFIX}{}", np.name),
        namespace: np.namespace.clone(),
        selector_text,
        spec: PolicySpec {
            tier: Some(DEFAULT_TIER.to_string()),
            order: Some(K8S_POLICY_ORDER),
            selector,
            types: Some(types),
            ingress,
            egress,
            staged_action: np.spec.staged_action,
            ..PolicySpec::default()
        },
        error: if bad.is_empty() {
            None
        } else {
            Some(ConversionError { policy_name: np.name.clone(), bad_rules: bad })
        },
    })
}

/// Parse a selector string this module generated; empty means none.
fn parse_generated(text: &str) -> Result<Option<Selector>, String> {
    crate::model::parse_opt_selector(text)
}

/// `k8sSelectorToCalico`: a k8s label selector as a Calico selector string. Pod selectors get
/// the `projectcalico.org/orchestrator == 'k8s'` term; a missing namespace selector is `""`
/// (policy's own namespace), an empty one `all()` (every namespace).
pub fn k8s_selector_to_calico(s: Option<&LabelSelector>, ty: SelectorType) -> String {
    let mut parts: Vec<String> = Vec::new();
    if ty == SelectorType::Pod {
        parts.push(format!("{} == 'k8s'", labels::ORCHESTRATOR));
    }
    let Some(s) = s else { return parts.join(" && ") };
    if ty == SelectorType::Namespace && s.is_empty() {
        return "all()".to_string();
    }
    for (k, v) in &s.match_labels {
        parts.push(format!("{k} == '{v}'"));
    }
    for e in &s.match_expressions {
        let values = e.values.join("', '");
        match e.operator {
            LabelSelectorOperator::In => parts.push(format!("{} in {{ '{values}' }}", e.key)),
            LabelSelectorOperator::NotIn => parts.push(format!("{} not in {{ '{values}' }}", e.key)),
            LabelSelectorOperator::Exists => parts.push(format!("has({})", e.key)),
            LabelSelectorOperator::DoesNotExist => parts.push(format!("! has({})", e.key)),
        }
    }
    parts.join(" && ")
}

/// The Calico fields a k8s peer becomes: (selector, namespaceSelector, nets, notNets) as strings.
/// An ipBlock that does not parse yields empty fields, as upstream does (the loader rejects such
/// objects before they get here, as the API server would).
pub fn k8s_peer_to_calico_fields(peer: Option<&NetworkPolicyPeer>) -> (String, String, Vec<String>, Vec<String>) {
    let Some(peer) = peer else { return Default::default() };
    if let Some(block) = &peer.ip_block {
        let Some(net) = parse_cidr(&block.cidr) else { return Default::default() };
        let mut not_nets = Vec::new();
        for ex in &block.except {
            let Some(n) = parse_cidr(ex) else {
                return (String::new(), String::new(), vec![net.to_string()], not_nets);
            };
            not_nets.push(n.to_string());
        }
        return (String::new(), String::new(), vec![net.to_string()], not_nets);
    }
    (
        k8s_selector_to_calico(peer.pod_selector.as_ref(), SelectorType::Pod),
        k8s_selector_to_calico(peer.namespace_selector.as_ref(), SelectorType::Namespace),
        Vec::new(),
        Vec::new(),
    )
}

/// Parse a CIDR (prefix length required) and mask off host bits, as Go's `net.ParseCIDR` does.
pub fn parse_cidr(s: &str) -> Option<IpNetwork> {
    if !s.contains('/') {
        return None;
    }
    let n: IpNetwork = s.parse().ok()?;
    IpNetwork::new(n.network(), n.prefix()).ok()
}

/// `k8sPortToCalico`: the port (or `port:endPort` range) of one k8s port entry.
fn k8s_port_to_calico(p: &NetworkPolicyPort) -> Result<Vec<Port>, String> {
    let Some(port) = &p.port else { return Ok(Vec::new()) };
    let mut text = port.to_string();
    if let Some(end) = p.end_port {
        text = format!("{text}:{end}");
    }
    Port::parse(&text).map(|p| vec![p]).map_err(|e| format!("invalid port {text}: {e}"))
}

/// `k8sRuleToCalico`: one k8s rule → Calico rules, one per (protocol, peer).
fn k8s_rule_to_calico(r: &NetworkPolicyRule, _ns: &str, dir: Direction) -> Result<Vec<Rule>, String> {
    let peers: Vec<Option<&NetworkPolicyPeer>> = match r.from.as_deref() {
        Some(p) if !p.is_empty() => p.iter().map(Some).collect(),
        _ => vec![None],
    };
    let ports: Vec<Option<&NetworkPolicyPort>> = match r.ports.as_deref() {
        Some(p) if !p.is_empty() => p.iter().map(Some).collect(),
        _ => vec![None],
    };

    // protocol string → ports; None = all ports of that protocol; key "" = any protocol.
    let mut by_proto: BTreeMap<String, Option<Vec<Port>>> = BTreeMap::new();
    for port in ports {
        let Some(port) = port else {
            by_proto = BTreeMap::from([(String::new(), None)]);
            break;
        };
        let calico_ports = k8s_port_to_calico(port).map_err(|e| format!("failed to parse k8s port: {e}"))?;
        let proto = port.protocol.clone().unwrap_or_else(|| "TCP".to_string());
        if calico_ports.is_empty() {
            by_proto.insert(proto, None);
        } else {
            match by_proto.get_mut(&proto) {
                None => {
                    by_proto.insert(proto, Some(calico_ports));
                }
                Some(Some(existing)) => existing.extend(calico_ports),
                Some(None) => {} // already "all ports"
            }
        }
    }

    let mut rules = Vec::new();
    for (proto, ports) in by_proto {
        let protocol = if proto.is_empty() {
            None
        } else {
            Some(Protocol::parse(&proto).ok_or_else(|| format!("invalid protocol {proto:?}"))?)
        };
        let ports = simplify_ports(ports.unwrap_or_default());
        for peer in &peers {
            let (sel, ns_sel, nets, not_nets) = k8s_peer_to_calico_fields(*peer);
            let entity = EntityRule {
                selector: parse_generated(&sel)?,
                namespace_selector: parse_generated(&ns_sel)?,
                nets: nets.iter().filter_map(|n| n.parse().ok()).collect(),
                not_nets: not_nets.iter().filter_map(|n| n.parse().ok()).collect(),
                ..EntityRule::default()
            };
            let mut rule = Rule::with_action(Action::Allow);
            rule.protocol = protocol;
            match dir {
                Direction::Ingress => {
                    rule.source = entity;
                    rule.destination.ports = ports.clone();
                }
                Direction::Egress => {
                    rule.destination = entity;
                    rule.destination.ports = ports.clone();
                }
            }
            rules.push(rule);
        }
    }
    Ok(rules)
}

/// `SimplifyPorts`: the fewest ranges covering the numeric ports, named ports first (in input
/// order). Inputs of at most one numeric port come back unchanged.
///
/// Upstream expands every range into a set of port numbers; merging sorted ranges gives the same
/// result without 65,536 entries per `1:65535` (a manifest can repeat such ranges many times).
pub fn simplify_ports(ports: Vec<Port>) -> Vec<Port> {
    if ports.len() <= 1 {
        return ports;
    }
    let mut out = Vec::new();
    let mut ranges: Vec<(u16, u16)> = Vec::new();
    for p in &ports {
        match p {
            Port::Named(_) => out.push(p.clone()),
            Port::Range { min, max } => ranges.push((*min, *max)),
        }
    }
    if ranges.len() == 1 && ranges[0].0 == ranges[0].1 {
        return ports;
    }
    if ranges.is_empty() {
        return out;
    }
    ranges.sort_unstable();
    let mut merged: Vec<(u16, u16)> = Vec::with_capacity(ranges.len());
    for (min, max) in ranges {
        match merged.last_mut() {
            // Overlapping or adjacent (`last + 1 >= min`, in u32 so 65535 + 1 cannot overflow).
            Some(last) if u32::from(last.1) + 1 >= u32::from(min) => last.1 = last.1.max(max),
            _ => merged.push((min, max)),
        }
    }
    out.extend(merged.into_iter().map(|(min, max)| Port::Range { min, max }));
    out
}

/// A Calico profile derived from a namespace or service account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub name: String,
    pub labels_to_apply: LabelMap,
    pub ingress: Vec<Rule>,
    pub egress: Vec<Rule>,
}

/// `NamespaceToProfile`: `kns.<ns>`, allowing everything, applying `pcns.` labels.
pub fn namespace_to_profile(ns: &Namespace) -> Profile {
    let mut labels_to_apply: LabelMap =
        ns.labels.iter().map(|(k, v)| (format!("{}{k}", labels::NAMESPACE_PREFIX), v.clone())).collect();
    labels_to_apply.insert(format!("{}{}", labels::NAMESPACE_PREFIX, labels::NAME), ns.name.clone());
    Profile {
        name: format!("{NAMESPACE_PROFILE_PREFIX}{}", ns.name),
        labels_to_apply,
        ingress: vec![Rule::with_action(Action::Allow)],
        egress: vec![Rule::with_action(Action::Allow)],
    }
}

/// `ServiceAccountToProfile`: `ksa.<ns>.<sa>`, no rules, applying `pcsa.` labels.
pub fn service_account_to_profile(sa: &ServiceAccount) -> Profile {
    let mut labels_to_apply: LabelMap =
        sa.labels.iter().map(|(k, v)| (format!("{}{k}", labels::SERVICE_ACCOUNT_PREFIX), v.clone())).collect();
    labels_to_apply.insert(format!("{}{}", labels::SERVICE_ACCOUNT_PREFIX, labels::NAME), sa.name.clone());
    let ns = if sa.namespace.is_empty() { "default" } else { &sa.namespace };
    Profile {
        name: format!("{SERVICE_ACCOUNT_PROFILE_PREFIX}{ns}.{}", sa.name),
        labels_to_apply,
        ingress: Vec::new(),
        egress: Vec::new(),
    }
}

#[cfg(test)]
mod tests;
