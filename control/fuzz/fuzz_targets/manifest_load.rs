//! The manifest loader on arbitrary text (YAML or JSON, any number of documents): loading must
//! never panic, whatever the bytes, and neither may what is built on a load — messages, the
//! model, the resolved policy and the evaluation of flows between the endpoints it declares.
#![no_main]

use libfuzzer_sys::fuzz_target;
use moat_control::Evaluator;
use moat_control::manifest::load_str;
use std::hint::black_box;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let report = load_str(&text, Path::new("fuzz.yaml"));
    for e in &report.errors {
        black_box(e.to_string());
    }
    for w in &report.warnings {
        black_box(w.to_string());
    }
    for s in &report.skipped {
        black_box(s.to_string());
    }
    let model = report.to_model();
    let ev = Evaluator::new(&model);
    // A few flows between what the manifests declare, by name and by address (bounded: the
    // evaluator is linear in the model, and slow under the sanitizer).
    let mut ends: Vec<String> = model.pods.keys().take(2).map(|(ns, name)| format!("{ns}/{name}")).collect();
    ends.extend(
        model.host_endpoints.values().flat_map(|h| h.spec.expected_ips.first()).take(1).map(|ip| ip.to_string()),
    );
    ends.push("10.0.0.1".into());
    for (i, src) in ends.iter().enumerate() {
        for dst in &ends {
            let line = format!(r#"{{"src": {src:?}, "dst": {dst:?}, "protocol": "TCP", "dst_port": 80}}"#);
            black_box(ev.answer_line(&line));
        }
        let dst = &ends[(i + 1) % ends.len()];
        let line = format!(r#"{{"src": {src:?}, "dst": {dst:?}, "protocol": "ICMP", "icmp_type": 8}}"#);
        black_box(ev.answer_line(&line));
    }
});
