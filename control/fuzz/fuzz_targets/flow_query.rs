//! The `moat policy eval` input parser on arbitrary text: every line of a flows file gets an
//! answer (a verdict or an `{"error": …}` line that is valid JSON), and `explain` never panics,
//! against the example cluster (pods, namespaces, tiers, sets, IP pools).
#![no_main]

use libfuzzer_sys::fuzz_target;
use moat_control::Evaluator;
use moat_control::evaluate::FlowQuery;
use moat_control::manifest::load_str;
use std::hint::black_box;
use std::path::Path;
use std::sync::OnceLock;

static CLUSTER: &str = include_str!("../../examples/policy/cluster.yaml");

fn evaluator() -> &'static Evaluator {
    static EV: OnceLock<Evaluator> = OnceLock::new();
    EV.get_or_init(|| Evaluator::new(&load_str(CLUSTER, Path::new("cluster.yaml")).to_model()))
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let ev = evaluator();
    for line in text.lines() {
        match ev.answer_line(line) {
            None => assert!(line.trim().is_empty()),
            Some(answer) => {
                let v: serde_json::Value = serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{answer}: {e}"));
                assert!(v.get("verdict").is_some() || v.get("error").is_some(), "{answer}");
            }
        }
        if let Ok(q) = serde_json::from_str::<FlowQuery>(line) {
            black_box(ev.explain(&q).ok());
        }
    }
});
