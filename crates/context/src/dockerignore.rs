//! .dockerignore with Docker's semantics: moby/patternmatcher's `ignorefile.ReadAll`
//! and `PatternMatcher`, applied the way BuildKit's context walker (tonistiigi/fsutil)
//! applies them. Patterns are anchored at the context root; `*` and `?` never cross
//! `/`; `**` spans directories; `!` re-includes; the last matching pattern wins; a
//! pattern matching a directory excludes everything below it.
//!
//! Like patternmatcher, each pattern is an exact string, a prefix (`dir/**`), a suffix
//! (`**/name`, note `**name` then matches any path ending in `name`) or a Go regexp
//! built from the glob, in which `[...]`, `\x` and `^` keep their regexp meaning.

mod regex;
#[cfg(test)]
mod tests;

use self::regex::Regex;
pub use self::regex::RegexError;

/// IgnoreError is a pattern Docker would reject.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IgnoreError {
    #[error("illegal exclusion pattern: `!`")]
    EmptyExclusion,
    /// Go's `filepath.Match` rejects the pattern (e.g. an unterminated `[`).
    #[error("syntax error in pattern `{pattern}`")]
    BadPattern { pattern: String },
    /// The pattern is a valid glob, but the regexp Docker builds from it is not; Docker
    /// fails on it when matching ("syntax error in pattern"), kiln when compiling.
    #[error("syntax error in pattern `{pattern}`: {source}")]
    BadRegexp {
        pattern: String,
        #[source]
        source: RegexError,
    },
}

/// parse_ignore_file reads an ignore file into cleaned patterns, in order, as Docker's
/// `ignorefile.ReadAll`: a BOM is dropped, lines starting with `#` are comments, lines
/// are trimmed and empty ones dropped, and each pattern (after a `!`) is cleaned like
/// `filepath.Clean` with a leading `/` removed.
pub fn parse_ignore_file(text: &str) -> Vec<String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    for line in text.lines() {
        // A comment only where the line starts with `#`, before trimming.
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

/// clean is Go's `path.Clean` for slash-separated paths.
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

/// How one pattern matches, as patternmatcher decides it.
#[derive(Debug, Clone)]
enum Kind {
    /// The path equals the pattern.
    Exact,
    /// `dir/**` (no other wildcard before it): the path starts with `dir/`.
    Prefix,
    /// `**…` with nothing but literal characters after: the path ends with the rest.
    Suffix,
    Regexp(Regex),
}

#[derive(Debug, Clone)]
struct Pattern {
    /// The cleaned pattern, without its `!`.
    text: String,
    exclusion: bool,
    kind: Kind,
}

impl Pattern {
    /// Compiles one pattern as patternmatcher's `New` does; `None` for a blank one.
    fn compile(raw: &str) -> Result<Option<Pattern>, IgnoreError> {
        let p = raw.trim();
        if p.is_empty() {
            return Ok(None);
        }
        // Docker cleans before looking at `!`, so `!a/../b` is the pattern `b`.
        let cleaned = clean(p);
        let (exclusion, text) = match cleaned.strip_prefix('!') {
            Some("") => return Err(IgnoreError::EmptyExclusion),
            Some(rest) => (true, rest.to_string()),
            None => (false, cleaned),
        };
        if !go_glob_is_valid(&text) {
            return Err(IgnoreError::BadPattern {
                pattern: raw.to_string(),
            });
        }
        let kind = kind_of(&text).map_err(|source| IgnoreError::BadRegexp {
            pattern: raw.to_string(),
            source,
        })?;
        Ok(Some(Pattern { text, exclusion, kind }))
    }

    /// patternmatcher's `Pattern.match`.
    fn matches(&self, path: &str) -> bool {
        match &self.kind {
            Kind::Exact => path == self.text,
            Kind::Prefix => path.starts_with(self.text.strip_suffix("**").unwrap_or(&self.text)),
            Kind::Suffix => {
                let suffix = self.text.strip_prefix("**").unwrap_or(&self.text);
                path.ends_with(suffix) || suffix.strip_prefix('/').is_some_and(|s| path == s)
            }
            Kind::Regexp(re) => re.is_match(path),
        }
    }
}

/// Characters patternmatcher escapes: regexp syntax with no meaning in a glob.
fn should_escape(c: char) -> bool {
    matches!(c, '.' | '+' | '(' | ')' | '|' | '{' | '}' | '$')
}

/// Decides the match kind and builds the regexp exactly as patternmatcher's `compile`.
fn kind_of(text: &str) -> Result<Kind, RegexError> {
    #[derive(PartialEq)]
    enum T {
        Exact,
        Prefix,
        Suffix,
        Regexp,
    }
    let c: Vec<char> = text.chars().collect();
    let mut re = String::from("^");
    let mut ty = T::Exact;
    let mut i = 0;
    let mut first = true;
    while i < c.len() {
        let ch = c[i];
        i += 1;
        if ch == '*' && c.get(i) == Some(&'*') {
            i += 1;
            // `**/` is `**`.
            if c.get(i) == Some(&'/') {
                i += 1;
            }
            if i >= c.len() {
                if ty == T::Exact {
                    ty = T::Prefix;
                } else {
                    re.push_str(".*");
                    ty = T::Regexp;
                }
            } else {
                re.push_str("(.*/)?");
                ty = T::Regexp;
            }
            if first {
                ty = T::Suffix;
            }
        } else if ch == '*' {
            re.push_str("[^/]*");
            ty = T::Regexp;
        } else if ch == '?' {
            re.push_str("[^/]");
            ty = T::Regexp;
        } else if should_escape(ch) {
            re.push('\\');
            re.push(ch);
        } else if ch == '\\' {
            match c.get(i) {
                Some(&n) => {
                    re.push('\\');
                    re.push(n);
                    i += 1;
                    ty = T::Regexp;
                }
                None => re.push('\\'),
            }
        } else if ch == '[' || ch == ']' {
            re.push(ch);
            ty = T::Regexp;
        } else {
            re.push(ch);
        }
        first = false;
    }
    Ok(match ty {
        T::Exact => Kind::Exact,
        T::Prefix => Kind::Prefix,
        T::Suffix => Kind::Suffix,
        T::Regexp => {
            re.push('$');
            Kind::Regexp(Regex::compile(&re)?)
        }
    })
}

/// Whether Go's `filepath.Match` accepts `pattern` (it checks every chunk between
/// unbracketed stars, whatever the name).
fn go_glob_is_valid(pattern: &str) -> bool {
    let c: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    while i < c.len() {
        while c.get(i) == Some(&'*') {
            i += 1;
        }
        // The chunk runs to the next `*` outside brackets; `\x` is skipped whole.
        let start = i;
        let mut in_range = false;
        while i < c.len() {
            match c[i] {
                '\\' if i + 1 < c.len() => i += 1,
                '[' => in_range = true,
                ']' => in_range = false,
                '*' if !in_range => break,
                _ => {}
            }
            i += 1;
        }
        if !go_chunk_is_valid(&c[start..i]) {
            return false;
        }
    }
    true
}

fn go_chunk_is_valid(c: &[char]) -> bool {
    // One class bound (Go's getEsc): not `-` or `]`, `\x` allowed, and something must follow.
    let bound = |i: usize| -> Option<usize> {
        let mut j = i;
        match c.get(j)? {
            '-' | ']' => return None,
            '\\' => j += 1,
            _ => {}
        }
        c.get(j)?;
        j += 1;
        c.get(j)?;
        Some(j)
    };
    let mut i = 0;
    while i < c.len() {
        match c[i] {
            '[' => {
                i += 1;
                if c.get(i) == Some(&'^') {
                    i += 1;
                }
                let mut ranges = 0;
                loop {
                    if c.get(i) == Some(&']') && ranges > 0 {
                        i += 1;
                        break;
                    }
                    let Some(j) = bound(i) else { return false };
                    i = j;
                    if c[i] == '-' {
                        let Some(j) = bound(i + 1) else { return false };
                        i = j;
                    }
                    ranges += 1;
                }
            }
            '\\' => {
                if i + 1 >= c.len() {
                    return false;
                }
                i += 2;
            }
            _ => i += 1,
        }
    }
    true
}

/// PatternMatcher decides which context paths a .dockerignore excludes.
#[derive(Debug, Clone, Default)]
pub struct PatternMatcher {
    patterns: Vec<Pattern>,
    /// Whether any pattern starts with `!`.
    exclusions: bool,
    /// Whether every `!` pattern, less a trailing `/**` or `/*`, is a plain path, so a
    /// walk can tell from a directory's name alone that nothing below it comes back.
    only_prefix_exceptions: bool,
}

impl PatternMatcher {
    /// PatternMatcher::new compiles patterns (as from [`parse_ignore_file`]) the way
    /// Docker's `patternmatcher.New` does: trimmed, cleaned, blank ones skipped.
    pub fn new(patterns: &[String]) -> Result<Self, IgnoreError> {
        let mut compiled = Vec::new();
        for p in patterns {
            if let Some(p) = Pattern::compile(p)? {
                compiled.push(p);
            }
        }
        let exclusions = compiled.iter().any(|p| p.exclusion);
        let only_prefix_exceptions = compiled
            .iter()
            .filter(|p| p.exclusion)
            .all(|p| !without_trailing_glob(&p.text).contains(['*', '[', ']', '?', '^', '\\']));
        Ok(PatternMatcher {
            patterns: compiled,
            exclusions,
            only_prefix_exceptions,
        })
    }

    /// Whether there are no patterns.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether `rel_path` (slash-separated, relative to the context root, no leading
    /// "./" or "/") is excluded, taking parent-directory matches into account.
    ///
    /// This is what BuildKit's context walker computes: each directory on the way down
    /// is matched using its parent's per-pattern results (`MatchesUsingParentResults`),
    /// and a path below a directory the walker skips is excluded. It agrees with
    /// [`PatternMatcher::matches_or_parent_matches`] except for a `!` pattern naming a
    /// directory above an earlier excluded path (`a/b`, `!a` keeps `a/b` excluded).
    pub fn is_excluded(&self, rel_path: &str) -> bool {
        let path = clean(rel_path);
        let path = path.trim_start_matches('/');
        if path.is_empty() || path == "." || self.patterns.is_empty() {
            return false;
        }
        let parts: Vec<&str> = path.split('/').collect();
        let mut parent: Option<Vec<bool>> = None;
        let mut excluded = false;
        for k in 0..parts.len() {
            let prefix = parts[..=k].join("/");
            let (m, info) = self.matches_using_parent(&prefix, parent.as_deref());
            if m && k + 1 < parts.len() && self.dir_skippable(&prefix) {
                return true;
            }
            excluded = m;
            parent = Some(info);
        }
        excluded
    }

    /// Whether a whole excluded directory can be skipped while walking: true only when
    /// `rel_dir` is excluded and no `!` pattern could re-include anything below it
    /// (BuildKit's walker: only when every `!` pattern is a plain path and none lies
    /// below `rel_dir`).
    pub fn can_skip_dir(&self, rel_dir: &str) -> bool {
        self.is_excluded(rel_dir) && self.dir_skippable(clean(rel_dir).trim_start_matches('/'))
    }

    /// Docker's `MatchesOrParentMatches` (the classic builder's rule): the path, or any
    /// of its parent directories, matched pattern by pattern, the last match winning.
    pub fn matches_or_parent_matches(&self, rel_path: &str) -> bool {
        let file = clean(rel_path);
        if file == "." {
            return false;
        }
        self.matches_using_parent(&file, None).0
    }

    /// patternmatcher's `MatchesUsingParentResults`; with no parent results, parent
    /// directories are matched directly as `MatchesOrParentMatches` does.
    fn matches_using_parent(&self, file: &str, parent: Option<&[bool]>) -> (bool, Vec<bool>) {
        let dirs: Vec<&str> = match file.rfind('/') {
            Some(i) if parent.is_none() => file[..i].split('/').collect(),
            _ => Vec::new(),
        };
        let mut matched = false;
        let mut info = vec![false; self.patterns.len()];
        for (i, p) in self.patterns.iter().enumerate() {
            let mut m = parent.and_then(|pm| pm.get(i).copied()).unwrap_or(false);
            if !m {
                // An inclusion cannot change an excluded path, nor an exclusion an
                // included one.
                if p.exclusion != matched {
                    continue;
                }
                m = p.matches(file) || (1..=dirs.len()).any(|n| p.matches(&dirs[..n].join("/")));
            }
            info[i] = m;
            if m {
                matched = !p.exclusion;
            }
        }
        (matched, info)
    }

    /// The walker's test for an excluded directory `dir`.
    fn dir_skippable(&self, dir: &str) -> bool {
        if !self.only_prefix_exceptions {
            return false;
        }
        if !self.exclusions {
            return true;
        }
        let dir_slash = format!("{dir}/");
        !self
            .patterns
            .iter()
            .filter(|p| p.exclusion)
            .any(|p| format!("{}/", without_trailing_glob(&p.text)).starts_with(&dir_slash))
    }
}

/// A pattern less one trailing `/**`, then one trailing `/*` (fsutil's
/// `patternWithoutTrailingGlob`).
fn without_trailing_glob(p: &str) -> &str {
    let p = p.strip_suffix("/**").unwrap_or(p);
    p.strip_suffix("/*").unwrap_or(p)
}
