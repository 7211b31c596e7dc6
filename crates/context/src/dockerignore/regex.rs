//! The part of Go's `regexp` syntax that moby/patternmatcher can produce from a
//! .dockerignore pattern, with Go's semantics (Perl flags: `.` stops at `\n`, negated
//! classes match `\n`, `^`/`$` anchor the whole text), matched by a Pike VM so no
//! input takes exponential time.
//!
//! patternmatcher escapes `.+()|{}$`, turns `*`, `?`, `**` into regexp pieces and passes
//! `[`, `]`, `^` and `\x` through, so classes, escapes and anchors are regexp syntax.

/// RegexError is a regexp Go's `regexp.Compile` rejects (or that kiln does not support).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegexError {
    #[error("missing closing ] in `{expr}`")]
    MissingBracket { expr: String },
    #[error("invalid escape sequence `{seq}`")]
    InvalidEscape { seq: String },
    #[error("trailing backslash at end of expression")]
    TrailingBackslash,
    #[error("invalid character class range `{range}`")]
    InvalidCharRange { range: String },
    #[error("missing closing )")]
    MissingParen,
    #[error("unexpected )")]
    UnexpectedParen,
    #[error("missing argument to repetition operator `{op}`")]
    MissingRepeatArgument { op: char },
    #[error("invalid nested repetition operator `{op}`")]
    NestedRepetition { op: String },
    #[error("`{seq}` is valid in Go but not supported by kiln")]
    Unsupported { seq: String },
}

type Ranges = Vec<(u32, u32)>;

const MAX_RUNE: u32 = 0x10_FFFF;

#[derive(Debug, Clone)]
enum Node {
    Class(Ranges),
    /// `.`: anything but `\n`.
    Dot,
    Begin,
    End,
    /// `\b` (true) or `\B` (false).
    WordBoundary(bool),
    Concat(Vec<Node>),
    Alt(Vec<Node>),
    Star(Box<Node>),
    Plus(Box<Node>),
    Quest(Box<Node>),
}

#[derive(Debug, Clone)]
enum Inst {
    Class(Ranges),
    Dot,
    Begin,
    End,
    WordBoundary(bool),
    Split(usize, usize),
    Jmp(usize),
    Match,
}

/// Regex is a compiled Go regexp.
#[derive(Clone)]
pub struct Regex {
    expr: String,
    prog: Vec<Inst>,
}

impl Regex {
    /// Regex::compile parses `expr` with Go's syntax rules.
    pub fn compile(expr: &str) -> Result<Regex, RegexError> {
        let mut p = Parser {
            s: expr.chars().collect(),
            i: 0,
            depth: 0,
        };
        let node = p.alternation()?;
        if p.i < p.s.len() {
            return Err(RegexError::UnexpectedParen);
        }
        let mut prog = Vec::new();
        emit(&node, &mut prog);
        prog.push(Inst::Match);
        Ok(Regex {
            expr: expr.to_string(),
            prog,
        })
    }

    /// The source text of the regexp.
    #[cfg(test)]
    pub fn as_str(&self) -> &str {
        &self.expr
    }

    /// Whether the regexp matches anywhere in `text` (Go's `MatchString`).
    pub fn is_match(&self, text: &str) -> bool {
        let s: Vec<char> = text.chars().collect();
        let n = self.prog.len();
        let mut seen = vec![usize::MAX; n];
        let mut clist: Vec<usize> = Vec::new();
        let mut nlist: Vec<usize> = Vec::new();
        for i in 0..=s.len() {
            // Unanchored search: a new thread may start at every position.
            if self.add(&mut clist, &mut seen, 0, &s, i) {
                return true;
            }
            let Some(&c) = s.get(i) else { break };
            nlist.clear();
            for &pc in &clist {
                let ok = match &self.prog[pc] {
                    Inst::Class(r) => in_ranges(r, c),
                    Inst::Dot => c != '\n',
                    _ => false,
                };
                if ok && self.add(&mut nlist, &mut seen, pc + 1, &s, i + 1) {
                    return true;
                }
            }
            std::mem::swap(&mut clist, &mut nlist);
        }
        false
    }

    /// Adds `pc` and everything reachable from it without reading at position `i`;
    /// returns whether a match was reached.
    fn add(&self, list: &mut Vec<usize>, seen: &mut [usize], pc: usize, s: &[char], i: usize) -> bool {
        let mut stack = vec![pc];
        while let Some(pc) = stack.pop() {
            if seen[pc] == i {
                continue;
            }
            seen[pc] = i;
            match &self.prog[pc] {
                Inst::Match => return true,
                Inst::Jmp(t) => stack.push(*t),
                Inst::Split(a, b) => {
                    stack.push(*b);
                    stack.push(*a);
                }
                Inst::Begin if i == 0 => stack.push(pc + 1),
                Inst::End if i == s.len() => stack.push(pc + 1),
                Inst::WordBoundary(want) => {
                    let before = i > 0 && is_word(s[i - 1]);
                    let after = s.get(i).is_some_and(|c| is_word(*c));
                    if (before != after) == *want {
                        stack.push(pc + 1);
                    }
                }
                Inst::Class(_) | Inst::Dot => list.push(pc),
                Inst::Begin | Inst::End => {}
            }
        }
        false
    }
}

impl std::fmt::Debug for Regex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Regex").field(&self.expr).finish()
    }
}

fn is_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn in_ranges(r: &[(u32, u32)], c: char) -> bool {
    let c = c as u32;
    r.iter().any(|(lo, hi)| *lo <= c && c <= *hi)
}

fn emit(node: &Node, prog: &mut Vec<Inst>) {
    match node {
        Node::Class(r) => prog.push(Inst::Class(r.clone())),
        Node::Dot => prog.push(Inst::Dot),
        Node::Begin => prog.push(Inst::Begin),
        Node::End => prog.push(Inst::End),
        Node::WordBoundary(b) => prog.push(Inst::WordBoundary(*b)),
        Node::Concat(v) => v.iter().for_each(|n| emit(n, prog)),
        Node::Alt(v) => {
            // split L1, next; L1: a; jmp end; next: split L2, ... ; last: z
            let mut jumps = Vec::new();
            for (k, n) in v.iter().enumerate() {
                if k + 1 < v.len() {
                    let split = prog.len();
                    prog.push(Inst::Split(split + 1, 0));
                    emit(n, prog);
                    jumps.push(prog.len());
                    prog.push(Inst::Jmp(0));
                    let next = prog.len();
                    prog[split] = Inst::Split(split + 1, next);
                } else {
                    emit(n, prog);
                }
            }
            let end = prog.len();
            for j in jumps {
                prog[j] = Inst::Jmp(end);
            }
        }
        Node::Star(n) => {
            let split = prog.len();
            prog.push(Inst::Split(split + 1, 0));
            emit(n, prog);
            prog.push(Inst::Jmp(split));
            let end = prog.len();
            prog[split] = Inst::Split(split + 1, end);
        }
        Node::Plus(n) => {
            let start = prog.len();
            emit(n, prog);
            let end = prog.len() + 1;
            prog.push(Inst::Split(start, end));
        }
        Node::Quest(n) => {
            let split = prog.len();
            prog.push(Inst::Split(split + 1, 0));
            emit(n, prog);
            let end = prog.len();
            prog[split] = Inst::Split(split + 1, end);
        }
    }
}

/// Groups nested deeper than this are rejected instead of exhausting the stack.
const MAX_DEPTH: usize = 200;

struct Parser {
    s: Vec<char>,
    i: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.s.get(self.i).copied()
    }

    fn rest(&self) -> String {
        self.s[self.i..].iter().collect()
    }

    fn alternation(&mut self) -> Result<Node, RegexError> {
        let mut alts = vec![self.concat()?];
        while self.peek() == Some('|') {
            self.i += 1;
            alts.push(self.concat()?);
        }
        Ok(if alts.len() == 1 {
            alts.remove(0)
        } else {
            Node::Alt(alts)
        })
    }

    fn concat(&mut self) -> Result<Node, RegexError> {
        let mut items: Vec<Node> = Vec::new();
        // Whether the last item is a repetition, and of what (for error messages).
        let mut last_rep: Option<char> = None;
        while let Some(c) = self.peek() {
            match c {
                '|' | ')' => break,
                '*' | '+' | '?' => {
                    self.i += 1;
                    if let Some(prev) = last_rep {
                        // `x*?` is a lazy repetition: same language.
                        if c == '?' {
                            last_rep = None;
                            continue;
                        }
                        return Err(RegexError::NestedRepetition {
                            op: format!("{prev}{c}"),
                        });
                    }
                    let Some(atom) = items.pop() else {
                        return Err(RegexError::MissingRepeatArgument { op: c });
                    };
                    items.push(match c {
                        '*' => Node::Star(Box::new(atom)),
                        '+' => Node::Plus(Box::new(atom)),
                        _ => Node::Quest(Box::new(atom)),
                    });
                    last_rep = Some(c);
                    continue;
                }
                '(' => {
                    self.i += 1;
                    if self.peek() == Some('?') {
                        return Err(RegexError::Unsupported { seq: "(?".into() });
                    }
                    if self.depth >= MAX_DEPTH {
                        return Err(RegexError::Unsupported {
                            seq: "deeply nested groups".into(),
                        });
                    }
                    self.depth += 1;
                    let inner = self.alternation()?;
                    self.depth -= 1;
                    if self.peek() != Some(')') {
                        return Err(RegexError::MissingParen);
                    }
                    self.i += 1;
                    items.push(inner);
                }
                '[' => items.push(Node::Class(self.class()?)),
                '.' => {
                    self.i += 1;
                    items.push(Node::Dot);
                }
                '^' => {
                    self.i += 1;
                    items.push(Node::Begin);
                }
                '$' => {
                    self.i += 1;
                    items.push(Node::End);
                }
                '\\' => items.extend(self.escape_outside()?),
                c => {
                    self.i += 1;
                    items.push(lit(c as u32));
                }
            }
            last_rep = None;
        }
        Ok(Node::Concat(items))
    }

    /// An escape outside a class (the `\` not yet consumed).
    fn escape_outside(&mut self) -> Result<Vec<Node>, RegexError> {
        self.i += 1;
        let Some(c) = self.peek() else {
            return Err(RegexError::TrailingBackslash);
        };
        let node = match c {
            'A' => Node::Begin,
            'z' => Node::End,
            'b' => Node::WordBoundary(true),
            'B' => Node::WordBoundary(false),
            'Q' => {
                // Literal text up to `\E` or the end.
                self.i += 1;
                let mut out = Vec::new();
                while let Some(c) = self.peek() {
                    if c == '\\' && self.s.get(self.i + 1) == Some(&'E') {
                        self.i += 2;
                        return Ok(out);
                    }
                    out.push(lit(c as u32));
                    self.i += 1;
                }
                return Ok(out);
            }
            'p' | 'P' => return Err(RegexError::Unsupported { seq: format!("\\{c}") }),
            _ => {
                if let Some(r) = perl_class(c) {
                    self.i += 1;
                    return Ok(vec![Node::Class(r)]);
                }
                return Ok(vec![lit(self.escape_char()?)]);
            }
        };
        self.i += 1;
        Ok(vec![node])
    }

    /// A single-character escape; `self.i` is at the character after `\`.
    fn escape_char(&mut self) -> Result<u32, RegexError> {
        let start = self.i;
        let invalid = |p: &Parser| RegexError::InvalidEscape {
            seq: format!("\\{}", p.s[start..p.i.min(p.s.len())].iter().collect::<String>()),
        };
        let Some(c) = self.peek() else {
            return Err(RegexError::TrailingBackslash);
        };
        self.i += 1;
        let octal = |c: Option<char>| c.filter(|c| ('0'..='7').contains(c));
        match c {
            c if c.is_ascii() && !c.is_ascii_alphanumeric() => Ok(c as u32),
            '1'..='7' if octal(self.peek()).is_none() => Err(invalid(self)),
            '0'..='7' => {
                let mut r = c as u32 - '0' as u32;
                for _ in 0..2 {
                    let Some(d) = octal(self.peek()) else { break };
                    r = r * 8 + (d as u32 - '0' as u32);
                    self.i += 1;
                }
                Ok(r)
            }
            'x' => {
                let Some(c) = self.peek() else {
                    return Err(invalid(self));
                };
                self.i += 1;
                if c == '{' {
                    let mut r: u32 = 0;
                    let mut n = 0;
                    loop {
                        let Some(c) = self.peek() else {
                            return Err(invalid(self));
                        };
                        self.i += 1;
                        if c == '}' {
                            break;
                        }
                        let Some(v) = c.to_digit(16) else {
                            return Err(invalid(self));
                        };
                        r = r * 16 + v;
                        n += 1;
                        if r > MAX_RUNE {
                            return Err(invalid(self));
                        }
                    }
                    if n == 0 {
                        return Err(invalid(self));
                    }
                    return Ok(r);
                }
                let x = c.to_digit(16);
                let y = self.peek().and_then(|c| c.to_digit(16));
                self.i += 1;
                match (x, y) {
                    (Some(x), Some(y)) => Ok(x * 16 + y),
                    _ => Err(invalid(self)),
                }
            }
            'a' => Ok(7),
            'f' => Ok(12),
            'n' => Ok(10),
            'r' => Ok(13),
            't' => Ok(9),
            'v' => Ok(11),
            _ => Err(invalid(self)),
        }
    }

    /// A bracketed class (at `[`).
    fn class(&mut self) -> Result<Ranges, RegexError> {
        let start = self.i;
        let missing = |p: &Parser| RegexError::MissingBracket {
            expr: p.s[start..].iter().collect(),
        };
        self.i += 1;
        let negated = self.peek() == Some('^');
        if negated {
            self.i += 1;
        }
        let mut ranges = Ranges::new();
        let mut first = true;
        loop {
            match self.peek() {
                None => return Err(missing(self)),
                Some(']') if !first => {
                    self.i += 1;
                    break;
                }
                _ => {}
            }
            first = false;
            // `[:name:]`, when there is a closing `:]` at all.
            if self.peek() == Some('[') && self.s.get(self.i + 1) == Some(&':') {
                let rest = self.rest();
                if let Some(end) = rest[2..].find(":]") {
                    let name = &rest[..end + 4];
                    ranges
                        .extend(posix_class(name).ok_or_else(|| RegexError::InvalidCharRange { range: name.into() })?);
                    self.i += name.chars().count();
                    continue;
                }
            }
            if self.peek() == Some('\\') {
                match self.s.get(self.i + 1) {
                    Some(&c @ ('p' | 'P')) => return Err(RegexError::Unsupported { seq: format!("\\{c}") }),
                    Some(&c) => {
                        if let Some(r) = perl_class(c) {
                            ranges.extend(r);
                            self.i += 2;
                            continue;
                        }
                    }
                    None => {}
                }
            }
            let range_start = self.i;
            let lo = self
                .class_char()
                .map_err(|e| if self.i >= self.s.len() { missing(self) } else { e })?;
            let mut hi = lo;
            if self.peek() == Some('-') && self.s.get(self.i + 1).is_some_and(|c| *c != ']') {
                self.i += 1;
                hi = self
                    .class_char()
                    .map_err(|e| if self.i >= self.s.len() { missing(self) } else { e })?;
                if hi < lo {
                    return Err(RegexError::InvalidCharRange {
                        range: self.s[range_start..self.i].iter().collect(),
                    });
                }
            }
            ranges.push((lo, hi));
        }
        Ok(if negated { complement(&ranges) } else { ranges })
    }

    fn class_char(&mut self) -> Result<u32, RegexError> {
        match self.peek() {
            None => Err(RegexError::MissingBracket { expr: String::new() }),
            Some('\\') => {
                self.i += 1;
                self.escape_char()
            }
            Some(c) => {
                self.i += 1;
                Ok(c as u32)
            }
        }
    }
}

fn lit(c: u32) -> Node {
    Node::Class(vec![(c, c)])
}

/// `\d`, `\s`, `\w` and their negations (ASCII, as in Go).
fn perl_class(c: char) -> Option<Ranges> {
    let r: Ranges = match c.to_ascii_lowercase() {
        'd' => vec![(0x30, 0x39)],
        's' => vec![(9, 10), (12, 13), (32, 32)],
        'w' => vec![(0x30, 0x39), (0x41, 0x5a), (0x5f, 0x5f), (0x61, 0x7a)],
        _ => return None,
    };
    Some(if c.is_ascii_uppercase() { complement(&r) } else { r })
}

/// `[:alpha:]` and friends, `[:^alpha:]` negated.
fn posix_class(name: &str) -> Option<Ranges> {
    let inner = name.strip_prefix("[:")?.strip_suffix(":]")?;
    let (negated, inner) = match inner.strip_prefix('^') {
        Some(i) => (true, i),
        None => (false, inner),
    };
    let r: Ranges = match inner {
        "alnum" => vec![(0x30, 0x39), (0x41, 0x5a), (0x61, 0x7a)],
        "alpha" => vec![(0x41, 0x5a), (0x61, 0x7a)],
        "ascii" => vec![(0, 0x7f)],
        "blank" => vec![(9, 9), (32, 32)],
        "cntrl" => vec![(0, 0x1f), (0x7f, 0x7f)],
        "digit" => vec![(0x30, 0x39)],
        "graph" => vec![(0x21, 0x7e)],
        "lower" => vec![(0x61, 0x7a)],
        "print" => vec![(0x20, 0x7e)],
        "punct" => vec![(0x21, 0x2f), (0x3a, 0x40), (0x5b, 0x60), (0x7b, 0x7e)],
        "space" => vec![(9, 13), (32, 32)],
        "upper" => vec![(0x41, 0x5a)],
        "word" => vec![(0x30, 0x39), (0x41, 0x5a), (0x5f, 0x5f), (0x61, 0x7a)],
        "xdigit" => vec![(0x30, 0x39), (0x41, 0x46), (0x61, 0x66)],
        _ => return None,
    };
    Some(if negated { complement(&r) } else { r })
}

fn complement(r: &[(u32, u32)]) -> Ranges {
    let mut sorted = r.to_vec();
    sorted.sort_unstable();
    let mut out = Ranges::new();
    let mut next = 0u32;
    for (lo, hi) in sorted {
        if lo > next {
            out.push((next, lo - 1));
        }
        next = next.max(hi.saturating_add(1));
    }
    if next <= MAX_RUNE {
        out.push((next, MAX_RUNE));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(re: &str, s: &str) -> bool {
        Regex::compile(re).unwrap_or_else(|e| panic!("{re}: {e}")).is_match(s)
    }

    #[test]
    fn go_regexp_semantics() {
        assert!(m("^a[^/]*$", "abc"));
        assert!(!m("^a[^/]*$", "a/c"));
        assert!(m("^(.*/)?b$", "x/y/b"));
        assert!(m("^(.*/)?b$", "b"));
        assert!(!m("^.*$", "a\nb"));
        assert!(m("^[^/]$", "\n"));
        assert!(m("^[\\]a]$", "]"));
        assert!(m("^[]a]$", "]"));
        assert!(m("^[a-ζ]$", "α"));
        assert!(m("^[!a]$", "!"));
        assert!(m("^[[:digit:]x]+$", "12x"));
        assert!(m("^[[:^digit:]]$", "a"));
        assert!(m("^\\d\\w\\s$", "1_ "));
        assert!(m("^a\\x41\\x{42}\\101$", "aABA"));
        assert!(m("^a|b$", "ax"));
        assert!(!m("^a^b$", "ab"));
        assert!(m("\\bfoo\\b", "a foo b"));
        assert!(m("^\\Q*.\\E$", "*."));
        assert!(m("^[[^/]*]$", "[^]"));
    }

    #[test]
    fn go_regexp_errors() {
        for bad in [
            "[Local-Only]",
            "[a",
            "\\q",
            "a\\",
            "(a",
            "a)",
            "**",
            "[[:foo:]]",
            "\\8",
            "\\pL",
            "[z-a]",
        ] {
            assert!(Regex::compile(bad).is_err(), "{bad}");
        }
        let deep = "(".repeat(10_000);
        assert!(Regex::compile(&deep).is_err());
    }
}
