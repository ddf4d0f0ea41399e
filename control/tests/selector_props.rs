//! Property tests for the selector language: canonical printing round-trips, evaluation is
//! preserved by canonicalisation, and no input panics the parser.

// Helpers outside `#[test]` functions: a panic here is a test failure, as in the tests.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeMap;

use moat_control::selector::tokenizer::{TokenKind, tokenize};
use moat_control::selector::{Expr, Selector};
use proptest::prelude::*;

const KEYS: &[&str] = &["a", "b", "app.kubernetes.io/name", "pcns.env", "projectcalico.org/namespace", "x-1_y"];
const VALUES: &[&str] = &["", "v", "w", "prod", "it's", "say \"hi\"", "ü"];

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(KEYS).prop_map(str::to_owned),
        1 => "[a-zA-Z0-9_./-]{1,20}",
    ]
}

/// Values from a small pool (so labels hit them) or random text that is quotable (not both
/// quote characters).
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(VALUES).prop_map(str::to_owned),
        1 => "[a-z'\" \t{}(),!&|=]{0,8}".prop_filter("quotable", |v| !(v.contains('"') && v.contains('\''))),
    ]
}

fn set() -> impl Strategy<Value = Vec<String>> {
    prop::collection::btree_set(value(), 0..4).prop_map(|s| s.into_iter().collect())
}

fn leaf() -> impl Strategy<Value = Expr> {
    prop_oneof![
        Just(Expr::All),
        Just(Expr::Global),
        key().prop_map(|key| Expr::Has { key }),
        (key(), value()).prop_map(|(key, value)| Expr::Eq { key, value }),
        (key(), value()).prop_map(|(key, value)| Expr::Ne { key, value }),
        (key(), value()).prop_map(|(key, value)| Expr::Contains { key, value }),
        (key(), value()).prop_map(|(key, value)| Expr::StartsWith { key, value }),
        (key(), value()).prop_map(|(key, value)| Expr::EndsWith { key, value }),
        (key(), set()).prop_map(|(key, values)| Expr::In { key, values }),
        (key(), set()).prop_map(|(key, values)| Expr::NotIn { key, values }),
    ]
}

/// Trees in the shape the parser produces from canonical text: groups of two or more, and no
/// `!` directly on a `!` (`!!x` re-parses as `x`, upstream too).
fn expr() -> impl Strategy<Value = Expr> {
    leaf().prop_recursive(5, 48, 4, |inner| {
        prop_oneof![
            inner.clone().prop_map(|e| match e {
                Expr::Not(operand) => *operand,
                other => Expr::Not(Box::new(other)),
            }),
            prop::collection::vec(inner.clone(), 2..5).prop_map(Expr::And),
            prop::collection::vec(inner, 2..5).prop_map(Expr::Or),
        ]
    })
}

fn labels() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map(prop::sample::select(KEYS).prop_map(str::to_owned), value(), 0..5)
}

/// Text made of selector fragments, so that random inputs often get deep into the parser.
fn selectorish() -> impl Strategy<Value = String> {
    const FRAGMENTS: &[&str] = &[
        "a",
        "pcns.b",
        "==",
        "!=",
        "'x'",
        "\"y\"",
        "''",
        "in",
        "not",
        "not in",
        "notin",
        "{",
        "}",
        ",",
        "(",
        ")",
        "!",
        "&&",
        "||",
        "&",
        "|",
        "=",
        "has(",
        "has(a)",
        "all()",
        "all(",
        "global()",
        "contains",
        "starts",
        "with",
        "ends with",
        "startswith",
        " ",
        "\t",
        "\n",
        "%",
        "'",
        "\"",
        "ü",
    ];
    prop::collection::vec((prop::sample::select(FRAGMENTS), prop::bool::ANY), 0..24).prop_map(|parts| {
        parts.into_iter().map(|(f, space)| if space { format!("{f} ") } else { f.to_owned() }).collect()
    })
}

/// Tiny deterministic choice source, so one `u64` from proptest drives many spelling choices.
struct Choices(u64);

impl Choices {
    fn pick(&mut self, n: usize) -> usize {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let r = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (r >> 33) as usize % n
    }

    fn one<'a>(&mut self, options: &[&'a str]) -> &'a str {
        options[self.pick(options.len())]
    }
}

/// Writes canonical selector text again with every spelling upstream accepts for the same tree:
/// random blanks between tokens, either quote when the value allows, `startswith`/`notin`,
/// blanks inside `has( )`/`all( )`, and optionally redundant outer parentheses or `!!`.
fn respell(canonical: &str, seed: u64) -> String {
    let mut c = Choices(seed | 1);
    let tokens = tokenize(canonical).expect("canonical text tokenizes");
    let mut out = String::new();
    let mut prev = None;
    for t in tokens {
        let word_operator = matches!(
            t.kind,
            TokenKind::In | TokenKind::NotIn | TokenKind::Contains | TokenKind::StartsWith | TokenKind::EndsWith
        );
        let blank = if prev == Some(TokenKind::Label) && word_operator {
            c.one(&[" ", "\t", "  "])
        } else {
            c.one(&["", "", " ", "\t"])
        };
        out.push_str(blank);
        let text = match t.kind {
            TokenKind::Label => t.value.to_owned(),
            TokenKind::StringLiteral => {
                let q = if t.value.contains('"') {
                    '\''
                } else if t.value.contains('\'') {
                    '"'
                } else {
                    ['"', '\''][c.pick(2)]
                };
                format!("{q}{}{q}", t.value)
            }
            TokenKind::Has => format!("has({}{}{})", c.one(&["", " ", "\t"]), t.value, c.one(&["", " "])),
            TokenKind::All => c.one(&["all()", "all( )", "all(\t)"]).to_owned(),
            TokenKind::Global => c.one(&["global()", "global( )"]).to_owned(),
            TokenKind::NotIn => c.one(&["not in", "notin", "not \t in"]).to_owned(),
            TokenKind::StartsWith => c.one(&["starts with", "startswith", "starts  with"]).to_owned(),
            TokenKind::EndsWith => c.one(&["ends with", "endswith", "ends\twith"]).to_owned(),
            TokenKind::In => "in".to_owned(),
            TokenKind::Contains => "contains".to_owned(),
            TokenKind::Eq => "==".to_owned(),
            TokenKind::Ne => "!=".to_owned(),
            TokenKind::Not => "!".to_owned(),
            TokenKind::And => "&&".to_owned(),
            TokenKind::Or => "||".to_owned(),
            TokenKind::LParen => "(".to_owned(),
            TokenKind::RParen => ")".to_owned(),
            TokenKind::LBrace => "{".to_owned(),
            TokenKind::RBrace => "}".to_owned(),
            TokenKind::Comma => ",".to_owned(),
            TokenKind::Eof => String::new(),
        };
        out.push_str(&text);
        prev = Some(t.kind);
    }
    match c.pick(4) {
        0 => format!("({out})"),
        1 => format!("!!{out}"),
        2 => format!("! !({out})"),
        _ => out,
    }
}

/// A small random edit of `text` at character boundaries: delete, duplicate or insert.
fn mutate(text: &str, seed: u64) -> String {
    const INSERTS: &[&str] =
        &["(", ")", "!", "'", "\"", "{", "}", ",", "&&", "||", "&", "=", " in ", "a", "ü", "\n", "%"];
    let mut c = Choices(seed | 1);
    let bounds: Vec<usize> = text.char_indices().map(|(i, _)| i).chain([text.len()]).collect();
    let i = bounds[c.pick(bounds.len())];
    let j = bounds[c.pick(bounds.len())];
    let (lo, hi) = (i.min(j), i.max(j));
    match c.pick(3) {
        0 => format!("{}{}", &text[..lo], &text[hi..]),
        1 => format!("{}{}", &text[..hi], &text[lo..]),
        _ => format!("{}{}{}", &text[..lo], c.one(INSERTS), &text[lo..]),
    }
}

/// Whatever parses: canonical text re-parses with the same verdicts, and one more round is a
/// fixpoint of both tree and text.
fn check_canonicalisation(input: &str, labels: &[BTreeMap<String, String>]) -> Result<(), TestCaseError> {
    let Ok(first) = Selector::parse(input) else { return Ok(()) };
    let canonical = first.to_string();
    let second = Selector::parse(&canonical).map_err(|e| TestCaseError::fail(format!("{canonical:?}: {e}")))?;
    for l in labels {
        prop_assert_eq!(first.evaluate(l), second.evaluate(l), "{:?} vs {:?} on {:?}", input, canonical, l);
    }
    let third = Selector::parse(&second.to_string()).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&third, &second);
    prop_assert_eq!(third.unique_id(), second.unique_id());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn selector_canonical_text_reparses_to_the_same_tree(e in expr(), ls in prop::collection::vec(labels(), 1..8)) {
        let original = Selector::from_expr(e.clone()).map_err(|err| TestCaseError::fail(err.to_string()))?;
        prop_assert_eq!(original.expr(), &e, "generator produced a non-normal tree");
        let text = original.to_string();
        let reparsed = Selector::parse(&text).map_err(|err| TestCaseError::fail(format!("{text:?}: {err}")))?;
        prop_assert_eq!(&reparsed, &original, "{}", text);
        prop_assert_eq!(reparsed.to_string(), text);
        for l in &ls {
            prop_assert_eq!(reparsed.evaluate(l), original.evaluate(l));
        }
        // Serde goes through the same text.
        let json = serde_json::to_string(&original).map_err(|err| TestCaseError::fail(err.to_string()))?;
        let back: Selector = serde_json::from_str(&json).map_err(|err| TestCaseError::fail(err.to_string()))?;
        prop_assert_eq!(back, original);
    }

    #[test]
    fn selector_evaluation_follows_the_boolean_structure(e in expr(), l in labels()) {
        let s = Selector::from_expr(e).map_err(|err| TestCaseError::fail(err.to_string()))?;
        let negated = Selector::from_expr(Expr::Not(Box::new(s.expr().clone()))).map_err(|err| TestCaseError::fail(err.to_string()))?;
        prop_assert_eq!(negated.evaluate(&l), !s.evaluate(&l));
    }

    #[test]
    fn selector_every_accepted_spelling_parses_to_the_same_tree(e in expr(), seed in any::<u64>()) {
        let original = Selector::from_expr(e).map_err(|err| TestCaseError::fail(err.to_string()))?;
        let text = respell(&original.to_string(), seed);
        let parsed = Selector::parse(&text).map_err(|err| TestCaseError::fail(format!("{text:?}: {err}")))?;
        prop_assert_eq!(parsed, original, "{:?}", text);
    }

    #[test]
    fn mutated_selectors_never_panic(e in expr(), seed in any::<u64>(), ls in prop::collection::vec(labels(), 1..4)) {
        let original = Selector::from_expr(e).map_err(|err| TestCaseError::fail(err.to_string()))?;
        let text = mutate(&respell(&original.to_string(), seed), seed.rotate_left(17));
        if let Err(err) = Selector::parse(&text) {
            prop_assert!(err.position <= text.len() && text.is_char_boundary(err.position), "{:?}: {}", text, err);
        }
        check_canonicalisation(&text, &ls)?;
    }

    #[test]
    fn selector_arbitrary_text_never_panics(input in any::<String>(), ls in prop::collection::vec(labels(), 1..4)) {
        check_canonicalisation(&input, &ls)?;
    }

    #[test]
    fn selectorish_text_never_panics(input in selectorish(), ls in prop::collection::vec(labels(), 1..4)) {
        if let Err(e) = Selector::parse(&input) {
            prop_assert!(e.position <= input.len() && input.is_char_boundary(e.position), "{:?}: {}", input, e);
        }
        check_canonicalisation(&input, &ls)?;
    }
}
