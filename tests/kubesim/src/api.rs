//! The resources the simulated API server serves, and its discovery documents.
//!
//! The table is what a cluster with Calico shows for the kinds moat reads: core `v1` pods,
//! namespaces and service accounts, `networking.k8s.io/v1` network policies, and the Calico kinds
//! twice, as CRDs (`crd.projectcalico.org/v1`, always there when Calico runs) and through the
//! Calico API server (`projectcalico.org/v3`, only where it is installed). Which groups are served
//! is configuration ([`Serve`]); an object of a group that is not served can still be stored (a
//! test may flip the group on later) but no request reaches it.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// One resource (a REST collection) of the simulated server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceInfo {
    /// API group; empty for the core group.
    pub group: &'static str,
    pub version: &'static str,
    /// The plural used in URLs (`pods`, `globalnetworkpolicies`).
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
}

impl ResourceInfo {
    /// `v1` or `group/version`, as written in `apiVersion`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.to_string() } else { format!("{}/{}", self.group, self.version) }
    }

    /// Built-in kinds are compiled into the real API server, whose list responses leave
    /// `apiVersion` and `kind` out of each item; custom resources (CRDs, aggregated APIs) are
    /// unstructured and keep them. Clients must cope with both, so the simulation does the same.
    pub fn builtin(&self) -> bool {
        matches!(self.group, "" | "networking.k8s.io")
    }

    /// The URL prefix of the group version (`/api/v1`, `/apis/g/v`).
    pub fn prefix(&self) -> String {
        if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        }
    }

    /// The cluster-wide collection path (`/api/v1/pods`).
    pub fn path(&self) -> String {
        format!("{}/{}", self.prefix(), self.plural)
    }
}

const CALICO_CRD: &str = "crd.projectcalico.org";
const CALICO_V3: &str = "projectcalico.org";

macro_rules! calico {
    ($group:expr, $version:expr) => {
        [
            ResourceInfo {
                group: $group,
                version: $version,
                plural: "networkpolicies",
                singular: "networkpolicy",
                kind: "NetworkPolicy",
                namespaced: true,
            },
            ResourceInfo {
                group: $group,
                version: $version,
                plural: "globalnetworkpolicies",
                singular: "globalnetworkpolicy",
                kind: "GlobalNetworkPolicy",
                namespaced: false,
            },
            ResourceInfo {
                group: $group,
                version: $version,
                plural: "stagednetworkpolicies",
                singular: "stagednetworkpolicy",
                kind: "StagedNetworkPolicy",
                namespaced: true,
            },
            ResourceInfo {
                group: $group,
                version: $version,
                plural: "stagedglobalnetworkpolicies",
                singular: "stagedglobalnetworkpolicy",
                kind: "StagedGlobalNetworkPolicy",
                namespaced: false,
            },
            ResourceInfo {
                group: $group,
                version: $version,
                plural: "stagedkubernetesnetworkpolicies",
                singular: "stagedkubernetesnetworkpolicy",
                kind: "StagedKubernetesNetworkPolicy",
                namespaced: true,
            },
            ResourceInfo {
                group: $group,
                version: $version,
                plural: "tiers",
                singular: "tier",
                kind: "Tier",
                namespaced: false,
            },
            ResourceInfo {
                group: $group,
                version: $version,
                plural: "networksets",
                singular: "networkset",
                kind: "NetworkSet",
                namespaced: true,
            },
            ResourceInfo {
                group: $group,
                version: $version,
                plural: "globalnetworksets",
                singular: "globalnetworkset",
                kind: "GlobalNetworkSet",
                namespaced: false,
            },
            ResourceInfo {
                group: $group,
                version: $version,
                plural: "hostendpoints",
                singular: "hostendpoint",
                kind: "HostEndpoint",
                namespaced: false,
            },
            ResourceInfo {
                group: $group,
                version: $version,
                plural: "ippools",
                singular: "ippool",
                kind: "IPPool",
                namespaced: false,
            },
        ]
    };
}

const CORE: [ResourceInfo; 4] = [
    ResourceInfo { group: "", version: "v1", plural: "pods", singular: "pod", kind: "Pod", namespaced: true },
    ResourceInfo {
        group: "",
        version: "v1",
        plural: "namespaces",
        singular: "namespace",
        kind: "Namespace",
        namespaced: false,
    },
    ResourceInfo {
        group: "",
        version: "v1",
        plural: "serviceaccounts",
        singular: "serviceaccount",
        kind: "ServiceAccount",
        namespaced: true,
    },
    ResourceInfo {
        group: "networking.k8s.io",
        version: "v1",
        plural: "networkpolicies",
        singular: "networkpolicy",
        kind: "NetworkPolicy",
        namespaced: true,
    },
];
const CRD: [ResourceInfo; 10] = calico!(CALICO_CRD, "v1");
const V3: [ResourceInfo; 10] = calico!(CALICO_V3, "v3");

/// Every resource the simulation knows, in a fixed order (the index is a resource's id).
pub fn resources() -> impl Iterator<Item = &'static ResourceInfo> {
    CORE.iter().chain(CRD.iter()).chain(V3.iter())
}

pub(crate) fn resource(id: usize) -> Option<&'static ResourceInfo> {
    resources().nth(id)
}

/// The id of the resource holding objects of `api_version`/`kind`.
pub(crate) fn find_kind(api_version: &str, kind: &str) -> Option<usize> {
    resources().position(|r| r.kind == kind && r.api_version() == api_version)
}

/// The id of the resource at `group`/`version`/`plural`.
pub(crate) fn find_plural(group: &str, version: &str, plural: &str) -> Option<usize> {
    resources().position(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Which API groups the server answers for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct Serve {
    /// `crd.projectcalico.org/v1` (Calico's CRDs are installed).
    #[serde(default = "yes")]
    pub calico_crds: bool,
    /// `projectcalico.org/v3` (the Calico API server is installed).
    #[serde(default)]
    pub calico_v3: bool,
}

fn yes() -> bool {
    true
}

impl Default for Serve {
    fn default() -> Serve {
        Serve { calico_crds: true, calico_v3: false }
    }
}

impl Serve {
    pub(crate) fn serves_group(&self, group: &str) -> bool {
        match group {
            "" | "networking.k8s.io" => true,
            CALICO_CRD => self.calico_crds,
            CALICO_V3 => self.calico_v3,
            _ => false,
        }
    }

    pub(crate) fn serves(&self, r: &ResourceInfo) -> bool {
        self.serves_group(r.group)
    }

    /// `GET /api`.
    pub(crate) fn core_versions(&self, server: &str) -> Value {
        json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server}],
        })
    }

    fn groups(&self) -> Vec<(&'static str, &'static str)> {
        let mut out = Vec::new();
        for r in resources() {
            if !r.group.is_empty() && self.serves(r) && !out.contains(&(r.group, r.version)) {
                out.push((r.group, r.version));
            }
        }
        out
    }

    fn group_doc(group: &str, version: &str) -> Value {
        let gv = json!({"groupVersion": format!("{group}/{version}"), "version": version});
        json!({"name": group, "versions": [gv.clone()], "preferredVersion": gv})
    }

    /// `GET /apis`.
    pub(crate) fn group_list(&self) -> Value {
        let groups: Vec<Value> = self.groups().into_iter().map(|(g, v)| Serve::group_doc(g, v)).collect();
        json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
    }

    /// `GET /apis/<group>`.
    pub(crate) fn group(&self, group: &str) -> Option<Value> {
        let (g, v) = self.groups().into_iter().find(|(g, _)| *g == group)?;
        let mut doc = Serve::group_doc(g, v);
        if let Value::Object(m) = &mut doc {
            m.insert("kind".into(), "APIGroup".into());
            m.insert("apiVersion".into(), "v1".into());
        }
        Some(doc)
    }

    /// `GET /api/v1` or `GET /apis/<group>/<version>`.
    pub(crate) fn resource_list(&self, group: &str, version: &str) -> Option<Value> {
        if !self.serves_group(group) {
            return None;
        }
        let list: Vec<Value> = resources()
            .filter(|r| r.group == group && r.version == version)
            .map(|r| {
                json!({
                    "name": r.plural,
                    "singularName": r.singular,
                    "namespaced": r.namespaced,
                    "kind": r.kind,
                    "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
                })
            })
            .collect();
        if list.is_empty() {
            return None;
        }
        let group_version = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
        Some(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": list}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_found_by_api_version_and_by_plural() {
        for (id, r) in resources().enumerate() {
            assert_eq!(find_kind(&r.api_version(), r.kind), Some(id));
            assert_eq!(find_plural(r.group, r.version, r.plural), Some(id));
        }
        assert_eq!(resources().count(), 24);
        assert_eq!(find_kind("v1", "NetworkPolicy"), None);
    }

    #[test]
    fn discovery_lists_only_served_groups() {
        let serve = Serve::default();
        let groups = serve.group_list().to_string();
        assert!(groups.contains("crd.projectcalico.org/v1"));
        assert!(!groups.contains("\"projectcalico.org/v3\""));
        assert!(serve.resource_list("projectcalico.org", "v3").is_none());
        let v3 = Serve { calico_v3: true, ..Serve::default() };
        let list = v3.resource_list("projectcalico.org", "v3").unwrap();
        assert_eq!(list["resources"].as_array().unwrap().len(), 10);
    }
}
