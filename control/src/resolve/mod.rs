//! From the declared [`Model`] to what Felix would enforce: endpoints with the labels Calico
//! gives them, Kubernetes policies converted, every rule's selectors rewritten into one
//! selector over endpoint labels, tiers and policies in evaluation order.
//!
//! This is the shared front half of the reference evaluator ([`crate::evaluate`]) and of the
//! rule-table compiler: both consume a [`Resolved`] so they cannot disagree about semantics,
//! only about matching.
//!
//! # Labels
//! A workload endpoint (pod) carries, from lowest to highest precedence: its namespace's labels
//! as `pcns.<key>` plus `pcns.projectcalico.org/name`, its service account's labels as
//! `pcsa.<key>` plus `pcsa.projectcalico.org/name`, the pod's labels, and
//! `projectcalico.org/namespace`, `projectcalico.org/orchestrator: k8s`,
//! `projectcalico.org/serviceaccount`. A namespaced NetworkSet carries its own labels, the
//! `pcns.` labels of its namespace and `projectcalico.org/namespace`. Host endpoints and
//! GlobalNetworkSets carry their own labels only.
//!
//! # Entity rules (`GetEntityRuleSelector` upstream)
//! `namespaceSelector` is rewritten over endpoint labels (`pcns.` prefix, `all()` → any
//! namespaced endpoint, `global()` → non-namespaced ones); `serviceAccounts` becomes
//! `pcsa.`-prefixed selector && `projectcalico.org/serviceaccount in {names}`. In a namespaced
//! policy, as soon as any selector field is used the match is confined to the policy's own
//! namespace unless a `namespaceSelector` says otherwise. `notSelector` is used as written.
//! A selector matches an address when any endpoint or network set owning that address matches.

use crate::convert::{self, k8s_policy_to_calico};
use crate::model::{
    Action, CalicoPolicy, DEFAULT_TIER, DEFAULT_TIER_ORDER, Direction, EntityRule, HostEndpoint, IcmpMatch,
    K8sNetworkPolicy, LabelMap, Model, NamedPort, NetworkSet, Pod, PolicyId, PolicyKind, PolicySpec, Port, Protocol,
    Rule, StagedAction, Tier, TierDefaultAction, labels,
};
use crate::selector::{Expr, SERVICE_ACCOUNT_LABEL_PREFIX, Selector};
use ipnetwork::IpNetwork;
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

/// Which endpoint a verdict is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EndpointId {
    /// A pod: namespace and name.
    Workload { namespace: String, name: String },
    /// A Calico HostEndpoint by name.
    Host { name: String },
}

impl fmt::Display for EndpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndpointId::Workload { namespace, name } => write!(f, "{namespace}/{name}"),
            EndpointId::Host { name } => write!(f, "hostendpoint {name}"),
        }
    }
}

/// An endpoint policy is enforced on: a pod or a host endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub id: EndpointId,
    /// Namespace of a workload; `None` for host endpoints.
    pub namespace: Option<String>,
    /// The full label set selectors see (see the module docs).
    pub labels: LabelMap,
    pub ips: Vec<IpAddr>,
    pub named_ports: Vec<NamedPort>,
    /// Profiles evaluated when no tier decides: `kns.<ns>` (and `ksa.<ns>.<sa>`) for pods,
    /// `spec.profiles` for host endpoints.
    pub profiles: Vec<String>,
}

impl Endpoint {
    pub fn is_host(&self) -> bool {
        matches!(self.id, EndpointId::Host { .. })
    }
}

/// Labels attached to addresses that are not endpoints: a (Global)NetworkSet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelledNets {
    pub namespace: Option<String>,
    pub name: String,
    pub labels: LabelMap,
    pub nets: Vec<IpNetwork>,
}

/// One side of a rule, as Felix matches it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResolvedEntity {
    pub nets: Vec<IpNetwork>,
    pub not_nets: Vec<IpNetwork>,
    /// Selector over endpoint/network-set labels combining `selector`, `namespaceSelector`,
    /// `serviceAccounts` and namespace scoping; `None` = no selector condition.
    pub selector: Option<Selector>,
    pub not_selector: Option<Selector>,
    pub ports: Vec<Port>,
    pub not_ports: Vec<Port>,
}

impl ResolvedEntity {
    /// The selector named ports are resolved against (`all()` when the rule has none).
    pub fn named_port_selector(&self) -> Selector {
        self.selector.clone().unwrap_or_else(Selector::all)
    }
}

/// A rule ready for matching.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedRule {
    pub action: Action,
    pub ip_version: Option<u8>,
    pub protocol: Option<Protocol>,
    pub not_protocol: Option<Protocol>,
    pub icmp: Option<IcmpMatch>,
    pub not_icmp: Option<IcmpMatch>,
    pub source: ResolvedEntity,
    pub destination: ResolvedEntity,
}

/// A policy ready for evaluation (Calico, GlobalNetworkPolicy, converted Kubernetes, staged).
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedPolicy {
    pub id: PolicyId,
    /// Name in flow-log traces: `<ns>/<tier>.<name>`, `<tier>.<name>`, `<ns>/knp.default.<name>`,
    /// staged ones with `staged:` before the policy part.
    pub trace_name: String,
    /// Felix's sort key after order: `<ns>/<name>` or `<name>` (converted names for k8s).
    pub sort_name: String,
    pub tier: String,
    pub order: Option<f64>,
    /// Which endpoints the policy applies to, over endpoint labels (namespace scoping included).
    pub applies_to: Selector,
    pub types: Vec<Direction>,
    pub ingress: Vec<ResolvedRule>,
    pub egress: Vec<ResolvedRule>,
    /// `Some` for staged policies: reported, never enforced.
    pub staged: Option<StagedAction>,
    pub do_not_track: bool,
    pub pre_dnat: bool,
    pub apply_on_forward: bool,
}

impl ResolvedPolicy {
    pub fn rules(&self, dir: Direction) -> &[ResolvedRule] {
        match dir {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }

    /// The enforced policy a staged one would replace or delete.
    pub fn enforced_id(&self) -> PolicyId {
        PolicyId { kind: self.id.kind.enforced(), namespace: self.id.namespace.clone(), name: self.id.name.clone() }
    }
}

/// A tier with its policies (staged included) in evaluation order.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedTier {
    pub name: String,
    pub order: Option<f64>,
    pub default_action: TierDefaultAction,
    pub policies: Vec<ResolvedPolicy>,
}

/// A failsafe port: always allowed to (inbound) or from (outbound) a host endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailsafePort {
    pub protocol: Protocol,
    pub port: u16,
    /// Optional remote-address restriction.
    pub net: Option<IpNetwork>,
}

/// Failsafe configuration (Felix `FailsafeInboundHostPorts` / `FailsafeOutboundHostPorts`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failsafe {
    pub inbound: Vec<FailsafePort>,
    pub outbound: Vec<FailsafePort>,
}

impl Default for Failsafe {
    /// Felix's defaults: inbound tcp 22, udp 68, tcp 179, 2379, 2380, 5473, 6443, 6666, 6667;
    /// outbound udp 53, 67, tcp 179, 2379, 2380, 5473, 6443, 6666, 6667.
    fn default() -> Failsafe {
        let p = |protocol, port| FailsafePort { protocol, port, net: None };
        let common = [179, 2379, 2380, 5473, 6443, 6666, 6667].map(|n| p(Protocol::Tcp, n));
        let mut inbound = vec![p(Protocol::Tcp, 22), p(Protocol::Udp, 68)];
        inbound.extend(common.iter().cloned());
        let mut outbound = vec![p(Protocol::Udp, 53), p(Protocol::Udp, 67)];
        outbound.extend(common);
        Failsafe { inbound, outbound }
    }
}

/// The model as Felix would enforce it. Build with [`Resolved::new`].
#[derive(Debug, Clone)]
pub struct Resolved {
    /// Pods (not host-networked) in namespace/name order, then host endpoints by name.
    pub endpoints: Vec<Endpoint>,
    pub network_sets: Vec<LabelledNets>,
    /// Tiers in evaluation order: `order` ascending, no order last, then name.
    pub tiers: Vec<ResolvedTier>,
    pub failsafe: Failsafe,
    /// Things that are not errors of one object but deserve a look (conversion drops, policies
    /// in undeclared tiers, …).
    pub warnings: Vec<String>,
}

/// Sort `Option<f64>` orders with `None` last (Felix treats a missing order as infinity).
pub fn cmp_order(a: Option<f64>, b: Option<f64>) -> Ordering {
    match (a, b) {
        (Some(x), Some(y)) => x.total_cmp(&y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

/// Conjunction of selectors (`None` for none).
fn and(mut parts: Vec<Selector>) -> Result<Option<Selector>, String> {
    match parts.len() {
        0 => Ok(None),
        1 => Ok(parts.pop()),
        _ => {
            let exprs: Vec<Expr> = parts.into_iter().map(Selector::into_expr).collect();
            Selector::from_expr(Expr::And(exprs)).map(Some).map_err(|e| e.to_string())
        }
    }
}

/// `key == value`, built as a tree so no quoting is involved.
fn eq_selector(key: &str, value: &str) -> Result<Selector, String> {
    Selector::from_expr(Expr::Eq { key: key.to_string(), value: value.to_string() }).map_err(|e| e.to_string())
}

/// `parseServiceAccounts`: the service-account part of an entity rule or policy.
fn service_account_selector(sel: Option<&Selector>, names: &[String]) -> Result<Option<Selector>, String> {
    let mut parts = Vec::new();
    if let Some(s) = sel {
        parts.push(s.with_label_prefix(SERVICE_ACCOUNT_LABEL_PREFIX).map_err(|e| e.to_string())?);
    }
    if !names.is_empty() {
        let mut values = names.to_vec();
        values.sort();
        values.dedup();
        parts.push(
            Selector::from_expr(Expr::In { key: labels::SERVICE_ACCOUNT.to_string(), values })
                .map_err(|e| e.to_string())?,
        );
    }
    and(parts)
}

/// `getEndpointSelector`: one selector over endpoint labels for an entity rule.
pub fn entity_selector(e: &EntityRule, policy_ns: Option<&str>) -> Result<Option<Selector>, String> {
    let ns_selector = match (&e.namespace_selector, policy_ns) {
        (Some(s), _) => Some(s.namespace_selector_to_endpoint_selector().map_err(|e| e.to_string())?),
        (None, Some(ns)) => Some(eq_selector(labels::NAMESPACE, ns)?),
        (None, None) => None,
    };
    let mut parts = Vec::new();
    if let Some(sa) = &e.service_accounts {
        if let Some(s) = service_account_selector(sa.selector.as_ref(), &sa.names)? {
            parts.push(s);
        }
    }
    if let Some(s) = &e.selector {
        parts.push(s.clone());
    }
    let scoped = !parts.is_empty() || e.not_selector.is_some() || e.namespace_selector.is_some();
    if let (Some(ns), true) = (ns_selector, scoped) {
        parts.insert(0, ns);
    }
    and(parts)
}

fn resolve_rule(r: &Rule, policy_ns: Option<&str>) -> Result<ResolvedRule, String> {
    let side = |e: &EntityRule| -> Result<ResolvedEntity, String> {
        Ok(ResolvedEntity {
            nets: e.nets.clone(),
            not_nets: e.not_nets.clone(),
            selector: entity_selector(e, policy_ns)?,
            not_selector: e.not_selector.clone(),
            ports: e.ports.clone(),
            not_ports: e.not_ports.clone(),
        })
    };
    Ok(ResolvedRule {
        action: r.action,
        ip_version: r.ip_version,
        protocol: r.protocol,
        not_protocol: r.not_protocol,
        icmp: r.icmp,
        not_icmp: r.not_icmp,
        source: side(&r.source)?,
        destination: side(&r.destination)?,
    })
}

/// Trace name as Calico flow logs print it.
fn trace_name(kind: PolicyKind, ns: Option<&str>, tier: &str, name: &str) -> String {
    let staged = if kind.is_staged() { "staged:" } else { "" };
    let base = if kind.is_kubernetes() || name.starts_with(&format!("{tier}.")) {
        name.to_string()
    } else {
        format!("{tier}.{name}")
    };
    match ns {
        Some(ns) => format!("{ns}/{staged}{base}"),
        None => format!("{staged}{base}"),
    }
}

fn resolve_policy(id: PolicyId, name_for_trace: &str, spec: &PolicySpec) -> Result<ResolvedPolicy, String> {
    let tier = spec.tier.clone().unwrap_or_else(|| DEFAULT_TIER.to_string());
    let ns = id.namespace.as_deref();
    let mut applies = Vec::new();
    if let Some(ns) = ns {
        applies.push(eq_selector(labels::NAMESPACE, ns)?);
    }
    if let Some(s) = &spec.namespace_selector {
        applies.push(s.namespace_selector_to_endpoint_selector().map_err(|e| format!("namespaceSelector: {e}"))?);
    }
    if let Some(s) = &spec.service_account_selector {
        if let Some(s) = service_account_selector(Some(s), &[])? {
            applies.push(s);
        }
    }
    if let Some(s) = &spec.selector {
        applies.push(s.clone());
    }
    let applies_to = and(applies)?.unwrap_or_else(Selector::all);
    let rules = |rs: &[Rule], dir: &str| -> Result<Vec<ResolvedRule>, String> {
        rs.iter().enumerate().map(|(i, r)| resolve_rule(r, ns).map_err(|e| format!("{dir}[{i}]: {e}"))).collect()
    };
    let sort_name = match ns {
        Some(ns) => format!("{ns}/{name_for_trace}"),
        None => name_for_trace.to_string(),
    };
    Ok(ResolvedPolicy {
        trace_name: trace_name(id.kind, ns, &tier, name_for_trace),
        sort_name,
        tier,
        order: spec.order,
        applies_to,
        types: spec.effective_types(),
        ingress: rules(&spec.ingress, "ingress")?,
        egress: rules(&spec.egress, "egress")?,
        staged: if id.kind.is_staged() { Some(spec.staged_action.unwrap_or_default()) } else { None },
        do_not_track: spec.do_not_track,
        pre_dnat: spec.pre_dnat,
        apply_on_forward: spec.apply_on_forward,
        id,
    })
}

fn prefixed<'a>(prefix: &str, m: &'a LabelMap) -> impl Iterator<Item = (String, String)> + 'a {
    let prefix = prefix.to_string();
    m.iter().map(move |(k, v)| (format!("{prefix}{k}"), v.clone()))
}

impl Resolved {
    /// Resolve a model with Felix's default failsafe ports.
    pub fn new(model: &Model) -> Resolved {
        Resolved::with_failsafe(model, Failsafe::default())
    }

    pub fn with_failsafe(model: &Model, failsafe: Failsafe) -> Resolved {
        let mut warnings = Vec::new();
        let mut endpoints: Vec<Endpoint> = model.pods.values().filter_map(|p| workload_endpoint(model, p)).collect();
        endpoints.extend(model.host_endpoints.values().map(host_endpoint));
        let network_sets = model.network_sets.values().map(|s| network_set(model, s)).collect();

        // Policies.
        let mut policies: Vec<ResolvedPolicy> = Vec::new();
        for ((staged, _, _), np) in &model.k8s_policies {
            match resolve_k8s_policy(*staged, np) {
                Ok((p, warning)) => {
                    warnings.extend(warning);
                    policies.push(p);
                }
                Err(e) => warnings.push(e),
            }
        }
        for p in model.policies.values() {
            match resolve_calico_policy(p) {
                Ok(r) => policies.push(r),
                Err(e) => warnings.push(e),
            }
        }

        // Tiers.
        let mut tiers: BTreeMap<String, ResolvedTier> =
            model.tiers.values().map(|t| (t.name.clone(), declared_tier(t))).collect();
        tiers.entry(DEFAULT_TIER.to_string()).or_insert_with(|| undeclared_tier(DEFAULT_TIER));
        for p in policies {
            let tier = tiers.entry(p.tier.clone()).or_insert_with(|| {
                warnings.push(format!(
                    "tier {:?} is not declared (used by {}): evaluated last, default action Deny",
                    p.tier, p.id
                ));
                undeclared_tier(&p.tier)
            });
            tier.policies.push(p);
        }
        let mut tiers: Vec<ResolvedTier> = tiers.into_values().collect();
        for t in &mut tiers {
            t.policies.sort_by(cmp_policies);
        }
        tiers.sort_by(|a, b| cmp_order(a.order, b.order).then_with(|| a.name.cmp(&b.name)));

        Resolved { endpoints, network_sets, tiers, failsafe, warnings }
    }

    /// The endpoint with this identity.
    pub fn endpoint(&self, id: &EndpointId) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| &e.id == id)
    }

    /// The endpoint owning an address (pods before host endpoints).
    pub fn endpoint_by_ip(&self, ip: IpAddr) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| e.ips.contains(&ip))
    }

    /// Network sets whose nets contain the address.
    pub fn network_sets_containing(&self, ip: IpAddr) -> impl Iterator<Item = &LabelledNets> {
        self.network_sets.iter().filter(move |s| s.nets.iter().any(|n| n.contains(ip)))
    }
}

/// Evaluation order of the policies of one tier: `order` (none last), then Felix's sort name,
/// then identity.
pub fn cmp_policies(a: &ResolvedPolicy, b: &ResolvedPolicy) -> Ordering {
    cmp_order(a.order, b.order).then_with(|| a.sort_name.cmp(&b.sort_name)).then_with(|| a.id.cmp(&b.id))
}

/// A declared tier, without its policies. The `default` tier without an order gets
/// [`DEFAULT_TIER_ORDER`].
pub fn declared_tier(t: &Tier) -> ResolvedTier {
    let order = if t.name == DEFAULT_TIER && t.spec.order.is_none() { Some(DEFAULT_TIER_ORDER) } else { t.spec.order };
    ResolvedTier { name: t.name.clone(), order, default_action: t.spec.default_action, policies: Vec::new() }
}

/// A tier used by a policy but not declared: evaluated last with default action Deny; the
/// implicit `default` tier keeps its order.
pub fn undeclared_tier(name: &str) -> ResolvedTier {
    let order = (name == DEFAULT_TIER).then_some(DEFAULT_TIER_ORDER);
    ResolvedTier { name: name.to_string(), order, default_action: TierDefaultAction::Deny, policies: Vec::new() }
}

/// The `pcns.` labels (and `pcns.projectcalico.org/name`) a namespace gives its endpoints; a
/// namespace referenced but not declared gets the labels the API server would give it.
pub fn namespace_labels(model: &Model, ns: &str) -> LabelMap {
    let declared = model
        .namespaces
        .get(ns)
        .map(|n| n.labels.clone())
        .unwrap_or_else(|| LabelMap::from([(labels::K8S_NAMESPACE_NAME.to_string(), ns.to_string())]));
    convert::namespace_to_profile(&crate::model::Namespace { name: ns.to_string(), labels: declared }).labels_to_apply
}

/// A pod's workload endpoint (labels as the module docs say); `None` for a host-networked pod.
pub fn workload_endpoint(model: &Model, pod: &Pod) -> Option<Endpoint> {
    if pod.host_network {
        return None;
    }
    let mut l = namespace_labels(model, &pod.namespace);
    let sa = model.service_accounts.get(&(pod.namespace.clone(), pod.service_account.clone()));
    if let Some(sa) = sa {
        l.extend(prefixed(SERVICE_ACCOUNT_LABEL_PREFIX, &sa.labels));
    }
    l.insert(format!("{SERVICE_ACCOUNT_LABEL_PREFIX}{}", labels::NAME), pod.service_account.clone());
    l.extend(pod.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
    l.insert(labels::NAMESPACE.to_string(), pod.namespace.clone());
    l.insert(labels::ORCHESTRATOR.to_string(), "k8s".to_string());
    if pod.service_account.len() < 63 {
        l.insert(labels::SERVICE_ACCOUNT.to_string(), pod.service_account.clone());
    }
    Some(Endpoint {
        id: EndpointId::Workload { namespace: pod.namespace.clone(), name: pod.name.clone() },
        namespace: Some(pod.namespace.clone()),
        labels: l,
        ips: pod.ips.clone(),
        named_ports: pod.named_ports.clone(),
        profiles: vec![
            format!("{}{}", convert::NAMESPACE_PROFILE_PREFIX, pod.namespace),
            format!("{}{}.{}", convert::SERVICE_ACCOUNT_PROFILE_PREFIX, pod.namespace, pod.service_account),
        ],
    })
}

/// A (Global)NetworkSet with the labels selectors see.
pub fn network_set(model: &Model, s: &NetworkSet) -> LabelledNets {
    let mut l = LabelMap::new();
    if let Some(ns) = &s.namespace {
        l = namespace_labels(model, ns);
    }
    l.extend(s.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
    if let Some(ns) = &s.namespace {
        l.insert(labels::NAMESPACE.to_string(), ns.clone());
    }
    LabelledNets { namespace: s.namespace.clone(), name: s.name.clone(), labels: l, nets: s.nets.clone() }
}

/// A Kubernetes NetworkPolicy (staged or not) converted and resolved, with the conversion's
/// warning if it dropped something; `Err` is the warning saying why it is not enforced.
pub fn resolve_k8s_policy(staged: bool, np: &K8sNetworkPolicy) -> Result<(ResolvedPolicy, Option<String>), String> {
    let converted = k8s_policy_to_calico(np)
        .map_err(|e| format!("NetworkPolicy {}/{} not enforced: {e}", np.namespace, np.name))?;
    let warning = converted.error.as_ref().map(|err| format!("NetworkPolicy {}/{}: {err}", np.namespace, np.name));
    let kind = if staged { PolicyKind::StagedKubernetesNetworkPolicy } else { PolicyKind::KubernetesNetworkPolicy };
    let id = PolicyId { kind, namespace: Some(np.namespace.clone()), name: np.name.clone() };
    resolve_policy(id, &converted.name, &converted.spec)
        .map(|p| (p, warning))
        .map_err(|e| format!("NetworkPolicy {}/{} not enforced: {e}", np.namespace, np.name))
}

/// A Calico policy resolved; `Err` is the warning saying why it is not enforced.
pub fn resolve_calico_policy(p: &CalicoPolicy) -> Result<ResolvedPolicy, String> {
    resolve_policy(p.id.clone(), &p.id.name, &p.spec).map_err(|e| format!("{} not enforced: {e}", p.id))
}

/// A host endpoint as an endpoint (its own labels, `expectedIPs`, ports and profiles).
pub fn host_endpoint(h: &HostEndpoint) -> Endpoint {
    Endpoint {
        id: EndpointId::Host { name: h.name.clone() },
        namespace: None,
        labels: h.labels.clone(),
        ips: h.spec.expected_ips.clone(),
        named_ports: h
            .spec
            .ports
            .iter()
            .map(|p| NamedPort { name: p.name.clone(), protocol: p.protocol, port: p.port })
            .collect(),
        profiles: h.spec.profiles.clone(),
    }
}

#[cfg(test)]
mod tests;
