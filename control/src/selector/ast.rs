//! Selector syntax tree: evaluation, canonical printing and label restrictions
//! (a port of libcalico-go `lib/selector/parser/ast.go`).

use std::collections::BTreeMap;
use std::fmt;

use super::Labels;

/// A selector expression, as libcalico-go's parser builds it.
///
/// Shapes produced by [`Selector::parse`](super::Selector::parse) (and guaranteed by
/// [`Selector::from_expr`](super::Selector::from_expr)):
/// * label keys are valid (1..=512 characters of `[a-zA-Z0-9_./-]`);
/// * no value contains both `'` and `"` (so it can always be quoted);
/// * `In`/`NotIn` sets are sorted by bytes and free of duplicates (Calico's `StringSet`);
/// * `And`/`Or` have at least two operands (`a && b && c` is one `And` of three).
///
/// `Not(Not(x))` *can* occur: `!(!has(a))` parses to it (runs of `!` without parentheses collapse,
/// `!!has(a)` is `has(a)`). It prints as `!!has(a)`, which re-parses to `has(a)`; the verdict is
/// the same, the canonical string and unique id are not. This is upstream behaviour, kept.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Expr {
    /// `all()`: matches everything. Also what an empty selector means.
    All,
    /// `global()`: matches everything when evaluated; its meaning is its *scope*. In a rule's
    /// `namespaceSelector` it selects the non-namespaced endpoints (host endpoints,
    /// GlobalNetworkSets) instead of namespaces, see
    /// [`Selector::namespace_selector_to_endpoint_selector`](super::Selector::namespace_selector_to_endpoint_selector).
    Global,
    /// `has(key)`: the label is present (any value, including empty).
    Has {
        /// Label key.
        key: String,
    },
    /// `key == "value"`: present and equal.
    Eq {
        /// Label key.
        key: String,
        /// Value compared with.
        value: String,
    },
    /// `key != "value"`: absent, or present with another value.
    Ne {
        /// Label key.
        key: String,
        /// Value compared with.
        value: String,
    },
    /// `key contains "value"`: present and containing the value as a substring.
    Contains {
        /// Label key.
        key: String,
        /// Substring looked for.
        value: String,
    },
    /// `key starts with "value"`: present and starting with the value.
    StartsWith {
        /// Label key.
        key: String,
        /// Prefix looked for.
        value: String,
    },
    /// `key ends with "value"`: present and ending with the value.
    EndsWith {
        /// Label key.
        key: String,
        /// Suffix looked for.
        value: String,
    },
    /// `key in {"a", "b"}`: present with one of the values.
    In {
        /// Label key.
        key: String,
        /// Sorted, de-duplicated values.
        values: Vec<String>,
    },
    /// `key not in {"a", "b"}`: absent, or present with none of the values.
    NotIn {
        /// Label key.
        key: String,
        /// Sorted, de-duplicated values.
        values: Vec<String>,
    },
    /// `!expr`
    Not(Box<Expr>),
    /// `(a && b && ...)`
    And(Vec<Expr>),
    /// `(a || b || ...)`
    Or(Vec<Expr>),
}

/// `Some(key)` for the leaves that test a label, `None` for `all()`, `global()` and the boolean
/// operators: the one list of such variants behind [`Expr::key`] and `Expr::key_mut`, which
/// differ only in how they borrow.
macro_rules! leaf_key {
    ($expr:expr) => {
        match $expr {
            Expr::Has { key }
            | Expr::Eq { key, .. }
            | Expr::Ne { key, .. }
            | Expr::Contains { key, .. }
            | Expr::StartsWith { key, .. }
            | Expr::EndsWith { key, .. }
            | Expr::In { key, .. }
            | Expr::NotIn { key, .. } => Some(key),
            Expr::All | Expr::Global | Expr::Not(_) | Expr::And(_) | Expr::Or(_) => None,
        }
    };
}

impl Expr {
    /// Evaluates the expression against `labels`. Never allocates.
    pub fn evaluate<L: Labels + ?Sized>(&self, labels: &L) -> bool {
        match self {
            Expr::All | Expr::Global => true,
            Expr::Has { key } => labels.get(key).is_some(),
            Expr::Eq { key, value } => labels.get(key) == Some(value.as_str()),
            Expr::Ne { key, value } => labels.get(key) != Some(value.as_str()),
            Expr::Contains { key, value } => labels.get(key).is_some_and(|v| v.contains(value.as_str())),
            Expr::StartsWith { key, value } => labels.get(key).is_some_and(|v| v.starts_with(value.as_str())),
            Expr::EndsWith { key, value } => labels.get(key).is_some_and(|v| v.ends_with(value.as_str())),
            Expr::In { key, values } => labels.get(key).is_some_and(|v| set_contains(values, v)),
            Expr::NotIn { key, values } => !labels.get(key).is_some_and(|v| set_contains(values, v)),
            Expr::Not(operand) => !operand.evaluate(labels),
            Expr::And(operands) => operands.iter().all(|e| e.evaluate(labels)),
            Expr::Or(operands) => operands.iter().any(|e| e.evaluate(labels)),
        }
    }

    /// The label key a leaf tests, `None` for `all()`, `global()` and the boolean operators.
    pub fn key(&self) -> Option<&str> {
        leaf_key!(self).map(String::as_str)
    }

    /// Direct operands of `Not`/`And`/`Or` (empty for leaves).
    pub fn children(&self) -> &[Expr] {
        match self {
            Expr::Not(operand) => std::slice::from_ref(operand),
            Expr::And(operands) | Expr::Or(operands) => operands,
            _ => &[],
        }
    }

    /// Calls `f` on every node, parents before children, left to right (upstream's
    /// `AcceptVisitor` order). Uses an explicit stack, so any depth is safe.
    pub fn walk<'a>(&'a self, mut f: impl FnMut(&'a Expr)) {
        let mut stack = vec![self];
        while let Some(e) = stack.pop() {
            f(e);
            stack.extend(e.children().iter().rev());
        }
    }

    /// Rewrites every node bottom-up with `f` (used for prefixing and scope rewriting).
    pub(crate) fn map(self, f: &mut impl FnMut(Expr) -> Expr) -> Expr {
        let mapped = match self {
            Expr::Not(operand) => Expr::Not(Box::new(operand.map(f))),
            Expr::And(operands) => Expr::And(operands.into_iter().map(|e| e.map(f)).collect()),
            Expr::Or(operands) => Expr::Or(operands.into_iter().map(|e| e.map(f)).collect()),
            leaf => leaf,
        };
        f(mapped)
    }

    pub(crate) fn key_mut(&mut self) -> Option<&mut String> {
        leaf_key!(self)
    }

    /// Upstream's `LabelRestrictions()`: what any matching label set must satisfy, per key.
    pub fn label_restrictions(&self) -> BTreeMap<&str, LabelRestriction<'_>> {
        let mut out = BTreeMap::new();
        match self {
            Expr::Eq { key, value } => {
                out.insert(key.as_str(), LabelRestriction::present(Some(vec![value.as_str()])));
            }
            Expr::In { key, values } => {
                let values = values.iter().map(String::as_str).collect();
                out.insert(key.as_str(), LabelRestriction::present(Some(values)));
            }
            Expr::Has { key }
            | Expr::Contains { key, .. }
            | Expr::StartsWith { key, .. }
            | Expr::EndsWith { key, .. } => {
                out.insert(key.as_str(), LabelRestriction::present(None));
            }
            Expr::Not(operand) => {
                // Only `!has(k)` inverts into a restriction: `!(k == "v")` does not require the
                // label to be absent.
                if let Expr::Has { key } = operand.as_ref() {
                    out.insert(key.as_str(), LabelRestriction { must_be_absent: true, ..Default::default() });
                }
            }
            Expr::And(operands) => {
                for operand in operands {
                    for (key, r) in operand.label_restrictions() {
                        let base = out.entry(key).or_default();
                        base.must_be_present |= r.must_be_present;
                        base.must_be_absent |= r.must_be_absent;
                        base.must_have_one_of_values =
                            match (base.must_have_one_of_values.take(), r.must_have_one_of_values) {
                                (None, other) | (other, None) => other,
                                (Some(a), Some(b)) => Some(a.into_iter().filter(|v| b.contains(v)).collect()),
                            };
                    }
                }
            }
            Expr::Or(operands) => {
                let mut iter = operands.iter();
                if let Some(first) = iter.next() {
                    out = first.label_restrictions();
                }
                for operand in iter {
                    let other = operand.label_restrictions();
                    out.retain(|key, r| {
                        let o = other.get(key).cloned().unwrap_or_default();
                        r.must_be_present = r.must_be_present && o.must_be_present;
                        r.must_have_one_of_values = if !r.must_be_present {
                            None
                        } else {
                            match (r.must_have_one_of_values.take(), o.must_have_one_of_values) {
                                (Some(mut a), Some(b)) => {
                                    a.extend(b);
                                    a.sort_unstable();
                                    a.dedup();
                                    Some(a)
                                }
                                // One side only needs the label present: no limit on the value.
                                _ => None,
                            }
                        };
                        r.must_be_absent = r.must_be_absent && o.must_be_absent;
                        r.must_be_present || r.must_be_absent
                    });
                }
            }
            Expr::All | Expr::Global | Expr::Ne { .. } | Expr::NotIn { .. } => {}
        }
        out
    }

    /// Depth of the tree (a leaf is 1), computed without recursion.
    pub(crate) fn depth(&self) -> usize {
        let mut max = 0;
        let mut stack = vec![(self, 1usize)];
        while let Some((e, d)) = stack.pop() {
            max = max.max(d);
            stack.extend(e.children().iter().map(|c| (c, d + 1)));
        }
        max
    }
}

fn set_contains(values: &[String], v: &str) -> bool {
    values.binary_search_by(|x| x.as_str().cmp(v)).is_ok()
}

/// What a selector requires of one label for it to match (upstream `LabelRestriction`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelRestriction<'a> {
    /// The label must be present (`has(k)`, `k == "v"`, `k contains "v"`...).
    pub must_be_present: bool,
    /// The label must be absent (`!has(k)`).
    pub must_be_absent: bool,
    /// If `Some`, the label's value must be one of these (sorted). `Some(empty)` means the
    /// selector cannot match at all (`a == "x" && a == "y"`); `None` means no value limit.
    pub must_have_one_of_values: Option<Vec<&'a str>>,
}

impl<'a> LabelRestriction<'a> {
    fn present(values: Option<Vec<&'a str>>) -> Self {
        LabelRestriction { must_be_present: true, must_be_absent: false, must_have_one_of_values: values }
    }
}

/// Canonical printing, byte-identical to upstream's `String()`: `&&`/`||` groups always in
/// parentheses, `!` glued to its operand, values in `"` unless they contain `"` (then `'`),
/// set members in sorted order.
impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::All => f.write_str("all()"),
            Expr::Global => f.write_str("global()"),
            Expr::Has { key } => write!(f, "has({key})"),
            Expr::Eq { key, value } => write_op(f, key, " == ", value),
            Expr::Ne { key, value } => write_op(f, key, " != ", value),
            Expr::Contains { key, value } => write_op(f, key, " contains ", value),
            Expr::StartsWith { key, value } => write_op(f, key, " starts with ", value),
            Expr::EndsWith { key, value } => write_op(f, key, " ends with ", value),
            Expr::In { key, values } => write_set(f, key, " in {", values),
            Expr::NotIn { key, values } => write_set(f, key, " not in {", values),
            Expr::Not(operand) => write!(f, "!{operand}"),
            Expr::And(operands) => write_group(f, operands, " && "),
            Expr::Or(operands) => write_group(f, operands, " || "),
        }
    }
}

fn quote(value: &str) -> char {
    if value.contains('"') { '\'' } else { '"' }
}

fn write_op(f: &mut fmt::Formatter<'_>, key: &str, op: &str, value: &str) -> fmt::Result {
    let q = quote(value);
    write!(f, "{key}{op}{q}{value}{q}")
}

fn write_set(f: &mut fmt::Formatter<'_>, key: &str, op: &str, values: &[String]) -> fmt::Result {
    f.write_str(key)?;
    f.write_str(op)?;
    for (i, value) in values.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        let q = quote(value);
        write!(f, "{q}{value}{q}")?;
    }
    f.write_str("}")
}

fn write_group(f: &mut fmt::Formatter<'_>, operands: &[Expr], sep: &str) -> fmt::Result {
    f.write_str("(")?;
    for (i, operand) in operands.iter().enumerate() {
        if i > 0 {
            f.write_str(sep)?;
        }
        write!(f, "{operand}")?;
    }
    f.write_str(")")
}
