//! Substitution patterns for `${v#p}`, `${v%p}` and `${v/p/r}`, matched as BuildKit's
//! translation to a Go regexp matches them: `*` (lazy or greedy) and `?` never match a
//! newline, everything else is literal, and `//` replacements are Go templates.

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

/// Pattern is a compiled `#`/`%`/`/` pattern, matched like BuildKit's regexp translation.
#[derive(Debug)]
pub(super) struct Pattern(Vec<Tok>);

impl Pattern {
    pub(super) fn parse(text: &str) -> Result<Pattern, ShellError> {
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
        Ok(Pattern(toks))
    }

    /// Lengths of the prefixes of `s` the pattern matches entirely, ascending.
    fn match_lengths(&self, s: &[char]) -> Vec<usize> {
        let toks = &self.0;
        let m = toks.len();
        let mut states = vec![false; m + 1];
        states[0] = true;
        close(toks, &mut states);
        let mut out = Vec::new();
        for i in 0..=s.len() {
            if states[m] {
                out.push(i);
            }
            let Some(&c) = s.get(i) else { break };
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
        out
    }

    pub(super) fn trim_prefix(&self, value: &str, greedy: bool) -> String {
        let s: Vec<char> = value.chars().collect();
        let lens = self.match_lengths(&s);
        match if greedy { lens.last() } else { lens.first() } {
            Some(&n) => s[n..].iter().collect(),
            None => value.to_string(),
        }
    }

    pub(super) fn trim_suffix(&self, value: &str, greedy: bool) -> String {
        // The shortest or longest suffix is a prefix match of the reversed pattern on the
        // reversed value.
        let rev = Pattern(self.0.iter().rev().copied().collect());
        let s: Vec<char> = value.chars().rev().collect();
        let lens = rev.match_lengths(&s);
        match if greedy { lens.last() } else { lens.first() } {
            Some(&n) => s[n..].iter().rev().collect(),
            None => value.to_string(),
        }
    }

    /// The leftmost match at or after `from`, longest at its start (Go's leftmost-first
    /// with greedy stars), as char indices.
    fn find(&self, s: &[char], from: usize) -> Option<(usize, usize)> {
        (from..=s.len()).find_map(|i| self.match_lengths(&s[i..]).last().map(|n| (i, i + n)))
    }

    pub(super) fn replace_first(&self, value: &str, replacement: &str) -> String {
        let s: Vec<char> = value.chars().collect();
        match self.find(&s, 0) {
            Some((a, b)) => {
                let mut out: String = s[..a].iter().collect();
                out.push_str(replacement);
                out.extend(&s[b..]);
                out
            }
            None => value.to_string(),
        }
    }

    /// Go's `Regexp.ReplaceAllString`: non-overlapping matches, an empty match right
    /// after a match is not replaced, and `$` in the replacement is a template; `None`
    /// once the result would exceed `limit` bytes (each match may insert a whole
    /// replacement, so the result can be the product of the two lengths).
    pub(super) fn replace_all(&self, value: &str, replacement: &str, limit: usize) -> Option<String> {
        let s: Vec<char> = value.chars().collect();
        let mut out = String::new();
        let (mut last_end, mut search) = (0, 0);
        while search <= s.len() {
            let Some((a, b)) = self.find(&s, search) else { break };
            out.extend(&s[last_end..a]);
            if b > last_end || a == 0 {
                let matched: String = s[a..b].iter().collect();
                go_expand_template(&mut out, replacement, &matched, limit)?;
            }
            if out.len() > limit {
                return None;
            }
            last_end = b;
            search = if b > search { b } else { search + 1 };
        }
        out.extend(&s[last_end.min(s.len())..]);
        Some(out)
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
        Pattern::parse(s).unwrap()
    }

    #[test]
    fn shortest_and_longest() {
        assert_eq!(p("*").trim_prefix("abc", false), "abc");
        assert_eq!(p("*").trim_prefix("abc", true), "");
        assert_eq!(p("*b").trim_prefix("abab", false), "ab");
        assert_eq!(p("*b").trim_prefix("abab", true), "");
        assert_eq!(p("b*").trim_suffix("abab", false), "aba");
        assert_eq!(p("b*").trim_suffix("abab", true), "a");
        assert_eq!(p("a\\*").trim_suffix("xa*", false), "x");
        assert_eq!(p("?").trim_suffix("é", false), "");
    }

    #[test]
    fn wildcards_stop_at_newlines() {
        assert_eq!(p("*b").trim_prefix("a\nb", true), "a\nb");
        assert_eq!(p("?b").trim_prefix("\nb", true), "\nb");
        assert_eq!(p("\n*").trim_suffix("a\nb", true), "a");
        assert_eq!(p("*").replace_all("a\nb", "x", 100).unwrap(), "x\nx");
    }

    #[test]
    fn go_replace_all_rules() {
        assert_eq!(p("").replace_all("ab", "-", 100).unwrap(), "-a-b-");
        assert_eq!(p("*").replace_all("ab", "-", 100).unwrap(), "-");
        assert_eq!(p("b*").replace_all("abab", "-", 100).unwrap(), "a-");
        assert_eq!(p("").replace_first("ab", "-"), "-ab");
        let mut out = String::new();
        go_expand_template(&mut out, "$$ $0 ${0} $x ${x} ${ $", "M", 100).unwrap();
        assert_eq!(out, "$ M M   ${ $");
    }

    #[test]
    fn escapes() {
        assert!(Pattern::parse("\\}").is_ok() && Pattern::parse("\\/").is_ok());
        assert_eq!(
            Pattern::parse("a\\b").unwrap_err(),
            ShellError::InvalidPattern {
                pattern: "a\\b".into(),
                problem: PatternProblem::InvalidEscape('b')
            }
        );
        assert!(matches!(
            Pattern::parse("a\\"),
            Err(ShellError::InvalidPattern {
                problem: PatternProblem::TrailingEscape,
                ..
            })
        ));
    }
}
