//! Calico selector conformance: the upstream libcalico-go test tables, stored as data in
//! `../shared/conformance` (see its README). Skips, loudly, when that folder is absent.

use std::collections::BTreeMap;
use std::path::PathBuf;

use moat_control::selector::Selector;
use moat_control::selector::tokenizer::tokenize;

fn conformance_dir(test: &str) -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "!!! SKIPPING {test}: conformance data not found at {} (expected ../shared beside the checkout) !!!",
            dir.display()
        );
        None
    }
}

fn read(dir: &std::path::Path, name: &str) -> String {
    let path = dir.join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

#[test]
fn valid_selectors_evaluate_as_upstream() {
    let Some(dir) = conformance_dir("valid_selectors_evaluate_as_upstream") else { return };
    let text = read(&dir, "calico_selectors.tsv");
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("selector\tlabels\texpected"));
    let mut rows = 0;
    for (n, line) in lines.enumerate() {
        // The selector field is deliberately not trimmed: blank selectors are real cases.
        let fields: Vec<&str> = line.split('\t').collect();
        let [input, labels, expected] = fields[..] else { panic!("row {}: expected 3 fields: {line:?}", n + 2) };
        let labels: BTreeMap<String, String> = serde_json::from_str(labels).unwrap();
        let expected: bool = expected.parse().unwrap();
        let selector = Selector::parse(input).unwrap_or_else(|e| panic!("row {}: {input:?} must parse: {e}", n + 2));
        assert_eq!(selector.evaluate(&labels), expected, "row {}: {input:?} on {labels:?}", n + 2);
        let canonical = selector.to_string();
        let reparsed =
            Selector::parse(&canonical).unwrap_or_else(|e| panic!("canonical {canonical:?} must parse: {e}"));
        assert_eq!(reparsed.evaluate(&labels), expected, "row {}: canonical {canonical:?} on {labels:?}", n + 2);
        assert_eq!(selector.unique_id(), selector.clone().unique_id());
        rows += 1;
    }
    eprintln!("calico_selectors.tsv: {rows} rows passed");
    assert_eq!(rows, 98, "README promises 98 rows");
}

#[test]
fn invalid_selectors_are_rejected() {
    let Some(dir) = conformance_dir("invalid_selectors_are_rejected") else { return };
    let text = read(&dir, "calico_selectors_invalid.txt");
    let mut count = 0;
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let input: String = serde_json::from_str(line).unwrap();
        let err = Selector::parse(&input).err().unwrap_or_else(|| panic!("{input:?} must be rejected"));
        assert!(err.position <= input.len(), "{input:?}: position {} out of range", err.position);
        count += 1;
    }
    eprintln!("calico_selectors_invalid.txt: {count} selectors rejected");
    assert_eq!(count, 26, "README promises 26 invalid selectors");
}

#[test]
fn selector_canonical_forms_and_unique_ids_match_upstream() {
    let Some(dir) = conformance_dir("selector_canonical_forms_and_unique_ids_match_upstream") else { return };
    let text = read(&dir, "calico_selectors_canonical.tsv");
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("input\tcanonical\tunique_id"));
    let (mut count, mut ids) = (0, 0);
    for line in lines {
        let fields: Vec<&str> = line.split('\t').collect();
        let [input, canonical, unique_id] = fields[..] else { panic!("expected 3 fields: {line:?}") };
        let selector = Selector::parse(input).unwrap();
        assert_eq!(selector.to_string(), canonical, "{input:?}");
        let round_tripped = Selector::parse(canonical).unwrap();
        assert_eq!(round_tripped.to_string(), canonical);
        assert_eq!(round_tripped.unique_id(), selector.unique_id());
        if !unique_id.is_empty() {
            assert_eq!(selector.unique_id(), unique_id, "{input:?}");
            ids += 1;
        }
        count += 1;
    }
    eprintln!("calico_selectors_canonical.tsv: {count} canonical forms ({ids} unique ids) passed");
    assert_eq!(count, 17, "README promises 17 canonicalisation cases");
}

#[test]
fn selector_tokenizer_matches_upstream() {
    let Some(dir) = conformance_dir("selector_tokenizer_matches_upstream") else { return };
    let doc: serde_json::Value = serde_json::from_str(&read(&dir, "calico_selector_tokenizer.json")).unwrap();
    let cases = doc["cases"].as_array().unwrap();
    let (mut ok, mut failing) = (0, 0);
    for case in cases {
        let input = case["input"].as_str().unwrap();
        match case["tokens"].as_array() {
            None => {
                assert!(tokenize(input).is_err(), "{input:?} must fail to tokenize");
                failing += 1;
            }
            Some(expected) => {
                let tokens = tokenize(input).unwrap_or_else(|e| panic!("{input:?} must tokenize: {e}"));
                let got: Vec<(&str, &str)> = tokens.iter().map(|t| (t.kind.upstream_name(), t.value)).collect();
                let want: Vec<(&str, &str)> = expected
                    .iter()
                    .map(|t| (t["kind"].as_str().unwrap(), t.get("value").and_then(|v| v.as_str()).unwrap_or("")))
                    .collect();
                assert_eq!(got, want, "{input:?}");
                ok += 1;
            }
        }
    }
    eprintln!("calico_selector_tokenizer.json: {} cases passed ({ok} tokenize, {failing} must fail)", ok + failing);
    assert_eq!((ok + failing, failing), (49, 16), "README promises 49 cases, 16 must-fail");
}
