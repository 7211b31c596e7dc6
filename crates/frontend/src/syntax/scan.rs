//! The line layer of the Dockerfile parser: parser directives, comments, line
//! continuations and heredoc bodies, producing one [`Node`] per instruction.
//!
//! This follows BuildKit's `parser.Parse` line for line (its quirks are the
//! Dockerfile language): a directive is only recognised before the first other line,
//! a comment line inside a continued instruction is dropped, an empty continuation
//! line is skipped, and the escape token followed by blanks at the end of a line
//! continues it.

use std::sync::Arc;

use crate::error::{ErrorKind, SyntaxError};

use super::node::{new_node_from_line, Heredoc, Node};

/// Directives holds the parser directives found at the top of a Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directives {
    /// `# escape=` (default `\`).
    pub escape: char,
    /// `# syntax=`, e.g. `docker/dockerfile:1`; kiln reads it but always uses itself.
    pub syntax: Option<String>,
    /// `# check=`, e.g. `skip=JSONArgsRecommended;error=true`.
    pub check: Option<String>,
}

impl Default for Directives {
    fn default() -> Self {
        Directives {
            escape: '\\',
            syntax: None,
            check: None,
        }
    }
}

struct DirectiveState {
    d: Directives,
    done: bool,
    seen: Vec<String>,
}

impl DirectiveState {
    /// Looks for `# key=value` on a line; any other line ends the directive block.
    fn possible(&mut self, line: &str, line_no: u32) -> Result<(), SyntaxError> {
        if self.done {
            return Ok(());
        }
        let Some((key, value)) = match_directive(line) else {
            self.done = true;
            return Ok(());
        };
        let key = key.to_ascii_lowercase();
        if !matches!(key.as_str(), "escape" | "syntax" | "check") {
            self.done = true;
            return Ok(());
        }
        if self.seen.contains(&key) {
            return Err(SyntaxError::at(
                line_no,
                line_no,
                ErrorKind::DirectiveRepeated { name: key },
            ));
        }
        self.seen.push(key.clone());
        match key.as_str() {
            "escape" => match value {
                "\\" => self.d.escape = '\\',
                "`" => self.d.escape = '`',
                v => {
                    return Err(SyntaxError::at(
                        line_no,
                        line_no,
                        ErrorKind::InvalidEscapeToken { value: v.to_string() },
                    ))
                }
            },
            "syntax" => self.d.syntax = Some(value.to_string()),
            _ => self.d.check = Some(value.to_string()),
        }
        Ok(())
    }
}

/// Matches `^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$`.
fn match_directive(line: &str) -> Option<(&str, &str)> {
    let rest = line.strip_prefix('#')?.trim_start();
    let key_len = rest
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())))
        .map(|(i, _)| i)
        .unwrap_or(rest.len());
    if key_len == 0 {
        return None;
    }
    let key = &rest[..key_len];
    let value = rest[key_len..].trim_start().strip_prefix('=')?.trim();
    if value.is_empty() {
        return None;
    }
    Some((key, value))
}

/// Scanned is a parsed Dockerfile at the line layer.
#[derive(Debug)]
pub struct Scanned {
    pub directives: Directives,
    pub nodes: Vec<Node>,
    /// Lines (1-based) that continue an instruction but are empty.
    pub empty_continuations: Vec<u32>,
}

fn trim_newline(s: &str) -> &str {
    s.trim_end_matches(['\r', '\n'])
}

fn is_comment(raw: &str) -> bool {
    trim_newline(raw).trim_start().starts_with('#')
}

/// Removes a trailing line-continuation escape; returns the line and whether the
/// instruction ends here (BuildKit: `([^E])E[ \t]*$|^E[ \t]*$` → `$1`).
fn trim_continuation(line: &str, escape: char) -> (String, bool) {
    let trimmed = line.trim_end_matches([' ', '\t']);
    if let Some(before) = trimmed.strip_suffix(escape) {
        if before.is_empty() {
            return (String::new(), false);
        }
        if !before.ends_with(escape) {
            return (before.to_string(), false);
        }
    }
    (line.to_string(), true)
}

/// Processes one physical line as BuildKit's `processLine` does.
fn process_line(ds: &mut DirectiveState, raw: &str, strip_left: bool, line_no: u32) -> Result<String, SyntaxError> {
    let mut token = trim_newline(raw);
    if strip_left {
        token = token.trim_start();
    }
    ds.possible(token, line_no)?;
    if token.starts_with('#') {
        return Ok(String::new());
    }
    Ok(token.to_string())
}

/// Splits text into lines that keep their `\n`.
fn physical_lines(text: &str) -> Vec<&str> {
    text.split_inclusive('\n').collect()
}

/// Scans `text` into instruction nodes.
pub fn scan(text: &str) -> Result<Scanned, SyntaxError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines = physical_lines(text);
    let mut ds = DirectiveState {
        d: Directives::default(),
        done: false,
        seen: Vec::new(),
    };
    let mut nodes = Vec::new();
    let mut empty_continuations = Vec::new();
    let mut i = 0usize;
    while i < lines.len() {
        let line_no = (i + 1) as u32;
        let processed = process_line(&mut ds, lines[i], true, line_no)?;
        i += 1;
        let start = line_no;
        let escape = ds.d.escape;
        let (mut line, mut eol) = trim_continuation(&processed, escape);
        if eol && line.is_empty() {
            continue;
        }
        while !eol && i < lines.len() {
            let raw = lines[i];
            let processed = process_line(&mut ds, raw, false, (i + 1) as u32)?;
            i += 1;
            if is_comment(raw) {
                continue;
            }
            if processed.trim_start().is_empty() {
                empty_continuations.push(i as u32);
                continue;
            }
            let (cont, end) = trim_continuation(&processed, escape);
            line.push_str(&cont);
            eol = end;
        }
        let end = (i as u32).max(start);
        let mut node = new_node_from_line(&line, escape).map_err(|kind| SyntaxError::at(start, end, kind))?;
        if node.can_contain_heredoc() && line.contains("<<") {
            for mut doc in heredocs_from_line(&line) {
                let mut terminated = false;
                let body_start = i;
                let mut body_end = lines.len();
                while i < lines.len() {
                    let raw = lines[i];
                    i += 1;
                    let mut candidate = trim_newline(raw);
                    if doc.chomp {
                        candidate = candidate.trim_start_matches('\t');
                    }
                    if candidate == doc.name {
                        terminated = true;
                        body_end = i - 1;
                        break;
                    }
                }
                // The body is one slice of the text: copied once, at its exact size.
                doc.content = Arc::new(lines[body_start..body_end].concat());
                if !terminated {
                    return Err(SyntaxError::at(
                        start,
                        i as u32,
                        ErrorKind::UnterminatedHeredoc { delimiter: doc.name },
                    ));
                }
                node.heredocs.push(doc);
            }
        }
        node.set_lines(start, (i as u32).max(start));
        nodes.push(node);
    }
    if nodes.is_empty() {
        return Err(SyntaxError::whole_file(ErrorKind::NoInstructions));
    }
    Ok(Scanned {
        directives: ds.d,
        nodes,
        empty_continuations,
    })
}

/// Splits a line into words at unquoted whitespace, keeping quotes and escapes.
fn raw_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => {
                word.push(c);
                if c == q {
                    quote = None;
                } else if c == '\\' && q == '"' {
                    if let Some(n) = chars.next() {
                        word.push(n);
                    }
                }
            }
            None if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            None => {
                in_word = true;
                word.push(c);
                if c == '\'' || c == '"' {
                    quote = Some(c);
                } else if c == '\\' {
                    if let Some(n) = chars.next() {
                        word.push(n);
                    }
                }
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// Parses a word of the form `[fd]<<[-]NAME` (BuildKit `ParseHeredoc`).
pub fn parse_heredoc(word: &str) -> Option<Heredoc> {
    let digits = word.bytes().take_while(u8::is_ascii_digit).count();
    let rest = word[digits..].strip_prefix("<<")?;
    let (chomp, rest) = match rest.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, rest),
    };
    if rest.is_empty() || rest.contains('<') {
        return None;
    }
    let name = unquote_word(rest)?;
    let quotes = |s: &str| s.chars().filter(|c| *c == '\'' || *c == '"').count();
    Some(Heredoc {
        name: name.clone(),
        expand: quotes(&name) == quotes(rest),
        chomp,
        content: Arc::default(),
    })
}

/// Removes shell quoting from a single word; `None` when it is several words.
fn unquote_word(s: &str) -> Option<String> {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                for n in chars.by_ref() {
                    if n == '\'' {
                        break;
                    }
                    out.push(n);
                }
            }
            '"' => {
                while let Some(n) = chars.next() {
                    match n {
                        '"' => break,
                        '\\' => match chars.next() {
                            Some(e @ ('"' | '\\' | '$' | '`')) => out.push(e),
                            Some(e) => {
                                out.push('\\');
                                out.push(e);
                            }
                            None => out.push('\\'),
                        },
                        n => out.push(n),
                    }
                }
            }
            '\\' => {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            }
            c if c.is_whitespace() => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

/// The heredocs a line opens, in order (BuildKit `heredocsFromLine`).
fn heredocs_from_line(line: &str) -> Vec<Heredoc> {
    raw_words(line).iter().filter_map(|w| parse_heredoc(w)).collect()
}

/// Removes leading tabs from every line (BuildKit `ChompHeredocContent`).
pub fn chomp_heredoc_content(s: &str) -> String {
    s.split_inclusive('\n').map(|l| l.trim_start_matches('\t')).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directive_regex() {
        assert_eq!(match_directive("# escape = `"), Some(("escape", "`")));
        assert_eq!(
            match_directive("#syntax=docker/dockerfile:1 "),
            Some(("syntax", "docker/dockerfile:1"))
        );
        assert_eq!(match_directive("# just a comment"), None);
        assert_eq!(match_directive("#1x=2"), None);
    }

    #[test]
    fn continuation_needs_unescaped_escape() {
        assert_eq!(trim_continuation("a \\", '\\'), ("a ".to_string(), false));
        assert_eq!(trim_continuation("a\\\\", '\\'), ("a\\\\".to_string(), true));
        assert_eq!(trim_continuation("\\  ", '\\'), (String::new(), false));
        assert_eq!(trim_continuation("a `\t", '`'), ("a ".to_string(), false));
    }

    #[test]
    fn heredoc_words() {
        let h = parse_heredoc("<<EOF").unwrap();
        assert_eq!((h.name.as_str(), h.expand, h.chomp), ("EOF", true, false));
        let h = parse_heredoc("<<-'EOT'").unwrap();
        assert_eq!((h.name.as_str(), h.expand, h.chomp), ("EOT", false, true));
        assert!(parse_heredoc("<<").is_none());
        assert!(parse_heredoc("a<<b").is_none());
        assert_eq!(parse_heredoc("2<<X").unwrap().name, "X");
        let docs = heredocs_from_line("RUN cat <<A >/x && cat <<\"B C\"");
        assert_eq!(docs.len(), 2);
        assert_eq!((docs[1].name.as_str(), docs[1].expand), ("B C", false));
    }

    #[test]
    fn scans_heredocs_and_lines() {
        let s = scan("FROM a\nRUN cat <<EOF > /x\nhello\nEOF\nRUN echo \\\n  # c\n  b\n").unwrap();
        assert_eq!(s.nodes.len(), 3);
        assert_eq!(*s.nodes[1].heredocs[0].content, "hello\n");
        assert_eq!((s.nodes[1].start_line, s.nodes[1].end_line), (2, 4));
        assert_eq!((s.nodes[2].start_line, s.nodes[2].end_line), (5, 7));
        let e = scan("FROM a\nRUN <<EOF\nx\n").unwrap_err();
        assert!(matches!(e.kind, ErrorKind::UnterminatedHeredoc { .. }));
    }
}
