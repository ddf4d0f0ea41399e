//! Small serde pieces shared by the resource types.

use crate::selector::Selector;
use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;

/// Traffic direction relative to an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Direction {
    #[serde(alias = "ingress")]
    Ingress,
    #[serde(alias = "egress")]
    Egress,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        })
    }
}

/// Render a selector parse error so a person can find the mistake: the selector, a caret under
/// the failing position, and the parser's message.
pub fn selector_error_text(text: &str, err: &crate::selector::SelectorError) -> String {
    format!(
        "invalid selector {text:?}: {} at position {}\n    {text}\n    {}^",
        err.message,
        err.position,
        " ".repeat(err.position)
    )
}

/// Parse a selector string field where empty (or absent) means "no selector" rather than `all()`.
pub fn parse_opt_selector(text: &str) -> Result<Option<Selector>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    Selector::parse(text).map(Some).map_err(|e| selector_error_text(text, &e))
}

/// `deserialize_with` for optional selector fields: `""`/missing → `None`.
pub fn opt_selector<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Selector>, D::Error> {
    let text: Option<String> = Option::deserialize(d)?;
    match text {
        None => Ok(None),
        Some(t) => parse_opt_selector(&t).map_err(serde::de::Error::custom),
    }
}
