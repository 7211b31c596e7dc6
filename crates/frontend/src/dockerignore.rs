//! .dockerignore with Docker's semantics (moby/patternmatcher and its ignore-file
//! reader): patterns anchored at the context root, Go `filepath.Match` globs where `*`
//! and `?` never cross `/`, `**` for any number of directories, `!` to re-include,
//! the last matching pattern wins, and a pattern matching a directory excludes
//! everything below it.

use crate::pathmatch;

/// IgnoreError is a pattern Docker would reject.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IgnoreError {
    #[error("illegal exclusion pattern: `!`")]
    EmptyExclusion,
    #[error("syntax error in pattern `{0}`")]
    BadPattern(String),
}

/// Reads an ignore file into cleaned patterns, in order.
pub fn parse_ignore_file(text: &str) -> Vec<String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    for line in text.lines() {
        // Comments only where the line starts with `#`, before trimming (as Docker).
        if line.starts_with('#') {
            continue;
        }
        let mut p = line.trim();
        if p.is_empty() {
            continue;
        }
        let invert = p.starts_with('!');
        if invert {
            p = p[1..].trim();
        }
        let mut cleaned = if p.is_empty() { String::new() } else { clean(p) };
        if cleaned.len() > 1 && cleaned.starts_with('/') {
            cleaned.remove(0);
        }
        out.push(if invert { format!("!{cleaned}") } else { cleaned });
    }
    out
}

/// Go's `path.Clean` for slash paths.
pub fn clean(p: &str) -> String {
    if p.is_empty() {
        return ".".into();
    }
    let rooted = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|l| *l != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            c => parts.push(c),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

#[derive(Debug, Clone)]
enum Tok {
    Lit(char),
    /// `*`: any run without `/`.
    Star,
    /// `?`: one char but `/`.
    One,
    /// `[...]`, matched like a Go regexp class (may match `/`).
    Class(pathmatch::Class),
    /// `**` (with its following `/` eaten): `(.*/)?`.
    DirStar,
    /// `**` at the end: `.*`.
    Rest,
}

#[derive(Debug, Clone)]
struct Pattern {
    text: String,
    exclusion: bool,
    toks: Vec<Tok>,
}

impl Pattern {
    fn compile(raw: &str) -> Result<Pattern, IgnoreError> {
        let mut p = raw.trim();
        let exclusion = p.starts_with('!');
        if exclusion {
            p = &p[1..];
            if p.is_empty() {
                return Err(IgnoreError::EmptyExclusion);
            }
        }
        let mut text = clean(p);
        // The ignore-file reader strips a leading `/`; patterns given directly get the same.
        if text.len() > 1 && text.starts_with('/') {
            text.remove(0);
        }
        // Docker validates with filepath.Match(pattern, ".").
        if pathmatch::matches(&text, ".").is_none() {
            return Err(IgnoreError::BadPattern(raw.to_string()));
        }
        let c: Vec<char> = text.chars().collect();
        let mut toks = Vec::new();
        let mut i = 0;
        while i < c.len() {
            match c[i] {
                '*' if c.get(i + 1) == Some(&'*') => {
                    i += 2;
                    if c.get(i) == Some(&'/') {
                        i += 1;
                    }
                    toks.push(if i >= c.len() { Tok::Rest } else { Tok::DirStar });
                    continue;
                }
                '*' => toks.push(Tok::Star),
                '?' => toks.push(Tok::One),
                '\\' => {
                    if let Some(n) = c.get(i + 1) {
                        toks.push(Tok::Lit(*n));
                        i += 1;
                    } else {
                        toks.push(Tok::Lit('\\'));
                    }
                }
                '[' => {
                    let (cls, next) =
                        pathmatch::parse_class(&c, i, false).ok_or_else(|| IgnoreError::BadPattern(raw.to_string()))?;
                    toks.push(Tok::Class(cls));
                    i = next;
                    continue;
                }
                ch => toks.push(Tok::Lit(ch)),
            }
            i += 1;
        }
        Ok(Pattern { text, exclusion, toks })
    }

    fn matches(&self, path: &str) -> bool {
        let s: Vec<char> = path.chars().collect();
        let mut cur = vec![false; s.len() + 1];
        cur[0] = true;
        for t in &self.toks {
            let mut next = vec![false; s.len() + 1];
            for i in 0..=s.len() {
                if !cur[i] {
                    continue;
                }
                match t {
                    Tok::Lit(c) => {
                        if s.get(i) == Some(c) {
                            next[i + 1] = true;
                        }
                    }
                    Tok::One => {
                        if s.get(i).is_some_and(|c| *c != '/') {
                            next[i + 1] = true;
                        }
                    }
                    Tok::Star => {
                        next[i] = true;
                        let mut j = i;
                        while j < s.len() && s[j] != '/' {
                            j += 1;
                            next[j] = true;
                        }
                    }
                    Tok::Class(cls) => {
                        if s.get(i).is_some_and(|ch| cls.matches(*ch)) {
                            next[i + 1] = true;
                        }
                    }
                    Tok::DirStar => {
                        next[i] = true;
                        for j in i..s.len() {
                            if s[j] == '/' {
                                next[j + 1] = true;
                            }
                        }
                    }
                    Tok::Rest => next[i..].iter_mut().for_each(|x| *x = true),
                }
            }
            cur = next;
        }
        cur[s.len()]
    }
}

/// PatternMatcher decides which context paths a .dockerignore excludes.
#[derive(Debug, Clone, Default)]
pub struct PatternMatcher {
    patterns: Vec<Pattern>,
}

impl PatternMatcher {
    /// Compiles patterns (as from [`parse_ignore_file`]).
    pub fn new(patterns: &[String]) -> Result<Self, IgnoreError> {
        let patterns = patterns
            .iter()
            .filter(|p| !p.trim().is_empty())
            .map(|p| Pattern::compile(p))
            .collect::<Result<_, _>>()?;
        Ok(PatternMatcher { patterns })
    }

    /// Whether there are no patterns.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether `rel_path` (slash-separated, relative to the context root) is excluded,
    /// counting matches of its parent directories (Docker's MatchesOrParentMatches).
    pub fn is_excluded(&self, rel_path: &str) -> bool {
        let file = clean(rel_path);
        let parent: Vec<&str> = match file.rfind('/') {
            Some(i) => file[..i].split('/').collect(),
            None => Vec::new(),
        };
        let mut matched = false;
        for p in &self.patterns {
            if p.exclusion != matched {
                continue;
            }
            let mut m = p.matches(&file);
            if !m {
                for i in 0..parent.len() {
                    if p.matches(&parent[..=i].join("/")) {
                        m = true;
                        break;
                    }
                }
            }
            if m {
                matched = !p.exclusion;
            }
        }
        matched
    }

    /// Whether a walk may skip the whole directory `rel_dir`: it is excluded and no
    /// `!` pattern could re-include anything below it.
    pub fn can_skip_dir(&self, rel_dir: &str) -> bool {
        if !self.is_excluded(rel_dir) {
            return false;
        }
        let dir = clean(rel_dir);
        let dir_parts: Vec<&str> = dir.split('/').collect();
        !self
            .patterns
            .iter()
            .filter(|p| p.exclusion)
            .any(|p| could_match_below(&p.text, &dir_parts))
    }
}

/// Whether pattern `pat` could match some path strictly below `dir`.
fn could_match_below(pat: &str, dir: &[&str]) -> bool {
    let parts: Vec<&str> = pat.split('/').collect();
    for (i, d) in dir.iter().enumerate() {
        let Some(p) = parts.get(i) else { return false };
        if p.contains("**") {
            return true;
        }
        if pathmatch::matches(p, d) != Some(true) {
            return false;
        }
    }
    parts.len() > dir.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(patterns: &[&str]) -> PatternMatcher {
        PatternMatcher::new(&patterns.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn reads_ignore_files_like_docker() {
        let text = "\u{feff}# comment\n\n  *.log  \n!  keep.log\n/abs/path\n./rel/../x\n #not a comment\n";
        assert_eq!(
            parse_ignore_file(text),
            ["*.log", "!keep.log", "abs/path", "x", "#not a comment"]
        );
    }

    #[test]
    fn patternmatcher_cases() {
        // (patterns, path, excluded)
        let cases: &[(&[&str], &str, bool)] = &[
            (&["*"], "fileutils.go", true),
            (&["*.go"], "fileutils.go", true),
            (&["*.go"], "dir/fileutils.go", false),
            (&["**/*.go"], "dir/fileutils.go", true),
            (&["**/*.go"], "fileutils.go", true),
            (&["**"], "a/b/c", true),
            (&["dir/**"], "dir/a/b", true),
            (&["dir/**"], "dir", false),
            (&["**/foo"], "a/b/foo", true),
            (&["**/foo/**"], "a/foo/b", true),
            (&["a/**/b"], "a/b", true),
            (&["a/**/b"], "a/x/y/b", true),
            (&["*/temp*"], "somedir/temporary.txt", true),
            (&["*/temp*"], "temp", false),
            (&["*/*/temp*"], "somedir/subdir/temporary.txt", true),
            (&["temp?"], "temp1", true),
            (&["temp?"], "temp12", false),
            (&["temp?"], "temp/", false),
            (&["docs"], "docs/file.txt", true),
            (&["docs"], "docsfile", false),
            (&["*.md", "!README*.md"], "README-x.md", false),
            (&["*.md", "!README*.md"], "CHANGES.md", true),
            (&["*.md", "!README*.md", "README-secret.md"], "README-secret.md", true),
            (&["logs", "!logs/keep.txt"], "logs/keep.txt", false),
            (&["logs", "!logs/keep.txt"], "logs/other.txt", true),
            (&["a[b-d]c"], "acc", true),
            (&["a[^b-d]c"], "acc", false),
            (&["a[^b-d]c"], "axc", true),
            (&["a\\*c"], "a*c", true),
            (&["a\\*c"], "abc", false),
            (&["/abs"], "abs", true),
            (&["./dot"], "dot", true),
            (&["a/../b"], "b", true),
            (&["!x", "x"], "x", true),
            (&["x", "!x"], "x", false),
            (&["dir/*"], "dir/sub/file", true),
            (&["dir/*/"], "dir/sub/file", true),
        ];
        for (patterns, path, want) in cases {
            assert_eq!(
                m(patterns).is_excluded(path),
                *want,
                "patterns {patterns:?} path {path:?}"
            );
        }
    }

    #[test]
    fn bad_patterns_are_errors() {
        assert_eq!(
            PatternMatcher::new(&["!".to_string()]).unwrap_err(),
            IgnoreError::EmptyExclusion
        );
        assert!(matches!(
            PatternMatcher::new(&["a[".to_string()]),
            Err(IgnoreError::BadPattern(_))
        ));
        assert!(matches!(
            PatternMatcher::new(&["[^".to_string()]),
            Err(IgnoreError::BadPattern(_))
        ));
    }

    #[test]
    fn skipping_directories() {
        let p = m(&["logs", "!logs/keep.txt", "cache"]);
        assert!(!p.can_skip_dir("logs"));
        assert!(p.can_skip_dir("cache"));
        assert!(!p.can_skip_dir("src"));
        let p = m(&["vendor", "!**/LICENSE"]);
        assert!(!p.can_skip_dir("vendor"));
    }
}
