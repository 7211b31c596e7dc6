//! Go `filepath.Match` semantics (COPY sources, .dockerignore validation): `*` and `?` never match `/`,
//! `[...]` classes with ranges and `^`/`!` negation, `\` escapes.

/// Whether `name` matches `pattern`; `None` when the pattern is malformed.
pub fn matches(pattern: &str, name: &str) -> Option<bool> {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    match_from(&p, &n)
}

/// Whether `s` has glob metacharacters.
pub fn has_meta(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

fn match_from(p: &[char], n: &[char]) -> Option<bool> {
    let (mut pi, mut ni) = (0, 0);
    // Backtracking point for the last `*`: (pattern index after star, name index).
    let mut star: Option<(usize, usize)> = None;
    loop {
        if pi < p.len() {
            match p[pi] {
                '*' => {
                    star = Some((pi + 1, ni));
                    pi += 1;
                    continue;
                }
                '?' if ni < n.len() && n[ni] != '/' => {
                    pi += 1;
                    ni += 1;
                    continue;
                }
                '[' if ni < n.len() => {
                    let (ok, next) = class(p, pi, n[ni])?;
                    if ok && n[ni] != '/' {
                        pi = next;
                        ni += 1;
                        continue;
                    }
                }
                '\\' => {
                    let c = *p.get(pi + 1)?;
                    if ni < n.len() && n[ni] == c {
                        pi += 2;
                        ni += 1;
                        continue;
                    }
                }
                c if c != '?' && c != '[' && ni < n.len() && n[ni] == c => {
                    pi += 1;
                    ni += 1;
                    continue;
                }
                '[' => {
                    class(p, pi, '\0')?;
                }
                _ => {}
            }
        } else if ni == n.len() {
            return Some(true);
        }
        // Mismatch: let the last star eat one more character (never a '/').
        match star {
            Some((sp, sn)) if sn < n.len() && n[sn] != '/' => {
                star = Some((sp, sn + 1));
                pi = sp;
                ni = sn + 1;
            }
            _ => {
                // Validate the rest of the pattern so malformed patterns always error.
                validate(&p[pi.min(p.len())..])?;
                return Some(false);
            }
        }
    }
}

fn validate(p: &[char]) -> Option<()> {
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            '\\' => {
                p.get(i + 1)?;
                i += 2;
            }
            '[' => i = class(p, i, '\0')?.1,
            _ => i += 1,
        }
    }
    Some(())
}

/// Class is a parsed `[...]` character class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Class {
    pub negated: bool,
    pub items: Vec<(char, char)>,
}

impl Class {
    pub(crate) fn matches(&self, c: char) -> bool {
        self.items.iter().any(|(lo, hi)| *lo <= c && c <= *hi) != self.negated
    }
}

/// Parses the class starting at `p[start] == '['` with Go's rules: ranges, `\\`
/// escapes, `^` negation; an unescaped `-` or `]` where a character is expected is a
/// malformed pattern. Returns the class and the index after `]`, or `None`.
pub(crate) fn parse_class(p: &[char], start: usize) -> Option<(Class, usize)> {
    let mut i = start + 1;
    let negated = p.get(i) == Some(&'^');
    if negated {
        i += 1;
    }
    let mut items = Vec::new();
    // One character of a range: escaped, or anything but `-` and `]`.
    let esc = |i: &mut usize| -> Option<char> {
        let c = *p.get(*i)?;
        *i += 1;
        match c {
            '\\' => {
                let e = *p.get(*i)?;
                *i += 1;
                Some(e)
            }
            '-' | ']' => None,
            c => Some(c),
        }
    };
    loop {
        if p.get(i) == Some(&']') && !items.is_empty() {
            return Some((Class { negated, items }, i + 1));
        }
        let lo = esc(&mut i)?;
        let mut hi = lo;
        if p.get(i) == Some(&'-') {
            i += 1;
            // A reversed range is allowed and matches nothing, as in Go.
            hi = esc(&mut i)?;
        }
        items.push((lo, hi));
    }
}

fn class(p: &[char], start: usize, c: char) -> Option<(bool, usize)> {
    let (cls, next) = parse_class(p, start)?;
    Some((cls.matches(c), next))
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn go_filepath_match_cases() {
        let cases = [
            ("abc", "abc", Some(true)),
            ("*", "abc", Some(true)),
            ("*c", "abc", Some(true)),
            ("a*", "a", Some(true)),
            ("a*/b", "abc/b", Some(true)),
            ("a*/b", "a/c/b", Some(false)),
            ("a*b*c*d*e*/f", "axbxcxdxe/f", Some(true)),
            ("ab[c]", "abc", Some(true)),
            ("ab[b-d]", "abc", Some(true)),
            ("ab[e-g]", "abc", Some(false)),
            ("ab[^c]", "abc", Some(false)),
            ("ab[^b-d]", "abe", Some(true)),
            ("ab[!c]", "abc", Some(true)),
            ("ab[!c]", "abd", Some(false)),
            ("[]a]", "]", None),
            ("[-a]", "a", None),
            ("[a-]", "a", None),
            ("[z-a]", "a", Some(false)),
            ("[\\]a]", "]", Some(true)),
            ("a\\*b", "a*b", Some(true)),
            ("a\\*b", "ab", Some(false)),
            ("a?b", "a☺b", Some(true)),
            ("a?b", "a/b", Some(false)),
            ("*.txt", "dir/a.txt", Some(false)),
            ("[", "a", None),
            ("[^", "a", None),
            ("a[", "a", None),
            ("*x", "xxx", Some(true)),
        ];
        for (p, n, want) in cases {
            assert_eq!(matches(p, n), want, "pattern {p:?} name {n:?}");
        }
    }
}
