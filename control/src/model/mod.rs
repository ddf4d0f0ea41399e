//! The policy model: every resource moat reads, typed, validated and stored by identity.
//!
//! Resources arrive from manifests ([`crate::manifest`]) or, later, the Kubernetes API. The
//! [`Model`] is plain data keyed by namespace/name: inserting a resource with the same identity
//! replaces it, as `kubectl apply` would. Semantics (label inheritance, k8s conversion, tier
//! order) live in [`crate::resolve`], so the model stays a faithful copy of what was declared.

pub mod calico;
pub mod k8s;
mod serde_util;

pub use calico::*;
pub use k8s::{K8sNetworkPolicy, LabelSelector, NetworkPolicySpec};
pub use serde_util::{Direction, parse_opt_selector, selector_error_text};

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

/// Labels of a resource, sorted for stable output.
pub type LabelMap = BTreeMap<String, String>;

/// Label keys Calico adds to workload endpoints.
pub mod labels {
    pub const NAMESPACE: &str = "projectcalico.org/namespace";
    pub const ORCHESTRATOR: &str = "projectcalico.org/orchestrator";
    pub const SERVICE_ACCOUNT: &str = "projectcalico.org/serviceaccount";
    /// `pcns.projectcalico.org/name` / `pcsa.projectcalico.org/name` carry the object's name.
    pub const NAME: &str = "projectcalico.org/name";
    /// Namespace labels appear on endpoints under this prefix.
    pub const NAMESPACE_PREFIX: &str = "pcns.";
    /// Service-account labels appear on endpoints under this prefix.
    pub const SERVICE_ACCOUNT_PREFIX: &str = "pcsa.";
    /// Set by the API server on every namespace.
    pub const K8S_NAMESPACE_NAME: &str = "kubernetes.io/metadata.name";
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    pub name: String,
    /// Includes `kubernetes.io/metadata.name`, added at load time as the API server does.
    pub labels: LabelMap,
}

impl Namespace {
    /// A namespace with the label the API server always sets.
    pub fn new(name: &str, mut labels: LabelMap) -> Namespace {
        labels.entry(labels::K8S_NAMESPACE_NAME.to_string()).or_insert_with(|| name.to_string());
        Namespace { name: name.to_string(), labels }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccount {
    pub namespace: String,
    pub name: String,
    pub labels: LabelMap,
}

/// A named container port (`containers[].ports[]` with a name), used to resolve named ports.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NamedPort {
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
}

/// A pod as a workload endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    pub labels: LabelMap,
    /// `spec.serviceAccountName`, defaulted to `default` as the API server does.
    pub service_account: String,
    /// `status.podIPs`, else `status.podIP`. Empty while the pod has no address.
    pub ips: Vec<IpAddr>,
    pub named_ports: Vec<NamedPort>,
    /// Host-networked pods are not workload endpoints in Calico (their traffic is the host's).
    pub host_network: bool,
}

/// The kinds of policy moat stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PolicyKind {
    NetworkPolicy,
    GlobalNetworkPolicy,
    StagedNetworkPolicy,
    StagedGlobalNetworkPolicy,
    /// `networking.k8s.io/v1` NetworkPolicy after conversion.
    KubernetesNetworkPolicy,
    StagedKubernetesNetworkPolicy,
}

impl PolicyKind {
    pub fn is_staged(self) -> bool {
        matches!(
            self,
            PolicyKind::StagedNetworkPolicy
                | PolicyKind::StagedGlobalNetworkPolicy
                | PolicyKind::StagedKubernetesNetworkPolicy
        )
    }

    pub fn is_global(self) -> bool {
        matches!(self, PolicyKind::GlobalNetworkPolicy | PolicyKind::StagedGlobalNetworkPolicy)
    }

    pub fn is_kubernetes(self) -> bool {
        matches!(self, PolicyKind::KubernetesNetworkPolicy | PolicyKind::StagedKubernetesNetworkPolicy)
    }

    /// The enforced kind a staged kind stands in for (identity for enforced kinds).
    pub fn enforced(self) -> PolicyKind {
        match self {
            PolicyKind::StagedNetworkPolicy => PolicyKind::NetworkPolicy,
            PolicyKind::StagedGlobalNetworkPolicy => PolicyKind::GlobalNetworkPolicy,
            PolicyKind::StagedKubernetesNetworkPolicy => PolicyKind::KubernetesNetworkPolicy,
            k => k,
        }
    }
}

/// Identity of a policy: kind, namespace (None for global kinds) and name as declared.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyId {
    pub kind: PolicyKind,
    pub namespace: Option<String>,
    pub name: String,
}

impl fmt::Display for PolicyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{:?} {ns}/{}", self.kind, self.name),
            None => write!(f, "{:?} {}", self.kind, self.name),
        }
    }
}

/// A Calico policy (any of the four Calico kinds).
#[derive(Debug, Clone, PartialEq)]
pub struct CalicoPolicy {
    pub id: PolicyId,
    pub spec: PolicySpec,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tier {
    pub name: String,
    pub spec: TierSpec,
}

/// Name of the tier Kubernetes and untiered Calico policies belong to.
pub const DEFAULT_TIER: &str = "default";
/// Order of the implicit `default` tier (Calico ≥ 3.28 gives it 1,000,000).
pub const DEFAULT_TIER_ORDER: f64 = 1_000_000.0;

/// A NetworkSet (namespace `Some`) or GlobalNetworkSet (namespace `None`): labels for addresses
/// that are not endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSet {
    pub namespace: Option<String>,
    pub name: String,
    pub labels: LabelMap,
    pub nets: Vec<IpNetwork>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostEndpoint {
    pub name: String,
    pub labels: LabelMap,
    pub spec: HostEndpointSpec,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpPool {
    pub name: String,
    pub spec: IpPoolSpec,
}

/// One typed resource, as produced by the loader.
#[derive(Debug, Clone, PartialEq)]
pub enum Resource {
    Namespace(Namespace),
    ServiceAccount(ServiceAccount),
    Pod(Pod),
    K8sNetworkPolicy { staged: bool, policy: K8sNetworkPolicy },
    CalicoPolicy(CalicoPolicy),
    Tier(Tier),
    NetworkSet(NetworkSet),
    HostEndpoint(HostEndpoint),
    IpPool(IpPool),
}

/// Everything declared, keyed by identity. Later inserts of the same identity replace earlier ones.
#[derive(Debug, Clone, Default)]
pub struct Model {
    pub namespaces: BTreeMap<String, Namespace>,
    pub service_accounts: BTreeMap<(String, String), ServiceAccount>,
    pub pods: BTreeMap<(String, String), Pod>,
    /// Kubernetes NetworkPolicies (staged ones keyed with `staged = true`).
    pub k8s_policies: BTreeMap<(bool, String, String), K8sNetworkPolicy>,
    pub policies: BTreeMap<PolicyId, CalicoPolicy>,
    pub tiers: BTreeMap<String, Tier>,
    /// Keyed by (namespace or None for global, name).
    pub network_sets: BTreeMap<(Option<String>, String), NetworkSet>,
    pub host_endpoints: BTreeMap<String, HostEndpoint>,
    pub ip_pools: BTreeMap<String, IpPool>,
}

impl Model {
    pub fn new() -> Model {
        Model::default()
    }

    /// Insert or replace a resource.
    pub fn insert(&mut self, r: Resource) {
        match r {
            Resource::Namespace(n) => {
                self.namespaces.insert(n.name.clone(), n);
            }
            Resource::ServiceAccount(s) => {
                self.service_accounts.insert((s.namespace.clone(), s.name.clone()), s);
            }
            Resource::Pod(p) => {
                self.pods.insert((p.namespace.clone(), p.name.clone()), p);
            }
            Resource::K8sNetworkPolicy { staged, policy } => {
                self.k8s_policies.insert((staged, policy.namespace.clone(), policy.name.clone()), policy);
            }
            Resource::CalicoPolicy(p) => {
                self.policies.insert(p.id.clone(), p);
            }
            Resource::Tier(t) => {
                self.tiers.insert(t.name.clone(), t);
            }
            Resource::NetworkSet(s) => {
                self.network_sets.insert((s.namespace.clone(), s.name.clone()), s);
            }
            Resource::HostEndpoint(h) => {
                self.host_endpoints.insert(h.name.clone(), h);
            }
            Resource::IpPool(p) => {
                self.ip_pools.insert(p.name.clone(), p);
            }
        }
    }

    /// Remove the resource with the identity of `r` (its contents do not matter), as a watch's
    /// DELETED event does; whether there was one.
    pub fn remove(&mut self, r: &Resource) -> bool {
        match r {
            Resource::Namespace(n) => self.namespaces.remove(&n.name).is_some(),
            Resource::ServiceAccount(s) => {
                self.service_accounts.remove(&(s.namespace.clone(), s.name.clone())).is_some()
            }
            Resource::Pod(p) => self.pods.remove(&(p.namespace.clone(), p.name.clone())).is_some(),
            Resource::K8sNetworkPolicy { staged, policy } => {
                self.k8s_policies.remove(&(*staged, policy.namespace.clone(), policy.name.clone())).is_some()
            }
            Resource::CalicoPolicy(p) => self.policies.remove(&p.id).is_some(),
            Resource::Tier(t) => self.tiers.remove(&t.name).is_some(),
            Resource::NetworkSet(s) => self.network_sets.remove(&(s.namespace.clone(), s.name.clone())).is_some(),
            Resource::HostEndpoint(h) => self.host_endpoints.remove(&h.name).is_some(),
            Resource::IpPool(p) => self.ip_pools.remove(&p.name).is_some(),
        }
    }

    /// Remove every policy (Kubernetes and Calico, staged or not); tiers stay.
    pub fn clear_policies(&mut self) {
        self.k8s_policies.clear();
        self.policies.clear();
    }

    /// The IP pool (zone) an address belongs to: longest prefix wins, ties by pool name.
    pub fn ip_pool_for(&self, ip: IpAddr) -> Option<&IpPool> {
        self.ip_pools
            .values()
            .filter(|p| p.spec.cidr.contains(ip))
            .max_by(|a, b| a.spec.cidr.prefix().cmp(&b.spec.cidr.prefix()).then(b.name.cmp(&a.name)))
    }

    /// The pod that owns an address, if any (first by namespace/name when addresses collide).
    pub fn pod_by_ip(&self, ip: IpAddr) -> Option<&Pod> {
        self.pods.values().find(|p| !p.host_network && p.ips.contains(&ip))
    }

    /// The host endpoint that owns an address (by `expectedIPs`), if any.
    pub fn host_endpoint_by_ip(&self, ip: IpAddr) -> Option<&HostEndpoint> {
        self.host_endpoints.values().find(|h| h.spec.expected_ips.contains(&ip))
    }
}
