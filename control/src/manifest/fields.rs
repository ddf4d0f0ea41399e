//! Unknown-field detection: which fields of a manifest moat did not read, and which of those are
//! fine to skip because Kubernetes or Calico define them and they do not bear on policy.
//!
//! Every typed part of an object (metadata, spec, a Pod's status) is decoded through
//! [`serde_ignored`], which reports each key no struct field took. A key that the upstream API
//! defines but moat does not read (a Pod's `volumes`, `metadata.managedFields`, an IPPool's
//! `blockSize`) is listed here and passes silently, so real `kubectl get -o yaml` output loads
//! without a word; anything else — a typo such as `egres` or `namespaceSelectr`, a field of a
//! newer API version — becomes an unknown-field warning (an error under strict loading), because
//! skipping it silently could widen or narrow policy.
//!
//! The lists follow Kubernetes 1.34 (`k8s.io/api/core/v1`, `meta/v1`) and Calico 3.31
//! (`api/pkg/apis/projectcalico/v3`). A field added upstream later is reported until it is added
//! here: a warning too many is the safe side.

/// One step of a path into a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Segment {
    Key(String),
    Index(usize),
}

/// `.spec.ingress[0].source` style (empty for the root).
pub(crate) fn render(path: &[Segment]) -> String {
    let mut out = String::new();
    for s in path {
        match s {
            Segment::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Segment::Index(i) => {
                out.push('[');
                out.push_str(&i.to_string());
                out.push(']');
            }
        }
    }
    out
}

/// The segments of a path reported by `serde_ignored` (`Option`/newtype wrappers dropped).
pub(crate) fn segments(path: &serde_ignored::Path<'_>) -> Vec<Segment> {
    let mut out = Vec::new();
    let mut at = path;
    loop {
        at = match at {
            serde_ignored::Path::Root => break,
            serde_ignored::Path::Seq { parent, index } => {
                out.push(Segment::Index(*index));
                parent
            }
            serde_ignored::Path::Map { parent, key } => {
                out.push(Segment::Key(key.clone()));
                parent
            }
            serde_ignored::Path::Some { parent }
            | serde_ignored::Path::NewtypeStruct { parent }
            | serde_ignored::Path::NewtypeVariant { parent } => parent,
        };
    }
    out.reverse();
    out
}

/// The part of an object a path is relative to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Section {
    Metadata,
    Spec,
    Status,
}

/// Whether an ignored field (path relative to `section` of an object of `kind`, a Calico kind
/// when `calico`) is one the upstream API defines and moat deliberately does not read.
pub(crate) fn is_unread_upstream_field(calico: bool, kind: &str, section: Section, path: &[Segment]) -> bool {
    use Segment::{Index, Key};
    let key_in = |k: &String, list: &[&str]| list.contains(&k.as_str());
    if calico && section == Section::Spec {
        return match (kind, path) {
            (
                "NetworkPolicy" | "GlobalNetworkPolicy" | "StagedNetworkPolicy" | "StagedGlobalNetworkPolicy",
                [Key(k)],
            ) => key_in(k, CALICO_POLICY_SPEC),
            ("IPPool", [Key(k)]) => key_in(k, CALICO_IP_POOL_SPEC),
            _ => false,
        };
    }
    match (section, kind, path) {
        (Section::Metadata, _, [Key(k)]) => key_in(k, OBJECT_META),
        (Section::Spec, "Pod", [Key(k)]) => key_in(k, POD_SPEC),
        (Section::Spec, "Pod", [Key(c), Index(_), Key(k)]) if c == "containers" => key_in(k, CONTAINER),
        (Section::Spec, "Pod", [Key(c), Index(_), Key(p), Index(_), Key(k)]) if c == "containers" && p == "ports" => {
            key_in(k, CONTAINER_PORT)
        }
        (Section::Status, "Pod", [Key(k)]) => key_in(k, POD_STATUS),
        _ => false,
    }
}

/// Top-level keys an object of `kind` may have besides `apiVersion`, `kind` and `metadata`.
pub(crate) fn top_level_fields(kind: &str) -> &'static [&'static str] {
    match kind {
        // core/v1 ServiceAccount has no spec.
        "ServiceAccount" => &["secrets", "imagePullSecrets", "automountServiceAccountToken"],
        // Status is written by controllers and never bears on policy, except a Pod's addresses,
        // which are decoded (and checked) like a spec.
        _ => &["spec", "status"],
    }
}

/// `Namespace.spec` (core/v1 NamespaceSpec): nothing policy-relevant.
pub(crate) const NAMESPACE_SPEC: &[&str] = &["finalizers"];

/// meta/v1 ObjectMeta, less `name`, `namespace` and `labels` (read). `clusterName` was removed in
/// 1.24 but still appears in output of older clusters.
const OBJECT_META: &[&str] = &[
    "generateName",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
    "clusterName",
];

/// core/v1 PodSpec, less the fields moat reads (`containers`, `serviceAccountName`,
/// `serviceAccount`, `hostNetwork`, `nodeName`).
const POD_SPEC: &[&str] = &[
    "volumes",
    "initContainers",
    "ephemeralContainers",
    "restartPolicy",
    "terminationGracePeriodSeconds",
    "activeDeadlineSeconds",
    "dnsPolicy",
    "nodeSelector",
    "automountServiceAccountToken",
    "hostPID",
    "hostIPC",
    "shareProcessNamespace",
    "securityContext",
    "imagePullSecrets",
    "hostname",
    "subdomain",
    "affinity",
    "schedulerName",
    "tolerations",
    "hostAliases",
    "priorityClassName",
    "priority",
    "dnsConfig",
    "readinessGates",
    "runtimeClassName",
    "enableServiceLinks",
    "preemptionPolicy",
    "overhead",
    "topologySpreadConstraints",
    "setHostnameAsFQDN",
    "os",
    "hostUsers",
    "schedulingGates",
    "resourceClaims",
    "resources",
    "hostnameOverride",
];

/// core/v1 Container, less `name` and `ports` (read).
const CONTAINER: &[&str] = &[
    "image",
    "command",
    "args",
    "workingDir",
    "envFrom",
    "env",
    "resources",
    "resizePolicy",
    "restartPolicy",
    "restartPolicyRules",
    "volumeMounts",
    "volumeDevices",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
    "lifecycle",
    "terminationMessagePath",
    "terminationMessagePolicy",
    "imagePullPolicy",
    "securityContext",
    "stdin",
    "stdinOnce",
    "tty",
];

/// core/v1 ContainerPort, less `name`, `containerPort` and `protocol` (read).
const CONTAINER_PORT: &[&str] = &["hostPort", "hostIP"];

/// core/v1 PodStatus, less `podIP` and `podIPs` (read) and `phase` (typed).
const POD_STATUS: &[&str] = &[
    "conditions",
    "message",
    "reason",
    "nominatedNodeName",
    "hostIP",
    "hostIPs",
    "startTime",
    "initContainerStatuses",
    "containerStatuses",
    "ephemeralContainerStatuses",
    "qosClass",
    "resize",
    "resourceClaimStatuses",
    "extendedResourceClaimStatus",
    "observedGeneration",
];

/// v3 PolicySpec / GlobalNetworkPolicySpec fields that only tune Felix's dataplane.
const CALICO_POLICY_SPEC: &[&str] = &["performanceHints"];

/// v3 IPPoolSpec, less `cidr`, `disabled`, `ipipMode`, `vxlanMode`, `natOutgoing` (typed); moat
/// uses a pool only to name the zone of an address. `ipip` and `nat-outgoing` are the deprecated
/// v1 spellings still accepted by calicoctl.
const CALICO_IP_POOL_SPEC: &[&str] = &[
    "blockSize",
    "nodeSelector",
    "disableBGPExport",
    "allowedUses",
    "assignmentMode",
    "awsSubnetID",
    "ipip",
    "nat-outgoing",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_render_like_field_paths() {
        let p = [Segment::Key("ingress".into()), Segment::Index(1), Segment::Key("sorce".into())];
        assert_eq!(render(&p), ".ingress[1].sorce");
        assert_eq!(render(&[]), "");
    }

    #[test]
    fn upstream_fields_pass_and_typos_do_not() {
        let k = |s: &str| Segment::Key(s.into());
        let i = Segment::Index;
        assert!(is_unread_upstream_field(false, "Pod", Section::Spec, &[k("volumes")]));
        assert!(is_unread_upstream_field(false, "Pod", Section::Spec, &[k("containers"), i(0), k("image")]));
        assert!(is_unread_upstream_field(false, "Namespace", Section::Metadata, &[k("managedFields")]));
        assert!(is_unread_upstream_field(true, "GlobalNetworkPolicy", Section::Spec, &[k("performanceHints")]));
        assert!(!is_unread_upstream_field(false, "Pod", Section::Spec, &[k("serviceAccountNmae")]));
        assert!(!is_unread_upstream_field(false, "Pod", Section::Metadata, &[k("lables")]));
        // Lists do not leak into other kinds or API groups.
        assert!(!is_unread_upstream_field(false, "NetworkPolicy", Section::Spec, &[k("volumes")]));
        assert!(!is_unread_upstream_field(false, "NetworkPolicy", Section::Spec, &[k("performanceHints")]));
        assert!(!is_unread_upstream_field(true, "Pod", Section::Spec, &[k("volumes")]));
        assert!(!is_unread_upstream_field(false, "Pod", Section::Metadata, &[k("annotations"), k("x")]));
    }
}
