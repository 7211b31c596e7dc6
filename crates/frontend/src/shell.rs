//! Word expansion with BuildKit's shell-lexer semantics (`frontend/dockerfile/shell`):
//! `$v`, `${v}`, `${v:-w}`, `${v-w}`, `${v:+w}`, `${v+w}`, `${v:?m}`, `${v?m}`,
//! `${v#p}`, `${v##p}`, `${v%p}`, `${v%%p}`, `${v/p/r}`, `${v//p/r}`, quotes, escapes
//! and word splitting. Kiln's own implementation, checked against BuildKit's vectors.
//!
//! Patterns follow BuildKit, not POSIX: `*` and `?` are the only wildcards (`[` is a
//! literal), neither matches a newline, and `\` may only escape `*`, `?`, `\`, `}`, `/`.

mod pattern;

use std::collections::{BTreeMap, BTreeSet};

use self::pattern::Pattern;

/// Substitutions nested deeper than this are rejected instead of exhausting the stack.
const MAX_DEPTH: usize = 128;

/// MAX_GROWTH is how much longer than the text it came from one expanded word may be
/// (1 MiB): `ARG A=$A$A` repeated would otherwise double memory at every line.
pub const MAX_GROWTH: usize = 1 << 20;

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

/// MATCH_BUDGET bounds the pattern-matching work (characters × pattern states) of all
/// the expansions of one lexer, i.e. of one build: `${A//*b/}` on a 1 MiB value is
/// quadratic, and a Dockerfile may hold many of them.
pub const MATCH_BUDGET: u64 = 1 << 30;

/// Lexer expands words with a given escape character (`\` or `` ` ``); its copies
/// share one pattern-matching budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lexer {
    escape: char,
    budget: std::rc::Rc<std::cell::Cell<u64>>,
}

impl Default for Lexer {
    fn default() -> Self {
        Lexer::new('\\')
    }
}

/// Expanded is one expanded word and the variables it referenced.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Expanded {
    /// The word with quotes removed and variables substituted.
    pub value: String,
    /// Variables referenced, set or not.
    pub used: BTreeSet<String>,
    /// Variables referenced but not set.
    pub unmatched: BTreeSet<String>,
}

/// ExpandedWords is an expansion split into words.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExpandedWords {
    /// The words, split on unquoted white space after substitution.
    pub words: Vec<String>,
    /// Variables referenced, set or not.
    pub used: BTreeSet<String>,
    /// Variables referenced but not set.
    pub unmatched: BTreeSet<String>,
}

/// ShellError is a malformed word or a required variable that is unset.
///
/// Messages follow BuildKit's wording so users can search for them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShellError {
    #[error("unexpected end of statement while looking for matching single-quote")]
    UnterminatedSingleQuote,
    #[error("unexpected end of statement while looking for matching double-quote")]
    UnterminatedDoubleQuote,
    #[error("syntax error: missing '}}'")]
    MissingBrace,
    #[error("syntax error: missing '/' in ${{}}")]
    MissingSlash,
    #[error("syntax error: bad substitution")]
    BadSubstitution,
    #[error("unsupported modifier ({modifier}) in substitution of `{name}`")]
    UnsupportedModifier { name: String, modifier: String },
    /// `${name?message}` or `${name:?message}` with `name` unset (or empty).
    #[error("{name}: {message}")]
    Required { name: String, message: String },
    #[error("invalid pattern ({pattern}) in substitution: {problem}")]
    InvalidPattern { pattern: String, problem: PatternProblem },
    #[error("substitutions nested deeper than {limit} levels")]
    TooDeep { limit: usize },
    /// The expansion grew past [`MAX_GROWTH`] more bytes than the word itself.
    #[error("{} makes the value longer than {limit} bytes (expansions may add at most 1 MiB to a word)", match .name { Some(n) => format!("substituting `{n}`"), None => "substitution".to_string() })]
    TooLong { name: Option<String>, limit: usize },
    /// A `#`, `%` or `/` pattern took too many steps to match (quadratic in the value).
    #[error(
        "pattern matching in substitutions of `{name}` exceeds the build's budget of {} steps",
        MATCH_BUDGET
    )]
    TooCostly { name: String },
}

/// PatternProblem is what is wrong with a `#`, `%` or `/` pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternProblem {
    #[error("invalid escape '\\{0}'")]
    InvalidEscape(char),
    #[error("escape at the end of the pattern")]
    TrailingEscape,
}

impl Lexer {
    /// Lexer::new makes a lexer with `escape` as its escape character.
    pub fn new(escape: char) -> Self {
        Lexer {
            escape,
            budget: std::rc::Rc::new(std::cell::Cell::new(MATCH_BUDGET)),
        }
    }

    /// A lexer with another escape character sharing this one's budget.
    pub fn with_escape(&self, escape: char) -> Self {
        Lexer {
            escape,
            budget: self.budget.clone(),
        }
    }

    /// The escape character.
    pub fn escape(&self) -> char {
        self.escape
    }

    /// Expands one word (quotes removed, no splitting), e.g. for ENV/LABEL/WORKDIR values.
    pub fn expand_word(&self, word: &str, env: &dyn Env) -> Result<Expanded, ShellError> {
        let mut x = Expander::new(self, word, env, false);
        let (value, _) = x.stop_on(None, false)?;
        Ok(Expanded {
            value,
            used: x.used,
            unmatched: x.unmatched,
        })
    }

    /// Expands a heredoc body as BuildKit's `ExpandRaw` (`SkipProcessQuotes`): quotes
    /// are ordinary characters, `$` references and escapes are processed.
    pub fn expand_raw(&self, word: &str, env: &dyn Env) -> Result<Expanded, ShellError> {
        let mut x = Expander::new(self, word, env, false);
        x.skip_quotes = true;
        let (value, _) = x.stop_on(None, false)?;
        Ok(Expanded {
            value,
            used: x.used,
            unmatched: x.unmatched,
        })
    }

    /// Expands and splits into words as BuildKit's ProcessWords does (for EXPOSE, VOLUME, etc.).
    pub fn expand_words(&self, word: &str, env: &dyn Env) -> Result<ExpandedWords, ShellError> {
        let mut x = Expander::new(self, word, env, true);
        let (_, words) = x.stop_on(None, false)?;
        Ok(ExpandedWords {
            words,
            used: x.used,
            unmatched: x.unmatched,
        })
    }
}

/// Words accumulates characters into words, splitting on unquoted white space; when
/// not `enabled` (a single word is wanted) it keeps nothing, so the text is not held twice.
#[derive(Default)]
struct Words {
    enabled: bool,
    word: String,
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn new(enabled: bool) -> Self {
        Words {
            enabled,
            ..Words::default()
        }
    }

    fn add_char(&mut self, c: char) {
        if !self.enabled {
            return;
        }
        if !c.is_whitespace() {
            self.add_raw_char(c);
        } else if self.in_word && !self.word.is_empty() {
            self.words.push(std::mem::take(&mut self.word));
            self.in_word = false;
        }
    }

    fn add_raw_char(&mut self, c: char) {
        if !self.enabled {
            return;
        }
        self.word.push(c);
        self.in_word = true;
    }

    fn add_string(&mut self, s: &str) {
        if self.enabled {
            s.chars().for_each(|c| self.add_char(c));
        }
    }

    fn add_raw_string(&mut self, s: &str) {
        if !self.enabled {
            return;
        }
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

/// Expander walks one word (by byte offset, so a large heredoc body is not copied into
/// a char array); `raw_escapes` keeps escape characters in the output (for patterns,
/// which interpret `\` themselves); no result may exceed `limit` bytes.
struct Expander<'a> {
    text: &'a str,
    pos: usize,
    escape: char,
    budget: std::rc::Rc<std::cell::Cell<u64>>,
    raw_escapes: bool,
    /// Quotes are ordinary characters (heredoc bodies).
    skip_quotes: bool,
    split: bool,
    depth: usize,
    limit: usize,
    /// The variable substituted last, named when the limit is hit.
    last_var: Option<String>,
    env: &'a dyn Env,
    used: BTreeSet<String>,
    unmatched: BTreeSet<String>,
}

impl<'a> Expander<'a> {
    fn new(lexer: &Lexer, word: &'a str, env: &'a dyn Env, split: bool) -> Self {
        // Go's text/scanner, which BuildKit reads words with, drops a leading BOM.
        let word = word.strip_prefix('\u{feff}').unwrap_or(word);
        Expander {
            text: word,
            pos: 0,
            escape: lexer.escape,
            budget: lexer.budget.clone(),
            raw_escapes: false,
            skip_quotes: false,
            split,
            depth: 0,
            limit: word.len().saturating_add(MAX_GROWTH),
            last_var: None,
            env,
            used: BTreeSet::new(),
            unmatched: BTreeSet::new(),
        }
    }

    fn peek(&self) -> Option<char> {
        self.text[self.pos..].chars().next()
    }

    /// Steps over `c`, the character [`Self::peek`] returned.
    fn skip(&mut self, c: char) {
        self.pos += c.len_utf8();
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.skip(c);
        Some(c)
    }

    fn at_end(&self) -> bool {
        self.pos >= self.text.len()
    }

    /// Fails once `len` bytes of output exceed the limit.
    fn check_len(&self, len: usize) -> Result<(), ShellError> {
        if len > self.limit {
            return Err(ShellError::TooLong {
                name: self.last_var.clone(),
                limit: self.limit,
            });
        }
        Ok(())
    }

    fn lookup(&mut self, name: &str) -> Option<String> {
        self.used.insert(name.to_string());
        let value = self.env.get(name).map(str::to_string);
        if value.is_none() {
            self.unmatched.insert(name.to_string());
        } else {
            self.last_var = Some(name.to_string());
        }
        value
    }

    /// Processes until `stop` (consumed) or the end of the word, with `raw` escapes for
    /// the duration; returns the text and its words.
    fn stop_on(&mut self, stop: Option<char>, raw: bool) -> Result<(String, Vec<String>), ShellError> {
        let saved = std::mem::replace(&mut self.raw_escapes, raw);
        let r = self.stop_on_inner(stop);
        self.raw_escapes = saved;
        r
    }

    fn stop_on_inner(&mut self, stop: Option<char>) -> Result<(String, Vec<String>), ShellError> {
        // The whole word usually expands to about its own length: reserve that once
        // rather than growing a heredoc body's copy by doubling.
        let mut result = match stop {
            None => String::with_capacity(self.text.len() - self.pos),
            Some(_) => String::new(),
        };
        let mut words = Words::new(self.split);
        while let Some(c) = self.peek() {
            self.check_len(result.len())?;
            if Some(c) == stop {
                self.skip(c);
                return Ok((result, words.finish()));
            }
            match c {
                '\'' | '"' if self.skip_quotes => {
                    self.skip(c);
                    words.add_char(c);
                    result.push(c);
                }
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
                    self.skip(c);
                    if c != self.escape {
                        words.add_char(c);
                        result.push(c);
                        continue;
                    }
                    if self.raw_escapes {
                        words.add_raw_char(c);
                        result.push(c);
                    }
                    // An escape at the very end is dropped.
                    let Some(n) = self.bump() else { break };
                    words.add_raw_char(n);
                    result.push(n);
                }
            }
        }
        self.check_len(result.len())?;
        match stop {
            // Callers turn this into the message for what they were looking for.
            Some(_) => Err(ShellError::MissingBrace),
            None => Ok((result, words.finish())),
        }
    }

    fn single_quote(&mut self) -> Result<String, ShellError> {
        self.pos += 1;
        let mut out = String::new();
        loop {
            match self.bump() {
                None => return Err(ShellError::UnterminatedSingleQuote),
                Some('\'') => return Ok(out),
                Some(c) => out.push(c),
            }
        }
    }

    fn double_quote(&mut self) -> Result<String, ShellError> {
        self.pos += 1;
        let mut out = String::new();
        loop {
            match self.peek() {
                None => return Err(ShellError::UnterminatedDoubleQuote),
                Some('"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some('$') => {
                    let v = self.dollar()?;
                    out.push_str(&v);
                    self.check_len(out.len())?;
                }
                Some(mut c) => {
                    self.skip(c);
                    if c == self.escape {
                        if self.raw_escapes {
                            out.push(c);
                        }
                        match self.peek() {
                            // An escape right before the end is ignored; the quote is
                            // then unterminated.
                            None => continue,
                            // Only these can be escaped; other escapes stay as they are.
                            Some(n) if n == '"' || n == '$' || n == self.escape => {
                                self.skip(n);
                                c = n;
                            }
                            Some(_) => {}
                        }
                    }
                    out.push(c);
                }
            }
        }
    }

    /// Reads a variable name: a run of digits, one special parameter, or letters,
    /// digits and `_`.
    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(c) = self.peek() {
            if name.is_empty() && c.is_numeric() {
                while let Some(d) = self.peek().filter(|d| d.is_numeric()) {
                    name.push(d);
                    self.skip(d);
                }
                return name;
            }
            if name.is_empty() && matches!(c, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.pos += 1;
                return c.to_string();
            }
            if !(c.is_alphanumeric() || c == '_') {
                break;
            }
            name.push(c);
            self.skip(c);
        }
        name
    }

    fn dollar(&mut self) -> Result<String, ShellError> {
        if self.depth >= MAX_DEPTH {
            return Err(ShellError::TooDeep { limit: MAX_DEPTH });
        }
        self.depth += 1;
        let r = self.dollar_inner();
        self.depth -= 1;
        r
    }

    fn dollar_inner(&mut self) -> Result<String, ShellError> {
        self.pos += 1;
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".to_string());
            }
            return Ok(self.lookup(&name).unwrap_or_default());
        }
        self.pos += 1;
        match self.peek() {
            None => return Err(ShellError::MissingBrace),
            Some('{' | '}' | ':') => return Err(ShellError::BadSubstitution),
            Some(_) => {}
        }
        let name = self.name();
        match self.bump() {
            None => Err(ShellError::MissingBrace),
            Some('}') => Ok(self.lookup(&name).unwrap_or_default()),
            Some(c @ (':' | '+' | '-' | '?' | '#' | '%')) => self.modifier(name, c),
            Some('/') => self.substitute(name),
            Some(c) => Err(ShellError::UnsupportedModifier {
                name,
                modifier: c.to_string(),
            }),
        }
    }

    /// `${name<op>word}` for `-`, `+`, `?`, `#`, `%`, each optionally after `:`.
    fn modifier(&mut self, name: String, first: char) -> Result<String, ShellError> {
        let mut modifier = first.to_string();
        let null_is_unset = first == ':';
        let op = if null_is_unset {
            let c = self.bump().ok_or(ShellError::MissingBrace)?;
            modifier.push(c);
            c
        } else {
            first
        };
        let raw = op == '#' || op == '%';
        let (word, _) = self
            .stop_on(Some('}'), raw)
            .map_err(|e| self.at_eof_or(e, ShellError::MissingBrace))?;
        let value = self.lookup(&name);
        let unset = match &value {
            None => true,
            Some(v) => null_is_unset && v.is_empty(),
        };
        match op {
            '-' => Ok(if unset { word } else { value.unwrap_or_default() }),
            '+' => Ok(if unset { String::new() } else { word }),
            '?' => match value {
                Some(v) if !unset => Ok(v),
                _ => {
                    let message = if !word.is_empty() {
                        word
                    } else if value.is_none() {
                        "is not allowed to be unset".to_string()
                    } else {
                        "is not allowed to be empty".to_string()
                    };
                    Err(ShellError::Required { name, message })
                }
            },
            // BuildKit ignores the `:` for these: `${v:#p}` is `${v#p}`.
            '#' | '%' => {
                let (greedy, pattern) = match word.strip_prefix(op) {
                    Some(rest) => (true, rest),
                    None => (false, word.as_str()),
                };
                let pat = Pattern::parse(pattern, self.budget.clone())?;
                let value = value.unwrap_or_default();
                let trimmed = if op == '#' {
                    pat.trim_prefix(&value, greedy)
                } else {
                    pat.trim_suffix(&value, greedy)
                };
                trimmed.map_err(|f| self.pattern_failed(f, name))
            }
            _ => Err(ShellError::UnsupportedModifier { name, modifier }),
        }
    }

    /// `${name/pattern/replacement}` and `${name//pattern/replacement}`.
    fn substitute(&mut self, name: String) -> Result<String, ShellError> {
        let all = self.peek() == Some('/');
        if all {
            self.pos += 1;
        }
        let (pattern, _) = self
            .stop_on(Some('/'), true)
            .map_err(|e| self.at_eof_or(e, ShellError::MissingSlash))?;
        let (replacement, _) = self
            .stop_on(Some('}'), true)
            .map_err(|e| self.at_eof_or(e, ShellError::MissingBrace))?;
        let value = self.lookup(&name).unwrap_or_default();
        let pat = Pattern::parse(&pattern, self.budget.clone())?;
        let out = if all {
            pat.replace_all(&value, &replacement, self.limit)
        } else {
            pat.replace_first(&value, &replacement)
        };
        let out = out.map_err(|f| self.pattern_failed(f, name))?;
        self.check_len(out.len())?;
        Ok(out)
    }

    /// The error for a substitution of `name` that stopped.
    fn pattern_failed(&self, fail: pattern::Fail, name: String) -> ShellError {
        match fail {
            pattern::Fail::TooLong => ShellError::TooLong {
                name: Some(name),
                limit: self.limit,
            },
            pattern::Fail::TooCostly => ShellError::TooCostly { name },
        }
    }

    /// BuildKit reports any failure inside `${...}` that ran into the end of the word as
    /// the missing delimiter.
    fn at_eof_or(&self, e: ShellError, missing: ShellError) -> ShellError {
        if self.at_end() && !matches!(e, ShellError::TooDeep { .. }) {
            missing
        } else {
            e
        }
    }
}

#[cfg(test)]
mod tests;
