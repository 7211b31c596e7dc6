//! Substitution patterns for `${v#p}`, `${v%p}` and `${v/p/r}`, matched as BuildKit's
//! translation to a Go regexp matches them: `*` (lazy or greedy) and `?` never match a
//! newline, everything else is literal, and `//` replacements are Go templates.

use std::cell::Cell;
use std::rc::Rc;

use super::{PatternProblem, ShellError};

/// Tok is one element of a substitution pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    Lit(char),
    /// `*`: any run of characters but newlines.
    Star,
    /// `?`: one character but a newline.
    One,
}

/// Fail is why a substitution stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fail {
    /// The result grew past the limit.
    TooLong,
    /// Matching used up the lexer's step budget.
    TooCostly,
}

/// Pattern is a compiled `#`/`%`/`/` pattern, matched like BuildKit's regexp translation,
/// drawing on a step budget shared by every expansion of a build.
#[derive(Debug)]
pub(super) struct Pattern(Vec<Tok>, Rc<Cell<u64>>);

impl Pattern {
    pub(super) fn parse(text: &str, budget: Rc<Cell<u64>>) -> Result<Pattern, ShellError> {
        let invalid = |problem| ShellError::InvalidPattern {
            pattern: text.to_string(),
            problem,
        };
        let mut toks = Vec::new();
        let mut it = text.chars().peekable();
        while let Some(c) = it.next() {
            match c {
                '*' => toks.push(Tok::Star),
                '?' => toks.push(Tok::One),
                // `\}` and `\/` only protect the delimiter: the backslash is dropped.
                '\\' if matches!(it.peek(), Some('}' | '/')) => {}
                '\\' => match it.next() {
                    Some(n @ ('*' | '?' | '\\')) => toks.push(Tok::Lit(n)),
                    Some(n) => return Err(invalid(PatternProblem::InvalidEscape(n))),
                    None => return Err(invalid(PatternProblem::TrailingEscape)),
                },
                c => toks.push(Tok::Lit(c)),
            }
        }
        Ok(Pattern(toks, budget))
    }

    /// Lengths of the prefixes of `s` the pattern matches entirely, ascending.
    fn match_lengths(&self, s: &[char]) -> Result<Vec<usize>, Fail> {
        let toks = &self.0;
        let m = toks.len();
        let step = m as u64 + 1;
        let mut states = vec![false; m + 1];
        states[0] = true;
        close(toks, &mut states);
        let mut out = Vec::new();
        for i in 0..=s.len() {
            if states[m] {
                out.push(i);
            }
            let Some(&c) = s.get(i) else { break };
            let left = self.1.get().checked_sub(step).ok_or(Fail::TooCostly)?;
            self.1.set(left);
            let mut next = vec![false; m + 1];
            let mut alive = false;
            for k in (0..m).filter(|&k| states[k]) {
                let to = match toks[k] {
                    Tok::Lit(l) if l == c => k + 1,
                    Tok::One if c != '\n' => k + 1,
                    Tok::Star if c != '\n' => k,
                    _ => continue,
                };
                next[to] = true;
                alive = true;
            }
            if !alive {
                break;
            }
            close(toks, &mut next);
            states = next;
        }
        Ok(out)
    }

    pub(super) fn trim_prefix(&self, value: &str, greedy: bool) -> Result<String, Fail> {
        let s: Vec<char> = value.chars().collect();
        let lens = self.match_lengths(&s)?;
        Ok(match if greedy { lens.last() } else { lens.first() } {
            Some(&n) => s[n..].iter().collect(),
            None => value.to_string(),
        })
    }

    pub(super) fn trim_suffix(&self, value: &str, greedy: bool) -> Result<String, Fail> {
        // The shortest or longest suffix is a prefix match of the reversed pattern on the
        // reversed value.
        let rev = Pattern(self.0.iter().rev().copied().collect(), self.1.clone());
        let s: Vec<char> = value.chars().rev().collect();
        let lens = rev.match_lengths(&s)?;
        Ok(match if greedy { lens.last() } else { lens.first() } {
            Some(&n) => s[n..].iter().rev().collect(),
            None => value.to_string(),
        })
    }

    /// The leftmost match at or after `from`, longest at its start (Go's leftmost-first
    /// with greedy stars), as char indices.
    fn find(&self, s: &[char], from: usize) -> Result<Option<(usize, usize)>, Fail> {
        for i in from..=s.len() {
            if let Some(n) = self.match_lengths(&s[i..])?.last() {
                return Ok(Some((i, i + n)));
            }
        }
        Ok(None)
    }

    pub(super) fn replace_first(&self, value: &str, replacement: &str) -> Result<String, Fail> {
        let s: Vec<char> = value.chars().collect();
        Ok(match self.find(&s, 0)? {
            Some((a, b)) => {
                let mut out: String = s[..a].iter().collect();
                out.push_str(replacement);
                out.extend(&s[b..]);
                out
            }
            None => value.to_string(),
        })
    }

    /// Go's `Regexp.ReplaceAllString`: non-overlapping matches, an empty match right
    /// after a match is not replaced, and `$` in the replacement is a template; fails
    /// once the result would exceed `limit` bytes (each match may insert a whole
    /// replacement, so the result can be the product of the two lengths).
    pub(super) fn replace_all(&self, value: &str, replacement: &str, limit: usize) -> Result<String, Fail> {
        let s: Vec<char> = value.chars().collect();
        let mut out = String::new();
        let (mut last_end, mut search) = (0, 0);
        while search <= s.len() {
            let Some((a, b)) = self.find(&s, search)? else { break };
            out.extend(&s[last_end..a]);
            if b > last_end || a == 0 {
                let matched: String = s[a..b].iter().collect();
                go_expand_template(&mut out, replacement, &matched, limit).ok_or(Fail::TooLong)?;
            }
            if out.len() > limit {
                return Err(Fail::TooLong);
            }
            last_end = b;
            search = if b > search { b } else { search + 1 };
        }
        out.extend(&s[last_end.min(s.len())..]);
        Ok(out)
    }
}

/// Adds the states reachable through `*` (which may match nothing).
fn close(toks: &[Tok], states: &mut [bool]) {
    for k in 0..toks.len() {
        if states[k] && toks[k] == Tok::Star {
            states[k + 1] = true;
        }
    }
}

/// Expands a Go regexp replacement template for a pattern without groups: `$$` is `$`,
/// `$0`/`${0}` the whole match, any other `$name`/`${name}` nothing, and a malformed
/// reference stays literal. Appends to `out`; `None` once `out` exceeds `limit` bytes.
fn go_expand_template(out: &mut String, template: &str, matched: &str, limit: usize) -> Option<()> {
    let mut rest = template;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        if let Some(r) = rest.strip_prefix('$') {
            out.push('$');
            rest = r;
            continue;
        }
        let (brace, body) = match rest.strip_prefix('{') {
            Some(b) => (true, b),
            None => (false, rest),
        };
        let end = body
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(body.len());
        let after = &body[end..];
        let after = if brace { after.strip_prefix('}') } else { Some(after) };
        match after {
            Some(after) if end > 0 => {
                if &body[..end] == "0" {
                    out.push_str(matched);
                    if out.len() > limit {
                        return None;
                    }
                }
                rest = after;
            }
            _ => out.push('$'),
        }
    }
    out.push_str(rest);
    (out.len() <= limit).then_some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Pattern {
        Pattern::parse(s, Rc::new(Cell::new(1 << 28))).unwrap()
    }

    #[test]
    fn shortest_and_longest() {
        assert_eq!(p("*").trim_prefix("abc", false).unwrap(), "abc");
        assert_eq!(p("*").trim_prefix("abc", true).unwrap(), "");
        assert_eq!(p("*b").trim_prefix("abab", false).unwrap(), "ab");
        assert_eq!(p("*b").trim_prefix("abab", true).unwrap(), "");
        assert_eq!(p("b*").trim_suffix("abab", false).unwrap(), "aba");
        assert_eq!(p("b*").trim_suffix("abab", true).unwrap(), "a");
        assert_eq!(p("a\\*").trim_suffix("xa*", false).unwrap(), "x");
        assert_eq!(p("?").trim_suffix("é", false).unwrap(), "");
    }

    #[test]
    fn wildcards_stop_at_newlines() {
        assert_eq!(p("*b").trim_prefix("a\nb", true).unwrap(), "a\nb");
        assert_eq!(p("?b").trim_prefix("\nb", true).unwrap(), "\nb");
        assert_eq!(p("\n*").trim_suffix("a\nb", true).unwrap(), "a");
        assert_eq!(p("*").replace_all("a\nb", "x", 100).unwrap(), "x\nx");
    }

    #[test]
    fn quadratic_matching_runs_out_of_budget() {
        // `*b` tried at each of 10,000 starts runs to the end every time: 1.5e8 steps.
        let value = "a".repeat(10_000);
        let budget = Rc::new(Cell::new(10_000_000));
        let quadratic = Pattern::parse("*b", budget.clone()).unwrap();
        assert_eq!(quadratic.replace_all(&value, "", usize::MAX), Err(Fail::TooCostly));
        assert!(budget.get() < 3, "budget left: {}", budget.get());
        // Linear cases stay within the same budget.
        let budget = Rc::new(Cell::new(10_000_000));
        let linear = Pattern::parse("*b", budget.clone()).unwrap();
        assert_eq!(linear.trim_prefix(&value, true).unwrap(), value);
        let a = Pattern::parse("a", budget.clone()).unwrap();
        assert_eq!(a.replace_all(&value, "", usize::MAX).unwrap(), "");
        assert!(budget.get() > 9_000_000);
    }

    #[test]
    fn go_replace_all_rules() {
        assert_eq!(p("").replace_all("ab", "-", 100).unwrap(), "-a-b-");
        assert_eq!(p("*").replace_all("ab", "-", 100).unwrap(), "-");
        assert_eq!(p("b*").replace_all("abab", "-", 100).unwrap(), "a-");
        assert_eq!(p("").replace_first("ab", "-").unwrap(), "-ab");
        let mut out = String::new();
        go_expand_template(&mut out, "$$ $0 ${0} $x ${x} ${ $", "M", 100).unwrap();
        assert_eq!(out, "$ M M   ${ $");
    }

    #[test]
    fn escapes() {
        assert!(Pattern::parse("\\}", Rc::default()).is_ok() && Pattern::parse("\\/", Rc::default()).is_ok());
        assert_eq!(
            Pattern::parse("a\\b", Rc::default()).unwrap_err(),
            ShellError::InvalidPattern {
                pattern: "a\\b".into(),
                problem: PatternProblem::InvalidEscape('b')
            }
        );
        assert!(matches!(
            Pattern::parse("a\\", Rc::default()),
            Err(ShellError::InvalidPattern {
                problem: PatternProblem::TrailingEscape,
                ..
            })
        ));
    }
}
