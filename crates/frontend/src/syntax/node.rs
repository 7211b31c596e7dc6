//! The node layer of the Dockerfile parser: one logical line split into the
//! instruction word, its `--flags` and its arguments, as BuildKit's line parsers do.

use std::sync::Arc;

use crate::error::{ErrorKind, OnbuildError};

/// Heredoc is a here-document opened by an instruction (`<<EOF` ... `EOF`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    /// The delimiter, quotes removed.
    pub name: String,
    /// Whether variables in the body are expanded (the delimiter was not quoted).
    pub expand: bool,
    /// `<<-`: leading tabs are removed from the body.
    pub chomp: bool,
    /// The body, every line with its line ending; shared, not copied, by the
    /// instructions and build ops made from it (a body may be megabytes).
    pub content: Arc<String>,
}

/// Arg is one argument of a node: a string or a nested instruction (`ONBUILD`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arg {
    Value(String),
    Sub(Box<Node>),
}

/// Node is one instruction as the parser sees it, before its arguments are typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The instruction word as written, e.g. `copy` or `RUN`.
    pub value: String,
    /// `--name[=value]` words before the arguments, as written.
    pub flags: Vec<String>,
    pub args: Vec<Arg>,
    /// The arguments were a JSON array.
    pub json: bool,
    /// The logical line (continuations joined, comments removed).
    pub original: String,
    pub heredocs: Vec<Heredoc>,
    pub start_line: u32,
    pub end_line: u32,
}

impl Node {
    pub(crate) fn set_lines(&mut self, start: u32, end: u32) {
        self.start_line = start;
        self.end_line = end;
        for a in &mut self.args {
            if let Arg::Sub(n) = a {
                n.set_lines(start, end);
            }
        }
    }

    /// Whether this instruction may open heredocs (RUN, COPY, ADD, also under ONBUILD).
    pub fn can_contain_heredoc(&self) -> bool {
        let mut node = self;
        if node.value.eq_ignore_ascii_case("onbuild") {
            if let Some(Arg::Sub(child)) = node.args.first() {
                node = child;
            }
        }
        let lower = node.value.to_ascii_lowercase();
        matches!(lower.as_str(), "run" | "copy" | "add") && !node.json
    }

    /// The argument values, with a nested instruction flattened to its word and values.
    pub fn arg_values(&self) -> Vec<String> {
        let mut out = Vec::new();
        for a in &self.args {
            match a {
                Arg::Value(v) => out.push(v.clone()),
                Arg::Sub(n) => {
                    out.push(n.value.clone());
                    out.extend(n.arg_values());
                }
            }
        }
        out
    }
}

/// Go's `unicode.IsSpace`.
fn is_space(c: char) -> bool {
    c.is_whitespace() || c == '\u{85}'
}

/// Splits at runs of `[\t\v\f\r ]`.
fn split_ws(s: &str) -> Vec<&str> {
    s.split(['\t', '\u{0b}', '\u{0c}', '\r', ' '])
        .filter(|p| !p.is_empty())
        .collect()
}

/// Splits at the first run of `[\t\v\f\r ]` into at most two parts.
fn split_ws2(s: &str) -> (&str, Option<&str>) {
    let ws = |c: char| matches!(c, '\t' | '\u{0b}' | '\u{0c}' | '\r' | ' ');
    match s.find(ws) {
        Some(i) => (&s[..i], Some(s[i..].trim_start_matches(ws))),
        None => (s, None),
    }
}

/// Parses a logical line into a node (BuildKit `newNodeFromLine`).
pub fn new_node_from_line(line: &str, escape: char) -> Result<Node, ErrorKind> {
    node_from_line(line, escape, 0)
}

fn node_from_line(line: &str, escape: char, depth: usize) -> Result<Node, ErrorKind> {
    let line_trimmed = line.trim_matches(is_space);
    let (cmd, rest) = split_ws2(line_trimmed);
    let (args, flags) = match rest {
        Some(r) => extract_builder_flags(r),
        None => (String::new(), Vec::new()),
    };
    let args = args.trim_matches(is_space);
    let (args, json) = match cmd.to_ascii_lowercase().as_str() {
        "add" | "copy" | "volume" => parse_maybe_json_to_list(args, cmd)?,
        "arg" => (values(parse_words(args, escape)), false),
        "cmd" | "entrypoint" | "run" | "shell" => parse_maybe_json(args, cmd)?,
        "env" => (parse_name_val(args, "ENV", escape)?, false),
        "label" => (parse_name_val(args, "LABEL", escape)?, false),
        "expose" | "from" => (values(split_ws(args).into_iter().map(str::to_string).collect()), false),
        "healthcheck" => parse_health_config(args, cmd)?,
        "maintainer" | "stopsignal" | "user" | "workdir" => (parse_string(args), false),
        "onbuild" => {
            if args.is_empty() {
                (Vec::new(), false)
            } else if depth > 0 {
                // `ONBUILD ONBUILD …` is never valid; stop before a long chain of them
                // recurses deeply.
                return Err(ErrorKind::Onbuild {
                    trigger: OnbuildError::Chained,
                });
            } else {
                let child = node_from_line(args, escape, depth + 1)?;
                (vec![Arg::Sub(Box::new(child))], false)
            }
        }
        _ => (vec![Arg::Value(String::new())], false),
    };
    Ok(Node {
        value: cmd.to_string(),
        flags,
        args,
        json,
        original: line.to_string(),
        heredocs: Vec::new(),
        start_line: 0,
        end_line: 0,
    })
}

fn values(v: Vec<String>) -> Vec<Arg> {
    v.into_iter().map(Arg::Value).collect()
}

fn parse_string(rest: &str) -> Vec<Arg> {
    if rest.is_empty() {
        Vec::new()
    } else {
        vec![Arg::Value(rest.to_string())]
    }
}

/// Takes the leading `--flag` words off `line` (BuildKit `extractBuilderFlags`).
fn extract_builder_flags(line: &str) -> (String, Vec<String>) {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let b = line.as_bytes();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word: Vec<u8> = Vec::new();
    let mut quote = 0u8;
    let mut blank_ok = false;
    let mut pos = 0usize;
    let push = |words: &mut Vec<String>, w: &[u8]| words.push(String::from_utf8_lossy(w).into_owned());
    loop {
        let at_end = pos >= b.len();
        let ch = if at_end { 0 } else { b[pos] };
        if phase == Phase::Spaces {
            if at_end {
                break;
            }
            if (ch as char).is_ascii_whitespace() || ch == 0x0b {
                pos += 1;
                continue;
            }
            if ch != b'-' || pos + 1 == b.len() || b[pos + 1] != b'-' {
                return (line[pos..].to_string(), words);
            }
            phase = Phase::Word;
        }
        if at_end {
            if word != b"--" && (blank_ok || !word.is_empty()) {
                push(&mut words, &word);
            }
            break;
        }
        if phase == Phase::Word {
            if (ch as char).is_ascii_whitespace() || ch == 0x0b {
                phase = Phase::Spaces;
                if word == b"--" {
                    return (line[pos..].to_string(), words);
                }
                if blank_ok || !word.is_empty() {
                    push(&mut words, &word);
                }
                word.clear();
                blank_ok = false;
                pos += 1;
                continue;
            }
            if ch == b'\'' || ch == b'"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
                pos += 1;
                continue;
            }
            let mut c = ch;
            if c == b'\\' {
                if pos + 1 == b.len() {
                    pos += 1;
                    continue;
                }
                pos += 1;
                c = b[pos];
            }
            word.push(c);
            pos += 1;
            continue;
        }
        // Phase::Quote
        if ch == quote {
            phase = Phase::Word;
            pos += 1;
            continue;
        }
        let mut c = ch;
        if c == b'\\' {
            if pos + 1 == b.len() {
                phase = Phase::Word;
                pos += 1;
                continue;
            }
            pos += 1;
            c = b[pos];
        }
        word.push(c);
        pos += 1;
    }
    (String::new(), words)
}

/// Splits into words, keeping quotes and escapes (BuildKit `parseWords`).
pub fn parse_words(rest: &str, escape: char) -> Vec<String> {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let chars: Vec<char> = rest.chars().collect();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut pos = 0usize;
    loop {
        let at_end = pos >= chars.len();
        let mut ch = if at_end { '\0' } else { chars[pos] };
        if phase == Phase::Spaces {
            if at_end {
                break;
            }
            if is_space(ch) {
                pos += 1;
                continue;
            }
            phase = Phase::Word;
        }
        if at_end {
            if blank_ok || !word.is_empty() {
                words.push(word);
            }
            break;
        }
        if phase == Phase::Word {
            if is_space(ch) {
                phase = Phase::Spaces;
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                word.clear();
                blank_ok = false;
                pos += 1;
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
            }
            if ch == escape {
                if pos + 1 == chars.len() {
                    pos += 1;
                    continue;
                }
                word.push(ch);
                pos += 1;
                ch = chars[pos];
            }
            word.push(ch);
            pos += 1;
            continue;
        }
        // Phase::Quote
        if ch == quote {
            phase = Phase::Word;
        }
        if ch == escape && quote != '\'' {
            if pos + 1 == chars.len() {
                phase = Phase::Word;
                pos += 1;
                continue;
            }
            pos += 1;
            word.push(ch);
            ch = chars[pos];
        }
        word.push(ch);
        pos += 1;
    }
    words
}

/// Parses `ENV`/`LABEL` arguments into key, value and separator triples.
fn parse_name_val(rest: &str, key: &'static str, escape: char) -> Result<Vec<Arg>, ErrorKind> {
    let words = parse_words(rest, escape);
    if words.is_empty() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    if !words[0].contains('=') {
        let (k, v) = split_ws2(rest);
        let Some(v) = v else {
            return Err(ErrorKind::MissingValue { instruction: key });
        };
        out.extend([k.to_string(), v.to_string(), String::new()].map(Arg::Value));
        return Ok(out);
    }
    for w in words {
        let Some((k, v)) = w.split_once('=') else {
            return Err(ErrorKind::NotKeyValue {
                instruction: key,
                word: w,
            });
        };
        out.extend([k.to_string(), v.to_string(), "=".to_string()].map(Arg::Value));
    }
    Ok(out)
}

enum JsonResult {
    Strings(Vec<String>),
    NotJson,
}

/// Parses a JSON array of strings at the start of `rest`; text after it is ignored,
/// as Go's `json.Decoder.Decode` does.
fn parse_json(rest: &str, cmd: &str) -> Result<JsonResult, ErrorKind> {
    let rest = rest.trim_start_matches(is_space);
    if !rest.starts_with('[') {
        return Ok(JsonResult::NotJson);
    }
    let mut stream = serde_json::Deserializer::from_str(rest).into_iter::<serde_json::Value>();
    let Some(Ok(serde_json::Value::Array(items))) = stream.next() else {
        return Ok(JsonResult::NotJson);
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        match item {
            serde_json::Value::String(s) => out.push(s),
            _ => {
                return Err(ErrorKind::JsonNotStrings {
                    instruction: cmd.to_ascii_uppercase(),
                })
            }
        }
    }
    Ok(JsonResult::Strings(out))
}

fn parse_maybe_json(rest: &str, cmd: &str) -> Result<(Vec<Arg>, bool), ErrorKind> {
    if rest.is_empty() {
        return Ok((Vec::new(), false));
    }
    match parse_json(rest, cmd)? {
        JsonResult::Strings(v) => Ok((values(v), true)),
        JsonResult::NotJson => Ok((vec![Arg::Value(rest.to_string())], false)),
    }
}

fn parse_maybe_json_to_list(rest: &str, cmd: &str) -> Result<(Vec<Arg>, bool), ErrorKind> {
    match parse_json(rest, cmd)? {
        JsonResult::Strings(v) => Ok((values(v), true)),
        JsonResult::NotJson => Ok((values(split_ws(rest).into_iter().map(str::to_string).collect()), false)),
    }
}

fn parse_health_config(rest: &str, cmd: &str) -> Result<(Vec<Arg>, bool), ErrorKind> {
    let sep = rest.find(is_space).unwrap_or(rest.len());
    if sep == 0 {
        return Ok((Vec::new(), false));
    }
    let next = rest[sep..].trim_start_matches(is_space);
    let (mut args, json) = parse_maybe_json(next, cmd)?;
    args.insert(0, Arg::Value(rest[..sep].to_string()));
    Ok((args, json))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_stop_at_double_dash_and_first_word() {
        assert_eq!(
            extract_builder_flags("--a=1 --b=\"x y\" -- --c d"),
            (" --c d".to_string(), vec!["--a=1".to_string(), "--b=x y".into()])
        );
        assert_eq!(extract_builder_flags("foo --x"), ("foo --x".to_string(), vec![]));
    }

    #[test]
    fn words_keep_quotes() {
        assert_eq!(parse_words(r#"a="b c" d\ e"#, '\\'), vec![r#"a="b c""#, r"d\ e"]);
    }

    #[test]
    fn nested_json_is_an_error() {
        assert!(new_node_from_line(r#"CMD [ "echo", [ "nested json" ] ]"#, '\\').is_err());
        let n = new_node_from_line(r#"CMD ["a"] trailing"#, '\\').unwrap();
        assert!(n.json);
    }
}
