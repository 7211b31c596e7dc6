//! `kiln build --check`: run BuildKit's build checks only, as `docker build --check`
//! (buildx `--call=check`) does, and print the result the way buildx prints it.
//!
//! buildx (commands/build.go `printResult`, BuildKit `subrequests/lint`): on stdout
//! `Check complete, N warnings have been found!` (or `1 warning has been found!`), then
//! per warning, sorted by line, a blank line, `WARNING: Rule - URL`, the message and
//! the Dockerfile excerpt (`errdefs.Source.Print`); with none, `Check complete, no
//! warnings found.`. The exit code is 1 when there is a warning or an error, else 0.

use std::fmt::Write as _;
use std::io::Write as _;

use anyhow::{Context, Result};

/// Violations is the error `--check` ends with when it found warnings: already shown,
/// it only sets the exit code (1), as buildx's `ExitCodeError`.
#[derive(Debug)]
pub struct Violations;

impl std::fmt::Display for Violations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("build checks found warnings")
    }
}

impl std::error::Error for Violations {}

/// Prints what the checks found on stdout; an error that stops the build (a lint
/// violation with `check=error=true` included) comes back as `Err`.
pub fn run(report: kiln_build::CheckReport) -> Result<()> {
    let (file, dockerfile) = (report.dockerfile_name.as_str(), report.dockerfile.as_str());
    let mut text = String::new();
    // With an error and no warning, buildx prints only the error.
    if report.error.is_none() || !report.warnings.is_empty() {
        text = render(file, dockerfile, &report.warnings);
    }
    if report.error.is_some() && !report.warnings.is_empty() {
        text.push('\n');
    }
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .context("cannot write the check results to stdout")?;
    if let Some(e) = report.error {
        return Err(e.into());
    }
    if report.warnings.is_empty() {
        Ok(())
    } else {
        Err(Violations.into())
    }
}

/// The text buildx prints for `warnings` of `dockerfile` named `file`.
pub fn render(file: &str, dockerfile: &str, warnings: &[kiln_frontend::Warning]) -> String {
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
            render("Dockerfile", df, &ws),
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
        assert_eq!(render("Dockerfile", df, &[]), "Check complete, no warnings found.\n");
        let one = render("Dockerfile", df, &ws[..1]);
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
        let out = render("Dockerfile", df, &w);
        assert!(
            out.ends_with(
                "Dockerfile:3\n--------------------\n   2 |     RUN 1\n   3 | >>> CMD echo \\\n   4 | >>>   hi\n   5 |     RUN 2\n--------------------\n"
            ),
            "{out}"
        );
    }
}
