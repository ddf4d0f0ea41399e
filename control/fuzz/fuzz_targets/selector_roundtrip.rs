//! The Calico selector parser on arbitrary text: parsing must never panic, and every selector
//! that parses must survive `parse → Display → parse`:
//!
//! * the canonical text re-parses, to the same tree — up to double negations: `!(!has(a))`
//!   prints as `!!has(a)` (byte for byte what Calico prints), which Calico's own parser reads as
//!   `has(a)` (see `Expr`'s documentation), so trees are compared with `!!x` collapsed to `x`;
//! * printing is a fixpoint from the second round on;
//! * both trees give the same verdict on label sets made from the selector's own keys and values.
//!
//! The other tree operations (unique id, label restrictions, the namespace-selector rewrite,
//! prefixing) run too: none may panic, whatever they return.
#![no_main]

use libfuzzer_sys::fuzz_target;
use moat_control::selector::{Expr, Selector};
use std::collections::BTreeMap;
use std::hint::black_box;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(first) = Selector::parse(text) else { return };
    let printed = first.to_string();
    let second = match Selector::parse(&printed) {
        Ok(s) => s,
        Err(e) => panic!("canonical form of {text:?} does not parse: {printed:?}: {e}"),
    };
    assert_eq!(
        collapse_double_not(first.expr()),
        collapse_double_not(second.expr()),
        "{text:?} printed as {printed:?} re-parses to another selector"
    );
    let reprinted = second.to_string();
    match Selector::parse(&reprinted) {
        Ok(third) => {
            assert_eq!(third, second, "{reprinted:?} is not a fixpoint");
            assert_eq!(third.to_string(), reprinted);
        }
        Err(e) => panic!("{reprinted:?} does not parse: {e}"),
    }
    for labels in label_sets(&first) {
        assert_eq!(first.evaluate(&labels), second.evaluate(&labels), "{text:?} vs {printed:?} on {labels:?}");
    }
    black_box((first.unique_id(), first.label_restrictions(), first.is_all(), first.is_global()));
    black_box(first.label_keys().count());
    black_box(first.namespace_selector_to_endpoint_selector().map(|s| s.to_string()).ok());
    black_box(first.with_label_prefix("pcns.").map(|s| s.to_string()).ok());
});

/// The tree with every `!!x` replaced by `x` (the one reading Calico's printer and parser disagree on).
fn collapse_double_not(e: &Expr) -> Expr {
    match e {
        Expr::Not(inner) => match inner.as_ref() {
            Expr::Not(x) => collapse_double_not(x),
            other => Expr::Not(Box::new(collapse_double_not(other))),
        },
        Expr::And(ops) => Expr::And(ops.iter().map(collapse_double_not).collect()),
        Expr::Or(ops) => Expr::Or(ops.iter().map(collapse_double_not).collect()),
        leaf => leaf.clone(),
    }
}

/// Label sets that exercise the selector: none, every key with each value it is compared with,
/// and every key present with an empty value.
fn label_sets(s: &Selector) -> Vec<BTreeMap<String, String>> {
    let mut with_values = BTreeMap::new();
    let mut empty_values = BTreeMap::new();
    s.expr().walk(|e| {
        let value = match e {
            Expr::Eq { value, .. }
            | Expr::Ne { value, .. }
            | Expr::Contains { value, .. }
            | Expr::StartsWith { value, .. }
            | Expr::EndsWith { value, .. } => Some(value.as_str()),
            Expr::In { values, .. } | Expr::NotIn { values, .. } => values.first().map(String::as_str),
            _ => None,
        };
        if let Some(key) = e.key() {
            with_values.entry(key.to_string()).or_insert_with(|| value.unwrap_or_default().to_string());
            empty_values.insert(key.to_string(), String::new());
        }
    });
    vec![BTreeMap::new(), with_values, empty_values]
}
