//! The kinds the Kubernetes source watches, where each lives, and what each watch costs.

use std::fmt;

/// Where Calico's resources are read from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CalicoApi {
    /// `projectcalico.org/v3` when discovery shows the Calico API server serving it, else the
    /// CRDs (`crd.projectcalico.org/v1`), else none (a cluster without Calico; noted).
    #[default]
    Auto,
    /// `crd.projectcalico.org/v1`: the CRDs Calico stores its resources in.
    Crd,
    /// `projectcalico.org/v3`: the Calico API server (aggregated API over the same storage).
    V3,
    /// Kubernetes kinds only.
    Off,
}

/// The Calico API group a running source reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CalicoGroup {
    Crd,
    V3,
}

impl CalicoGroup {
    pub fn group(self) -> &'static str {
        match self {
            CalicoGroup::Crd => "crd.projectcalico.org",
            CalicoGroup::V3 => "projectcalico.org",
        }
    }

    pub fn version(self) -> &'static str {
        match self {
            CalicoGroup::Crd => "v1",
            CalicoGroup::V3 => "v3",
        }
    }

    /// `group/version`.
    pub fn api_version(self) -> String {
        format!("{}/{}", self.group(), self.version())
    }
}

/// What a watch of a kind transfers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchMode {
    /// Whole objects: the spec (or a pod's addresses and ports) is needed.
    Full,
    /// `PartialObjectMetadata`: name and labels are all moat reads of the kind.
    Metadata,
}

/// Every kind the source watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WatchedKind {
    Namespace,
    ServiceAccount,
    Pod,
    /// `networking.k8s.io/v1` NetworkPolicy.
    NetworkPolicy,
    /// Calico's namespaced NetworkPolicy.
    CalicoNetworkPolicy,
    GlobalNetworkPolicy,
    StagedNetworkPolicy,
    StagedGlobalNetworkPolicy,
    StagedKubernetesNetworkPolicy,
    Tier,
    NetworkSet,
    GlobalNetworkSet,
    HostEndpoint,
    IpPool,
}

impl WatchedKind {
    pub const ALL: [WatchedKind; 14] = [
        WatchedKind::Namespace,
        WatchedKind::ServiceAccount,
        WatchedKind::Pod,
        WatchedKind::NetworkPolicy,
        WatchedKind::CalicoNetworkPolicy,
        WatchedKind::GlobalNetworkPolicy,
        WatchedKind::StagedNetworkPolicy,
        WatchedKind::StagedGlobalNetworkPolicy,
        WatchedKind::StagedKubernetesNetworkPolicy,
        WatchedKind::Tier,
        WatchedKind::NetworkSet,
        WatchedKind::GlobalNetworkSet,
        WatchedKind::HostEndpoint,
        WatchedKind::IpPool,
    ];

    /// The `kind` of its objects.
    pub fn kind(self) -> &'static str {
        match self {
            WatchedKind::Namespace => "Namespace",
            WatchedKind::ServiceAccount => "ServiceAccount",
            WatchedKind::Pod => "Pod",
            WatchedKind::NetworkPolicy | WatchedKind::CalicoNetworkPolicy => "NetworkPolicy",
            WatchedKind::GlobalNetworkPolicy => "GlobalNetworkPolicy",
            WatchedKind::StagedNetworkPolicy => "StagedNetworkPolicy",
            WatchedKind::StagedGlobalNetworkPolicy => "StagedGlobalNetworkPolicy",
            WatchedKind::StagedKubernetesNetworkPolicy => "StagedKubernetesNetworkPolicy",
            WatchedKind::Tier => "Tier",
            WatchedKind::NetworkSet => "NetworkSet",
            WatchedKind::GlobalNetworkSet => "GlobalNetworkSet",
            WatchedKind::HostEndpoint => "HostEndpoint",
            WatchedKind::IpPool => "IPPool",
        }
    }

    /// The resource name in URLs and RBAC rules.
    pub fn plural(self) -> &'static str {
        match self {
            WatchedKind::Namespace => "namespaces",
            WatchedKind::ServiceAccount => "serviceaccounts",
            WatchedKind::Pod => "pods",
            WatchedKind::NetworkPolicy | WatchedKind::CalicoNetworkPolicy => "networkpolicies",
            WatchedKind::GlobalNetworkPolicy => "globalnetworkpolicies",
            WatchedKind::StagedNetworkPolicy => "stagednetworkpolicies",
            WatchedKind::StagedGlobalNetworkPolicy => "stagedglobalnetworkpolicies",
            WatchedKind::StagedKubernetesNetworkPolicy => "stagedkubernetesnetworkpolicies",
            WatchedKind::Tier => "tiers",
            WatchedKind::NetworkSet => "networksets",
            WatchedKind::GlobalNetworkSet => "globalnetworksets",
            WatchedKind::HostEndpoint => "hostendpoints",
            WatchedKind::IpPool => "ippools",
        }
    }

    pub fn is_calico(self) -> bool {
        !matches!(
            self,
            WatchedKind::Namespace | WatchedKind::ServiceAccount | WatchedKind::Pod | WatchedKind::NetworkPolicy
        )
    }

    pub fn namespaced(self) -> bool {
        matches!(
            self,
            WatchedKind::ServiceAccount
                | WatchedKind::Pod
                | WatchedKind::NetworkPolicy
                | WatchedKind::CalicoNetworkPolicy
                | WatchedKind::StagedNetworkPolicy
                | WatchedKind::StagedKubernetesNetworkPolicy
                | WatchedKind::NetworkSet
        )
    }

    /// API group and version; Calico kinds in `calico`.
    pub fn group_version(self, calico: CalicoGroup) -> (&'static str, &'static str) {
        match self {
            WatchedKind::Namespace | WatchedKind::ServiceAccount | WatchedKind::Pod => ("", "v1"),
            WatchedKind::NetworkPolicy => ("networking.k8s.io", "v1"),
            _ => (calico.group(), calico.version()),
        }
    }

    /// `apiVersion` of its objects.
    pub fn api_version(self, calico: CalicoGroup) -> String {
        match self.group_version(calico) {
            ("", v) => v.to_string(),
            (g, v) => format!("{g}/{v}"),
        }
    }

    /// What the watch transfers. Namespaces and service accounts matter only by name and labels
    /// (`pcns.*`, `pcsa.*` selectors), so their watches are metadata-only. Everything else needs
    /// more than metadata: a pod's IPs are in `status.podIPs`, its service account, host
    /// networking and named container ports in `spec`; policies, tiers, sets, host endpoints and
    /// pools are their `spec`. The API server has no projection between metadata-only and whole
    /// objects, so pods are watched whole (the largest stream by far: every pod of the cluster,
    /// because policy on this node selects remote pods by label and IP).
    pub fn mode(self) -> WatchMode {
        match self {
            WatchedKind::Namespace | WatchedKind::ServiceAccount => WatchMode::Metadata,
            _ => WatchMode::Full,
        }
    }

    /// The server-side filter of the watch. Pods that have finished (`Succeeded`, `Failed`) are
    /// no workload endpoints for Calico and their IPs go back to IPAM, so they are left on the
    /// server: fewer bytes (clusters with many completed Jobs), and an address reused by a new
    /// pod cannot be claimed by a finished one. A pod that finishes leaves the selection, which
    /// the API server reports as a DELETED event.
    pub fn field_selector(self) -> Option<&'static str> {
        match self {
            WatchedKind::Pod => Some("status.phase!=Succeeded,status.phase!=Failed"),
            _ => None,
        }
    }
}

impl fmt::Display for WatchedKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WatchedKind::CalicoNetworkPolicy => f.write_str("Calico NetworkPolicy"),
            k => f.write_str(k.kind()),
        }
    }
}

/// One resource the source reads, with the verbs it uses: what the deploy RBAC must grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchedResource {
    /// API group; empty for core.
    pub group: &'static str,
    pub version: &'static str,
    /// The resource (plural) as written in RBAC rules.
    pub resource: &'static str,
    pub verbs: &'static [&'static str],
}

/// The verbs the source uses on every resource: a paged `list`, then `watch`. Nothing is read
/// with `get`; discovery (`/api`, `/apis/...`) is a non-resource URL that the default
/// `system:discovery` role grants to every authenticated identity.
pub const VERBS: &[&str] = &["list", "watch"];

macro_rules! watched {
    ($($group:literal $version:literal $resource:literal),* $(,)?) => {
        &[$(WatchedResource { group: $group, version: $version, resource: $resource, verbs: VERBS }),*]
    };
}

/// Every resource the Kubernetes source may read. Both Calico groups are listed because which
/// one is read is decided at start-up ([`CalicoApi::Auto`]); a ClusterRole generated from this
/// list covers either.
pub const WATCHED: &[WatchedResource] = watched![
    "" "v1" "namespaces",
    "" "v1" "serviceaccounts",
    "" "v1" "pods",
    "networking.k8s.io" "v1" "networkpolicies",
    "crd.projectcalico.org" "v1" "networkpolicies",
    "crd.projectcalico.org" "v1" "globalnetworkpolicies",
    "crd.projectcalico.org" "v1" "stagednetworkpolicies",
    "crd.projectcalico.org" "v1" "stagedglobalnetworkpolicies",
    "crd.projectcalico.org" "v1" "stagedkubernetesnetworkpolicies",
    "crd.projectcalico.org" "v1" "tiers",
    "crd.projectcalico.org" "v1" "networksets",
    "crd.projectcalico.org" "v1" "globalnetworksets",
    "crd.projectcalico.org" "v1" "hostendpoints",
    "crd.projectcalico.org" "v1" "ippools",
    "projectcalico.org" "v3" "networkpolicies",
    "projectcalico.org" "v3" "globalnetworkpolicies",
    "projectcalico.org" "v3" "stagednetworkpolicies",
    "projectcalico.org" "v3" "stagedglobalnetworkpolicies",
    "projectcalico.org" "v3" "stagedkubernetesnetworkpolicies",
    "projectcalico.org" "v3" "tiers",
    "projectcalico.org" "v3" "networksets",
    "projectcalico.org" "v3" "globalnetworksets",
    "projectcalico.org" "v3" "hostendpoints",
    "projectcalico.org" "v3" "ippools",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watched_covers_every_kind_in_both_calico_groups_and_nothing_else() {
        let mut expected = Vec::new();
        for group in [CalicoGroup::Crd, CalicoGroup::V3] {
            for k in WatchedKind::ALL {
                let (g, v) = k.group_version(group);
                if !expected.contains(&(g, v, k.plural())) {
                    expected.push((g, v, k.plural()));
                }
            }
        }
        let mut listed: Vec<_> = WATCHED.iter().map(|w| (w.group, w.version, w.resource)).collect();
        expected.sort();
        listed.sort();
        assert_eq!(listed, expected);
        assert!(WATCHED.iter().all(|w| w.verbs == ["list", "watch"]));
    }

    #[test]
    fn api_versions() {
        assert_eq!(WatchedKind::Pod.api_version(CalicoGroup::V3), "v1");
        assert_eq!(WatchedKind::NetworkPolicy.api_version(CalicoGroup::Crd), "networking.k8s.io/v1");
        assert_eq!(WatchedKind::Tier.api_version(CalicoGroup::Crd), "crd.projectcalico.org/v1");
        assert_eq!(WatchedKind::IpPool.api_version(CalicoGroup::V3), "projectcalico.org/v3");
    }
}
