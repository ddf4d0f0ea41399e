//! A policy-shaped cluster at scale, as JSON objects for [`crate::KubeSim`]: shared by the scale
//! example (`control/examples/kube_scale.rs`) and the split scale test (`tests/control_scale.rs`), so
//! both measure the same cluster.
// Addresses and counts stay far below the narrowing limits (at most 200 × 254 pods).
#![allow(clippy::cast_possible_truncation)]

use serde_json::{Value, json};
use std::net::Ipv4Addr;

/// The apps pods are spread over.
pub const APPS: [&str; 3] = ["web", "api", "db"];

/// A cluster size: `namespaces` namespaces of `pods_per_ns` pods each.
#[derive(Debug, Clone, Copy)]
pub struct Size {
    pub namespaces: usize,
    pub pods_per_ns: usize,
}

/// The address of pod number `j` (10.244.0.0/16, 200 per /24).
pub fn pod_ip(j: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, (j % 200) as u8, (j / 200 + 2) as u8)
}

/// Pod number `j` of namespace `ns`, with containers, probes and statuses as real pods have (about 2 KiB).
pub fn pod(ns: usize, name: &str, j: usize, app: &str) -> Value {
    let (port_name, port) = match app {
        "web" => ("http", 8080),
        "api" => ("http", 9000),
        _ => ("pg", 5432),
    };
    let ip = pod_ip(j).to_string();
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": name, "namespace": format!("ns{ns}"),
            "labels": {"app": app, "pod-template-hash": "7d9f8c6b5", "version": "v1"},
            "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-01-01T00:00:00Z"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("{app}-7d9f8c6b5"),
                                 "uid": "5c0c7e1c-0000-4000-8000-000000000000", "controller": true}],
        },
        "spec": {
            "serviceAccountName": format!("sa-{app}"),
            "nodeName": format!("node-{}", j % 100),
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "containers": [{
                "name": app, "image": format!("registry.example/{app}:1.2.3"), "imagePullPolicy": "IfNotPresent",
                "ports": [{"name": port_name, "containerPort": port, "protocol": "TCP"},
                          {"name": "metrics", "containerPort": 9090, "protocol": "TCP"}],
                "env": [{"name": "LOG_LEVEL", "value": "info"}, {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
                "volumeMounts": [{"name": "kube-api-access", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true}],
                "readinessProbe": {"httpGet": {"path": "/ready", "port": port}, "periodSeconds": 10},
            }],
            "volumes": [{"name": "kube-api-access", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}}],
        },
        "status": {
            "phase": "Running", "qosClass": "Burstable", "startTime": "2026-01-01T00:00:00Z",
            "hostIP": "172.18.0.3", "hostIPs": [{"ip": "172.18.0.3"}], "podIP": ip, "podIPs": [{"ip": ip}],
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:10Z"},
                           {"type": "ContainersReady", "status": "True", "lastTransitionTime": "2026-01-01T00:00:10Z"},
                           {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
            "containerStatuses": [{"name": app, "ready": true, "restartCount": 0, "started": true,
                                   "image": format!("registry.example/{app}:1.2.3"), "imageID": "sha256:0000",
                                   "containerID": "containerd://0000",
                                   "state": {"running": {"startedAt": "2026-01-01T00:00:05Z"}}}],
        },
    })
}

/// The whole cluster: namespaces, service accounts, pods, 3 policies per namespace, tiers, pool, network set.
pub fn cluster(s: &Size) -> Vec<Value> {
    let calico = "crd.projectcalico.org/v1";
    let mut objects = vec![
        json!({"apiVersion": calico, "kind": "Tier", "metadata": {"name": "security"}, "spec": {"order": 10}}),
        json!({"apiVersion": calico, "kind": "Tier", "metadata": {"name": "platform"},
               "spec": {"order": 20, "defaultAction": "Pass"}}),
        json!({"apiVersion": calico, "kind": "IPPool", "metadata": {"name": "pods"}, "spec": {"cidr": "10.244.0.0/16"}}),
        json!({"apiVersion": calico, "kind": "GlobalNetworkSet", "metadata": {"name": "partners", "labels": {"kind": "partner"}},
               "spec": {"nets": ["203.0.113.0/24", "198.51.100.0/24"]}}),
    ];
    for ns in 0..s.namespaces {
        let team = ns % 20;
        let env = if ns % 3 == 0 { "prod" } else { "dev" };
        objects.push(json!({"apiVersion": "v1", "kind": "Namespace",
                            "metadata": {"name": format!("ns{ns}"), "labels": {"team": format!("t{team}"), "env": env}}}));
        objects.push(json!({"apiVersion": "v1", "kind": "ServiceAccount",
                            "metadata": {"name": "sa-web", "namespace": format!("ns{ns}"), "labels": {"role": "web"}}}));
        for k in 0..s.pods_per_ns {
            let j = ns * s.pods_per_ns + k;
            objects.push(pod(ns, &format!("p{j}"), j, APPS[k % 3]));
        }
        objects.push(json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "default-deny", "namespace": format!("ns{ns}")},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}));
        objects.push(json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "app-flows", "namespace": format!("ns{ns}")},
        "spec": {
            "podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["api", "db"]}]},
            "ingress": [
                {"from": [{"podSelector": {"matchLabels": {"app": "web"}}}], "ports": [{"port": "http"}]},
                {"from": [{"podSelector": {"matchLabels": {"app": "api"}}},
                          {"namespaceSelector": {"matchLabels": {"team": format!("t{team}")}}}],
                 "ports": [{"port": 5432}, {"port": 6000, "endPort": 6100}]},
            ]}}));
        if ns % 2 == 0 {
            objects.push(json!({"apiVersion": calico, "kind": "NetworkPolicy",
                "metadata": {"name": "default.web-egress", "namespace": format!("ns{ns}")},
                "spec": {"order": 500, "selector": "app == 'web'", "types": ["Egress"], "egress": [
                    {"action": "Allow", "protocol": "UDP", "destination": {"ports": [53]}},
                    {"action": "Allow", "protocol": "TCP", "destination": {
                        "namespaceSelector": format!("team == 't{team}'"), "selector": "app in {'api', 'web'}",
                        "ports": ["http", 443]}},
                    {"action": "Allow", "protocol": "TCP", "destination": {"selector": "kind == 'partner'",
                                                                           "namespaceSelector": "global()"}},
                    {"action": "Deny"}]}}));
        } else {
            let tier = if ns % 4 == 1 { "security" } else { "platform" };
            objects.push(json!({"apiVersion": calico, "kind": "GlobalNetworkPolicy",
                "metadata": {"name": format!("{tier}.g{ns}")},
                "spec": {"tier": tier, "order": ns, "namespaceSelector": format!("team == 't{team}'"),
                         "selector": "app == 'web' || app == 'api'", "types": ["Ingress"],
                         "ingress": [{"action": "Deny", "source": {"nets": ["192.0.2.0/24"]}},
                                     {"action": "Pass", "protocol": "TCP", "destination": {"notPorts": ["0:1023"]}}]}}));
        }
    }
    objects
}
