//! Recursive-descent parser: a port of libcalico-go `lib/selector/parser/parser.go`.
//!
//! Grammar (precedence low to high; `||` and `&&` are n-ary, runs of `!` collapse to one
//! negation or none):
//!
//! ```text
//! selector  := <empty> | or EOF
//! or        := and ( "||" and )*
//! and       := operation ( "&&" operation )*
//! operation := "!"* ( has(label) | all() | global() | "(" or ")"
//!                   | label ("==" | "!=" | contains | starts with | ends with) string
//!                   | label ("in" | "not in") "{" [ string ( "," string )* [","] ] "}" )
//! ```
//!
//! A trailing comma inside a set is accepted, as upstream's loop does.

use super::SelectorError;
use super::ast::Expr;
use super::tokenizer::{Token, TokenKind, tokenize};

/// Deepest parenthesis nesting accepted. Upstream has no limit (Go stacks grow); here the parser
/// and the tree walks recurse, so the depth is bounded to keep hostile input from overflowing the
/// stack. Real selectors nest a handful of levels.
pub const MAX_NESTING: usize = 128;

pub(crate) fn parse(input: &str) -> Result<Expr, SelectorError> {
    let tokens = tokenize(input)?;
    let mut p = Parser { input, tokens, pos: 0, nesting: 0 };
    if p.peek().kind == TokenKind::Eof {
        return Ok(Expr::All);
    }
    let expr = p.parse_or()?;
    let rest = p.peek();
    if rest.kind != TokenKind::Eof {
        return Err(p.error(rest.position, format!("unexpected {} after end of expression", describe(&rest))));
    }
    Ok(expr)
}

struct Parser<'a> {
    input: &'a str,
    tokens: Vec<Token<'a>>,
    pos: usize,
    nesting: usize,
}

fn describe(t: &Token<'_>) -> String {
    match t.kind {
        TokenKind::Label => format!("label {:?}", t.value),
        TokenKind::StringLiteral => format!("string literal {:?}", t.value),
        TokenKind::Has => format!("'has({})'", t.value),
        kind => kind.describe().to_owned(),
    }
}

impl<'a> Parser<'a> {
    /// Token `ahead` positions after the cursor; the final `Eof` repeats forever.
    fn look(&self, ahead: usize) -> Token<'a> {
        let eof = Token { kind: TokenKind::Eof, value: "", position: self.input.len() };
        self.tokens.get(self.pos + ahead).or(self.tokens.last()).copied().unwrap_or(eof)
    }

    fn peek(&self) -> Token<'a> {
        self.look(0)
    }

    fn advance(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.tokens.len().saturating_sub(1));
    }

    fn error(&self, position: usize, message: String) -> SelectorError {
        SelectorError::new(self.input, position, message)
    }

    fn parse_or(&mut self) -> Result<Expr, SelectorError> {
        let mut operands = vec![self.parse_and()?];
        while self.peek().kind == TokenKind::Or {
            self.advance(1);
            operands.push(self.parse_and()?);
        }
        Ok(if operands.len() == 1 { operands.remove(0) } else { Expr::Or(operands) })
    }

    fn parse_and(&mut self) -> Result<Expr, SelectorError> {
        let mut operands = vec![self.parse_operation()?];
        while self.peek().kind == TokenKind::And {
            self.advance(1);
            operands.push(self.parse_operation()?);
        }
        Ok(if operands.len() == 1 { operands.remove(0) } else { Expr::And(operands) })
    }

    fn parse_operation(&mut self) -> Result<Expr, SelectorError> {
        let mut negated = false;
        while self.peek().kind == TokenKind::Not {
            negated = !negated;
            self.advance(1);
        }
        let t = self.peek();
        let expr = match t.kind {
            TokenKind::Has => {
                self.advance(1);
                Expr::Has { key: t.value.to_owned() }
            }
            TokenKind::All => {
                self.advance(1);
                Expr::All
            }
            TokenKind::Global => {
                self.advance(1);
                Expr::Global
            }
            TokenKind::Label => self.parse_label_operation(t)?,
            TokenKind::LParen => {
                if self.nesting >= MAX_NESTING {
                    return Err(self.error(t.position, format!("parentheses nested deeper than {MAX_NESTING}")));
                }
                self.nesting += 1;
                self.advance(1);
                let inner = self.parse_or()?;
                let close = self.peek();
                if close.kind != TokenKind::RParen {
                    return Err(self.error(close.position, format!("expected ')', found {}", describe(&close))));
                }
                self.advance(1);
                self.nesting -= 1;
                inner
            }
            _ => {
                return Err(self.error(
                    t.position,
                    format!("expected a label, 'has()', 'all()', 'global()', '!' or '(', found {}", describe(&t)),
                ));
            }
        };
        Ok(if negated { Expr::Not(Box::new(expr)) } else { expr })
    }

    /// `label <op> "value"` or `label [not] in {...}`; the cursor is on the label.
    fn parse_label_operation(&mut self, label: Token<'a>) -> Result<Expr, SelectorError> {
        let key = label.value.to_owned();
        let op = self.look(1);
        let operand = self.look(2);
        let string_value = || -> Result<String, SelectorError> {
            if operand.kind != TokenKind::StringLiteral {
                return Err(self.error(
                    operand.position,
                    format!("expected a string literal after {}, found {}", op.kind.describe(), describe(&operand)),
                ));
            }
            Ok(operand.value.to_owned())
        };
        let expr = match op.kind {
            TokenKind::Eq => Expr::Eq { key, value: string_value()? },
            TokenKind::Ne => Expr::Ne { key, value: string_value()? },
            TokenKind::Contains => Expr::Contains { key, value: string_value()? },
            TokenKind::StartsWith => Expr::StartsWith { key, value: string_value()? },
            TokenKind::EndsWith => Expr::EndsWith { key, value: string_value()? },
            TokenKind::In | TokenKind::NotIn => {
                if operand.kind != TokenKind::LBrace {
                    return Err(self.error(
                        operand.position,
                        format!(
                            "expected a set literal '{{...}}' after {}, found {}",
                            op.kind.describe(),
                            describe(&operand)
                        ),
                    ));
                }
                self.advance(3);
                let mut values = Vec::new();
                while self.peek().kind == TokenKind::StringLiteral {
                    values.push(self.peek().value.to_owned());
                    self.advance(1);
                    if self.peek().kind != TokenKind::Comma {
                        break;
                    }
                    self.advance(1);
                }
                let close = self.peek();
                if close.kind != TokenKind::RBrace {
                    return Err(self.error(
                        close.position,
                        format!("expected '}}' or a string literal, found {}", describe(&close)),
                    ));
                }
                self.advance(1);
                values.sort_unstable();
                values.dedup();
                return Ok(if op.kind == TokenKind::In {
                    Expr::In { key, values }
                } else {
                    Expr::NotIn { key, values }
                });
            }
            _ => {
                return Err(self.error(
                    op.position,
                    format!("expected an operator after label {:?}, found {}", label.value, describe(&op)),
                ));
            }
        };
        self.advance(3);
        Ok(expr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> String {
        parse(s).unwrap().to_string()
    }

    fn err(s: &str) -> SelectorError {
        parse(s).unwrap_err()
    }

    #[test]
    fn precedence_and_grouping() {
        assert_eq!(p("a == 'x' || b == 'y' && c == 'z'"), r#"(a == "x" || (b == "y" && c == "z"))"#);
        assert_eq!(p("(a == 'x' || b == 'y') && c == 'z'"), r#"((a == "x" || b == "y") && c == "z")"#);
        assert_eq!(p("has(a) && has(b) && has(c)"), "(has(a) && has(b) && has(c))");
        assert_eq!(p("has(a) || has(b) || has(c)"), "(has(a) || has(b) || has(c))");
        assert_eq!(p("((has(a)))"), "has(a)");
        assert_eq!(p("(has(a) && has(b)) && has(c)"), "((has(a) && has(b)) && has(c))");
    }

    #[test]
    fn negation_collapses_only_without_parentheses() {
        assert_eq!(p("!!has(a)"), "has(a)");
        assert_eq!(p("! ! !has(a)"), "!has(a)");
        assert_eq!(
            parse("!(!has(a))").unwrap(),
            Expr::Not(Box::new(Expr::Not(Box::new(Expr::Has { key: "a".into() }))))
        );
        assert_eq!(p("!(!has(a))"), "!!has(a)");
        assert_eq!(p("!a == 'b' && c == 'd'"), r#"(!a == "b" && c == "d")"#);
        assert_eq!(p("!(a == 'b' && c == 'd')"), r#"!(a == "b" && c == "d")"#);
    }

    #[test]
    fn sets() {
        assert_eq!(p("a in {}"), "a in {}");
        assert_eq!(p("a not in {'b', 'a', 'b'}"), r#"a not in {"a", "b"}"#);
        assert_eq!(p("a in {'x',}"), r#"a in {"x"}"#);
        assert_eq!(p(r#"a in {'"', "'"}"#), r#"a in {'"', "'"}"#);
        assert!(parse("a in {,}").is_err());
        assert!(parse("a in {'x' 'y'}").is_err());
        assert!(parse("a in 'x'").is_err());
        assert!(parse("a in b").is_err());
    }

    #[test]
    fn error_positions_point_at_the_offending_token() {
        assert_eq!(err("b == b").position, 5);
        assert_eq!(err("'b1' == b").position, 0);
        assert_eq!(err("b").position, 1);
        assert_eq!(err("!").position, 1);
        assert_eq!(err("(a == 'x'").position, 9);
        assert_eq!(err(")").position, 0);
        assert_eq!(err("()").position, 1);
        assert_eq!(err("has(a) has(b)").position, 7);
        assert_eq!(err("has(foo) &&").position, 11);
        assert_eq!(err("a in {'x', ||").position, 11);
        assert_eq!(err("a (").position, 2);
    }

    #[test]
    fn nesting_limit() {
        let ok = format!("{}has(a){}", "(".repeat(MAX_NESTING), ")".repeat(MAX_NESTING));
        assert_eq!(p(&ok), "has(a)");
        let deep = format!("{}has(a){}", "(".repeat(MAX_NESTING + 1), ")".repeat(MAX_NESTING + 1));
        assert_eq!(err(&deep).position, MAX_NESTING);
        let deep_not = "!(".repeat(100_000);
        assert!(parse(&deep_not).is_err());
        // Sequential groups do not accumulate nesting.
        let wide = vec!["(has(a))"; 1000].join(" && ");
        assert!(parse(&wide).is_ok());
    }
}
