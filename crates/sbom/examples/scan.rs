//! Writes the SPDX 2.3 SBOM of a root file system: `scan ROOT [OUT.json]`.
//!
//! Used by `bench/sbom.sh`; prints the number of packages and the scan's wall time to
//! stderr. `SOURCE_DATE_EPOCH` sets `creationInfo.created`.

#![allow(
    clippy::disallowed_methods,
    reason = "test code: a failing call fails the test at its line"
)]

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let Some(root) = args.get(1) else {
        eprintln!("usage: scan ROOT [OUT.json]");
        return ExitCode::from(2);
    };
    let opts = kiln_sbom::ScanOptions {
        name: root.clone(),
        created: std::env::var("SOURCE_DATE_EPOCH").ok().and_then(|s| s.parse().ok()),
        ..kiln_sbom::ScanOptions::default()
    };
    let start = Instant::now();
    let doc = match kiln_sbom::scan(Path::new(root), &opts) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("scan: {e}");
            return ExitCode::FAILURE;
        }
    };
    let json = doc.to_json();
    let took = start.elapsed();
    let written = match args.get(2) {
        Some(out) => std::fs::write(out, &json),
        None => std::io::stdout().write_all(json.as_bytes()),
    };
    if let Err(e) = written {
        eprintln!("scan: cannot write the document: {e}");
        return ExitCode::FAILURE;
    }
    eprintln!("packages={} seconds={:.6}", doc.packages.len(), took.as_secs_f64());
    ExitCode::SUCCESS
}
