//! The Kubernetes source against kubesim, the in-test API server: initial sync of every kind
//! (against the manifest loader as oracle), label changes moving pods in and out of selectors,
//! invalid objects, paging, 410 relists, 500s, dropped connections, outages and restarts.
//!
//! Verdicts are checked twice: with the reference evaluator and through `Pipeline::build` (the
//! compiled table the workers would enforce). No assertion depends on timing: waits have long
//! timeouts that only turn a hang into a failure.

#![cfg(feature = "kube")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use moat_control::Evaluator;
use moat_control::evaluate::{Flow, FlowEnd, Verdict};
use moat_control::manifest::{LoadOptions, load_str_with};
use moat_control::model::Model;
use moat_control::pipeline::Pipeline;
use moat_control::resolve::EndpointId;
use moat_control::source::kube::{
    BackoffConfig, CalicoApi, CalicoGroup, Changed, KubeSource, KubeSourceConfig, ObjectKey, Update, Updates,
    WatchedKind,
};
use moat_kubesim::{Fault, FaultRule, KubeSim, RequestKind, Scenario, Serve, SimConfig, SimControl, Target};
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

/// Long enough for a loaded CI machine; only a hang reaches it.
const WAIT: Duration = Duration::from_secs(30);

fn client(sim: &SimControl) -> kube::Client {
    let config = kube::Config::new(sim.url().parse().unwrap());
    kube::Client::try_from(config).unwrap()
}

/// Fast retries so that fault tests do not wait for client-go's 0.8 s backoff.
fn config() -> KubeSourceConfig {
    KubeSourceConfig {
        calico: CalicoApi::Auto,
        backoff: Some(BackoffConfig { initial: Duration::from_millis(20), max: Duration::from_millis(200) }),
        ..KubeSourceConfig::default()
    }
}

fn start(sim: &SimControl, config: KubeSourceConfig) -> (moat_control::source::kube::KubeHandle, Updates) {
    KubeSource::start(client(sim), config)
}

async fn next(updates: &mut Updates) -> Update {
    tokio::time::timeout(WAIT, updates.next()).await.expect("no update in time").expect("the source stopped")
}

/// Takes updates until one satisfies `done` (later updates carry everything before them).
async fn until(updates: &mut Updates, what: &str, done: impl Fn(&Update) -> bool) -> Update {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let u = tokio::time::timeout_at(deadline, updates.next())
            .await
            .unwrap_or_else(|_| panic!("no update with {what} in time"))
            .expect("the source stopped");
        if done(&u) {
            return u;
        }
    }
}

/// The model the manifest loader builds from the same objects: the oracle.
fn manifest_model(objects: &[Value]) -> Model {
    let text: String = objects.iter().map(|o| format!("---\n{o}\n")).collect();
    let report = load_str_with(&text, Path::new("scenario"), LoadOptions::strict());
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    report.to_model()
}

fn pod_json(ns: &str, name: &str, labels: Value, ip: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns, "labels": labels},
           "spec": {"containers": [{"name": "c", "image": "i"}]},
           "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}})
}

/// A flow "NS/POD -> NS/POD:PORT/PROTO" decided by the evaluator and by the compiled table,
/// which must agree.
fn verdict(model: &Model, flow: &str) -> Verdict {
    let (src, rest) = flow.split_once(" -> ").unwrap();
    let (dst, port) = rest.split_once(':').unwrap();
    let (port, proto) = port.split_once('/').unwrap();
    let port: u16 = port.parse().unwrap();
    let protocol = match proto {
        "TCP" => 6,
        "UDP" => 17,
        other => panic!("protocol {other}"),
    };
    let end = |p: &str| {
        let (ns, name) = p.split_once('/').unwrap();
        let pod = model.pods.get(&(ns.to_string(), name.to_string())).unwrap_or_else(|| panic!("no pod {p}"));
        FlowEnd { ip: pod.ips[0], endpoint: Some(EndpointId::Workload { namespace: ns.into(), name: name.into() }) }
    };
    let f = Flow {
        src: end(src),
        dst: end(dst),
        protocol,
        src_port: Some(40000),
        dst_port: Some(port),
        icmp_type: None,
        icmp_code: None,
    };
    let evaluated = Evaluator::new(model).evaluate(&f).verdict;
    let snapshot = moat_control::source::Snapshot { model: model.clone(), notes: Vec::new() };
    let (table, _) = Pipeline::new().build(&snapshot, "kube-test").unwrap();
    let key =
        moat_fastpath::FlowKey { src: f.src.ip, dst: f.dst.ip, protocol, src_port: 40000, dst_port: port, icmp: None };
    let compiled = match table.classify(&key) {
        moat_fastpath::Verdict::Allow => Verdict::Allow,
        moat_fastpath::Verdict::Deny => Verdict::Deny,
    };
    assert_eq!(evaluated, compiled, "evaluator and compiled table disagree on {flow}");
    evaluated
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect()).unwrap_or_default()
}

/// Whether `update` satisfies an `expect` block of a scenario (pods, allow, deny, problems).
fn meets(update: &Update, expect: &Value) -> Result<(), String> {
    let model = &update.snapshot.model;
    if let Some(pods) = expect.get("pods") {
        let have: Vec<String> = model.pods.keys().map(|(ns, n)| format!("{ns}/{n}")).collect();
        if have != strings(pods) {
            return Err(format!("pods {have:?}, expected {:?}", strings(pods)));
        }
    }
    if let Some(problems) = expect.get("problems") {
        let have: Vec<String> = update.problems.iter().map(|p| p.key.to_string()).collect();
        if have != strings(problems) {
            return Err(format!("problems {have:?}, expected {:?}", strings(problems)));
        }
    }
    for (field, want) in [("allow", Verdict::Allow), ("deny", Verdict::Deny)] {
        for flow in strings(expect.get(field).unwrap_or(&Value::Null)) {
            let (src, dst) = flow.split_once(" -> ").unwrap();
            let dst = dst.split_once(':').unwrap().0;
            let known = |p: &str| {
                let (ns, n) = p.split_once('/').unwrap();
                model.pods.contains_key(&(ns.to_string(), n.to_string()))
            };
            if !known(src) || !known(dst) {
                return Err(format!("{flow}: a pod is missing"));
            }
            let got = verdict(model, &flow);
            if got != want {
                return Err(format!("{flow}: {got}, expected {want}"));
            }
        }
    }
    Ok(())
}

async fn until_meets(updates: &mut Updates, expect: &Value, what: &str) -> Update {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut last = String::new();
    loop {
        let u = match tokio::time::timeout_at(deadline, updates.next()).await {
            Ok(u) => u.expect("the source stopped"),
            Err(_) => panic!("{what}: not reached in time; last update: {last}"),
        };
        match meets(&u, expect) {
            Ok(()) => return u,
            Err(e) => last = e,
        }
    }
}

fn lists(sim: &SimControl, path: &str) -> usize {
    sim.count_requests(|r| r.kind == RequestKind::List && r.path == path && r.status == 200)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_syncs_to_the_model_the_manifest_loader_builds() {
    let scenario = Scenario::bundled("every-kind.yaml").unwrap();
    let sim = KubeSim::from_scenario(&scenario).unwrap();
    let (handle, mut updates) = start(&sim, config());
    let first = next(&mut updates).await;
    assert_eq!(first.generation, 1);
    assert_eq!(first.changed, Changed::All);
    assert!(first.problems.is_empty(), "{:?}", first.problems);
    assert!(first.snapshot.notes.is_empty(), "{:?}", first.snapshot.notes);
    assert_eq!(first.calico, Some(CalicoGroup::Crd));
    let oracle = manifest_model(&scenario.objects);
    assert_eq!(format!("{:#?}", first.snapshot.model), format!("{oracle:#?}"));
    meets(&first, scenario.expect.as_ref().unwrap()).unwrap();

    // What was asked of the API server: one paged list and one watch per kind, bookmarks on,
    // metadata-only for namespaces and service accounts, running pods only.
    let requests = sim.requests();
    for kind in WatchedKind::ALL {
        let (group, version) = kind.group_version(CalicoGroup::Crd);
        let prefix = if group.is_empty() { format!("/api/{version}") } else { format!("/apis/{group}/{version}") };
        let path = format!("{prefix}/{}", kind.plural());
        let list: Vec<_> = requests.iter().filter(|r| r.path == path && r.kind == RequestKind::List).collect();
        assert_eq!(list.len(), 1, "{path}");
        assert_eq!(list[0].param("limit").as_deref(), Some("500"), "{path}");
        let metadata_only = matches!(kind, WatchedKind::Namespace | WatchedKind::ServiceAccount);
        assert_eq!(list[0].metadata_only, metadata_only, "{path}");
        assert_eq!(list[0].param("fieldSelector").as_deref(), kind.field_selector(), "{path}");
    }
    let watches: Vec<_> = sim.requests().into_iter().filter(|r| r.kind == RequestKind::Watch).collect();
    assert!(watches.iter().all(|w| w.param("allowWatchBookmarks").as_deref() == Some("true")));
    let status = handle.status();
    assert!(status.synced && status.kinds.values().all(|k| k.listed && k.served && k.lists == 1 && k.errors == 0));
    assert_eq!(status.kinds[&WatchedKind::Pod].objects, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_steps_relabel_break_fix_and_delete() {
    let scenario = Scenario::bundled("every-kind.yaml").unwrap();
    let sim = KubeSim::from_scenario(&scenario).unwrap();
    let (_handle, mut updates) = start(&sim, config());
    next(&mut updates).await;
    let lists_before = sim.count_requests(|r| r.kind == RequestKind::List);
    for step in &scenario.steps {
        sim.play(step).unwrap();
        let expect = step.expect.as_ref().unwrap();
        let u = until_meets(&mut updates, expect, &step.name).await;
        match step.name.as_str() {
            "relabel-other-in" | "relabel-other-out" => {
                assert_eq!(
                    u.changed,
                    Changed::Objects([ObjectKey::new(WatchedKind::Pod, Some("trusted"), "other")].into()),
                    "{}",
                    step.name
                );
            }
            "break-policy" => {
                let p = &u.problems[0];
                assert!(p.kept, "the last valid version stays in force");
                assert!(p.message.contains("spec.ingress[0].ports[0].port"), "{p}");
                assert!(u.changed.is_empty(), "a refused version changes nothing");
            }
            _ => {}
        }
    }
    // Label changes, deletes and invalid objects never needed a list.
    assert_eq!(sim.count_requests(|r| r.kind == RequestKind::List), lists_before, "no relist, no polling");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_lists_are_paged_with_continue_tokens() {
    let sim = KubeSim::start(SimConfig::default()).unwrap();
    let mut objects = vec![json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "big"}})];
    for i in 0..1234u32 {
        let ip = format!("10.{}.{}.{}", 20 + i / 65536, (i / 256) % 256, i % 256);
        objects.push(pod_json("big", &format!("p{i:04}"), json!({"app": format!("a{}", i % 7)}), &ip));
    }
    sim.apply_all(objects.clone()).unwrap();
    let (_handle, mut updates) = start(&sim, KubeSourceConfig { page_size: 100, ..config() });
    let first = next(&mut updates).await;
    assert_eq!(first.snapshot.model.pods.len(), 1234);
    assert_eq!(format!("{:?}", first.snapshot.model), format!("{:?}", manifest_model(&objects)));
    let pages: Vec<_> =
        sim.requests().into_iter().filter(|r| r.kind == RequestKind::List && r.path == "/api/v1/pods").collect();
    assert_eq!(pages.len(), 13);
    assert!(pages[0].param("continue").is_none());
    assert!(pages[1..].iter().all(|p| p.param("continue").is_some() && p.param("limit").as_deref() == Some("100")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_410_relists_and_publishes_only_the_difference_never_a_partial_model() {
    let sim = KubeSim::start(SimConfig::default()).unwrap();
    let mut objects = Vec::new();
    for i in 0..30u8 {
        objects.push(pod_json("ns", &format!("p{i:02}"), json!({"app": "x"}), &format!("10.5.0.{}", i + 1)));
    }
    sim.apply_all(objects).unwrap();
    let (handle, mut updates) = start(&sim, KubeSourceConfig { page_size: 10, ..config() });
    assert_eq!(next(&mut updates).await.snapshot.model.pods.len(), 30);

    // While the source is cut off: history compacted, two pods changed. When the API server is
    // back, resuming the watch gets 410, and the first relist is cut in its second page.
    sim.outage(true);
    sim.expire_history();
    sim.delete("v1", "Pod", Some("ns"), "p03").unwrap();
    sim.relabel("v1", "Pod", Some("ns"), "p07", &[("app", Some("y"))]).unwrap();
    sim.inject(FaultRule {
        count: 1,
        fault: Fault::Truncate,
        path: Some("/api/v1/pods".into()),
        query: Some("continue=".into()),
        on: Target::List,
    });
    let lists_before = lists(&sim, "/api/v1/pods");
    sim.outage(false);
    let u = until(&mut updates, "the relisted pods", |u| !u.changed.is_empty()).await;
    let expected: Changed = Changed::Objects(
        [ObjectKey::new(WatchedKind::Pod, Some("ns"), "p03"), ObjectKey::new(WatchedKind::Pod, Some("ns"), "p07")]
            .into(),
    );
    assert_eq!(u.changed, expected);
    assert_eq!(u.snapshot.model.pods.len(), 29, "never a partial model");
    assert_eq!(u.snapshot.model.pods[&("ns".to_string(), "p07".to_string())].labels["app"], "y");
    // Page 1 and the cut page 2 of the first relist, then the complete relist of 3 pages.
    assert_eq!(lists(&sim, "/api/v1/pods"), lists_before + 5);
    assert!(handle.status().kinds[&WatchedKind::Pod].lists >= 3, "initial, cut relist, complete relist");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_and_dropped_connections_recover() {
    let sim = KubeSim::start(SimConfig::default()).unwrap();
    sim.apply(pod_json("a", "p1", json!({"app": "x"}), "10.6.0.1")).unwrap();
    // The first three list attempts of pods fail: no model until pods are listed.
    let rule =
        |count, fault, path: &str| FaultRule { count, fault, path: Some(path.into()), query: None, on: Target::List };
    sim.inject(rule(3, Fault::Status(500), "/api/v1/pods"));
    sim.inject(rule(1, Fault::Reset, "/api/v1/namespaces"));
    let (handle, mut updates) = start(&sim, config());
    let first = next(&mut updates).await;
    assert_eq!(first.snapshot.model.pods.len(), 1);
    assert!(handle.status().kinds[&WatchedKind::Pod].errors >= 3);

    // Watches cut mid-stream resume from their resourceVersion: no list.
    let lists_before = sim.count_requests(|r| r.kind == RequestKind::List);
    sim.drop_watches();
    sim.apply(pod_json("a", "p2", json!({"app": "x"}), "10.6.0.2")).unwrap();
    let u = until(&mut updates, "p2", |u| u.snapshot.model.pods.len() == 2).await;
    assert!(u.changed.contains(&ObjectKey::new(WatchedKind::Pod, Some("a"), "p2")));
    // A watch request answered 500 is retried, also without a list.
    sim.inject(FaultRule { count: 2, fault: Fault::Status(500), path: None, query: None, on: Target::Watch });
    sim.drop_watches();
    sim.apply(pod_json("a", "p3", json!({"app": "x"}), "10.6.0.3")).unwrap();
    until(&mut updates, "p3", |u| u.snapshot.model.pods.len() == 3).await;
    assert_eq!(sim.count_requests(|r| r.kind == RequestKind::List), lists_before, "resumed, not relisted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_keeps_the_last_model_then_resumes_and_a_restart_relists() {
    let scenario = Scenario::bundled("outage.yaml").unwrap();
    let sim = KubeSim::from_scenario(&scenario).unwrap();
    let (handle, mut updates) = start(&sim, config());
    let first = next(&mut updates).await;
    meets(&first, scenario.expect.as_ref().unwrap()).unwrap();

    sim.run_step(&scenario, "outage-begins").unwrap();
    // The source notices (watch errors), and publishes nothing: the last model stays in force.
    let deadline = std::time::Instant::now() + WAIT;
    while handle.status().kinds.values().map(|k| k.errors).sum::<u64>() < 3 {
        assert!(std::time::Instant::now() < deadline, "the outage was never noticed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(updates.try_next().is_none(), "nothing is published during the outage");
    let held = first.snapshot.clone();
    meets(&first, scenario.step("outage-begins").unwrap().expect.as_ref().unwrap()).unwrap();
    assert_eq!(held.model.pods.len(), 2);

    sim.run_step(&scenario, "outage-ends").unwrap();
    until_meets(&mut updates, scenario.step("outage-ends").unwrap().expect.as_ref().unwrap(), "outage-ends").await;

    let pod_lists = lists(&sim, "/api/v1/pods");
    sim.run_step(&scenario, "restart").unwrap();
    until_meets(&mut updates, scenario.step("restart").unwrap().expect.as_ref().unwrap(), "restart").await;
    assert!(lists(&sim, "/api/v1/pods") > pod_lists, "the restart forgot the history: relisted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timed_churn_with_faults_ends_on_the_final_state() {
    let scenario = Scenario::bundled("churn.yaml").unwrap();
    let sim = KubeSim::from_scenario(&scenario).unwrap();
    let (_handle, mut updates) = start(&sim, config());
    let first = next(&mut updates).await;
    meets(&first, scenario.expect.as_ref().unwrap()).unwrap();
    let player = sim.play_timed(&scenario);
    player.join().unwrap().unwrap();
    let settle = scenario.step("settle").unwrap().expect.as_ref().unwrap();
    let u = until_meets(&mut updates, settle, "settle").await;
    assert_eq!(u.snapshot.model.pods[&("lab".to_string(), "flapper".to_string())].labels["role"], "in");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_published_before_every_kind_has_listed() {
    let sim = KubeSim::start(SimConfig::default()).unwrap();
    sim.apply(json!({"apiVersion": "crd.projectcalico.org/v1", "kind": "Tier", "metadata": {"name": "zones"},
                     "spec": {"order": 10}}))
        .unwrap();
    sim.apply(pod_json("a", "p", json!({}), "10.7.0.1")).unwrap();
    // 500, not 503: kube's client retries 429/503/504 itself before the watcher sees them.
    sim.inject(FaultRule {
        count: 1000,
        fault: Fault::Status(500),
        path: Some("/tiers".into()),
        query: None,
        on: Target::List,
    });
    let (handle, mut updates) = start(&sim, config());
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let s = handle.status();
        let others_listed = s.kinds.iter().filter(|(k, _)| **k != WatchedKind::Tier).all(|(_, k)| k.listed);
        if others_listed && s.kinds.get(&WatchedKind::Tier).is_some_and(|k| k.errors >= 2) {
            assert!(!s.synced);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{s:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(updates.try_next().is_none(), "no model while tiers cannot be listed");
    sim.clear_faults();
    let first = next(&mut updates).await;
    assert_eq!(first.generation, 1);
    assert!(first.snapshot.model.tiers.contains_key("zones"));
    assert_eq!(first.snapshot.model.pods.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_objects_are_reported_with_their_identity() {
    let sim = KubeSim::start(SimConfig::default()).unwrap();
    // Never valid: an L7 rule (refused: ignoring it would widen the policy).
    sim.apply(json!({"apiVersion": "crd.projectcalico.org/v1", "kind": "GlobalNetworkPolicy",
                     "metadata": {"name": "default.l7"},
                     "spec": {"selector": "all()", "ingress": [{"action": "Allow", "http": {"methods": ["GET"]}}]}}))
        .unwrap();
    // An unknown field (strict by default: it could change what the policy means).
    sim.apply(json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                     "metadata": {"name": "typo", "namespace": "a"},
                     "spec": {"podSelector": {}, "egres": []}}))
        .unwrap();
    let (_handle, mut updates) = start(&sim, config());
    let first = next(&mut updates).await;
    let problems: Vec<String> = first.problems.iter().map(ToString::to_string).collect();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0].starts_with("NetworkPolicy a/typo: spec.egres: unknown field (left out)"), "{problems:?}");
    assert!(problems[1].starts_with("GlobalNetworkPolicy default.l7: spec.ingress[0].http"), "{problems:?}");
    assert!(first.snapshot.model.policies.is_empty() && first.snapshot.model.k8s_policies.is_empty());
    // Deleting a refused object ends its problem.
    sim.delete("networking.k8s.io/v1", "NetworkPolicy", Some("a"), "typo").unwrap();
    let u = until(&mut updates, "one problem", |u| u.problems.len() == 1).await;
    assert_eq!(u.problems[0].key, ObjectKey::new(WatchedKind::GlobalNetworkPolicy, None, "default.l7"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_pods_leave_the_model() {
    let sim = KubeSim::start(SimConfig::default()).unwrap();
    sim.apply(pod_json("a", "job", json!({}), "10.8.0.1")).unwrap();
    let (_handle, mut updates) = start(&sim, config());
    assert_eq!(next(&mut updates).await.snapshot.model.pods.len(), 1);
    let mut done = pod_json("a", "job", json!({}), "10.8.0.1");
    done["status"]["phase"] = "Succeeded".into();
    sim.apply(done).unwrap();
    let u = until(&mut updates, "no pods", |u| u.snapshot.model.pods.is_empty()).await;
    assert!(u.changed.contains(&ObjectKey::new(WatchedKind::Pod, Some("a"), "job")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calico_v3_is_read_where_the_calico_api_server_serves_it() {
    let config_v3 = SimConfig { serve: Serve { calico_crds: true, calico_v3: true }, ..SimConfig::default() };
    let sim = KubeSim::start(config_v3).unwrap();
    sim.apply(json!({"apiVersion": "projectcalico.org/v3", "kind": "Tier", "metadata": {"name": "v3tier"},
                     "spec": {"order": 5}}))
        .unwrap();
    sim.apply(json!({"apiVersion": "crd.projectcalico.org/v1", "kind": "Tier", "metadata": {"name": "crdtier"},
                     "spec": {"order": 5}}))
        .unwrap();
    let (_h, mut updates) = start(&sim, config());
    let first = next(&mut updates).await;
    assert_eq!(first.calico, Some(CalicoGroup::V3));
    assert_eq!(first.snapshot.model.tiers.keys().collect::<Vec<_>>(), vec!["v3tier"]);
    assert!(sim.count_requests(|r| r.path.starts_with("/apis/crd.projectcalico.org/v1/")) == 0);

    // Forced to the CRDs.
    let (_h, mut updates) = start(&sim, KubeSourceConfig { calico: CalicoApi::Crd, ..config() });
    let first = next(&mut updates).await;
    assert_eq!(first.snapshot.model.tiers.keys().collect::<Vec<_>>(), vec!["crdtier"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_without_calico_has_empty_calico_kinds_and_says_so() {
    let sim =
        KubeSim::start(SimConfig { serve: Serve { calico_crds: false, calico_v3: false }, ..SimConfig::default() })
            .unwrap();
    sim.apply(pod_json("a", "p", json!({}), "10.8.0.9")).unwrap();
    let (handle, mut updates) = start(&sim, config());
    let first = next(&mut updates).await;
    assert_eq!(first.calico, None);
    assert_eq!(first.snapshot.model.pods.len(), 1);
    assert_eq!(first.snapshot.notes.len(), 10, "{:?}", first.snapshot.notes);
    assert!(first.snapshot.notes[0].contains("no Calico API is served"));
    assert!(!handle.status().kinds[&WatchedKind::Tier].served);
}

#[test]
fn the_blocking_helper_runs_on_its_own_thread() {
    let scenario = Scenario::bundled("outage.yaml").unwrap();
    let sim = KubeSim::from_scenario(&scenario).unwrap();
    let kube_config = kube::Config::new(sim.url().parse().unwrap());
    let (handle, mut updates) = KubeSource::start_thread(Some(kube_config), config()).unwrap();
    let first = updates.blocking_next(WAIT).unwrap();
    assert_eq!(first.snapshot.model.pods.len(), 2);
    sim.delete("v1", "Pod", Some("shop"), "front").unwrap();
    let u = updates.blocking_next(WAIT).unwrap();
    assert_eq!(u.snapshot.model.pods.len(), 1);
    handle.stop();
    assert_eq!(updates.blocking_next(WAIT).unwrap_err(), moat_control::source::kube::WaitError::Closed);
}

/// Every pod pair and a few TCP ports: the compiled verdicts of `table`.
fn all_verdicts(model: &Model, table: &moat_fastpath::RuleTable) -> Vec<(String, moat_fastpath::Verdict)> {
    let mut out = Vec::new();
    for (sk, s) in &model.pods {
        for (dk, d) in &model.pods {
            for port in [80, 81, 8080, 9000] {
                let key = moat_fastpath::FlowKey {
                    src: s.ips[0],
                    dst: d.ips[0],
                    protocol: 6,
                    src_port: 40000,
                    dst_port: port,
                    icmp: None,
                };
                out.push((format!("{sk:?}->{dk:?}:{port}"), table.classify(&key)));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_drive_the_incremental_compiler_to_what_a_full_compile_decides() {
    use moat_control::compile::IncrementalCompiler;
    let scenario = Scenario::bundled("every-kind.yaml").unwrap();
    let sim = KubeSim::from_scenario(&scenario).unwrap();
    let (_handle, mut updates) = start(&sim, config());
    let first = next(&mut updates).await;
    assert!(first.model_changes().is_none(), "the first update is built in full");
    let (mut incremental, _) = IncrementalCompiler::new(first.snapshot.model.clone()).unwrap();
    for step in &scenario.steps {
        sim.play(step).unwrap();
        let expect = step.expect.as_ref().unwrap();
        let deadline = tokio::time::Instant::now() + WAIT;
        // Every update is applied (none may be skipped: each carries only its own changes).
        loop {
            let u = tokio::time::timeout_at(deadline, updates.next()).await.unwrap().unwrap();
            let (table, _) = incremental.apply(u.model_changes().unwrap()).unwrap();
            let incremental_table = moat_fastpath::RuleTable::from_policy(table, "incremental");
            let (full, _) = Pipeline::new().build(&u.snapshot, "full").unwrap();
            let model = &u.snapshot.model;
            assert_eq!(all_verdicts(model, &incremental_table), all_verdicts(model, &full), "after {}", step.name);
            if meets(&u, expect).is_ok() {
                break;
            }
        }
    }
}
