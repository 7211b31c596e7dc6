//! Word expansion with BuildKit's shell-lexer semantics (`frontend/dockerfile/shell`):
//! `$v`, `${v}`, `${v:-w}`, `${v-w}`, `${v:+w}`, `${v+w}`, `${v:?m}`, `${v?m}`,
//! `${v#p}`, `${v##p}`, `${v%p}`, `${v%%p}`, `${v/p/r}`, `${v//p/r}`, quotes, escapes
//! and word splitting. Kiln's own implementation, checked against BuildKit's vectors.

use std::collections::{BTreeMap, BTreeSet};

/// Env looks up variables for expansion.
pub trait Env {
    /// The value of `name`, if set.
    fn get(&self, name: &str) -> Option<&str>;
}

impl Env for BTreeMap<String, String> {
    fn get(&self, name: &str) -> Option<&str> {
        BTreeMap::get(self, name).map(String::as_str)
    }
}

impl Env for [(String, String)] {
    fn get(&self, name: &str) -> Option<&str> {
        // Later entries win, as in an environment list.
        self.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

impl Env for Vec<(String, String)> {
    fn get(&self, name: &str) -> Option<&str> {
        Env::get(self.as_slice(), name)
    }
}

/// Lexer expands words with a given escape character (`\` or `` ` ``).
#[derive(Debug, Clone, Copy)]
pub struct Lexer {
    escape: char,
}

/// Expanded is one expanded word and the variables it referenced.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Expanded {
    pub value: String,
    /// Variables referenced (set or not).
    pub used: BTreeSet<String>,
    /// Variables referenced but not set.
    pub unmatched: BTreeSet<String>,
}

/// ExpandedWords is an expansion split into words.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExpandedWords {
    pub words: Vec<String>,
    pub used: BTreeSet<String>,
    pub unmatched: BTreeSet<String>,
}

/// ShellError is a malformed word or a required variable that is unset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShellError {
    #[error("unexpected end of statement while looking for matching single-quote")]
    UnterminatedSingleQuote,
    #[error("unexpected end of statement while looking for matching double-quote")]
    UnterminatedDoubleQuote,
    #[error("unexpected end of statement while looking for matching `{0}`")]
    Unterminated(char),
    #[error("syntax error: missing '}}'")]
    MissingBrace,
    #[error("syntax error: missing '/' in ${{}}")]
    MissingSlash,
    #[error("syntax error: bad substitution")]
    BadSubstitution,
    #[error("unsupported modifier ({0}) in substitution")]
    UnsupportedModifier(String),
    #[error("{name}: {message}")]
    Required { name: String, message: String },
}

impl Lexer {
    /// A lexer with `escape` as its escape character.
    pub fn new(escape: char) -> Self {
        Lexer { escape }
    }

    /// Expands one word (quotes removed, no splitting), e.g. for ENV/LABEL/WORKDIR.
    pub fn expand_word(&self, word: &str, env: &dyn Env) -> Result<Expanded, ShellError> {
        let mut sw = ShellWord::new(self.escape, word, env);
        let (value, _) = sw.process_stop_on(None, false)?;
        Ok(Expanded {
            value,
            used: sw.used,
            unmatched: sw.unmatched,
        })
    }

    /// Expands and splits into words as BuildKit's ProcessWords does (EXPOSE, VOLUME…).
    pub fn expand_words(&self, word: &str, env: &dyn Env) -> Result<ExpandedWords, ShellError> {
        let mut sw = ShellWord::new(self.escape, word, env);
        let (_, words) = sw.process_stop_on(None, false)?;
        Ok(ExpandedWords {
            words,
            used: sw.used,
            unmatched: sw.unmatched,
        })
    }
}

/// Words accumulates characters into words, splitting on unquoted white space.
#[derive(Default)]
struct Words {
    word: String,
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, c: char) {
        if c.is_whitespace() {
            if self.in_word && !self.word.is_empty() {
                self.words.push(std::mem::take(&mut self.word));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(c);
        }
    }

    fn add_raw_char(&mut self, c: char) {
        self.word.push(c);
        self.in_word = true;
    }

    fn add_string(&mut self, s: &str) {
        s.chars().for_each(|c| self.add_char(c));
    }

    fn add_raw_string(&mut self, s: &str) {
        self.word.push_str(s);
        self.in_word = true;
    }

    fn finish(mut self) -> Vec<String> {
        if !self.word.is_empty() {
            self.words.push(std::mem::take(&mut self.word));
        }
        self.words
    }
}

struct ShellWord<'a> {
    chars: Vec<char>,
    pos: usize,
    escape: char,
    env: &'a dyn Env,
    used: BTreeSet<String>,
    unmatched: BTreeSet<String>,
}

impl<'a> ShellWord<'a> {
    fn new(escape: char, word: &str, env: &'a dyn Env) -> Self {
        ShellWord {
            chars: word.chars().collect(),
            pos: 0,
            escape,
            env,
            used: BTreeSet::new(),
            unmatched: BTreeSet::new(),
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += 1;
        Some(c)
    }

    fn get_env(&mut self, name: &str) -> Option<String> {
        self.used.insert(name.to_string());
        match self.env.get(name) {
            Some(v) => Some(v.to_string()),
            None => {
                self.unmatched.insert(name.to_string());
                None
            }
        }
    }

    /// Processes until `stop` (consumed) or the end; returns the word and the words.
    fn process_stop_on(&mut self, stop: Option<char>, raw_escapes: bool) -> Result<(String, Vec<String>), ShellError> {
        let mut result = String::new();
        let mut words = Words::default();
        while let Some(c) = self.peek() {
            if Some(c) == stop {
                self.next();
                return Ok((result, words.finish()));
            }
            match c {
                '\'' => {
                    let s = self.single_quote()?;
                    result.push_str(&s);
                    words.add_raw_string(&s);
                }
                '"' => {
                    let s = self.double_quote()?;
                    result.push_str(&s);
                    words.add_raw_string(&s);
                }
                '$' => {
                    let s = self.dollar()?;
                    result.push_str(&s);
                    words.add_string(&s);
                }
                _ => {
                    self.next();
                    if c == self.escape {
                        if raw_escapes {
                            words.add_raw_char(c);
                            result.push(c);
                        }
                        // A trailing escape is dropped.
                        let Some(n) = self.next() else { break };
                        words.add_raw_char(n);
                        result.push(n);
                    } else {
                        words.add_char(c);
                        result.push(c);
                    }
                }
            }
        }
        if let Some(s) = stop {
            return Err(ShellError::Unterminated(s));
        }
        Ok((result, words.finish()))
    }

    fn single_quote(&mut self) -> Result<String, ShellError> {
        self.next();
        let mut out = String::new();
        loop {
            match self.next() {
                None => return Err(ShellError::UnterminatedSingleQuote),
                Some('\'') => return Ok(out),
                Some(c) => out.push(c),
            }
        }
    }

    fn double_quote(&mut self) -> Result<String, ShellError> {
        self.next();
        let mut out = String::new();
        loop {
            match self.peek() {
                None => return Err(ShellError::UnterminatedDoubleQuote),
                Some('"') => {
                    self.next();
                    return Ok(out);
                }
                Some('$') => {
                    let v = self.dollar()?;
                    out.push_str(&v);
                }
                Some(_) => {
                    let mut c = self.next().expect("peeked");
                    if c == self.escape {
                        match self.peek() {
                            // An escape at the very end is ignored (the quote is then unterminated).
                            None => continue,
                            Some(n) if n == '"' || n == '$' || n == self.escape => {
                                c = self.next().expect("peeked");
                            }
                            Some(_) => {}
                        }
                    }
                    out.push(c);
                }
            }
        }
    }

    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(c) = self.peek() {
            if name.is_empty() && c.is_ascii_digit() {
                while let Some(d) = self.peek().filter(char::is_ascii_digit) {
                    name.push(d);
                    self.next();
                }
                return name;
            }
            if name.is_empty() && matches!(c, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.next();
                return c.to_string();
            }
            if !(c.is_alphanumeric() || c == '_') {
                break;
            }
            name.push(c);
            self.next();
        }
        name
    }

    fn dollar(&mut self) -> Result<String, ShellError> {
        self.next();
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".to_string());
            }
            return Ok(self.get_env(&name).unwrap_or_default());
        }
        self.next();
        match self.peek() {
            None => return Err(ShellError::MissingBrace),
            Some('{') | Some('}') | Some(':') => return Err(ShellError::BadSubstitution),
            _ => {}
        }
        let name = self.name();
        let Some(mut c) = self.next() else {
            return Err(ShellError::MissingBrace);
        };
        let mut modifier = c.to_string();
        match c {
            '}' => Ok(self.get_env(&name).unwrap_or_default()),
            ':' | '+' | '-' | '?' | '#' | '%' => {
                let null_is_unset = c == ':';
                if null_is_unset {
                    c = self.next().ok_or(ShellError::MissingBrace)?;
                    modifier.push(c);
                }
                let raw = c == '#' || c == '%';
                if null_is_unset && raw {
                    return Err(ShellError::UnsupportedModifier(modifier));
                }
                if !matches!(c, '+' | '-' | '?' | '#' | '%') {
                    return Err(ShellError::UnsupportedModifier(modifier));
                }
                let (word, _) = self.process_stop_on(Some('}'), raw).map_err(|e| match e {
                    ShellError::Unterminated('}') => ShellError::MissingBrace,
                    e => e,
                })?;
                let value = self.get_env(&name);
                let empty = |v: &Option<String>| v.as_deref().is_none_or(|s| null_is_unset && s.is_empty());
                match c {
                    '-' => Ok(if empty(&value) { word } else { value.unwrap_or_default() }),
                    '+' => Ok(if empty(&value) { String::new() } else { word }),
                    '?' => match value {
                        None => Err(ShellError::Required {
                            name,
                            message: if word.is_empty() {
                                "is not allowed to be unset".into()
                            } else {
                                word
                            },
                        }),
                        Some(v) if null_is_unset && v.is_empty() => Err(ShellError::Required {
                            name,
                            message: if word.is_empty() {
                                "is not allowed to be empty".into()
                            } else {
                                word
                            },
                        }),
                        Some(v) => Ok(v),
                    },
                    _ => {
                        let value = value.unwrap_or_default();
                        let (greedy, pat) = match word.strip_prefix(c) {
                            Some(rest) => (true, rest.to_string()),
                            None => (false, word),
                        };
                        let pat = Pattern::parse(&pat);
                        Ok(if c == '#' {
                            trim_prefix(&pat, &value, greedy)
                        } else {
                            trim_suffix(&pat, &value, greedy)
                        })
                    }
                }
            }
            '/' => {
                let all = self.peek() == Some('/');
                if all {
                    self.next();
                }
                let (pattern, _) = self.process_stop_on(Some('/'), true).map_err(|e| match e {
                    ShellError::Unterminated('/') => ShellError::MissingSlash,
                    e => e,
                })?;
                let (replacement, _) = self.process_stop_on(Some('}'), true).map_err(|e| match e {
                    ShellError::Unterminated('}') => ShellError::MissingBrace,
                    e => e,
                })?;
                let value = self.get_env(&name).unwrap_or_default();
                Ok(replace(&Pattern::parse(&pattern), &value, &replacement, all))
            }
            _ => Err(ShellError::UnsupportedModifier(modifier)),
        }
    }
}

/// A shell pattern for `#`, `%` and `/` substitutions: `*` any run, `?` one char,
/// `[...]` a class (`!` or `^` negates), `\x` a literal.
#[derive(Debug)]
enum Tok {
    Lit(char),
    Any,
    One,
    Class(crate::pathmatch::Class),
}

struct Pattern(Vec<Tok>);

impl Pattern {
    fn parse(p: &str) -> Pattern {
        let c: Vec<char> = p.chars().collect();
        let mut toks = Vec::new();
        let mut i = 0;
        while i < c.len() {
            match c[i] {
                '*' => toks.push(Tok::Any),
                '?' => toks.push(Tok::One),
                '\\' if i + 1 < c.len() => {
                    i += 1;
                    toks.push(Tok::Lit(c[i]));
                }
                '[' => match crate::pathmatch::parse_class(&c, i, true) {
                    Some((cls, next)) => {
                        toks.push(Tok::Class(cls));
                        i = next;
                        continue;
                    }
                    // An unclosed `[` is an ordinary character.
                    None => toks.push(Tok::Lit('[')),
                },
                ch => toks.push(Tok::Lit(ch)),
            }
            i += 1;
        }
        Pattern(toks)
    }

    /// Lengths (in chars) of every prefix of `s` the pattern matches entirely.
    fn match_lengths(&self, s: &[char]) -> Vec<usize> {
        // positions reachable after consuming tokens, as a set over 0..=len
        let mut cur = vec![false; s.len() + 1];
        cur[0] = true;
        for t in &self.0 {
            let mut next = vec![false; s.len() + 1];
            for i in 0..=s.len() {
                if !cur[i] {
                    continue;
                }
                match t {
                    Tok::Any => next[i..].iter_mut().for_each(|x| *x = true),
                    Tok::One => {
                        if i < s.len() {
                            next[i + 1] = true
                        }
                    }
                    Tok::Lit(c) => {
                        if s.get(i) == Some(c) {
                            next[i + 1] = true
                        }
                    }
                    Tok::Class(cls) => {
                        if s.get(i).is_some_and(|ch| cls.matches(*ch)) {
                            next[i + 1] = true
                        }
                    }
                }
            }
            cur = next;
        }
        (0..=s.len()).filter(|i| cur[*i]).collect()
    }
}

fn trim_prefix(p: &Pattern, value: &str, greedy: bool) -> String {
    let s: Vec<char> = value.chars().collect();
    let lens = p.match_lengths(&s);
    let n = if greedy { lens.last() } else { lens.first() };
    match n {
        Some(n) => s[*n..].iter().collect(),
        None => value.to_string(),
    }
}

fn trim_suffix(p: &Pattern, value: &str, greedy: bool) -> String {
    let s: Vec<char> = value.chars().collect();
    // Suffix starting positions whose remainder the pattern matches entirely.
    let starts: Vec<usize> = (0..=s.len())
        .filter(|&i| p.match_lengths(&s[i..]).contains(&(s.len() - i)))
        .collect();
    // Shortest suffix = latest start; longest = earliest.
    let start = if greedy { starts.first() } else { starts.last() };
    match start {
        Some(i) => s[..*i].iter().collect(),
        None => value.to_string(),
    }
}

fn replace(p: &Pattern, value: &str, replacement: &str, all: bool) -> String {
    let s: Vec<char> = value.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    let mut replaced = false;
    while i <= s.len() {
        if !all && replaced {
            break;
        }
        match p.match_lengths(&s[i..]).last().copied() {
            // Leftmost-longest, like Go's regexp for these patterns; empty matches
            // advance by one character so the loop ends.
            Some(n) if n > 0 || !p.0.is_empty() => {
                out.push_str(replacement);
                replaced = true;
                if n == 0 {
                    if let Some(c) = s.get(i) {
                        out.push(*c);
                    }
                    i += 1;
                } else {
                    i += n;
                }
            }
            _ => {
                if let Some(c) = s.get(i) {
                    out.push(*c);
                }
                i += 1;
            }
        }
    }
    if i < s.len() {
        out.extend(&s[i..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> BTreeMap<String, String> {
        [("A", "a"), ("EMPTY", ""), ("PATHY", "/usr/local/bin/tool.tar.gz")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn tracks_used_and_unmatched() {
        let r = Lexer::new('\\').expand_word("$A-${B:-x}-${EMPTY}", &env()).unwrap();
        assert_eq!(r.value, "a-x-");
        assert_eq!(r.used, ["A", "B", "EMPTY"].map(String::from).into());
        assert_eq!(r.unmatched, ["B"].map(String::from).into());
    }

    #[test]
    fn required_variables_name_themselves() {
        let l = Lexer::new('\\');
        assert_eq!(
            l.expand_word("${B:?must be set}", &env()).unwrap_err().to_string(),
            "B: must be set"
        );
        assert_eq!(
            l.expand_word("${B?}", &env()).unwrap_err().to_string(),
            "B: is not allowed to be unset"
        );
        assert_eq!(
            l.expand_word("${EMPTY:?}", &env()).unwrap_err().to_string(),
            "EMPTY: is not allowed to be empty"
        );
        assert_eq!(l.expand_word("${EMPTY?}", &env()).unwrap().value, "");
    }

    #[test]
    fn pattern_substitutions() {
        let l = Lexer::new('\\');
        let e = env();
        assert_eq!(
            l.expand_word("${PATHY#*/}", &e).unwrap().value,
            "usr/local/bin/tool.tar.gz"
        );
        assert_eq!(l.expand_word("${PATHY##*/}", &e).unwrap().value, "tool.tar.gz");
        assert_eq!(
            l.expand_word("${PATHY%.*}", &e).unwrap().value,
            "/usr/local/bin/tool.tar"
        );
        assert_eq!(l.expand_word("${PATHY%%.*}", &e).unwrap().value, "/usr/local/bin/tool");
        assert_eq!(
            l.expand_word("${PATHY/o/0}", &e).unwrap().value,
            "/usr/l0cal/bin/tool.tar.gz"
        );
        assert_eq!(
            l.expand_word("${PATHY//o/0}", &e).unwrap().value,
            "/usr/l0cal/bin/t00l.tar.gz"
        );
        assert_eq!(
            l.expand_word("${PATHY//[a-c]/_}", &e).unwrap().value,
            "/usr/lo__l/_in/tool.t_r.gz"
        );
    }

    #[test]
    fn backtick_escape() {
        let l = Lexer::new('`');
        assert_eq!(l.expand_word("a`$A\\b", &env()).unwrap().value, "a$A\\b");
    }

    #[test]
    fn never_panics_on_odd_input() {
        let l = Lexer::new('\\');
        for w in [
            "${",
            "${A",
            "${A:",
            "${A/",
            "${A//x",
            "$",
            "\\",
            "\"\\",
            "'",
            "${A:-${B",
            "${#}",
            "${A:#x}",
            "é$Aé${A%é}",
        ] {
            let _ = l.expand_word(w, &env());
            let _ = l.expand_words(w, &env());
        }
    }
}
