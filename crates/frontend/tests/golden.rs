//! Golden tests of the frontend: `testdata/dockerfile/<case>/Dockerfile` lowers to
//! the build plan in `expected.json` (definition, image config, warnings), and
//! `testdata/dockerfile/errors/<case>/Dockerfile` fails with `expected.txt`.
//! `KILN_UPDATE_GOLDEN=1` rewrites the expected files.
//!
//! An optional `options.json` beside a Dockerfile sets `build_args`, `target` and
//! `labels`. Platforms are fixed to `linux/amd64` so the goldens do not depend on the
//! host.
//!
//! BuildKit behaviour the goldens pin (checked against `dockerfile2llb/convert.go`):
//! - `FROM scratch` starts with `WorkingDir: "/"` and `PATH` set (BuildKit
//!   `emptyImage`), so the final config carries both;
//! - history: `created_by` as BuildKit prints it (`ENV A=b`, `COPY a /b/ # buildkit`,
//!   `CMD ["a" "b"]`, `EXPOSE [80/tcp]`, `HEALTHCHECK {Test:[…] Interval:30s …}`),
//!   comment `buildkit.dockerfile.v0`, `empty_layer` on metadata-only steps; ONBUILD
//!   writes no history; ARG writes `ARG NAME=value`;
//! - CMD sets `ArgsEscaped`; shell-form CMD/ENTRYPOINT are wrapped in `/bin/sh -c`;
//! - descriptions `[stage N/M] INSTRUCTION args`, M counting an image base, RUN,
//!   COPY, ADD and WORKDIR; no stage name when the build has one stage;
//! - RUN history lists the ARGs in scope: `RUN |1 V=1 /bin/sh -c …`, and their values
//!   are in the exec environment;
//! - global ARGs are seen by a stage only after `ARG NAME`; `--build-arg` wins over
//!   defaults; `TARGETARCH` and friends are predefined.

#![allow(
    clippy::disallowed_methods,
    reason = "test code: a failing call fails the test at its line"
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kiln_frontend::{build_plan, BuildOptions};
use kiln_image::Platform;

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/dockerfile")
}

fn update() -> bool {
    std::env::var("KILN_UPDATE_GOLDEN").is_ok_and(|v| v == "1")
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct CaseOptions {
    build_args: BTreeMap<String, String>,
    target: Option<String>,
    labels: BTreeMap<String, String>,
    ignore_patterns: Vec<String>,
}

fn options(dir: &Path) -> BuildOptions {
    let o: CaseOptions = match std::fs::read_to_string(dir.join("options.json")) {
        Ok(s) => serde_json::from_str(&s).expect("valid options.json"),
        Err(_) => CaseOptions::default(),
    };
    let amd64 = Platform::parse("linux/amd64").expect("platform");
    let mut opts = BuildOptions::new("Dockerfile");
    opts.platform = amd64.clone();
    opts.build_platform = amd64;
    opts.build_args = o.build_args;
    opts.target = o.target;
    opts.labels = o.labels;
    opts.ignore_patterns = o.ignore_patterns;
    opts
}

fn check(path: &Path, actual: &str) -> Option<String> {
    if update() {
        std::fs::write(path, actual).expect("write golden");
        return None;
    }
    match std::fs::read_to_string(path) {
        Ok(want) if want == actual => None,
        Ok(want) => Some(format!(
            "{} differs:\n--- want\n{want}\n--- got\n{actual}",
            path.display()
        )),
        Err(e) => Some(format!("{}: {e} (run with KILN_UPDATE_GOLDEN=1)", path.display())),
    }
}

fn case_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("golden folder `{}` is missing: {e}", dir.display()))
        .map(|e| e.expect("entry").path())
        .filter(|p| p.join("Dockerfile").is_file())
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no golden cases in `{}`", dir.display());
    v
}

#[test]
fn build_plans_match_goldens() {
    let mut failures = Vec::new();
    for dir in case_dirs(&testdata()) {
        let df = std::fs::read_to_string(dir.join("Dockerfile")).expect("Dockerfile");
        let plan = match build_plan(&df, &options(&dir)) {
            Ok(p) => p,
            Err(e) => {
                failures.push(format!("{}: {e}", dir.display()));
                continue;
            }
        };
        plan.definition.validate().expect("a valid definition");
        let json = serde_json::to_string_pretty(&plan).expect("plan serialises") + "\n";
        failures.extend(check(&dir.join("expected.json"), &json));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn errors_match_goldens() {
    let mut failures = Vec::new();
    for dir in case_dirs(&testdata().join("errors")) {
        let df = std::fs::read_to_string(dir.join("Dockerfile")).expect("Dockerfile");
        let got = match build_plan(&df, &options(&dir)) {
            Ok(_) => {
                failures.push(format!("{}: built, but should fail", dir.display()));
                continue;
            }
            Err(e) => {
                let mut s = format!("{e}\n");
                if let Some(l) = e.source_line() {
                    s.push_str(&format!(">>> {l}\n"));
                }
                s
            }
        };
        failures.extend(check(&dir.join("expected.txt"), &got));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
