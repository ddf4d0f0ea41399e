//! The Calico selector language, matching libcalico-go (`lib/selector/{tokenizer,parser}`).
//!
//! ```text
//! role == "db" && !has(canary) || tier in {"a", "b"} && name starts with 'web-'
//! ```
//!
//! Operators: `==`, `!=`, `in {..}`, `not in {..}` (also `notin`), `contains`, `starts with` /
//! `startswith`, `ends with` / `endswith`, `has(k)`, `all()`, `global()`, `!`, `&&`, `||` and
//! parentheses. `&&` binds tighter than `||`; `!` applies to one operation or parenthesised
//! group. Values are quoted with `"` or `'`, without escapes. An empty (or blank) selector is
//! `all()`. The lexical rules (blanks, label characters, 512-byte keys, where operator words are
//! recognised) are in [`tokenizer`].
//!
//! ```
//! use std::collections::BTreeMap;
//! use moat_control::selector::Selector;
//!
//! let s: Selector = "role == 'db' && !has(canary)".parse()?;
//! assert!(s.evaluate(&BTreeMap::from([("role", "db")])));
//! assert!(!s.evaluate(&BTreeMap::from([("role", "db"), ("canary", "")])));
//! assert_eq!(s.to_string(), r#"(role == "db" && !has(canary))"#);
//! # Ok::<(), moat_control::selector::SelectorError>(())
//! ```
//!
//! Semantics (upstream `ast.go`): an absent label never satisfies `==`, `in`, `contains`,
//! `starts with`, `ends with` or `has`, and always satisfies `!=` and `not in`; a present label
//! with an empty value is present.
//!
//! # `global()`
//!
//! `global()` evaluates to true, like `all()`; what it changes is *scope*. Calico uses it in a
//! rule's `namespaceSelector`: there `all()` means "endpoints in any namespace" and `global()`
//! means "endpoints in no namespace" — host endpoints and GlobalNetworkSets — which lets a
//! namespaced NetworkPolicy refer to them. Upstream implements this when converting rules
//! (`updateprocessors/rules.go`): the namespace selector's keys get the `pcns.` prefix, then
//! `all()` becomes `has(projectcalico.org/namespace)` and `global()` becomes
//! `!has(projectcalico.org/namespace)`. [`Selector::namespace_selector_to_endpoint_selector`]
//! performs that rewrite on the tree. In any other position `global()` is simply true.
//!
//! # Canonical form and identity
//!
//! [`Selector`]'s `Display` is upstream's `String()`, byte for byte: every `&&`/`||` group is
//! parenthesised (also at top level), `!` is glued to its operand, values use `"` unless they
//! contain `"`, sets are sorted and de-duplicated. [`Selector::unique_id`] hashes that string as
//! upstream's `UniqueID()` does. Equality, ordering and hashing of [`Selector`] are structural,
//! which coincides with equality of canonical strings.
//!
//! # Deviations from upstream (deliberate)
//!
//! * Parentheses nest at most [`MAX_NESTING`] deep (upstream: unbounded), so hostile input cannot
//!   overflow the stack of the recursive parser and tree walks.
//! * [`Selector::namespace_selector_to_endpoint_selector`] rewrites the tree, where upstream
//!   replaces the text `all()`/`global()` in the printed selector — also inside quoted values.
//!   They differ only for values containing those texts.
//! * Error messages are ours (with a byte position); upstream's carry no position.

mod ast;
mod parser;
pub mod tokenizer;

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::str::FromStr;

pub use ast::{Expr, LabelRestriction};
pub use parser::MAX_NESTING;

use tokenizer::is_valid_label_key;

/// Prefix Calico gives namespace labels when it copies them onto endpoints (`pcns.`).
pub const NAMESPACE_LABEL_PREFIX: &str = "pcns.";
/// Prefix Calico gives service-account labels when it copies them onto endpoints (`pcsa.`).
pub const SERVICE_ACCOUNT_LABEL_PREFIX: &str = "pcsa.";
/// Label carrying a namespaced endpoint's namespace name (`apiv3.LabelNamespace`).
pub const NAMESPACE_LABEL: &str = "projectcalico.org/namespace";
/// Label carrying a workload's service-account name (`apiv3.LabelServiceAccount`).
pub const SERVICE_ACCOUNT_LABEL: &str = "projectcalico.org/serviceaccount";

/// Deepest tree [`Selector::from_expr`] accepts. Everything the parser accepts fits: each level
/// of parentheses adds at most three nodes (`||`, `&&`, `!`).
pub const MAX_EXPR_DEPTH: usize = 3 * (MAX_NESTING + 1) + 2;

/// A set of labels a selector can be evaluated against.
///
/// Implemented for maps and pair lists; a layered view (endpoint labels over namespace labels,
/// say) implements it by trying each layer. `get` must not allocate for evaluation to be
/// allocation-free.
pub trait Labels {
    /// The value of label `key`, `None` when absent.
    fn get(&self, key: &str) -> Option<&str>;
}

impl<L: Labels + ?Sized> Labels for &L {
    fn get(&self, key: &str) -> Option<&str> {
        (**self).get(key)
    }
}

impl<K: Borrow<str> + Ord, V: AsRef<str>> Labels for BTreeMap<K, V> {
    fn get(&self, key: &str) -> Option<&str> {
        BTreeMap::get(self, key).map(AsRef::as_ref)
    }
}

impl<K: Borrow<str> + Hash + Eq, V: AsRef<str>, S: BuildHasher> Labels for HashMap<K, V, S> {
    fn get(&self, key: &str) -> Option<&str> {
        HashMap::get(self, key).map(AsRef::as_ref)
    }
}

/// Linear search; for small literal label sets (tests, examples).
impl<K: AsRef<str>, V: AsRef<str>> Labels for [(K, V)] {
    fn get(&self, key: &str) -> Option<&str> {
        self.iter().find(|(k, _)| k.as_ref() == key).map(|(_, v)| v.as_ref())
    }
}

impl<K: AsRef<str>, V: AsRef<str>, const N: usize> Labels for [(K, V); N] {
    fn get(&self, key: &str) -> Option<&str> {
        Labels::get(self.as_slice(), key)
    }
}

impl<K: AsRef<str>, V: AsRef<str>> Labels for Vec<(K, V)> {
    fn get(&self, key: &str) -> Option<&str> {
        Labels::get(self.as_slice(), key)
    }
}

/// A selector that failed to parse (or a tree that is not a valid selector).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid selector: {message} at position {position} in {}", excerpt(.input, *.position))]
pub struct SelectorError {
    /// Byte offset in `input` where the problem was found.
    pub position: usize,
    /// What is wrong.
    pub message: String,
    /// The selector text (for errors from [`Selector::from_expr`], its canonical printing).
    pub input: String,
}

impl SelectorError {
    pub(crate) fn new(input: &str, position: usize, message: String) -> Self {
        SelectorError { position, message, input: input.to_owned() }
    }

    /// Two lines: the input, and a caret under the offending character.
    pub fn caret(&self) -> String {
        let column = self.input.get(..self.position).map_or(self.position, |s| s.chars().count());
        format!("{}\n{}^", self.input, " ".repeat(column))
    }
}

/// The input quoted, shortened around `position` when long.
fn excerpt(input: &str, position: usize) -> String {
    const CONTEXT: usize = 60;
    if input.len() <= 2 * CONTEXT {
        return format!("{input:?}");
    }
    let floor = |mut i: usize| {
        while !input.is_char_boundary(i) {
            i -= 1;
        }
        i
    };
    let start = floor(position.saturating_sub(CONTEXT).min(input.len()));
    let end = floor((position + CONTEXT).min(input.len()));
    let head = if start > 0 { "…" } else { "" };
    let tail = if end < input.len() { "…" } else { "" };
    format!("{head}{:?}{tail}", input.get(start..end).unwrap_or_default())
}

/// A parsed Calico selector. See the [module documentation](self).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Selector {
    root: Expr,
}

impl Selector {
    /// Parses `input` (empty or blank = `all()`).
    pub fn parse(input: &str) -> Result<Selector, SelectorError> {
        parser::parse(input).map(|root| Selector { root })
    }

    /// The selector that matches everything (`all()`).
    pub fn all() -> Selector {
        Selector { root: Expr::All }
    }

    /// Builds a selector from a tree, checking what the parser would guarantee: valid label keys,
    /// values that can be quoted (not both `'` and `"`), non-empty `&&`/`||` groups and depth at
    /// most [`MAX_EXPR_DEPTH`]. Normalises as the parser does: sets are sorted and de-duplicated,
    /// a group of one operand is replaced by that operand.
    pub fn from_expr(root: Expr) -> Result<Selector, SelectorError> {
        let invalid = |message: String| SelectorError { position: 0, message, input: String::new() };
        let depth = root.depth();
        if depth > MAX_EXPR_DEPTH {
            return Err(invalid(format!("expression nested {depth} deep, at most {MAX_EXPR_DEPTH}")));
        }
        let root = root.map(&mut |e| match e {
            Expr::In { key, mut values } => {
                values.sort_unstable();
                values.dedup();
                Expr::In { key, values }
            }
            Expr::NotIn { key, mut values } => {
                values.sort_unstable();
                values.dedup();
                Expr::NotIn { key, values }
            }
            Expr::And(mut operands) | Expr::Or(mut operands) if operands.len() == 1 => {
                operands.pop().unwrap_or(Expr::All)
            }
            other => other,
        });
        let mut problem = None;
        root.walk(|e| {
            if problem.is_some() {
                return;
            }
            if let Some(key) = e.key() {
                if !is_valid_label_key(key) {
                    problem = Some(format!(
                        "invalid label key {key:?}: need 1 to {} characters of [a-zA-Z0-9_./-]",
                        tokenizer::MAX_LABEL_LENGTH
                    ));
                }
            }
            let mut values = match e {
                Expr::Eq { value, .. }
                | Expr::Ne { value, .. }
                | Expr::Contains { value, .. }
                | Expr::StartsWith { value, .. }
                | Expr::EndsWith { value, .. } => std::slice::from_ref(value),
                Expr::In { values, .. } | Expr::NotIn { values, .. } => values.as_slice(),
                _ => &[],
            }
            .iter();
            if let Some(value) = values.find(|v| v.contains('"') && v.contains('\'')) {
                problem = Some(format!("value {value:?} contains both quote characters and cannot be written"));
            }
            if matches!(e, Expr::And(ops) | Expr::Or(ops) if ops.is_empty()) {
                problem = Some("empty '&&' or '||' group".to_owned());
            }
        });
        match problem {
            Some(message) => Err(SelectorError { input: root.to_string(), ..invalid(message) }),
            None => Ok(Selector { root }),
        }
    }

    /// Whether `labels` match. Never allocates.
    pub fn evaluate<L: Labels + ?Sized>(&self, labels: &L) -> bool {
        self.root.evaluate(labels)
    }

    /// Upstream's `UniqueID()`: `"s:"` + base64url (no padding) of SHA-224(`"s:"` + canonical).
    pub fn unique_id(&self) -> String {
        use base64::Engine as _;
        use sha2::Digest as _;
        let mut hasher = sha2::Sha224::new();
        hasher.update(b"s:");
        hasher.update(self.to_string().as_bytes());
        format!("s:{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(hasher.finalize()))
    }

    /// Whether this is `all()` itself (also what an empty selector parses to). Syntactic:
    /// `all() || x` is not recognised, and `global()` is not `all()` (different scope).
    pub fn is_all(&self) -> bool {
        self.root == Expr::All
    }

    /// Whether this is `global()` itself.
    pub fn is_global(&self) -> bool {
        self.root == Expr::Global
    }

    /// The syntax tree.
    pub fn expr(&self) -> &Expr {
        &self.root
    }

    /// The syntax tree, by value.
    pub fn into_expr(self) -> Expr {
        self.root
    }

    /// Every label key the selector tests, sorted, once each (allocates; for indexing, not for
    /// the per-endpoint path).
    pub fn label_keys(&self) -> impl Iterator<Item = &str> {
        let mut keys = BTreeSet::new();
        self.root.walk(|e| {
            if let Some(key) = e.key() {
                keys.insert(key);
            }
        });
        keys.into_iter()
    }

    /// Upstream's `LabelRestrictions()`: per key, what every matching label set must satisfy
    /// (presence, absence, one of a set of values). Keys without a restriction are absent.
    /// Sound but incomplete: `a == "x" || b == "y"` restricts nothing.
    pub fn label_restrictions(&self) -> BTreeMap<&str, LabelRestriction<'_>> {
        self.root.label_restrictions()
    }

    /// Upstream's `PrefixVisitor`: the same selector with `prefix` put before every label key
    /// (`k == "v"` becomes `pcns.k == "v"`). Fails if a resulting key is not a valid label key.
    pub fn with_label_prefix(&self, prefix: &str) -> Result<Selector, SelectorError> {
        let root = self.root.clone().map(&mut |mut e| {
            if let Some(key) = e.key_mut() {
                key.insert_str(0, prefix);
            }
            e
        });
        Selector::from_expr(root)
    }

    /// Turns a rule's `namespaceSelector` (over namespace labels) into a selector over endpoint
    /// labels, as Calico's rule conversion does: keys get the [`NAMESPACE_LABEL_PREFIX`],
    /// `all()` becomes `has(projectcalico.org/namespace)` (any namespaced endpoint) and
    /// `global()` becomes `!has(projectcalico.org/namespace)` (non-namespaced endpoints: host
    /// endpoints, GlobalNetworkSets).
    pub fn namespace_selector_to_endpoint_selector(&self) -> Result<Selector, SelectorError> {
        let prefixed = self.with_label_prefix(NAMESPACE_LABEL_PREFIX)?;
        let namespaced = || Expr::Has { key: NAMESPACE_LABEL.to_owned() };
        let root = prefixed.root.map(&mut |e| match e {
            Expr::All => namespaced(),
            Expr::Global => Expr::Not(Box::new(namespaced())),
            other => other,
        });
        Selector::from_expr(root)
    }
}

impl Default for Selector {
    fn default() -> Self {
        Selector::all()
    }
}

/// Canonical form, byte-identical to upstream's `String()`.
impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.root.fmt(f)
    }
}

/// `Selector("<canonical form>")`: shorter than the tree and, printing being injective, as exact.
impl fmt::Debug for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Selector").field(&format_args!("{:?}", self.to_string())).finish()
    }
}

impl FromStr for Selector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Selector::parse(s)
    }
}

impl TryFrom<&str> for Selector {
    type Error = SelectorError;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Selector::parse(s)
    }
}

/// Serialised as its canonical string.
impl serde::Serialize for Selector {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Deserialised from a string, parsed; a parse failure is a serde error carrying the message,
/// the position and the selector text.
impl<'de> serde::Deserialize<'de> for Selector {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Selector;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a Calico selector string")
            }

            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Selector, E> {
                Selector::parse(s).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

#[cfg(test)]
mod tests;
