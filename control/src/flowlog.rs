//! Flow records from the dataplane → flow-log documents.
//!
//! Every flow a worker tracked ends with a [`FlowRecord`] (closed, reset, timed out, evicted,
//! revoked, or at shutdown). This module turns one into a JSON document that uses Calico's flow-log
//! field names where Calico has one (`start_time`, `source_ip`, `source_name`,
//! `source_namespace`, `source_type`, `dest_*`, `proto`, `action`, `policies.all_policies`), so
//! that dashboards built for Calico flow logs read it, and adds what moat knows beyond them:
//! `source_zone`/`dest_zone` (the IP pool of each address), both directions' packets and bytes,
//! the TCP flags seen, the end reason and the table generation.
//!
//! Names come from the table in force when the record is written: endpoints by address, zones by
//! IP pool. A worker keeps only the trace entry that decided each side (a full trace per flow would
//! cost hundreds of bytes per connection), so the full traces — Log and Pass entries before the
//! decision — are recomputed here from the flow's key when the table in force is the generation
//! that admitted the flow (the usual case: the same table gives the same walk). After a swap the
//! recorded deciding entries are used (the compiler keeps trace ids stable across recompiles, so
//! they still name the same rules), and `policies.complete` says so.
//! moat decides both sides in one place, so one document per flow holds both: `egress` (the
//! source's policies), `ingress` (the destination's), and `all_policies` (both, each entry
//! numbered within its side as Calico numbers a reporter's trace); `reporter` is `moat`.
//! Aggregation and the Elasticsearch and Splunk exporters build on these documents.

use moat_fastpath::classify::policy::{PolicyTable, SideDecision, TraceId};
use moat_fastpath::conntrack::{FlowKind, FlowRecord, to_system_time};
use moat_fastpath::{Admission, RuleTable, Verdict};
use serde_json::{Value, json};
use std::net::IpAddr;
use std::time::UNIX_EPOCH;

/// The flow-log document of one record. `table` (the table in force) names endpoints, zones and
/// policies; an ACL table has none of them (those fields are `"-"`/empty).
pub fn document(record: &FlowRecord, rules: &RuleTable) -> Value {
    let table = rules.policy();
    let key = &record.key;
    let unix = |ns: u64| to_system_time(ns).duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
    let (source_port, dest_port) = match record.kind {
        FlowKind::Ports => (json!(key.src_port), json!(key.dst_port)),
        _ => (Value::Null, Value::Null),
    };
    let mut doc = json!({
        "start_time": unix(record.first_seen_ns).floor(),
        "end_time": unix(record.last_seen_ns).ceil(),
        "proto": proto_name(key.protocol),
        "source_port": source_port,
        "dest_port": dest_port,
        "action": match record.admission.verdict { Verdict::Allow => "allow", Verdict::Deny => "deny" },
        "reporter": "moat",
        "policies": policies(record, rules.generation(), table),
        "packets_out": record.original.packets,
        "bytes_out": record.original.bytes,
        "packets_in": record.reply.packets,
        "bytes_in": record.reply.bytes,
        "end_reason": record.end.name(),
        "generation": record.generation,
    });
    endpoint_fields(&mut doc, "source", key.src, record.admission.egress.map(|(e, _)| e), table);
    endpoint_fields(&mut doc, "dest", key.dst, record.admission.ingress.map(|(e, _)| e), table);
    if let FlowKind::Echo { identifier } = record.kind {
        doc["icmp_id"] = json!(identifier);
    }
    if let Some((icmp_type, code)) = key.icmp {
        doc["icmp_type"] = json!(icmp_type);
        doc["icmp_code"] = json!(code);
    }
    if key.protocol == 6 {
        doc["tcp_flags_out"] = json!(flag_names(record.original.tcp_flags.bits()));
        doc["tcp_flags_in"] = json!(flag_names(record.reply.tcp_flags.bits()));
        doc["tcp_state"] = json!(record.tcp_state.map(|s| s.name()));
        doc["picked_up"] = json!(record.picked_up);
    }
    if record.vlan.outer != 0 {
        doc["vlan"] = json!([record.vlan.outer, record.vlan.inner]);
    }
    if let Some(revoked) = &record.revoked_by {
        doc["revoked_by"] = json!(deciding(revoked, table));
    }
    doc
}

/// `source_*` or `dest_*`: name, namespace, type (`wep` workload, `hep` host endpoint, `net`
/// anything else, as Calico), zone.
fn endpoint_fields(doc: &mut Value, side: &str, ip: IpAddr, endpoint: Option<u32>, table: Option<&PolicyTable>) {
    let endpoint = endpoint.or_else(|| table.and_then(|t| t.endpoint_of(ip)));
    let info = endpoint.and_then(|e| table.and_then(|t| t.endpoints().get(e as usize)));
    let (name, namespace, kind) = match info {
        Some(e) => (e.name.as_str(), e.namespace.as_deref().unwrap_or("-"), if e.host { "hep" } else { "wep" }),
        None => ("-", "-", "net"),
    };
    doc[format!("{side}_ip")] = json!(ip.to_string());
    doc[format!("{side}_name")] = json!(name);
    doc[format!("{side}_namespace")] = json!(namespace);
    doc[format!("{side}_type")] = json!(kind);
    doc[format!("{side}_zone")] = json!(table.and_then(|t| t.zone(ip)).unwrap_or("-"));
}

/// `{egress, ingress, all_policies, complete}` in Calico's `index|tier|name|action|ruleIndex` form.
fn policies(record: &FlowRecord, generation: u64, table: Option<&PolicyTable>) -> Value {
    let Some(table) = table else { return json!({"all_policies": [], "egress": [], "ingress": [], "complete": false}) };
    let render = |ids: &[TraceId]| -> Vec<String> {
        ids.iter().enumerate().filter_map(|(i, &id)| table.trace_info(id).map(|t| t.render(i))).collect()
    };
    let (egress, ingress, complete) = if generation == record.generation {
        let decision = table.decide(&record.key);
        let side = |s: Option<SideDecision>| s.map(|s| render(s.trace())).unwrap_or_default();
        (side(decision.egress), side(decision.ingress), true)
    } else {
        let one = |s: Option<(u32, TraceId)>| s.map(|(_, id)| render(&[id])).unwrap_or_default();
        (one(record.admission.egress), one(record.admission.ingress), false)
    };
    let all: Vec<&String> = egress.iter().chain(&ingress).collect();
    json!({"all_policies": all, "egress": egress, "ingress": ingress, "complete": complete})
}

/// The deciding entries of an admission (egress, then ingress), each numbered 0.
fn deciding(admission: &Admission, table: Option<&PolicyTable>) -> Vec<String> {
    let Some(table) = table else { return Vec::new() };
    [admission.egress, admission.ingress]
        .iter()
        .flatten()
        .filter_map(|&(_, id)| table.trace_info(id).map(|t| t.render(0)))
        .collect()
}

fn proto_name(protocol: u8) -> Value {
    match protocol {
        1 => json!("icmp"),
        6 => json!("tcp"),
        17 => json!("udp"),
        58 => json!("icmp6"),
        132 => json!("sctp"),
        n => json!(n),
    }
}

fn flag_names(bits: u16) -> Vec<&'static str> {
    const NAMES: [&str; 9] = ["FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR", "AE"];
    NAMES.iter().enumerate().filter(|(i, _)| bits & (1 << i) != 0).map(|(_, n)| *n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::load_str;
    use crate::pipeline::Pipeline;
    use crate::source::Snapshot;
    use moat_fastpath::FlowKey;
    use moat_fastpath::conntrack::{DirectionCounts, EndReason, VlanIds};
    use moat_wire::TcpFlags;
    use std::path::Path;

    const CLUSTER: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: dmz}
status: {podIP: 10.1.0.2, podIPs: [{ip: 10.1.0.2}]}
---
apiVersion: crd.projectcalico.org/v1
kind: IPPool
metadata: {name: dmz}
spec: {cidr: 10.1.0.0/24}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: dmz}
spec:
  podSelector: {}
  ingress: [{ports: [{protocol: TCP, port: 80}]}]
"#;

    #[test]
    fn a_record_reads_like_a_calico_flow_log_with_moat_extras() {
        let report = load_str(CLUSTER, Path::new("c.yaml"));
        let snapshot = Snapshot { model: report.to_model(), notes: Vec::new() };
        let (table, _) = Pipeline::new().build(&snapshot, "t").unwrap();
        let key = FlowKey {
            src: "192.0.2.7".parse().unwrap(),
            dst: "10.1.0.2".parse().unwrap(),
            protocol: 6,
            src_port: 40000,
            dst_port: 80,
            icmp: None,
        };
        let record = FlowRecord {
            key,
            kind: FlowKind::Ports,
            vlan: VlanIds::default(),
            first_seen_ns: 1_000_000_000,
            last_seen_ns: 3_000_000_000,
            ended_ns: 3_000_000_000,
            original: DirectionCounts { packets: 5, bytes: 400, tcp_flags: TcpFlags::SYN | TcpFlags::ACK },
            reply: DirectionCounts { packets: 4, bytes: 900, tcp_flags: TcpFlags::SYN | TcpFlags::ACK | TcpFlags::FIN },
            admission: table.admit(&key),
            generation: table.generation(),
            tcp_state: None,
            picked_up: false,
            end: EndReason::Closed,
            revoked_by: None,
        };
        let doc = document(&record, &table);
        assert_eq!(doc["action"], "allow");
        assert_eq!(doc["source_type"], "net");
        assert_eq!(doc["source_name"], "-");
        assert_eq!(
            (&doc["dest_name"], &doc["dest_namespace"], &doc["dest_type"]),
            (&json!("web"), &json!("dmz"), &json!("wep"))
        );
        assert_eq!(doc["dest_zone"], "dmz");
        // The table that admitted the flow is in force: full traces, recomputed.
        assert_eq!(doc["policies"]["all_policies"], json!(["0|default|dmz/knp.default.web|allow|0"]));
        assert_eq!(doc["policies"]["complete"], true);
        assert_eq!((&doc["packets_out"], &doc["bytes_in"]), (&json!(5), &json!(900)));
        assert_eq!(doc["tcp_flags_in"], json!(["FIN", "SYN", "ACK"]));
        assert_eq!(doc["end_reason"], "closed");
        assert!(doc["end_time"].as_f64().unwrap() >= doc["start_time"].as_f64().unwrap() + 2.0);
        // Admitted under another generation: only the recorded deciding entries, marked incomplete.
        let older = FlowRecord { generation: table.generation() + 1, ..record };
        let doc = document(&older, &table);
        assert_eq!(doc["policies"]["ingress"], json!(["0|default|dmz/knp.default.web|allow|0"]));
        assert_eq!(doc["policies"]["complete"], false);
    }
}
