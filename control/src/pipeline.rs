//! From a model snapshot (or a batch of model changes) to the rule table the workers take.
//!
//! ```text
//! source::Snapshot ──diff──► compile::Change batch ──► IncrementalCompiler ──► RuleTable (ready to publish)
//! ```
//!
//! The [`Pipeline`] keeps one [`IncrementalCompiler`]: the first snapshot is compiled in full, and
//! every later one is compared with the model in force, resource by resource, and only the
//! difference is applied, so an edit of one pod or policy costs what that change implies, not a
//! recompile of the cluster. A source that knows what changed (the Kubernetes watch) hands its
//! changes to [`Pipeline::apply`] directly. A failure returns an error and nothing else: the
//! compiler keeps its model and table, and the caller keeps the table in force.

use crate::compile::incremental::{Change, IncrementalCompiler, ResourceKey, UpdateError, UpdateStats};
use crate::compile::{CompileError, CompileStats};
use crate::model::{Model, Resource};
use crate::source::Snapshot;
use moat_fastpath::RuleTable;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// What a build did, for logs and the stats file.
#[derive(Debug, Clone, Default)]
pub struct BuildReport {
    pub stats: CompileStats,
    /// The compiler's own account of the update (what it recomputed and rebuilt).
    pub update: UpdateStats,
    /// Resources that differed from the model in force (0 for the first, full build).
    pub changes: usize,
    /// Policies not enforced (and why) and conversion warnings.
    pub warnings: Vec<String>,
    /// Diffing the snapshot against the model in force.
    pub resolve_time: Duration,
    /// Applying the changes (or the full compile) up to the finished table.
    pub compile_time: Duration,
}

/// Why no table was built; the table in force stays.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Compile(#[from] CompileError),
    #[error(transparent)]
    Update(#[from] UpdateError),
}

/// Compiles snapshots and change batches into rule tables, incrementally.
#[derive(Debug, Default)]
pub struct Pipeline {
    compiler: Option<IncrementalCompiler>,
}

impl Pipeline {
    pub fn new() -> Pipeline {
        Pipeline::default()
    }

    /// The rule table for `snapshot`; `origin` names where it came from in status output.
    pub fn build(&mut self, snapshot: &Snapshot, origin: &str) -> Result<(RuleTable, BuildReport), PipelineError> {
        let started = Instant::now();
        let Some(compiler) = self.compiler.as_mut() else {
            let (compiler, update) = IncrementalCompiler::new(snapshot.model.clone())?;
            let compiler = self.compiler.insert(compiler);
            return Ok(table_of(compiler, origin, update, 0, Duration::ZERO, started.elapsed()));
        };
        let changes = changes_between(compiler.model(), &snapshot.model);
        let diffed = started.elapsed();
        let count = changes.len();
        let (_, update) = compiler.apply(changes)?;
        Ok(table_of(compiler, origin, update, count, diffed, started.elapsed().saturating_sub(diffed)))
    }

    /// The rule table after `changes` (a source's watch events); needs a first [`Pipeline::build`].
    pub fn apply(&mut self, changes: Vec<Change>, origin: &str) -> Result<(RuleTable, BuildReport), PipelineError> {
        let started = Instant::now();
        let compiler = match self.compiler.as_mut() {
            Some(c) => c,
            None => {
                // No model yet: the changes on an empty model are the model.
                let mut model = Model::new();
                for change in &changes {
                    if let Change::Upsert(r) = change {
                        model.insert(r.clone());
                    }
                }
                let (compiler, update) = IncrementalCompiler::new(model)?;
                let compiler = self.compiler.insert(compiler);
                return Ok(table_of(compiler, origin, update, changes.len(), Duration::ZERO, started.elapsed()));
            }
        };
        let count = changes.len();
        let (_, update) = compiler.apply(changes)?;
        Ok(table_of(compiler, origin, update, count, Duration::ZERO, started.elapsed()))
    }

    /// The model in force (after the last successful build), if any.
    pub fn model(&self) -> Option<&Model> {
        self.compiler.as_ref().map(IncrementalCompiler::model)
    }
}

fn table_of(
    compiler: &IncrementalCompiler,
    origin: &str,
    update: UpdateStats,
    changes: usize,
    resolve_time: Duration,
    compile_time: Duration,
) -> (RuleTable, BuildReport) {
    let table = compiler.table();
    let stats = CompileStats {
        endpoints: table.endpoints().len(),
        chains: table.chains().len(),
        policies: table.policies().len(),
        built: update.stages_built,
        ..CompileStats::default()
    };
    let report = BuildReport { stats, update, changes, warnings: compiler.warnings(), resolve_time, compile_time };
    (RuleTable::from_policy(std::sync::Arc::clone(table), origin), report)
}

/// The changes that turn `old` into `new`: upserts of resources added or different, deletes of
/// resources gone.
pub fn changes_between(old: &Model, new: &Model) -> Vec<Change> {
    let mut changes = Vec::new();
    diff(&mut changes, &old.namespaces, &new.namespaces, |_, v| Resource::Namespace(v.clone()));
    diff(&mut changes, &old.service_accounts, &new.service_accounts, |_, v| Resource::ServiceAccount(v.clone()));
    diff(&mut changes, &old.pods, &new.pods, |_, v| Resource::Pod(v.clone()));
    diff(&mut changes, &old.k8s_policies, &new.k8s_policies, |(staged, _, _), v| Resource::K8sNetworkPolicy {
        staged: *staged,
        policy: v.clone(),
    });
    diff(&mut changes, &old.policies, &new.policies, |_, v| Resource::CalicoPolicy(v.clone()));
    diff(&mut changes, &old.tiers, &new.tiers, |_, v| Resource::Tier(v.clone()));
    diff(&mut changes, &old.network_sets, &new.network_sets, |_, v| Resource::NetworkSet(v.clone()));
    diff(&mut changes, &old.host_endpoints, &new.host_endpoints, |_, v| Resource::HostEndpoint(v.clone()));
    diff(&mut changes, &old.ip_pools, &new.ip_pools, |_, v| Resource::IpPool(v.clone()));
    changes
}

fn diff<K: Ord, V: PartialEq>(
    out: &mut Vec<Change>,
    old: &BTreeMap<K, V>,
    new: &BTreeMap<K, V>,
    resource: impl Fn(&K, &V) -> Resource,
) {
    for (k, v) in new {
        if old.get(k) != Some(v) {
            out.push(Change::Upsert(resource(k, v)));
        }
    }
    for (k, v) in old {
        if !new.contains_key(k) {
            out.push(Change::Delete(ResourceKey::of(&resource(k, v))));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::load_str;
    use moat_fastpath::{FlowKey, Verdict};
    use std::path::Path;

    const CLUSTER: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: dmz, labels: {app: web}}
status: {podIP: 10.1.0.2, podIPs: [{ip: 10.1.0.2}]}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: trusted, labels: {app: client}}
status: {podIP: 10.2.0.2, podIPs: [{ip: 10.2.0.2}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-ingress, namespace: dmz}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Ingress]
  ingress:
  - from: [{namespaceSelector: {}}]
    ports: [{protocol: TCP, port: 80}]
"#;

    fn key(src: &str, dst: &str, port: u16) -> FlowKey {
        FlowKey {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            protocol: 6,
            src_port: 40000,
            dst_port: port,
            icmp: None,
        }
    }

    #[test]
    fn a_snapshot_becomes_an_enforcing_table() {
        let report = load_str(CLUSTER, Path::new("cluster.yaml"));
        assert!(report.is_clean(), "{:?}", report.errors);
        let snapshot = Snapshot { model: report.to_model(), notes: Vec::new() };
        let (table, built) = Pipeline::new().build(&snapshot, "test").unwrap();
        assert_eq!(built.stats.endpoints, 2);
        assert_eq!(table.classify(&key("10.2.0.2", "10.1.0.2", 80)), Verdict::Allow);
        assert_eq!(table.classify(&key("10.2.0.2", "10.1.0.2", 81)), Verdict::Deny);
        let admitted = table.admit(&key("10.2.0.2", "10.1.0.2", 81));
        let (_, trace) = admitted.ingress.unwrap();
        let info = table.policy().unwrap().trace_info(trace).unwrap();
        assert_eq!(info.render(0), "0|default|dmz/knp.default.web-ingress|deny|-1");
    }
}

#[cfg(test)]
mod incremental_tests {
    use super::*;
    use crate::manifest::load_str;
    use moat_fastpath::{FlowKey, Verdict};
    use std::path::Path;

    fn snapshot(text: &str) -> Snapshot {
        let report = load_str(text, Path::new("t.yaml"));
        assert!(report.is_clean(), "{:?}", report.errors);
        Snapshot { model: report.to_model(), notes: Vec::new() }
    }

    fn pod(ns: &str, name: &str, app: &str, ip: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}, labels: {{app: {app}}}}}\n\
             status: {{podIP: {ip}, podIPs: [{{ip: {ip}}}]}}\n---\n"
        )
    }

    const POLICY: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: web, namespace: a}\n\
                          spec:\n  podSelector: {matchLabels: {app: web}}\n  ingress: [{from: [{podSelector: {matchLabels: {app: client}}}]}]\n---\n";

    fn verdict(table: &RuleTable, src: &str, dst: &str) -> Verdict {
        let key = FlowKey {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            protocol: 6,
            src_port: 1,
            dst_port: 80,
            icmp: None,
        };
        table.classify(&key)
    }

    #[test]
    fn later_snapshots_apply_only_their_difference_and_decide_like_a_full_build() {
        let mut pipeline = Pipeline::new();
        let first = format!("{}{}{POLICY}", pod("a", "web", "web", "10.0.0.1"), pod("a", "c", "client", "10.0.0.2"));
        let (table, report) = pipeline.build(&snapshot(&first), "t").unwrap();
        assert!(report.update.full);
        assert_eq!(verdict(&table, "10.0.0.2", "10.0.0.1"), Verdict::Allow);
        assert_eq!(verdict(&table, "10.0.0.3", "10.0.0.1"), Verdict::Deny);

        // Relabel the client and add a pod: two changes, applied incrementally.
        let second = format!(
            "{}{}{}{POLICY}",
            pod("a", "web", "web", "10.0.0.1"),
            pod("a", "c", "other", "10.0.0.2"),
            pod("a", "d", "client", "10.0.0.3")
        );
        let (table, report) = pipeline.build(&snapshot(&second), "t").unwrap();
        assert_eq!((report.changes, report.update.full), (2, false));
        let (full, _) = Pipeline::new().build(&snapshot(&second), "t").unwrap();
        for (src, dst) in [("10.0.0.2", "10.0.0.1"), ("10.0.0.3", "10.0.0.1"), ("10.0.0.1", "10.0.0.3")] {
            assert_eq!(verdict(&table, src, dst), verdict(&full, src, dst), "{src} → {dst}");
        }
        assert_eq!(verdict(&table, "10.0.0.3", "10.0.0.1"), Verdict::Allow);
        assert_eq!(verdict(&table, "10.0.0.2", "10.0.0.1"), Verdict::Deny);

        // Unchanged snapshot: nothing to apply. Policy deleted: its pods are open again.
        let (_, report) = pipeline.build(&snapshot(&second), "t").unwrap();
        assert_eq!(report.changes, 0);
        let third = second.replace(POLICY, "");
        let (table, report) = pipeline.build(&snapshot(&third), "t").unwrap();
        assert_eq!(report.changes, 1);
        assert_eq!(verdict(&table, "10.0.0.2", "10.0.0.1"), Verdict::Allow);
    }

    #[test]
    fn staged_and_enforced_kubernetes_policies_of_one_name_are_different_resources() {
        let staged = POLICY
            .replace("kind: NetworkPolicy", "kind: StagedKubernetesNetworkPolicy")
            .replace("networking.k8s.io/v1", "projectcalico.org/v3");
        let old = snapshot(&format!("{}{POLICY}", pod("a", "web", "web", "10.0.0.1"))).model;
        let new = snapshot(&format!("{}{POLICY}{staged}", pod("a", "web", "web", "10.0.0.1"))).model;
        let changes = changes_between(&old, &new);
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert!(matches!(&changes[0], Change::Upsert(Resource::K8sNetworkPolicy { staged: true, .. })));
        let back = changes_between(&new, &old);
        assert!(matches!(&back[..], [Change::Delete(ResourceKey::K8sNetworkPolicy { staged: true, .. })]));
    }
}
