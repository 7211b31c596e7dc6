//! Declared licences turned into valid SPDX licence expressions: known identifiers keep
//! their SPDX spelling, anything else becomes a `LicenseRef-…` the document declares.

use std::collections::BTreeMap;

/// Common SPDX licence identifiers (and Debian's short names for some of them).
const KNOWN: &[(&str, &str)] = &[
    ("0BSD", "0BSD"),
    ("AFL-2.1", "AFL-2.1"),
    ("AGPL-3.0", "AGPL-3.0-only"),
    ("AGPL-3.0-only", "AGPL-3.0-only"),
    ("AGPL-3.0-or-later", "AGPL-3.0-or-later"),
    ("Apache-1.1", "Apache-1.1"),
    ("Apache-2", "Apache-2.0"),
    ("Apache-2.0", "Apache-2.0"),
    ("Apache 2.0", "Apache-2.0"),
    ("Artistic", "Artistic-1.0-Perl"),
    ("Artistic-1.0", "Artistic-1.0"),
    ("Artistic-2", "Artistic-2.0"),
    ("Artistic-2.0", "Artistic-2.0"),
    ("BlueOak-1.0.0", "BlueOak-1.0.0"),
    ("BSD-2-clause", "BSD-2-Clause"),
    ("BSD-3-clause", "BSD-3-Clause"),
    ("BSD-4-clause", "BSD-4-Clause"),
    ("BSL-1.0", "BSL-1.0"),
    ("CC-BY-3.0", "CC-BY-3.0"),
    ("CC-BY-4.0", "CC-BY-4.0"),
    ("CC-BY-SA-3.0", "CC-BY-SA-3.0"),
    ("CC-BY-SA-4.0", "CC-BY-SA-4.0"),
    ("CC0", "CC0-1.0"),
    ("CC0-1.0", "CC0-1.0"),
    ("CDDL-1.0", "CDDL-1.0"),
    ("EPL-1.0", "EPL-1.0"),
    ("EPL-2.0", "EPL-2.0"),
    ("Expat", "MIT"),
    ("GPL-1", "GPL-1.0-only"),
    ("GPL-1+", "GPL-1.0-or-later"),
    ("GPL-2", "GPL-2.0-only"),
    ("GPL-2+", "GPL-2.0-or-later"),
    ("GPL-2.0", "GPL-2.0-only"),
    ("GPL-2.0+", "GPL-2.0-or-later"),
    ("GPL-2.0-only", "GPL-2.0-only"),
    ("GPL-2.0-or-later", "GPL-2.0-or-later"),
    ("GPL-3", "GPL-3.0-only"),
    ("GPL-3+", "GPL-3.0-or-later"),
    ("GPL-3.0", "GPL-3.0-only"),
    ("GPL-3.0+", "GPL-3.0-or-later"),
    ("GPL-3.0-only", "GPL-3.0-only"),
    ("GPL-3.0-or-later", "GPL-3.0-or-later"),
    ("GFDL-1.2", "GFDL-1.2-only"),
    ("GFDL-1.2+", "GFDL-1.2-or-later"),
    ("GFDL-1.3", "GFDL-1.3-only"),
    ("GFDL-1.3+", "GFDL-1.3-or-later"),
    ("ISC", "ISC"),
    ("LGPL-2", "LGPL-2.0-only"),
    ("LGPL-2+", "LGPL-2.0-or-later"),
    ("LGPL-2.0", "LGPL-2.0-only"),
    ("LGPL-2.0+", "LGPL-2.0-or-later"),
    ("LGPL-2.1", "LGPL-2.1-only"),
    ("LGPL-2.1+", "LGPL-2.1-or-later"),
    ("LGPL-2.1-only", "LGPL-2.1-only"),
    ("LGPL-2.1-or-later", "LGPL-2.1-or-later"),
    ("LGPL-3", "LGPL-3.0-only"),
    ("LGPL-3+", "LGPL-3.0-or-later"),
    ("LGPL-3.0", "LGPL-3.0-only"),
    ("LGPL-3.0+", "LGPL-3.0-or-later"),
    ("LGPL-3.0-only", "LGPL-3.0-only"),
    ("LGPL-3.0-or-later", "LGPL-3.0-or-later"),
    ("MIT", "MIT"),
    ("MIT-0", "MIT-0"),
    ("MPL-1.1", "MPL-1.1"),
    ("MPL-2.0", "MPL-2.0"),
    ("OpenSSL", "OpenSSL"),
    ("PSF-2.0", "PSF-2.0"),
    ("Python-2.0", "Python-2.0"),
    ("Unicode-DFS-2016", "Unicode-DFS-2016"),
    ("Unlicense", "Unlicense"),
    ("WTFPL", "WTFPL"),
    ("X11", "X11"),
    ("Zlib", "Zlib"),
    ("zlib", "Zlib"),
];

/// Licence exceptions `WITH` may name.
const EXCEPTIONS: &[&str] = &[
    "Autoconf-exception-2.0",
    "Autoconf-exception-3.0",
    "Bison-exception-2.2",
    "Classpath-exception-2.0",
    "GCC-exception-3.1",
    "LLVM-exception",
    "OpenSSL-exception",
];

/// Licenses turns declared licences into SPDX expressions, remembering each
/// `LicenseRef-…` it had to make and the text it stands for.
#[derive(Debug, Default)]
pub(crate) struct Licenses {
    pub(crate) refs: BTreeMap<String, String>,
}

impl Licenses {
    /// The SPDX expression for `declared`: a name or an expression, or several on
    /// separate lines (one per Debian `License:` field), which must all hold (AND).
    pub(crate) fn expression(&mut self, declared: &str) -> String {
        let lines: Vec<&str> = declared.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
        if lines.len() < 2 {
            return self.one(declared);
        }
        let parts: Vec<String> = lines
            .iter()
            .map(|l| self.one(l))
            .filter(|e| e != "NOASSERTION")
            .map(|e| if e.contains(' ') { format!("({e})") } else { e })
            .collect();
        parts.join(" AND ")
    }

    /// The SPDX expression for one name or expression.
    fn one(&mut self, declared: &str) -> String {
        let tokens = tokenize(declared);
        if tokens.is_empty() {
            return "NOASSERTION".to_string();
        }
        let mut out: Vec<String> = Vec::new();
        let mut i = 0;
        let mut depth: i32 = 0;
        let mut expect_operand = true;
        while i < tokens.len() {
            let t = tokens[i].as_str();
            let upper = t.to_ascii_uppercase();
            match upper.as_str() {
                "(" if expect_operand => {
                    depth += 1;
                    out.push("(".into());
                }
                ")" if !expect_operand && depth > 0 => {
                    depth -= 1;
                    out.push(")".into());
                }
                "AND" | "OR" if !expect_operand => {
                    out.push(upper);
                    expect_operand = true;
                }
                _ if expect_operand && !matches!(upper.as_str(), "AND" | "OR" | "WITH" | "(" | ")") => {
                    let mut id = self.id(t);
                    // `X WITH exception`, only for an exception the SPDX list knows.
                    if tokens.get(i + 1).is_some_and(|w| w.eq_ignore_ascii_case("WITH")) {
                        if let Some(exc) = tokens.get(i + 2) {
                            if let Some(e) = EXCEPTIONS.iter().find(|e| e.eq_ignore_ascii_case(exc)) {
                                id = format!("{id} WITH {e}");
                            } else {
                                id = self.reference(&format!("{t} WITH {exc}"));
                            }
                            i += 2;
                        }
                    }
                    out.push(id);
                    expect_operand = false;
                }
                // Not an expression after all: name the whole text as one licence.
                _ => return self.reference(declared.trim()),
            }
            i += 1;
        }
        if expect_operand || depth != 0 {
            return self.reference(declared.trim());
        }
        let mut s = String::new();
        for t in out {
            if !(s.is_empty() || s.ends_with('(') || t == ")") {
                s.push(' ');
            }
            s.push_str(&t);
        }
        s
    }

    fn id(&mut self, name: &str) -> String {
        if let Some((_, id)) = KNOWN.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)) {
            return (*id).to_string();
        }
        if name.starts_with("LicenseRef-") && name[11..].bytes().all(id_byte) && name.len() > 11 {
            self.refs.entry(name.to_string()).or_insert_with(|| name.to_string());
            return name.to_string();
        }
        self.reference(name)
    }

    /// A `LicenseRef-…` for a licence the SPDX list does not name.
    fn reference(&mut self, text: &str) -> String {
        let mut id = String::from("LicenseRef-");
        for b in text.bytes() {
            id.push(if id_byte(b) { b as char } else { '-' });
        }
        if id.len() > 64 + 11 {
            id.truncate(64 + 11);
        }
        self.refs.entry(id.clone()).or_insert_with(|| text.to_string());
        id
    }
}

fn id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'.' || b == b'-'
}

/// Splits an expression into names, operators and parentheses; commas are dropped.
fn tokenize(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' | ')' => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                out.push(c.to_string());
            }
            c if c.is_whitespace() || c == ',' => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expressions_keep_known_ids_and_reference_the_rest() {
        let mut l = Licenses::default();
        assert_eq!(l.expression("MIT"), "MIT");
        assert_eq!(l.expression("(MIT OR apache-2.0)"), "(MIT OR Apache-2.0)");
        assert_eq!(
            l.expression("(GPL-2+ or Artistic) AND MIT"),
            "(GPL-2.0-or-later OR Artistic-1.0-Perl) AND MIT"
        );
        assert_eq!(
            l.expression("GPL-2.0+ WITH GCC-exception-3.1"),
            "GPL-2.0-or-later WITH GCC-exception-3.1"
        );
        assert_eq!(l.expression("public-domain"), "LicenseRef-public-domain");
        assert_eq!(
            l.expression("Expat\nGPL-2 with Linux-syscall-note exception\nGPL-2+ or Artistic"),
            "MIT AND LicenseRef-GPL-2-with-Linux-syscall-note-exception AND (GPL-2.0-or-later OR Artistic-1.0-Perl)"
        );
        assert_eq!(l.expression("BSD License"), "LicenseRef-BSD-License");
        assert_eq!(l.expression(""), "NOASSERTION");
        assert_eq!(l.expression("MIT OR"), "LicenseRef-MIT-OR");
        assert_eq!(
            l.refs.get("LicenseRef-public-domain").map(String::as_str),
            Some("public-domain")
        );
    }
}
