use std::collections::{BTreeMap, HashMap};

use super::*;

fn sel(s: &str) -> Selector {
    Selector::parse(s).unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
}

fn matches(s: &str, labels: &[(&str, &str)]) -> bool {
    let selector = sel(s);
    let verdict = selector.evaluate(labels);
    // The canonical form must give the same verdict.
    assert_eq!(sel(&selector.to_string()).evaluate(labels), verdict, "canonical form of {s:?} disagrees");
    verdict
}

#[test]
fn equality_and_inequality() {
    assert!(matches("a == 'b'", &[("a", "b")]));
    assert!(!matches("a == 'b'", &[("a", "c")]));
    assert!(!matches("a == 'b'", &[]));
    assert!(matches("a == ''", &[("a", "")]));
    assert!(!matches("a == ''", &[]));
    assert!(matches("a != 'b'", &[("a", "c")]));
    assert!(matches("a != 'b'", &[]));
    assert!(!matches("a != 'b'", &[("a", "b")]));
}

#[test]
fn string_operators() {
    assert!(matches("a contains 'ell'", &[("a", "hello")]));
    assert!(matches("a contains ''", &[("a", "")]));
    assert!(!matches("a contains ''", &[]));
    assert!(!matches("a contains 'x'", &[("a", "hello")]));
    assert!(matches("a starts with 'he'", &[("a", "hello")]));
    assert!(matches("a startswith 'he'", &[("a", "hello")]));
    assert!(!matches("a starts with 'lo'", &[("a", "hello")]));
    assert!(!matches("a starts with 'he'", &[]));
    assert!(matches("a ends with 'lo'", &[("a", "hello")]));
    assert!(matches("a endswith 'lo'", &[("a", "hello")]));
    assert!(!matches("a ends with 'he'", &[("a", "hello")]));
    assert!(!matches("a ends with 'lo'", &[("b", "hello")]));
}

#[test]
fn set_operators() {
    assert!(matches("a in {'x', 'y'}", &[("a", "y")]));
    assert!(!matches("a in {'x', 'y'}", &[("a", "z")]));
    assert!(!matches("a in {'x'}", &[]));
    assert!(!matches("a in {}", &[("a", "")]));
    assert!(matches("a not in {'x', 'y'}", &[("a", "z")]));
    assert!(matches("a not in {'x'}", &[]));
    assert!(matches("a notin {}", &[("a", "x")]));
    assert!(!matches("a not in {'x', 'y'}", &[("a", "x")]));
    // Binary search over many, unsorted-in-source values.
    let many: Vec<String> = (0..100).rev().map(|i| format!("'v{i}'")).collect();
    let s = format!("a in {{{}}}", many.join(", "));
    for i in 0..100 {
        assert!(matches(&s, &[("a", &format!("v{i}"))]));
    }
    assert!(!matches(&s, &[("a", "v100")]));
}

#[test]
fn has_all_global() {
    assert!(matches("has(a)", &[("a", "")]));
    assert!(!matches("has(a)", &[("b", "")]));
    assert!(matches("!has(a)", &[("b", "")]));
    assert!(matches("all()", &[]));
    assert!(matches("global()", &[]));
    assert!(matches("", &[("x", "y")]));
    assert!(matches(" \t ", &[]));
    assert!(!matches("!all()", &[]));
    assert!(!matches("!global()", &[]));
}

#[test]
fn boolean_operators_and_precedence() {
    let l = [("a", "1"), ("b", "2")];
    assert!(matches("a == '1' && b == '2'", &l));
    assert!(!matches("a == '1' && b == '3'", &l));
    assert!(matches("a == '0' || b == '2'", &l));
    assert!(!matches("a == '0' || b == '3'", &l));
    // && binds tighter than ||.
    assert!(matches("a == '1' || b == '3' && has(c)", &l));
    assert!(!matches("(a == '1' || b == '3') && has(c)", &l));
    // ! binds to one operation.
    assert!(matches("!has(c) && a == '1'", &l));
    assert!(!matches("!(has(c) || a == '1')", &l));
    assert!(matches("!a == '0'", &l));
    assert!(matches("!!!a == '0'", &l));
    assert!(!matches("!!a == '0'", &l));
}

#[test]
fn quoting_and_canonical_printing() {
    let cases = [
        ("a=='b'", r#"a == "b""#),
        (r#"a == 'say "hi"'"#, r#"a == 'say "hi"'"#),
        (r#"a == "it's""#, r#"a == "it's""#),
        ("a contains'x'", r#"a contains "x""#),
        ("a starts  with 'x'", r#"a starts with "x""#),
        ("a endswith 'x'", r#"a ends with "x""#),
        ("a notin {'b','a'}", r#"a not in {"a", "b"}"#),
        ("a in{}", "a in {}"),
        ("has( a )", "has(a)"),
        ("all( )", "all()"),
        ("global( )", "global()"),
        ("!has(a)", "!has(a)"),
        ("has(a) && has(b)", "(has(a) && has(b))"),
        ("has(a) || has(b) && has(c)", "(has(a) || (has(b) && has(c)))"),
        ("!(has(a) || has(b))", "!(has(a) || has(b))"),
        ("projectcalico.org/namespace == 'ns'", r#"projectcalico.org/namespace == "ns""#),
        ("pcns.kubernetes.io/metadata.name in {'x'}", r#"pcns.kubernetes.io/metadata.name in {"x"}"#),
        ("a == 'ü \\ tab\t'", "a == \"ü \\ tab\t\""),
    ];
    for (input, canonical) in cases {
        let s = sel(input);
        assert_eq!(s.to_string(), canonical, "{input:?}");
        assert_eq!(sel(canonical), s, "{canonical:?} should re-parse to the same tree");
    }
}

#[test]
fn unique_id_matches_upstream() {
    assert_eq!(sel("").unique_id(), "s:5y5I3VdRZfDU01O--xXAPx2yxCQQqMf0M6IWug");
    assert_eq!(sel("! (has( b)||! has(a ))").unique_id(), "s:Iss0uCleLYv1GSv_pNm7hAO58kE9jAx1NKyG3Q");
    assert_eq!(sel("a == 'x'").unique_id(), sel(r#"a=="x""#).unique_id());
    assert_ne!(sel("a == 'x'").unique_id(), sel("a == 'y'").unique_id());
}

#[test]
fn invalid_selectors_and_positions() {
    let cases = [
        ("b == b", 5),
        ("a ==", 4),
        ("a", 1),
        ("a b", 2),
        ("== 'a'", 0),
        ("a == 'b' c", 9),
        ("a == 'b' &&", 11),
        ("a == 'b' || || has(c)", 12),
        ("(has(a)", 7),
        ("has(a))", 6),
        ("a in {'x'", 9),
        ("a in ('x')", 5),
        ("a == 'b'\n", 8),
        ("a\u{e9} == 'b'", 1),
        ("a == 'b' && \u{e9}", 12),
        ("has(a) == 'b'", 7),
        ("all() all()", 6),
    ];
    for (input, position) in cases {
        let err = Selector::parse(input).unwrap_err();
        assert_eq!(err.position, position, "{input:?}: {err}");
        assert_eq!(err.input, input);
        assert!(input.is_char_boundary(err.position));
    }
}

#[test]
fn error_display_and_caret() {
    let err = Selector::parse("a == b").unwrap_err();
    let shown = err.to_string();
    assert!(shown.contains("position 5"), "{shown}");
    assert!(shown.contains("string literal"), "{shown}");
    assert!(shown.contains("\"a == b\""), "{shown}");
    assert_eq!(err.caret(), "a == b\n     ^");
    let err = Selector::parse("ü == b").unwrap_err();
    assert_eq!(err.caret(), "ü == b\n^");
    let long = format!("{} && %", vec!["has(a)"; 100].join(" && "));
    let shown = Selector::parse(&long).unwrap_err().to_string();
    assert!(shown.len() < 300 && shown.contains('…'), "{shown}");
}

#[test]
fn labels_implementations() {
    let s = sel("a == 'b' && !has(c)");
    let btree: BTreeMap<String, String> = [("a".to_owned(), "b".to_owned())].into();
    let hash: HashMap<String, String> = [("a".to_owned(), "b".to_owned())].into();
    let borrowed: BTreeMap<&str, &str> = [("a", "b"), ("c", "")].into();
    assert!(s.evaluate(&btree));
    assert!(s.evaluate(&hash));
    assert!(!s.evaluate(&borrowed));
    assert!(s.evaluate(&[("a", "b")]));
    assert!(s.evaluate(&vec![("a".to_owned(), "b".to_owned())]));
    let by_ref: &dyn Labels = &btree;
    assert!(s.evaluate(by_ref));
}

#[test]
fn predicates_and_accessors() {
    assert!(sel("").is_all());
    assert!(sel(" ( all() ) ").is_all());
    assert!(sel("!!all()").is_all());
    assert!(!sel("global()").is_all());
    assert!(sel("global()").is_global());
    assert!(!sel("has(a)").is_all());
    assert_eq!(Selector::default(), Selector::all());
    assert_eq!("has(a)".parse::<Selector>().unwrap(), sel("has(a)"));
    assert_eq!(Selector::try_from("has(a)").unwrap(), sel("has(a)"));
    assert_eq!(format!("{:?}", sel("a == 'x'")), r#"Selector("a == \"x\"")"#);
    let s = sel("b == 'x' && (a in {'y'} || !has(b)) && c != 'z' && all()");
    let keys: Vec<&str> = s.label_keys().collect();
    assert_eq!(keys, ["a", "b", "c"]);
}

/// Upstream `label_restriction_test.go`.
#[test]
fn label_restrictions_match_upstream() {
    type Want = &'static [(&'static str, bool, bool, Option<&'static [&'static str]>)];
    let cases: &[(&str, Want)] = &[
        ("", &[]),
        ("all()", &[]),
        ("global()", &[]),
        ("a == 'value'", &[("a", true, false, Some(&["value"]))]),
        ("has(a)", &[("a", true, false, None)]),
        ("a in {'v1','v2'}", &[("a", true, false, Some(&["v1", "v2"]))]),
        ("a not in {'v1','v2'}", &[]),
        ("a contains 'foo'", &[("a", true, false, None)]),
        ("a ends with 'foo'", &[("a", true, false, None)]),
        ("a starts with 'foo'", &[("a", true, false, None)]),
        ("a != 'value'", &[]),
        ("a == 'v1' && a == 'v1'", &[("a", true, false, Some(&["v1"]))]),
        ("a == 'v1' && a == 'v2'", &[("a", true, false, Some(&[]))]),
        ("a == 'v1' && has(a)", &[("a", true, false, Some(&["v1"]))]),
        ("a in {'v1','v2'} && a in {'v2','v3'} ", &[("a", true, false, Some(&["v2"]))]),
        ("a in {'v1','v2', 'v3'} && a in {'v2','v3'} ", &[("a", true, false, Some(&["v2", "v3"]))]),
        ("has(a) && a == 'v1'", &[("a", true, false, Some(&["v1"]))]),
        ("has(a) && !has(a)", &[("a", true, true, None)]),
        ("a == 'v1' && b == 'v2'", &[("a", true, false, Some(&["v1"])), ("b", true, false, Some(&["v2"]))]),
        ("a == 'v1' && all()", &[("a", true, false, Some(&["v1"]))]),
        ("all() && a == 'v1'", &[("a", true, false, Some(&["v1"]))]),
        ("a == 'v1' || a == 'v2'", &[("a", true, false, Some(&["v1", "v2"]))]),
        ("has(a) || a == 'v2'", &[("a", true, false, None)]),
        ("a=='v2' || has(a)", &[("a", true, false, None)]),
        ("a=='v2' || has(b)", &[]),
        ("a=='v2' || (has(b) && has(a))", &[("a", true, false, None)]),
        ("a == 'v1' || b == 'v2'", &[]),
        ("a == 'v1' || all()", &[]),
        ("all() || b == 'v2'", &[]),
        ("!(a == 'value')", &[]),
        ("!has(a)", &[("a", false, true, None)]),
        ("!!has(a)", &[("a", true, false, None)]),
    ];
    for (input, want) in cases {
        let want: BTreeMap<&str, LabelRestriction<'_>> = want
            .iter()
            .map(|&(k, present, absent, values)| {
                let r = LabelRestriction {
                    must_be_present: present,
                    must_be_absent: absent,
                    must_have_one_of_values: values.map(<[&str]>::to_vec),
                };
                (k, r)
            })
            .collect();
        assert_eq!(sel(input).label_restrictions(), want, "{input:?}");
        if !input.is_empty() {
            let wrapped = format!("all() && ({input})");
            assert_eq!(sel(&wrapped).label_restrictions(), want, "{wrapped:?}");
        }
    }
}

/// Upstream `PrefixVisitor` table (parser_test.go).
#[test]
fn label_prefix_matches_upstream_visitor() {
    let cases = [
        ("k == 'v'", r#"visited/k == "v""#),
        ("k != 'v'", r#"visited/k != "v""#),
        ("k contains 'v'", r#"visited/k contains "v""#),
        ("k starts with 'v'", r#"visited/k starts with "v""#),
        ("k ends with 'v'", r#"visited/k ends with "v""#),
        ("k == 'v' && x == 'y'", r#"(visited/k == "v" && visited/x == "y")"#),
        ("k == 'v' || has(x)", r#"(visited/k == "v" || has(visited/x))"#),
        ("!(k == 'v')", r#"!visited/k == "v""#),
        ("k in {'v'}", r#"visited/k in {"v"}"#),
        ("k not in {'v'}", r#"visited/k not in {"v"}"#),
        (
            "!(!(k == 'v' && has(t) || all()) && (a in {'b', 'c'}))",
            r#"!(!((visited/k == "v" && has(visited/t)) || all()) && visited/a in {"b", "c"})"#,
        ),
    ];
    for (input, want) in cases {
        assert_eq!(sel(input).with_label_prefix("visited/").unwrap().to_string(), want);
    }
    assert!(sel("has(a)").with_label_prefix("bad prefix ").is_err());
    assert!(sel("has(a)").with_label_prefix(&"x".repeat(512)).is_err());
}

#[test]
fn namespace_selector_scope() {
    let convert = |s: &str| sel(s).namespace_selector_to_endpoint_selector().unwrap().to_string();
    assert_eq!(convert("all()"), "has(projectcalico.org/namespace)");
    assert_eq!(convert(""), "has(projectcalico.org/namespace)");
    assert_eq!(convert("global()"), "!has(projectcalico.org/namespace)");
    assert_eq!(convert("!global()"), "!!has(projectcalico.org/namespace)");
    assert_eq!(convert("name == 'prod'"), r#"pcns.name == "prod""#);
    assert_eq!(convert("global() || env in {'a'}"), r#"(!has(projectcalico.org/namespace) || pcns.env in {"a"})"#);
    let ep = sel("global()").namespace_selector_to_endpoint_selector().unwrap();
    assert!(ep.evaluate(&[("role", "hep")]));
    assert!(!ep.evaluate(&[(NAMESPACE_LABEL, "default")]));
    // Unlike upstream's text replacement, values are left alone.
    assert_eq!(convert("x == 'all()'"), r#"pcns.x == "all()""#);
}

#[test]
fn from_expr_validates_and_normalises() {
    let key = |k: &str| k.to_owned();
    let s =
        Selector::from_expr(Expr::And(vec![Expr::In { key: key("a"), values: vec![key("y"), key("x"), key("y")] }]))
            .unwrap();
    assert_eq!(s.to_string(), r#"a in {"x", "y"}"#);
    assert_eq!(s, sel(&s.to_string()));
    assert!(Selector::from_expr(Expr::Has { key: key("") }).is_err());
    assert!(Selector::from_expr(Expr::Has { key: key("a b") }).is_err());
    assert!(Selector::from_expr(Expr::Eq { key: key("a"), value: key(r#"'""#) }).is_err());
    assert!(Selector::from_expr(Expr::Or(vec![])).is_err());
    let mut deep = Expr::All;
    for _ in 0..MAX_EXPR_DEPTH {
        deep = Expr::Not(Box::new(deep));
    }
    assert!(Selector::from_expr(deep.clone()).is_err());
    // The deepest tree the parser can build fits.
    let nested = format!("{}has(a){}", "!(has(b) && !(".repeat(MAX_NESTING / 2), "))".repeat(MAX_NESTING / 2));
    let parsed = sel(&nested);
    assert!(Selector::from_expr(parsed.clone().into_expr()).is_ok());
    // Dropping a deep tree must not overflow either (iterative check happened before).
    drop(deep);
}

#[test]
fn serde_round_trip() {
    let s = sel("a == 'x' && b in {'y'}");
    let json = serde_json::to_string(&s).unwrap();
    assert_eq!(json, r#""(a == \"x\" && b in {\"y\"})""#);
    let back: Selector = serde_json::from_str(&json).unwrap();
    assert_eq!(back, s);
    let all: Selector = serde_json::from_str(r#""""#).unwrap();
    assert!(all.is_all());
    let err = serde_json::from_str::<Selector>(r#""a == b""#).unwrap_err().to_string();
    assert!(err.contains("position 5") && err.contains("a == b"), "{err}");
    assert!(serde_json::from_str::<Selector>("42").is_err());
}
