//! `kiln build --check`: BuildKit's build checks only, as `docker build --check`
//! (buildx `--call=check`): the library's report printed on stdout as buildx prints it
//! ([`kiln_build::CheckReport::text`]); the exit code is 1 when there is a warning or
//! an error, else 0.

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
    let text = report.text();
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
