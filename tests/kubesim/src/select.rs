//! Field selectors (`fieldSelector=status.phase!=Failed,metadata.namespace=dmz`), as far as the
//! real API server supports them for the simulated kinds.
//!
//! The real server accepts only a fixed set of field labels per resource and answers `400` for
//! any other; the simulation does the same, so a client relying on an unsupported selector fails
//! here as it would against a cluster instead of silently getting everything.

use serde_json::Value;

/// One `field=value` / `field!=value` term.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Term {
    path: Vec<String>,
    value: String,
    equal: bool,
}

/// A parsed field selector; empty selects everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FieldSelector {
    terms: Vec<Term>,
}

/// Field labels the API server supports for every resource.
const COMMON: &[&str] = &["metadata.name", "metadata.namespace"];
/// Extra field labels for pods (`pkg/registry/core/pod/strategy.go`, `PodToSelectableFields`).
const POD: &[&str] = &[
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.nominatedNodeName",
];

impl FieldSelector {
    /// Parses `text` for a resource of `kind`; the error is the API server's message.
    pub(crate) fn parse(text: &str, kind: &str) -> Result<FieldSelector, String> {
        let mut terms = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, value, equal) = if let Some((f, v)) = part.split_once("!=") {
                (f, v, false)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, v, true)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, v, true)
            } else {
                return Err(format!("invalid selector: '{text}'; can't understand '{part}'"));
            };
            let field = field.trim();
            let supported = COMMON.contains(&field) || (kind == "Pod" && POD.contains(&field));
            if !supported {
                return Err(format!("field label not supported: {field}"));
            }
            terms.push(Term {
                path: field.split('.').map(str::to_string).collect(),
                value: value.trim().to_string(),
                equal,
            });
        }
        Ok(FieldSelector { terms })
    }

    /// Whether `object` is selected. A missing field reads as the empty string, as the API
    /// server's field sets have every supported label (a pod without phase has phase "").
    pub(crate) fn matches(&self, object: &Value) -> bool {
        self.terms.iter().all(|t| {
            let mut at = object;
            for key in &t.path {
                at = at.get(key).unwrap_or(&Value::Null);
            }
            let actual = match at {
                Value::String(s) => s.clone(),
                Value::Bool(b) => b.to_string(),
                Value::Number(n) => n.to_string(),
                _ => String::new(),
            };
            (actual == t.value) == t.equal
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pod_phase_and_name_terms() {
        let sel = FieldSelector::parse("status.phase!=Succeeded,status.phase!=Failed", "Pod").unwrap();
        assert!(sel.matches(&json!({"status": {"phase": "Running"}})));
        assert!(sel.matches(&json!({"metadata": {"name": "x"}})));
        assert!(!sel.matches(&json!({"status": {"phase": "Failed"}})));
        let by_name = FieldSelector::parse("metadata.name==web", "Namespace").unwrap();
        assert!(by_name.matches(&json!({"metadata": {"name": "web"}})));
        assert_eq!(FieldSelector::parse("", "Pod").unwrap(), FieldSelector::default());
    }

    #[test]
    fn unsupported_labels_are_refused_like_the_api_server() {
        assert!(FieldSelector::parse("status.phase=Running", "Namespace").unwrap_err().contains("not supported"));
        assert!(FieldSelector::parse("spec.anything=x", "Pod").is_err());
        assert!(FieldSelector::parse("justtext", "Pod").is_err());
    }
}
