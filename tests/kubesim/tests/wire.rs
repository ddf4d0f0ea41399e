//! The wire format as a client sees it, over raw HTTP/1.1 (no client library in between).

// Test helpers panic on failure: a panic is the assertion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use moat_kubesim::{Fault, FaultRule, KubeSim, RequestKind, SimConfig, Target};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Status, headers (lower-case names) and the de-chunked body of one request.
fn get(sim: &KubeSim, path: &str, accept: Option<&str>) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut s = TcpStream::connect(sim.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let accept = accept.map(|a| format!("Accept: {a}\r\n")).unwrap_or_default();
    write!(s, "GET {path} HTTP/1.1\r\nHost: kubesim\r\n{accept}Connection: close\r\n\r\n").unwrap();
    let mut r = BufReader::new(s);
    let mut status_line = String::new();
    r.read_line(&mut status_line).unwrap();
    let status: u16 = status_line.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (k, v) = line.split_once(':').unwrap();
        headers.push((k.to_ascii_lowercase(), v.trim().to_string()));
    }
    let chunked = headers.iter().any(|(k, v)| k == "transfer-encoding" && v == "chunked");
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size = String::new();
            if r.read_line(&mut size).unwrap() == 0 {
                break; // cut mid-stream
            }
            let n = usize::from_str_radix(size.trim(), 16).unwrap();
            if n == 0 {
                break;
            }
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk).unwrap();
            body.extend_from_slice(&chunk[..n]);
        }
    } else {
        r.read_to_end(&mut body).unwrap();
    }
    (status, headers, body)
}

fn json_of(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap()
}

fn events(body: &[u8]) -> Vec<Value> {
    body.split(|b| *b == b'\n').filter(|l| !l.is_empty()).map(|l| serde_json::from_slice(l).unwrap()).collect()
}

fn pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "dmz", "labels": {"app": name}},
           "spec": {"containers": [{"name": "c"}]}, "status": {"phase": "Running", "podIP": "10.0.0.1"}})
}

#[test]
fn lists_page_with_continue_tokens_and_watches_stream_json_lines() {
    let sim = KubeSim::start(SimConfig::default()).unwrap();
    for i in 0..5 {
        sim.apply(pod(&format!("p{i}"))).unwrap();
    }
    let (status, _, body) = get(&sim, "/api/v1/pods?limit=2", None);
    assert_eq!(status, 200);
    let list = json_of(&body);
    assert_eq!(list["kind"], "PodList");
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
    assert_eq!(list["metadata"]["remainingItemCount"], 3);
    let rv = list["metadata"]["resourceVersion"].as_str().unwrap().to_string();
    let token = list["metadata"]["continue"].as_str().unwrap().to_string();
    let (_, _, body) = get(&sim, &format!("/api/v1/pods?limit=2&continue={token}"), None);
    assert_eq!(json_of(&body)["items"][0]["metadata"]["name"], "p2");

    // A watch from the list's version sees later writes, in order, then ends at its timeout.
    sim.apply(pod("p5")).unwrap();
    sim.delete("v1", "Pod", Some("dmz"), "p0").unwrap();
    sim.bookmark(); // no watch open yet: nothing to send
    let (status, headers, body) =
        get(&sim, &format!("/api/v1/pods?watch=true&resourceVersion={rv}&timeoutSeconds=1"), None);
    assert_eq!(status, 200);
    assert!(headers.iter().any(|(k, v)| k == "transfer-encoding" && v == "chunked"));
    let ev = events(&body);
    let types: Vec<&str> = ev.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, vec!["ADDED", "DELETED"]);
    assert_eq!(ev[0]["object"]["kind"], "Pod", "watch events carry apiVersion and kind");

    let records = sim.requests();
    assert_eq!(records.iter().filter(|r| r.kind == RequestKind::List).count(), 2);
    assert_eq!(records.iter().filter(|r| r.kind == RequestKind::Watch).count(), 1);
    assert_eq!(records[0].param("limit").as_deref(), Some("2"));
}

#[test]
fn a_compacted_resource_version_is_a_410_error_event_and_an_expired_continue_an_http_410() {
    let sim = KubeSim::start(SimConfig::default()).unwrap();
    let rv = sim.apply(pod("a")).unwrap();
    sim.apply(pod("b")).unwrap();
    let (_, _, body) = get(&sim, "/api/v1/pods?limit=1", None);
    let token = json_of(&body)["metadata"]["continue"].as_str().unwrap().to_string();
    sim.expire_history();
    let (status, _, body) = get(&sim, &format!("/api/v1/pods?watch=1&resourceVersion={rv}"), None);
    assert_eq!(status, 200);
    let ev = events(&body);
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0]["type"], "ERROR");
    assert_eq!(ev[0]["object"]["code"], 410);
    assert_eq!(ev[0]["object"]["reason"], "Expired");
    let (status, _, body) = get(&sim, &format!("/api/v1/pods?limit=1&continue={token}"), None);
    assert_eq!(status, 410);
    assert_eq!(json_of(&body)["kind"], "Status");
}

#[test]
fn metadata_only_requests_get_partial_objects_and_crd_items_keep_their_kind() {
    let sim = KubeSim::start(SimConfig::default()).unwrap();
    sim.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "dmz"}})).unwrap();
    sim.apply(json!({"apiVersion": "crd.projectcalico.org/v1", "kind": "Tier", "metadata": {"name": "zones"},
                     "spec": {"order": 10}}))
        .unwrap();
    let accept = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1";
    let (_, _, body) = get(&sim, "/api/v1/namespaces", Some(accept));
    let list = json_of(&body);
    assert_eq!(list["kind"], "PartialObjectMetadataList");
    assert_eq!(list["items"][0]["kind"], "PartialObjectMetadata");
    assert_eq!(list["items"][0]["metadata"]["labels"]["kubernetes.io/metadata.name"], "dmz");
    assert!(list["items"][0].get("spec").is_none());
    let (_, _, body) = get(&sim, "/apis/crd.projectcalico.org/v1/tiers", None);
    assert_eq!(json_of(&body)["items"][0]["kind"], "Tier");
    let (status, _, _) = get(&sim, "/apis/projectcalico.org/v3/tiers", None);
    assert_eq!(status, 404, "the Calico API server is not served by default");
    assert!(sim.requests().iter().any(|r| r.metadata_only));
}

#[test]
fn discovery_documents() {
    let sim = KubeSim::start(SimConfig::default()).unwrap();
    let (_, _, body) = get(&sim, "/apis", None);
    assert!(json_of(&body)["groups"].as_array().unwrap().iter().any(|g| g["name"] == "crd.projectcalico.org"));
    let (_, _, body) = get(&sim, "/api/v1", None);
    let names: Vec<Value> = json_of(&body)["resources"].as_array().unwrap().iter().map(|r| r["name"].clone()).collect();
    assert!(names.contains(&json!("pods")) && names.contains(&json!("namespaces")));
    let (status, _, _) = get(&sim, "/apis/projectcalico.org/v3", None);
    assert_eq!(status, 404);
}

#[test]
fn injected_faults() {
    let sim = KubeSim::start(SimConfig::default()).unwrap();
    sim.apply(pod("a")).unwrap();
    sim.fail_next(1, 500);
    assert_eq!(get(&sim, "/api/v1/pods", None).0, 500);
    assert_eq!(get(&sim, "/api/v1/pods", None).0, 200);
    sim.inject(FaultRule { count: 1, fault: Fault::Truncate, path: None, query: None, on: Target::List });
    let (status, _, body) = get(&sim, "/api/v1/pods", None);
    assert_eq!(status, 200);
    assert!(serde_json::from_slice::<Value>(&body).is_err(), "the body was cut");
    // A field selector the API server does not support is a 400.
    assert_eq!(get(&sim, "/api/v1/pods?fieldSelector=spec.foo%3Dbar", None).0, 400);
}

#[test]
fn an_outage_resets_connections_until_it_ends() {
    let sim = KubeSim::start(SimConfig::default()).unwrap();
    sim.outage(true);
    let mut s = TcpStream::connect(sim.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let _ = write!(s, "GET /api/v1/pods HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut buf = Vec::new();
    let read = s.read_to_end(&mut buf);
    assert!(read.is_err() || buf.is_empty(), "no answer during an outage");
    sim.outage(false);
    assert_eq!(get(&sim, "/api/v1/pods", None).0, 200);
}
