//! What `--check` found ([`CheckReport`]) and the text buildx prints for it.
//!
//! buildx (commands/build.go `printResult`, BuildKit `subrequests/lint`): on stdout
//! `Check complete, N warnings have been found!` (or `1 warning has been found!`), then
//! per warning, sorted by line, a blank line, `WARNING: Rule - URL`, the message and
//! the Dockerfile excerpt (`errdefs.Source.Print`); with none, `Check complete, no
//! warnings found.`.

use std::fmt::Write as _;

use crate::BuildError;

/// What `--check` found.
pub struct CheckReport {
    pub dockerfile_name: String,
    pub dockerfile: String,
    pub warnings: Vec<kiln_frontend::Warning>,
    /// An error that stops the build (a lint violation with `check=error=true`).
    pub error: Option<BuildError>,
}

impl CheckReport {
    /// The text buildx prints on stdout: the warnings, or with an error and no warning
    /// nothing (the error is printed as any other).
    pub fn text(&self) -> String {
        let mut text = String::new();
        if self.error.is_none() || !self.warnings.is_empty() {
            text = render_check(&self.dockerfile_name, &self.dockerfile, &self.warnings);
        }
        if self.error.is_some() && !self.warnings.is_empty() {
            text.push('\n');
        }
        text
    }
}

/// The text buildx prints for `warnings` of `dockerfile` named `file`.
pub fn render_check(file: &str, dockerfile: &str, warnings: &[kiln_frontend::Warning]) -> String {
    let mut out = String::new();
    match warnings.len() {
        0 => {
            out.push_str("Check complete, no warnings found.\n");
            return out;
        }
        1 => out.push_str("Check complete, 1 warning has been found!\n"),
        n => {
            let _ = writeln!(out, "Check complete, {n} warnings have been found!");
        }
    }
    // A warning is about a whole instruction: BuildKit marks all of its lines.
    let ends: std::collections::BTreeMap<u32, u32> = kiln_frontend::syntax::parse(dockerfile)
        .map(|df| df.instructions.iter().map(|i| (i.start_line, i.end_line)).collect())
        .unwrap_or_default();
    let mut sorted: Vec<&kiln_frontend::Warning> = warnings.iter().collect();
    sorted.sort_by_key(|w| w.line.unwrap_or(0));
    for w in sorted {
        let rule = w.rule.as_deref().unwrap_or_default();
        let _ = write!(out, "\nWARNING: {rule}");
        if let Some(url) = w.rule().and_then(|r| r.url()) {
            let _ = write!(out, " - {url}");
        }
        let _ = writeln!(out, "\n{}", w.message);
        if let Some(line) = w.line {
            let end = ends.get(&line).copied().unwrap_or(line).max(line);
            out.push_str(&excerpt(file, dockerfile, line as usize, end as usize));
        }
    }
    out
}

/// BuildKit's `errdefs.Source.Print` for the lines `first..=last`: each marked `>>>`,
/// with up to two lines either side (one when the range spans several lines).
fn excerpt(file: &str, text: &str, first: usize, last: usize) -> String {
    // Go's strings.Split: a final newline leaves an empty last line.
    let lines: Vec<&str> = text.split('\n').collect();
    if first < 1 || first > lines.len() {
        return String::new();
    }
    let (mut start, mut end) = (first, last.min(lines.len()));
    let pad = if end == start { 4 } else { 2 };
    let mut p = 0;
    while p < pad {
        if start > 1 {
            start -= 1;
            p += 1;
        }
        if end != lines.len() {
            end += 1;
            p += 1;
        }
        p += 1;
    }
    let mut out = format!("{file}:{first}\n--------------------\n");
    for (i, text) in lines.iter().enumerate().take(end).skip(start - 1) {
        let n = i + 1;
        let mark = if (first..=last).contains(&n) { ">>>" } else { "   " };
        let _ = writeln!(out, " {n:>3} | {mark} {text}");
    }
    out.push_str("--------------------\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn warning(rule: &str, message: &str, line: u32) -> kiln_frontend::Warning {
        kiln_frontend::Warning {
            rule: Some(rule.into()),
            message: message.into(),
            line: Some(line),
        }
    }

    #[test]
    fn renders_as_buildx() {
        // The shape of buildx's `--call=check` output (tests/build.go
        // testBuildCheckCallOutput and subrequests/lint `Warning.PrintTo`).
        let df = "\nfrOM busybox as base\ncOpy Dockerfile .\n";
        let ws = [
            warning("FromAsCasing", "'as' and 'frOM' keywords' casing do not match", 2),
            warning("InvalidBaseImagePlatform", "x", 2),
        ];
        assert_eq!(
            render_check("Dockerfile", df, &ws),
            "Check complete, 2 warnings have been found!\n\
             \n\
             WARNING: FromAsCasing - https://docs.docker.com/go/dockerfile/rule/from-as-casing/\n\
             'as' and 'frOM' keywords' casing do not match\n\
             Dockerfile:2\n\
             --------------------\n\
             \x20  1 |     \n\
             \x20  2 | >>> frOM busybox as base\n\
             \x20  3 |     cOpy Dockerfile .\n\
             \x20  4 |     \n\
             --------------------\n\
             \n\
             WARNING: InvalidBaseImagePlatform\n\
             x\n\
             Dockerfile:2\n\
             --------------------\n\
             \x20  1 |     \n\
             \x20  2 | >>> frOM busybox as base\n\
             \x20  3 |     cOpy Dockerfile .\n\
             \x20  4 |     \n\
             --------------------\n"
        );
        assert_eq!(
            render_check("Dockerfile", df, &[]),
            "Check complete, no warnings found.\n"
        );
        let one = render_check("Dockerfile", df, &ws[..1]);
        assert!(one.starts_with("Check complete, 1 warning has been found!\n"), "{one}");
    }

    #[test]
    fn excerpt_pads_two_lines_either_side() {
        let df = "FROM a\nRUN 1\nRUN 2\nRUN 3\nRUN 4\nRUN 5\n";
        let e = excerpt("Dockerfile", df, 4, 4);
        let numbered: Vec<&str> = e.lines().skip(2).take_while(|l| !l.starts_with('-')).collect();
        assert_eq!(
            numbered,
            [
                "   2 |     RUN 1",
                "   3 |     RUN 2",
                "   4 | >>> RUN 3",
                "   5 |     RUN 4",
                "   6 |     RUN 5"
            ]
        );
        assert_eq!(excerpt("Dockerfile", df, 40, 40), "");
        // A continued instruction: all its lines marked, one line of context.
        let df = "FROM a\nRUN 1\nCMD echo \\\n  hi\nRUN 2\nRUN 3\n";
        let w = [warning("JSONArgsRecommended", "m", 3)];
        let out = render_check("Dockerfile", df, &w);
        assert!(
            out.ends_with(
                "Dockerfile:3\n--------------------\n   2 |     RUN 1\n   3 | >>> CMD echo \\\n   4 | >>>   hi\n   5 |     RUN 2\n--------------------\n"
            ),
            "{out}"
        );
    }
}
