//! Kubernetes resources moat reads: `networking.k8s.io/v1` NetworkPolicy and `v1` Namespace,
//! Pod and ServiceAccount (only the fields policy needs).

use super::calico::StagedAction;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

/// A Kubernetes `LabelSelector`. `{}` selects everything; `null` (absent) is represented by
/// `Option::None` where it matters (peers).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

impl LabelSelector {
    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelectorRequirement {
    pub key: String,
    pub operator: LabelSelectorOperator,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LabelSelectorOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

/// `int-or-string` as Kubernetes uses it for ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntOrString {
    Int(i64),
    String(String),
}

impl fmt::Display for IntOrString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IntOrString::Int(i) => write!(f, "{i}"),
            IntOrString::String(s) => f.write_str(s),
        }
    }
}

impl Serialize for IntOrString {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            IntOrString::Int(i) => s.serialize_i64(*i),
            IntOrString::String(v) => s.serialize_str(v),
        }
    }
}

impl<'de> Deserialize<'de> for IntOrString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::Number(n) => n
                .as_i64()
                .map(IntOrString::Int)
                .ok_or_else(|| serde::de::Error::custom(format!("port {n} is not an integer"))),
            serde_json::Value::String(s) => Ok(IntOrString::String(s)),
            other => Err(serde::de::Error::custom(format!("expected a port number or name, got {other}"))),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpBlock {
    pub cidr: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub except: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicyPeer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_block: Option<IpBlock>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicyPort {
    /// `TCP` (default), `UDP` or `SCTP`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<IntOrString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_port: Option<i64>,
}

/// An ingress or egress rule; missing and empty peer/port lists both mean "all".
///
/// One type serves both directions: `from` holds the peers of an ingress rule's `from` or an
/// egress rule's `to`. In a [`NetworkPolicySpec`] each direction (de)serializes under its own
/// name, so `egress: [{from: …}]` is an unknown field (reported), as in Kubernetes.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicyRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Vec<NetworkPolicyPeer>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<NetworkPolicyPort>>,
}

/// The wire form of an egress rule (`to`).
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EgressRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    to: Option<Vec<NetworkPolicyPeer>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ports: Option<Vec<NetworkPolicyPort>>,
}

fn de_egress<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<NetworkPolicyRule>>, D::Error> {
    let rules: Option<Vec<EgressRule>> = Option::deserialize(d)?;
    Ok(rules.map(|rules| rules.into_iter().map(|r| NetworkPolicyRule { from: r.to, ports: r.ports }).collect()))
}

fn ser_egress<S: Serializer>(rules: &Option<Vec<NetworkPolicyRule>>, s: S) -> Result<S::Ok, S::Error> {
    let wire: Option<Vec<EgressRule>> = rules
        .as_ref()
        .map(|rules| rules.iter().map(|r| EgressRule { to: r.from.clone(), ports: r.ports.clone() }).collect());
    wire.serialize(s)
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    #[serde(default)]
    pub pod_selector: LabelSelector,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_types: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<Vec<NetworkPolicyRule>>,
    #[serde(
        default,
        deserialize_with = "de_egress",
        serialize_with = "ser_egress",
        skip_serializing_if = "Option::is_none"
    )]
    pub egress: Option<Vec<NetworkPolicyRule>>,
    /// `StagedKubernetesNetworkPolicy` only (the loader reports it as an unknown field of a
    /// `networking.k8s.io` NetworkPolicy): whether the staged policy replaces or deletes the
    /// enforced one of the same name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staged_action: Option<StagedAction>,
}

/// A Kubernetes NetworkPolicy (name, namespace and spec).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct K8sNetworkPolicy {
    pub namespace: String,
    pub name: String,
    pub spec: NetworkPolicySpec,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub container_port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub ports: Vec<ContainerPort>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// The deprecated spelling of `serviceAccountName`, used when that is empty (as the API
    /// server's conversion does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    #[serde(default)]
    pub containers: Vec<Container>,
    #[serde(default)]
    pub host_network: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodIp {
    pub ip: IpAddr,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStatus {
    #[serde(default, rename = "podIP", skip_serializing_if = "Option::is_none")]
    pub pod_ip: Option<IpAddr>,
    #[serde(default, rename = "podIPs", skip_serializing_if = "Vec::is_empty")]
    pub pod_ips: Vec<PodIp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
}
