//! Lint holds BuildKit's Dockerfile checks that kiln reports: each a [`Warning`] with
//! BuildKit's rule name and wording, and the `# check=` directive that skips rules or
//! turns warnings into an error.

use std::fmt;

use serde::Serialize;

/// Warning is a non-fatal finding about a Dockerfile or the build options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    /// BuildKit's rule name, e.g. `JSONArgsRecommended`; `None` for build option warnings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    pub message: String,
    /// The 1-based line the warning is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(r) = &self.rule {
            write!(f, "{r}: ")?;
        }
        f.write_str(&self.message)?;
        if let Some(l) = self.line {
            write!(f, " (line {l})")?;
        }
        Ok(())
    }
}

/// Rule is a lint rule kiln implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    JsonArgsRecommended,
    MaintainerDeprecated,
    UndefinedVar,
    StageNameCasing,
    FromAsCasing,
    DuplicateStageName,
    ConsistentInstructionCasing,
    WorkdirRelativePath,
    NoEmptyContinuation,
    MultipleInstructionsDisallowed,
    LegacyKeyValueFormat,
}

impl Rule {
    /// BuildKit's name for the rule.
    pub fn name(self) -> &'static str {
        match self {
            Rule::JsonArgsRecommended => "JSONArgsRecommended",
            Rule::MaintainerDeprecated => "MaintainerDeprecated",
            Rule::UndefinedVar => "UndefinedVar",
            Rule::StageNameCasing => "StageNameCasing",
            Rule::FromAsCasing => "FromAsCasing",
            Rule::DuplicateStageName => "DuplicateStageName",
            Rule::ConsistentInstructionCasing => "ConsistentInstructionCasing",
            Rule::WorkdirRelativePath => "WorkdirRelativePath",
            Rule::NoEmptyContinuation => "NoEmptyContinuation",
            Rule::MultipleInstructionsDisallowed => "MultipleInstructionsDisallowed",
            Rule::LegacyKeyValueFormat => "LegacyKeyValueFormat",
        }
    }
}

/// CheckConfig is the parsed `# check=` directive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckConfig {
    /// Rule names not to report; `all` skips every rule.
    pub skip: Vec<String>,
    /// Fail the build when a rule reports.
    pub error: bool,
}

impl CheckConfig {
    /// Parses `skip=A,B;error=true`; `None` with a reason when malformed.
    pub fn parse(value: &str) -> Result<CheckConfig, &'static str> {
        let mut c = CheckConfig::default();
        for part in value.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((k, v)) = part.split_once('=') else {
                return Err("expected `key=value` pairs separated by `;`");
            };
            match k.trim().to_ascii_lowercase().as_str() {
                "skip" => {
                    c.skip = v
                        .split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect()
                }
                "error" => {
                    c.error = match v.trim().to_ascii_lowercase().as_str() {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        _ => return Err("`error` must be `true` or `false`"),
                    }
                }
                _ => return Err("unknown key: expected `skip` or `error`"),
            }
        }
        Ok(c)
    }

    fn skips(&self, rule: Rule) -> bool {
        self.skip
            .iter()
            .any(|s| s.eq_ignore_ascii_case("all") || s == rule.name())
    }
}

/// Linter collects warnings, honouring the `# check=` directive.
#[derive(Debug, Default)]
pub struct Linter {
    pub config: CheckConfig,
    pub warnings: Vec<Warning>,
}

impl Linter {
    /// Reports `rule` with `message` at `line`.
    pub fn report(&mut self, rule: Rule, message: String, line: u32) {
        if self.config.skips(rule) {
            return;
        }
        let w = Warning {
            rule: Some(rule.name().to_string()),
            message,
            line: Some(line),
        };
        if !self.warnings.contains(&w) {
            self.warnings.push(w);
        }
    }

    /// Reports a warning that belongs to no rule (it cannot be skipped).
    pub fn note(&mut self, message: String) {
        self.warnings.push(Warning {
            rule: None,
            message,
            line: None,
        });
    }
}

/// Message formats, in BuildKit's words.
pub mod msg {
    /// JSONArgsRecommended.
    pub fn json_args(instruction: &str) -> String {
        format!("JSON arguments recommended for {instruction} to prevent unintended behavior related to OS signals")
    }
    /// MaintainerDeprecated.
    pub fn maintainer() -> String {
        "Maintainer instruction is deprecated in favor of using label".to_string()
    }
    /// UndefinedVar.
    pub fn undefined_var(name: &str, suggestion: Option<&str>) -> String {
        match suggestion {
            Some(s) => format!("Usage of undefined variable '${name}' (did you mean ${s}?)"),
            None => format!("Usage of undefined variable '${name}'"),
        }
    }
    /// StageNameCasing.
    pub fn stage_name_casing(name: &str) -> String {
        format!("Stage name '{name}' should be lowercase")
    }
    /// FromAsCasing.
    pub fn from_as_casing(from: &str, as_kw: &str) -> String {
        format!("'{as_kw}' and '{from}' keywords' casing do not match")
    }
    /// DuplicateStageName.
    pub fn duplicate_stage(name: &str) -> String {
        format!("Duplicate stage name \"{name}\", stage names should be unique")
    }
    /// ConsistentInstructionCasing.
    pub fn casing(instruction: &str, correct: &str) -> String {
        format!("Command '{instruction}' should match the case of the command majority ({correct})")
    }
    /// WorkdirRelativePath.
    pub fn workdir_relative(path: &str) -> String {
        format!("Relative workdir \"{path}\" can have unexpected results if the base image changes")
    }
    /// NoEmptyContinuation.
    pub fn empty_continuation() -> String {
        "Empty continuation line".to_string()
    }
    /// MultipleInstructionsDisallowed.
    pub fn multiple(instruction: &str) -> String {
        format!(
            "Multiple {instruction} instructions should not be used in the same stage because only the last one will be used"
        )
    }
    /// LegacyKeyValueFormat.
    pub fn legacy_key_value(instruction: &str) -> String {
        format!("\"{instruction} key=value\" should be used instead of legacy \"{instruction} key value\" format")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_directive() {
        let c = CheckConfig::parse("skip=JSONArgsRecommended,UndefinedVar;error=true").unwrap();
        assert!(c.error);
        assert!(c.skips(Rule::UndefinedVar));
        assert!(!c.skips(Rule::FromAsCasing));
        assert!(CheckConfig::parse("bogus").is_err());
    }

    #[test]
    fn display_like_buildx() {
        let w = Warning {
            rule: Some("JSONArgsRecommended".into()),
            message: msg::json_args("CMD"),
            line: Some(3),
        };
        assert_eq!(
            w.to_string(),
            "JSONArgsRecommended: JSON arguments recommended for CMD to prevent unintended behavior related to OS signals (line 3)"
        );
    }
}
