//! Selector tokenizer: a port of libcalico-go `lib/selector/tokenizer`.
//!
//! The rules are upstream's, including the odd ones, because a selector that Calico accepts
//! must tokenize identically here (and one it rejects must be rejected):
//!
//! * Whitespace is only space and tab. A newline (or any other character) outside a string
//!   literal is an error.
//! * String literals are delimited by `"` or `'` and run to the next matching quote. There are
//!   no escapes: a value can contain the *other* quote character, never its own.
//! * Label keys are 1..=512 bytes of `[a-zA-Z0-9_./-]`.
//! * Operator words (`contains`, `starts with`, `ends with`, `not in`, `in`) are recognised only
//!   directly after a label, so a label may itself be called `contains` or `in`. Multi-word
//!   operators allow any run of blanks between (and none: `startswith`, `notin`) and must be
//!   followed by a word boundary *after skipping blanks*; single-word operators must be followed
//!   by a word boundary immediately. So `a in b` tokenizes (the parser then rejects it) but
//!   `a not in b` does not: upstream behaves exactly so.
//! * `has(`, `all(` and `global(` are recognised (when not directly after a label) with blanks
//!   allowed inside the parentheses; `has` needs a label inside.
//!
//! Tokens borrow their values from the input; positions are byte offsets into it.

use super::SelectorError;

/// Longest label key upstream accepts (`tokenizer.MaxLabelLength`).
pub const MAX_LABEL_LENGTH: usize = 512;

/// Token kinds; names follow libcalico-go's `Tok*` constants (see [`TokenKind::upstream_name`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// A label key (value = the key).
    Label,
    /// A quoted string (value = the text between the quotes).
    StringLiteral,
    /// `{`
    LBrace,
    /// `}`
    RBrace,
    /// `,`
    Comma,
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `in`
    In,
    /// `!`
    Not,
    /// `not in` / `notin`
    NotIn,
    /// `contains`
    Contains,
    /// `starts with` / `startswith`
    StartsWith,
    /// `ends with` / `endswith`
    EndsWith,
    /// `all()`
    All,
    /// `has(<label>)` (value = the label)
    Has,
    /// `(`
    LParen,
    /// `)`
    RParen,
    /// `&&`
    And,
    /// `||`
    Or,
    /// `global()`
    Global,
    /// End of input; always the last token.
    Eof,
}

impl TokenKind {
    /// The libcalico-go name of this kind (`TokLabel`, `TokEq`, ...).
    pub fn upstream_name(self) -> &'static str {
        match self {
            TokenKind::Label => "TokLabel",
            TokenKind::StringLiteral => "TokStringLiteral",
            TokenKind::LBrace => "TokLBrace",
            TokenKind::RBrace => "TokRBrace",
            TokenKind::Comma => "TokComma",
            TokenKind::Eq => "TokEq",
            TokenKind::Ne => "TokNe",
            TokenKind::In => "TokIn",
            TokenKind::Not => "TokNot",
            TokenKind::NotIn => "TokNotIn",
            TokenKind::Contains => "TokContains",
            TokenKind::StartsWith => "TokStartsWith",
            TokenKind::EndsWith => "TokEndsWith",
            TokenKind::All => "TokAll",
            TokenKind::Has => "TokHas",
            TokenKind::LParen => "TokLParen",
            TokenKind::RParen => "TokRParen",
            TokenKind::And => "TokAnd",
            TokenKind::Or => "TokOr",
            TokenKind::Global => "TokGlobal",
            TokenKind::Eof => "TokEOF",
        }
    }

    /// How the token reads in the selector language, for error messages.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            TokenKind::Label => "label",
            TokenKind::StringLiteral => "string literal",
            TokenKind::LBrace => "'{'",
            TokenKind::RBrace => "'}'",
            TokenKind::Comma => "','",
            TokenKind::Eq => "'=='",
            TokenKind::Ne => "'!='",
            TokenKind::In => "'in'",
            TokenKind::Not => "'!'",
            TokenKind::NotIn => "'not in'",
            TokenKind::Contains => "'contains'",
            TokenKind::StartsWith => "'starts with'",
            TokenKind::EndsWith => "'ends with'",
            TokenKind::All => "'all()'",
            TokenKind::Has => "'has()'",
            TokenKind::LParen => "'('",
            TokenKind::RParen => "')'",
            TokenKind::And => "'&&'",
            TokenKind::Or => "'||'",
            TokenKind::Global => "'global()'",
            TokenKind::Eof => "end of selector",
        }
    }
}

/// One token: its kind, its value (label key, string contents or `has()` label; empty for the
/// others) and the byte offset in the input where it starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Token<'a> {
    /// What the token is.
    pub kind: TokenKind,
    /// Label key, literal contents or `has()` label; `""` for the other kinds.
    pub value: &'a str,
    /// Byte offset of the token's first character (input length for [`TokenKind::Eof`]).
    pub position: usize,
}

/// Whether `c` may appear in a label key.
pub fn is_label_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'/' | b'-')
}

/// Whether `key` is a valid label key for the selector language (1..=512 label characters).
pub fn is_valid_label_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= MAX_LABEL_LENGTH && key.bytes().all(is_label_char)
}

/// Splits `input` into tokens, ending with [`TokenKind::Eof`].
///
/// Accepts some inputs the parser later rejects (`b in c`), exactly as upstream does.
pub fn tokenize(input: &str) -> Result<Vec<Token<'_>>, SelectorError> {
    let mut tokens = Vec::new();
    append_tokens(&mut tokens, input)?;
    Ok(tokens)
}

/// The bytes that are a token on their own.
const PUNCTUATION: [(u8, TokenKind); 5] = [
    (b'(', TokenKind::LParen),
    (b')', TokenKind::RParen),
    (b'{', TokenKind::LBrace),
    (b'}', TokenKind::RBrace),
    (b',', TokenKind::Comma),
];

/// Like [`tokenize`] but appends to `tokens` (so a caller can reuse a buffer).
pub fn append_tokens<'a>(tokens: &mut Vec<Token<'a>>, input: &'a str) -> Result<(), SelectorError> {
    let bytes = input.as_bytes();
    let err = |position: usize, message: String| Err(SelectorError::new(input, position, message));
    let first = tokens.len();
    let mut pos = 0;
    loop {
        pos = skip_blanks(bytes, pos);
        let Some(&c) = bytes.get(pos) else {
            tokens.push(Token { kind: TokenKind::Eof, value: "", position: pos });
            return Ok(());
        };
        let start = pos;
        let mut push = |kind: TokenKind, value: &'a str| tokens.push(Token { kind, value, position: start });
        if let Some(&(_, kind)) = PUNCTUATION.iter().find(|(byte, _)| *byte == c) {
            push(kind, "");
            pos += 1;
            continue;
        }
        let next = bytes.get(pos + 1).copied();
        match c {
            b'"' | b'\'' => {
                let body = pos + 1;
                let Some(len) = bytes.get(body..).and_then(|rest| rest.iter().position(|&b| b == c)) else {
                    return err(start, "unterminated string literal".to_owned());
                };
                // The quotes are ASCII, so both ends are character boundaries.
                push(TokenKind::StringLiteral, input.get(body..body + len).unwrap_or_default());
                pos = body + len + 1;
            }
            b'=' => {
                if next != Some(b'=') {
                    return err(start, "expected '=='".to_owned());
                }
                push(TokenKind::Eq, "");
                pos += 2;
            }
            b'!' => {
                if next == Some(b'=') {
                    push(TokenKind::Ne, "");
                    pos += 2;
                } else {
                    push(TokenKind::Not, "");
                    pos += 1;
                }
            }
            b'&' => {
                if next != Some(b'&') {
                    return err(start, "expected '&&'".to_owned());
                }
                push(TokenKind::And, "");
                pos += 2;
            }
            b'|' => {
                if next != Some(b'|') {
                    return err(start, "expected '||'".to_owned());
                }
                push(TokenKind::Or, "");
                pos += 2;
            }
            _ => {
                let last = tokens[first..].last().copied();
                if let Some(label) = last.filter(|t| t.kind == TokenKind::Label) {
                    // After a label only an operator word may follow.
                    const OPERATORS: [(&[&str], TokenKind); 5] = [
                        (&["contains"], TokenKind::Contains),
                        (&["starts", "with"], TokenKind::StartsWith),
                        (&["ends", "with"], TokenKind::EndsWith),
                        (&["not", "in"], TokenKind::NotIn),
                        (&["in"], TokenKind::In),
                    ];
                    let Some((end, kind)) =
                        OPERATORS.iter().find_map(|(words, kind)| cut_words(bytes, pos, words).map(|end| (end, *kind)))
                    else {
                        return err(start, format!("expected operator after label {:?}", label.value));
                    };
                    tokens.push(Token { kind, value: "", position: start });
                    pos = end;
                } else if let Some(end) = cut_call(bytes, pos, "has(") {
                    let (key, end) = cut_label(input, skip_blanks(bytes, end))?;
                    let end = skip_blanks(bytes, end);
                    if bytes.get(end) != Some(&b')') {
                        return err(end, "expected ')' to close 'has('".to_owned());
                    }
                    tokens.push(Token { kind: TokenKind::Has, value: key, position: start });
                    pos = end + 1;
                } else if let Some(end) = cut_call(bytes, pos, "all(") {
                    let end = skip_blanks(bytes, end);
                    if bytes.get(end) != Some(&b')') {
                        return err(end, "expected ')' after 'all('".to_owned());
                    }
                    tokens.push(Token { kind: TokenKind::All, value: "", position: start });
                    pos = end + 1;
                } else if let Some(end) = cut_call(bytes, pos, "global(") {
                    let end = skip_blanks(bytes, end);
                    if bytes.get(end) != Some(&b')') {
                        return err(end, "expected ')' after 'global('".to_owned());
                    }
                    tokens.push(Token { kind: TokenKind::Global, value: "", position: start });
                    pos = end + 1;
                } else {
                    let (key, end) = cut_label(input, pos)?;
                    tokens.push(Token { kind: TokenKind::Label, value: key, position: start });
                    pos = end;
                }
            }
        }
    }
}

fn skip_blanks(bytes: &[u8], mut pos: usize) -> usize {
    while matches!(bytes.get(pos), Some(b' ' | b'\t')) {
        pos += 1;
    }
    pos
}

/// End of `prefix` if the input at `pos` starts with it.
fn cut_call(bytes: &[u8], pos: usize, prefix: &str) -> Option<usize> {
    bytes.get(pos..)?.starts_with(prefix.as_bytes()).then_some(pos + prefix.len())
}

/// Upstream's `cutPrefixCheckBreak` (one word: boundary right after it) and
/// `cutMultiWordPrefixCheckBreak` (several words: blanks skipped after each, boundary checked
/// after the blanks that follow the last word).
fn cut_words(bytes: &[u8], pos: usize, words: &[&str]) -> Option<usize> {
    let mut end = pos;
    for word in words {
        end = cut_call(bytes, end, word)?;
        if words.len() > 1 {
            end = skip_blanks(bytes, end);
        }
    }
    match bytes.get(end) {
        Some(&c) if is_label_char(c) => None,
        _ => Some(end),
    }
}

/// Reads a label key at `pos`: returns it and the offset just past it.
fn cut_label(input: &str, pos: usize) -> Result<(&str, usize), SelectorError> {
    let bytes = input.as_bytes();
    let len = bytes.get(pos..).map_or(0, |rest| rest.iter().take_while(|&&c| is_label_char(c)).count());
    if len == 0 {
        let message = match input.get(pos..).and_then(|rest| rest.chars().next()) {
            None => "expected a label, found end of selector".to_owned(),
            Some(c) => format!("expected a label, found unexpected character {c:?}"),
        };
        return Err(SelectorError::new(input, pos, message));
    }
    if len > MAX_LABEL_LENGTH {
        return Err(SelectorError::new(
            input,
            pos,
            format!("label too long ({len} bytes, at most {MAX_LABEL_LENGTH})"),
        ));
    }
    // Label characters are ASCII, so `pos + len` is a character boundary.
    Ok((input.get(pos..pos + len).unwrap_or_default(), pos + len))
}

#[cfg(test)]
mod tests {
    use super::TokenKind::*;
    use super::*;

    fn kinds(input: &str) -> Vec<(TokenKind, &str)> {
        tokenize(input).unwrap().into_iter().map(|t| (t.kind, t.value)).collect()
    }

    #[test]
    fn simple_tokens() {
        assert_eq!(kinds(r#"a=="b""#), [(Label, "a"), (Eq, ""), (StringLiteral, "b"), (Eof, "")]);
        assert_eq!(kinds("a != 'b'"), [(Label, "a"), (Ne, ""), (StringLiteral, "b"), (Eof, "")]);
        assert_eq!(kinds("(!has( x ))"), [(LParen, ""), (Not, ""), (Has, "x"), (RParen, ""), (Eof, "")]);
        assert_eq!(kinds("all( ) || global()"), [(All, ""), (Or, ""), (Global, ""), (Eof, "")]);
        assert_eq!(kinds("\t"), [(Eof, "")]);
        assert_eq!(kinds(""), [(Eof, "")]);
    }

    #[test]
    fn operator_words_only_after_labels() {
        assert_eq!(kinds("in in 'x'"), [(Label, "in"), (In, ""), (StringLiteral, "x"), (Eof, "")]);
        assert_eq!(kinds("has == 'x'"), [(Label, "has"), (Eq, ""), (StringLiteral, "x"), (Eof, "")]);
        assert_eq!(kinds("a notin{}"), [(Label, "a"), (NotIn, ""), (LBrace, ""), (RBrace, ""), (Eof, "")]);
        assert_eq!(kinds("a starts\t with'x'"), [(Label, "a"), (StartsWith, ""), (StringLiteral, "x"), (Eof, "")]);
        // Single word: boundary right after the word.
        assert_eq!(kinds("a in b"), [(Label, "a"), (In, ""), (Label, "b"), (Eof, "")]);
        // Multi-word: boundary checked after the blanks that follow the last word (upstream).
        assert!(tokenize("a not in b").is_err());
        assert!(tokenize("a inb").is_err());
        assert!(tokenize("a containsx 'b'").is_err());
    }

    #[test]
    fn strings_have_no_escapes() {
        assert_eq!(kinds(r#"a == "it's""#)[2], (StringLiteral, "it's"));
        assert_eq!(kinds(r#"a == 'say "hi"'"#)[2], (StringLiteral, "say \"hi\""));
        assert_eq!(kinds("a == 'x\\'")[2], (StringLiteral, "x\\"));
        assert_eq!(kinds("a == 'ü\n'")[2], (StringLiteral, "ü\n"));
    }

    #[test]
    fn error_positions() {
        let pos = |s: &str| tokenize(s).unwrap_err().position;
        assert_eq!(pos(r#"a == "b"#), 5);
        assert_eq!(pos("a = 'b'"), 2);
        assert_eq!(pos("a == 'b' & c"), 9);
        assert_eq!(pos("a == 'b' | c"), 9);
        assert_eq!(pos("a b"), 2);
        assert_eq!(pos("has( )"), 5);
        assert_eq!(pos("has(a b)"), 6);
        assert_eq!(pos("all(x)"), 4);
        assert_eq!(pos("global("), 7);
        assert_eq!(pos("%"), 0);
        assert_eq!(pos("a == 'b' && ü"), 12);
        assert_eq!(pos("a == 'b'\n"), 8);
    }

    #[test]
    fn label_length_limit() {
        let ok = "a".repeat(MAX_LABEL_LENGTH);
        assert_eq!(kinds(&format!("{ok} == 'v'"))[0], (Label, ok.as_str()));
        let long = "a".repeat(MAX_LABEL_LENGTH + 1);
        assert!(tokenize(&format!("{long} == 'v'")).is_err());
        assert!(tokenize(&format!("has({long})")).is_err());
    }

    #[test]
    fn label_characters() {
        assert_eq!(kinds("has(calico/k8s_NS-.1/role)")[0], (Has, "calico/k8s_NS-.1/role"));
        assert!(is_valid_label_key("projectcalico.org/namespace"));
        assert!(is_valid_label_key("pcns.kubernetes.io/metadata.name"));
        assert!(!is_valid_label_key(""));
        assert!(!is_valid_label_key("a b"));
        assert!(!is_valid_label_key("a:b"));
    }
}
