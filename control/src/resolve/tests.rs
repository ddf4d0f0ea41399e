use super::*;
use crate::model::{NamedPort, Namespace, Pod, Resource};

#[test]
fn entity_selector_scoping_follows_calico() {
    let sel = |s: &str| Some(Selector::parse(s).unwrap());
    let e = EntityRule { selector: sel("app == 'a'"), ..Default::default() };
    assert_eq!(
        entity_selector(&e, Some("ns")).unwrap().unwrap(),
        Selector::parse("projectcalico.org/namespace == 'ns' && app == 'a'").unwrap()
    );
    assert_eq!(entity_selector(&e, None).unwrap(), sel("app == 'a'"));
    // Nothing but nets: no selector at all, even in a namespaced policy.
    assert_eq!(entity_selector(&EntityRule::default(), Some("ns")).unwrap(), None);
    let ns = EntityRule { namespace_selector: sel("env == 'x'"), ..Default::default() };
    assert_eq!(entity_selector(&ns, Some("ns")).unwrap(), sel("pcns.env == 'x'"));
    let global = EntityRule { namespace_selector: sel("global()"), ..Default::default() };
    assert_eq!(entity_selector(&global, None).unwrap(), sel("!has(projectcalico.org/namespace)"));
}

#[test]
fn tiers_sort_by_order_then_name_with_default_tier() {
    let mut m = Model::new();
    for (name, order) in [("b", Some(1.0)), ("a", Some(1.0)), ("z", None)] {
        m.insert(Resource::Tier(crate::model::Tier {
            name: name.into(),
            spec: crate::model::TierSpec { order, ..Default::default() },
        }));
    }
    let r = Resolved::new(&m);
    let names: Vec<&str> = r.tiers.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "default", "z"]);
}

#[test]
fn host_networked_pods_are_not_workload_endpoints() {
    let mut m = Model::new();
    m.insert(Resource::Namespace(Namespace::new("n", LabelMap::new())));
    m.insert(Resource::Pod(Pod {
        namespace: "n".into(),
        name: "h".into(),
        labels: LabelMap::new(),
        service_account: "default".into(),
        ips: vec!["10.0.0.1".parse().unwrap()],
        named_ports: vec![NamedPort { name: "x".into(), protocol: Protocol::Tcp, port: 1 }],
        host_network: true,
    }));
    assert!(Resolved::new(&m).endpoints.is_empty());
}
