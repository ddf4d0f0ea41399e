//! From a model snapshot to the rule table the workers take: resolve, compile, wrap.
//!
//! ```text
//! source::Snapshot ──► resolve::Resolved ──► compile::Compiler ──► RuleTable (ready to publish)
//! ```
//!
//! The [`Pipeline`] keeps its [`Compiler`] between builds, so a rebuild after a small change
//! reuses every compiled policy stage whose input did not change. A failure returns an error and
//! nothing else: the caller keeps the table in force.

use crate::compile::{CompileError, CompileStats, Compiler, zones_of};
use crate::resolve::Resolved;
use crate::source::Snapshot;
use moat_fastpath::RuleTable;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a build did, for logs and the stats file.
#[derive(Debug, Clone, Default)]
pub struct BuildReport {
    pub stats: CompileStats,
    /// Resolution warnings (undeclared tiers, selectors that can never match, ...).
    pub warnings: Vec<String>,
    pub resolve_time: Duration,
    pub compile_time: Duration,
}

/// Resolves and compiles snapshots into rule tables.
#[derive(Debug, Default)]
pub struct Pipeline {
    compiler: Compiler,
}

impl Pipeline {
    pub fn new() -> Pipeline {
        Pipeline::default()
    }

    /// The rule table for `snapshot`; `origin` names where it came from in status output.
    pub fn build(&mut self, snapshot: &Snapshot, origin: &str) -> Result<(RuleTable, BuildReport), CompileError> {
        let started = Instant::now();
        let resolved = Resolved::new(&snapshot.model);
        let resolve_time = started.elapsed();
        let (table, stats) = self.compiler.compile(&resolved, zones_of(&snapshot.model))?;
        let report = BuildReport {
            stats,
            warnings: resolved.warnings.iter().map(ToString::to_string).collect(),
            resolve_time,
            compile_time: started.elapsed().saturating_sub(resolve_time),
        };
        Ok((RuleTable::from_policy(Arc::new(table), origin), report))
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
