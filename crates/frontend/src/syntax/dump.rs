//! The S-expression dump of parser nodes, byte for byte BuildKit's `Node.Dump`
//! (`parser_test.go` compares it with the `result` files of its test corpus).

use std::fmt::Write;

use super::node::{Arg, Node};

/// Quotes `s` as Go's `strconv.Quote` does.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{07}' => out.push_str("\\a"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{0b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if !is_go_printable(c) => {
                if (c as u32) < 0x10000 {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                } else {
                    let _ = write!(out, "\\U{:08x}", c as u32);
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Approximates Go's `unicode.IsPrint` for non-ASCII characters.
fn is_go_printable(c: char) -> bool {
    if c.is_ascii() {
        return !c.is_ascii_control();
    }
    !(c.is_control()
        || c.is_whitespace()
        || matches!(c as u32, 0xad | 0x200b..=0x200f | 0x2028..=0x202e | 0x2060..=0x2064 | 0xfeff | 0xfff9..=0xfffb))
}

/// Dumps one node as BuildKit does: `(run "echo hi")` without the outer parentheses.
pub fn dump_node(node: &Node) -> String {
    let mut s = node.value.to_lowercase();
    if !node.flags.is_empty() {
        s.push_str(" [");
        let quoted: Vec<String> = node.flags.iter().map(|f| go_quote(f)).collect();
        s.push_str(&quoted.join(" "));
        s.push(']');
    }
    for a in &node.args {
        s.push(' ');
        match a {
            Arg::Value(v) => s.push_str(&go_quote(v)),
            Arg::Sub(child) => {
                s.push('(');
                s.push_str(&dump_node(child));
                s.push(')');
            }
        }
    }
    s.trim().to_string()
}

/// Dumps every node, one `(…)` line each, as BuildKit's `parser_test.go` prints them.
pub fn dump(nodes: &[Node]) -> String {
    let mut out = String::new();
    for n in nodes {
        out.push('(');
        out.push_str(&dump_node(n));
        out.push_str(")\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_like_go() {
        assert_eq!(go_quote("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(go_quote("\u{0}\u{8}\u{c}\n♥"), r#""\x00\b\f\n♥""#);
        assert_eq!(go_quote("\u{a0}"), r#""\u00a0""#);
    }
}
