//! `BUILDKIT_SBOM_SCAN_STAGE` and `BUILDKIT_SBOM_SCAN_CONTEXT` as BuildKit reads them
//! (`dockerfile2llb`): only through an `ARG` the Dockerfile declares — globally (before
//! the first `FROM`, applying to every stage) or in a stage (inherited by stages built
//! `FROM` it) — whose value a `--build-arg` may override. A value is a bool (Go's
//! `strconv.ParseBool`) or a comma-separated list of stage names. A `--build-arg`
//! alone, with no `ARG`, does nothing. Stages the target does not need are never
//! scanned, nor the target itself (it always is, as the image).

use kiln_graph::Input;
use serde::Serialize;

use super::state::EnvList;

pub const SCAN_STAGE: &str = "BUILDKIT_SBOM_SCAN_STAGE";
pub const SCAN_CONTEXT: &str = "BUILDKIT_SBOM_SCAN_CONTEXT";

/// BuiltStage is a stage the target needs (never the target itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BuiltStage {
    /// Its `AS` name (lowercase) or `stage-N`.
    pub name: String,
    /// Its final filesystem.
    pub fs: Input,
    /// `BUILDKIT_SBOM_SCAN_STAGE` marks it for the SBOM.
    pub sbom_scan: bool,
}

/// Go's `strconv.ParseBool`, then a list of stage names (BuildKit's `isEnabledForStage`).
fn enabled_for(stage: &str, value: &str) -> bool {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => true,
        "0" | "f" | "F" | "FALSE" | "false" | "False" => false,
        _ => value.split(',').any(|s| s == stage),
    }
}

/// Whether `key` is enabled for the stage `name`: the global value, then each of the
/// stage's ARGs of that name that has a value, the last one winning.
pub(super) fn marked(name: &str, key: &str, global: &EnvList, build_args: &[(String, Option<String>)]) -> bool {
    let mut on = global.value(key).is_some_and(|v| enabled_for(name, v));
    for (k, v) in build_args {
        if let (true, Some(v)) = (k == key, v) {
            on = enabled_for(name, v);
        }
    }
    on
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_bools_or_stage_lists() {
        assert!(enabled_for("build", "true"));
        assert!(enabled_for("build", "1"));
        assert!(!enabled_for("build", "false"));
        assert!(enabled_for("build", "base,build"));
        assert!(!enabled_for("build", "base,bin"));
        assert!(!enabled_for("build", ""));
    }

    #[test]
    fn the_stage_arg_overrides_the_global_one() {
        let mut g = EnvList::default();
        g.set(SCAN_STAGE, "true");
        assert!(marked("a", SCAN_STAGE, &g, &[]));
        let off = [(SCAN_STAGE.to_string(), Some("false".to_string()))];
        assert!(!marked("a", SCAN_STAGE, &g, &off));
        // An ARG without a value keeps the global one.
        assert!(marked("a", SCAN_STAGE, &g, &[(SCAN_STAGE.to_string(), None)]));
        let list = [(SCAN_STAGE.to_string(), Some("b,a".to_string()))];
        assert!(marked("a", SCAN_STAGE, &EnvList::default(), &list));
        assert!(!marked("c", SCAN_STAGE, &EnvList::default(), &list));
    }
}
