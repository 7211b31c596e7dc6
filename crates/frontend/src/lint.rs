//! Lint holds BuildKit's Dockerfile checks that kiln reports: each a [`Warning`] with
//! BuildKit's rule name and wording, and the `# check=` directive (or the
//! `BUILDKIT_DOCKERFILE_CHECK` build arg) that skips rules or turns warnings into an
//! error.
//!
//! Names, descriptions, URLs and message formats are BuildKit's
//! (`frontend/dockerfile/linter/ruleset.go`); the directive grammar is its
//! `linter.ParseLintOptions`. `testdata/lint/messages.txt` pins every message with the
//! BuildKit commit and source line it was read from.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

#[cfg(test)]
mod tests;

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

impl Warning {
    /// The rule the warning belongs to, when it is one of BuildKit's checks.
    pub fn rule(&self) -> Option<Rule> {
        self.rule.as_deref().and_then(Rule::from_name)
    }
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

/// Rule is one of BuildKit's build checks. BuildKit's one experimental rule,
/// `InvalidDefinitionDescription`, is not implemented (it only runs when enabled with
/// `# check=experimental=…`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    StageNameCasing,
    FromAsCasing,
    NoEmptyContinuation,
    ConsistentInstructionCasing,
    DuplicateStageName,
    ReservedStageName,
    JsonArgsRecommended,
    MaintainerDeprecated,
    UndefinedArgInFrom,
    WorkdirRelativePath,
    UndefinedVar,
    MultipleInstructionsDisallowed,
    LegacyKeyValueFormat,
    InvalidBaseImagePlatform,
    RedundantTargetPlatform,
    SecretsUsedInArgOrEnv,
    InvalidDefaultArgInFrom,
    FromPlatformFlagConstDisallowed,
    CopyIgnoredFile,
    ExposeProtoCasing,
    ExposeInvalidFormat,
}

impl Rule {
    /// Every rule, in BuildKit's `ruleset.go` order.
    pub const ALL: [Rule; 21] = [
        Rule::StageNameCasing,
        Rule::FromAsCasing,
        Rule::NoEmptyContinuation,
        Rule::ConsistentInstructionCasing,
        Rule::DuplicateStageName,
        Rule::ReservedStageName,
        Rule::JsonArgsRecommended,
        Rule::MaintainerDeprecated,
        Rule::UndefinedArgInFrom,
        Rule::WorkdirRelativePath,
        Rule::UndefinedVar,
        Rule::MultipleInstructionsDisallowed,
        Rule::LegacyKeyValueFormat,
        Rule::InvalidBaseImagePlatform,
        Rule::RedundantTargetPlatform,
        Rule::SecretsUsedInArgOrEnv,
        Rule::InvalidDefaultArgInFrom,
        Rule::FromPlatformFlagConstDisallowed,
        Rule::CopyIgnoredFile,
        Rule::ExposeProtoCasing,
        Rule::ExposeInvalidFormat,
    ];

    /// The rule named `name` (BuildKit's spelling, case-sensitive).
    pub fn from_name(name: &str) -> Option<Rule> {
        Rule::ALL.into_iter().find(|r| r.name() == name)
    }

    /// Whether a `# check=` comment above an instruction applies to the rule there:
    /// BuildKit merges those comments only where it lowers that one instruction
    /// (`instructions.Parse`, `buildDispatchStates`, `dispatch`), not in its whole-file
    /// checks (stage names, casing, default ARGs, continuations, base platforms).
    pub fn instruction_scoped(self) -> bool {
        !matches!(
            self,
            Rule::NoEmptyContinuation
                | Rule::ConsistentInstructionCasing
                | Rule::DuplicateStageName
                | Rule::ReservedStageName
                | Rule::InvalidDefaultArgInFrom
                | Rule::InvalidBaseImagePlatform
        )
    }

    /// BuildKit's name for the rule.
    pub fn name(self) -> &'static str {
        self.info().0
    }

    /// BuildKit's one-line description of the rule.
    pub fn description(self) -> &'static str {
        self.info().1
    }

    /// The documentation URL BuildKit prints with the rule; `None` for
    /// `InvalidBaseImagePlatform`, which has none.
    pub fn url(self) -> Option<&'static str> {
        let slug = self.info().2;
        (!slug.is_empty()).then_some(slug)
    }

    fn info(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Rule::StageNameCasing => (
                "StageNameCasing",
                "Stage names should be lowercase",
                "https://docs.docker.com/go/dockerfile/rule/stage-name-casing/",
            ),
            Rule::FromAsCasing => (
                "FromAsCasing",
                "The 'as' keyword should match the case of the 'from' keyword",
                "https://docs.docker.com/go/dockerfile/rule/from-as-casing/",
            ),
            Rule::NoEmptyContinuation => (
                "NoEmptyContinuation",
                "Empty continuation lines will become errors in a future release",
                "https://docs.docker.com/go/dockerfile/rule/no-empty-continuation/",
            ),
            Rule::ConsistentInstructionCasing => (
                "ConsistentInstructionCasing",
                "All commands within the Dockerfile should use the same casing (either upper or lower)",
                "https://docs.docker.com/go/dockerfile/rule/consistent-instruction-casing/",
            ),
            Rule::DuplicateStageName => (
                "DuplicateStageName",
                "Stage names should be unique",
                "https://docs.docker.com/go/dockerfile/rule/duplicate-stage-name/",
            ),
            Rule::ReservedStageName => (
                "ReservedStageName",
                "Reserved words should not be used as stage names",
                "https://docs.docker.com/go/dockerfile/rule/reserved-stage-name/",
            ),
            Rule::JsonArgsRecommended => (
                "JSONArgsRecommended",
                "JSON arguments recommended for ENTRYPOINT/CMD to prevent unintended behavior related to OS signals",
                "https://docs.docker.com/go/dockerfile/rule/json-args-recommended/",
            ),
            Rule::MaintainerDeprecated => (
                "MaintainerDeprecated",
                "The MAINTAINER instruction is deprecated, use a label instead to define an image author",
                "https://docs.docker.com/go/dockerfile/rule/maintainer-deprecated/",
            ),
            Rule::UndefinedArgInFrom => (
                "UndefinedArgInFrom",
                "FROM command must use declared ARGs",
                "https://docs.docker.com/go/dockerfile/rule/undefined-arg-in-from/",
            ),
            Rule::WorkdirRelativePath => (
                "WorkdirRelativePath",
                "Relative workdir without an absolute workdir declared within the build can have unexpected results if the base image changes",
                "https://docs.docker.com/go/dockerfile/rule/workdir-relative-path/",
            ),
            Rule::UndefinedVar => (
                "UndefinedVar",
                "Variables should be defined before their use",
                "https://docs.docker.com/go/dockerfile/rule/undefined-var/",
            ),
            Rule::MultipleInstructionsDisallowed => (
                "MultipleInstructionsDisallowed",
                "Multiple instructions of the same type should not be used in the same stage",
                "https://docs.docker.com/go/dockerfile/rule/multiple-instructions-disallowed/",
            ),
            Rule::LegacyKeyValueFormat => (
                "LegacyKeyValueFormat",
                "Legacy key/value format with whitespace separator should not be used",
                "https://docs.docker.com/go/dockerfile/rule/legacy-key-value-format/",
            ),
            Rule::InvalidBaseImagePlatform => (
                "InvalidBaseImagePlatform",
                "Base image platform does not match expected target platform",
                "",
            ),
            Rule::RedundantTargetPlatform => (
                "RedundantTargetPlatform",
                "Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior",
                "https://docs.docker.com/go/dockerfile/rule/redundant-target-platform/",
            ),
            Rule::SecretsUsedInArgOrEnv => (
                "SecretsUsedInArgOrEnv",
                "Sensitive data should not be used in the ARG or ENV commands",
                "https://docs.docker.com/go/dockerfile/rule/secrets-used-in-arg-or-env/",
            ),
            Rule::InvalidDefaultArgInFrom => (
                "InvalidDefaultArgInFrom",
                "Default value for global ARG results in an empty or invalid base image name",
                "https://docs.docker.com/go/dockerfile/rule/invalid-default-arg-in-from/",
            ),
            Rule::FromPlatformFlagConstDisallowed => (
                "FromPlatformFlagConstDisallowed",
                "FROM --platform flag should not use a constant value",
                "https://docs.docker.com/go/dockerfile/rule/from-platform-flag-const-disallowed/",
            ),
            Rule::CopyIgnoredFile => (
                "CopyIgnoredFile",
                "Attempting to Copy file that is excluded by .dockerignore",
                "https://docs.docker.com/go/dockerfile/rule/copy-ignored-file/",
            ),
            Rule::ExposeProtoCasing => (
                "ExposeProtoCasing",
                "Protocol in EXPOSE instruction should be lowercase",
                "https://docs.docker.com/go/dockerfile/rule/expose-proto-casing/",
            ),
            Rule::ExposeInvalidFormat => (
                "ExposeInvalidFormat",
                "IP address and host-port mapping should not be used in EXPOSE instruction. This will become an error in a future release",
                "https://docs.docker.com/go/dockerfile/rule/expose-invalid-format/",
            ),
        }
    }
}

/// CheckConfig is the parsed `# check=` directive (or `BUILDKIT_DOCKERFILE_CHECK`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckConfig {
    /// Rule names not to report (exact names; BuildKit ignores unknown ones).
    pub skip: Vec<String>,
    /// `skip=all`: report nothing.
    pub skip_all: bool,
    /// Experimental rules enabled (`experimental=…`); kiln implements none, so this is
    /// parsed and kept only so that the directive is accepted as BuildKit accepts it.
    pub experimental: Vec<String>,
    /// Fail the build when a rule reports.
    pub error: bool,
}

impl CheckConfig {
    /// Parses `skip=A,B;error=true` with BuildKit's grammar (`ParseLintOptions`): at
    /// most three `;`-separated `key=value` parts, keys `skip`, `experimental` and
    /// `error`; `skip=all` (exactly) skips every rule; `error` is a Go boolean.
    pub fn parse(value: &str) -> Result<CheckConfig, String> {
        let mut c = CheckConfig::default();
        let value = value.trim();
        if value.is_empty() {
            return Ok(c);
        }
        for part in value.splitn(3, ';') {
            let Some((k, v)) = part.split_once('=') else {
                return Err(format!("invalid check option {}", go_quote(part)));
            };
            match k.trim() {
                "skip" => {
                    let v = v.trim();
                    if v == "all" {
                        c.skip_all = true;
                    } else {
                        c.skip = v.split(',').map(|s| s.trim().to_string()).collect();
                    }
                }
                "experimental" => {
                    c.experimental = v.trim().split(',').map(|s| s.trim().to_string()).collect();
                }
                "error" => {
                    c.error = match v.trim() {
                        "1" | "t" | "T" | "TRUE" | "true" | "True" => true,
                        "0" | "f" | "F" | "FALSE" | "false" | "False" => false,
                        other => {
                            return Err(format!(
                                "failed to parse check option {}: strconv.ParseBool: parsing {}: invalid syntax",
                                go_quote(part),
                                go_quote(other)
                            ))
                        }
                    }
                }
                other => return Err(format!("invalid check option {}", go_quote(other))),
            }
        }
        Ok(c)
    }

    /// Whether `rule` is not reported.
    pub fn skips(&self, rule: Rule) -> bool {
        self.skip_all || self.skip.iter().any(|s| s == rule.name())
    }
}

/// Linter collects warnings, honouring the `# check=` directive and the `# check=`
/// comments above single instructions.
#[derive(Debug, Default)]
pub struct Linter {
    pub config: CheckConfig,
    /// `# check=` comments right above an instruction, by its first line
    /// ([`instruction_checks`]); they add to `config` for the rules BuildKit checks
    /// while lowering that instruction ([`Rule::instruction_scoped`]).
    pub scoped: BTreeMap<u32, CheckConfig>,
    /// An inherited `ONBUILD` trigger is being lowered: it has no comments of its own.
    pub in_trigger: bool,
    pub warnings: Vec<Warning>,
}

impl Linter {
    /// Reports `rule` with `message` at `line`, the instruction being lowered.
    pub fn report(&mut self, rule: Rule, message: String, line: u32) {
        self.report_for(rule, message, line, line);
    }

    /// Reports `rule` at `line` while lowering the instruction at `scope` (they differ
    /// for MultipleInstructionsDisallowed, reported at the earlier instruction).
    pub fn report_for(&mut self, rule: Rule, message: String, line: u32, scope: u32) {
        if self.config.skips(rule) {
            return;
        }
        if rule.instruction_scoped() && !self.in_trigger && self.scoped.get(&scope).is_some_and(|c| c.skips(rule)) {
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

    /// With `error=true` and a rule reported: the rules, comma-separated in the order
    /// they first reported (BuildKit's `lint violation found for rules: …`).
    pub fn violation(&self) -> Option<String> {
        if !self.config.error {
            return None;
        }
        let mut rules: Vec<&str> = Vec::new();
        for r in self.warnings.iter().filter_map(|w| w.rule.as_deref()) {
            if !rules.contains(&r) {
                rules.push(r);
            }
        }
        (!rules.is_empty()).then(|| rules.join(", "))
    }
}

/// The `# check=` comments BuildKit (0.26+, `WithMergedConfigFromComments`) applies to
/// single instructions: the comment lines gathered since the previous instruction (a
/// bare `#` clears them, blank lines do not; the parser directives at the top are not
/// among them), of which the first `check=` one counts, up to its first space (so
/// `# check=skip=Rule // why` works); one that does not parse is ignored. `spans` are
/// the instructions' first and last lines, in order. Keyed by first line.
pub fn instruction_checks(text: &str, spans: &[(u32, u32)]) -> BTreeMap<u32, CheckConfig> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = BTreeMap::new();
    let mut comments: Vec<&str> = Vec::new();
    let mut directives_done = false;
    let mut spans = spans.iter().peekable();
    for (i, raw) in text.split('\n').enumerate() {
        let n = u32::try_from(i + 1).unwrap_or(u32::MAX);
        while spans.peek().is_some_and(|&&(_, end)| end < n) {
            spans.next();
        }
        if let Some(&&(start, _)) = spans.peek().filter(|&&&(start, _)| start <= n) {
            if start == n {
                if let Some(c) = comment_check(&comments) {
                    out.insert(start, c);
                }
                comments.clear();
            }
            directives_done = true;
            continue;
        }
        let line = raw.trim_end_matches(['\r', '\n']);
        let trimmed = line.trim_start();
        if !directives_done {
            if trimmed.strip_prefix('#').and_then(directive).is_some() {
                continue;
            }
            directives_done = true;
        }
        if trimmed.starts_with('#') {
            // BuildKit drops the line's first byte (the `#` unless indented) and trims.
            let comment = line.get(1..).unwrap_or("").trim();
            if comment.is_empty() {
                comments.clear();
            } else {
                comments.push(comment);
            }
        }
    }
    out
}

/// `key=value` of a known parser directive (`syntax`, `escape`, `check`) in a line
/// without its `#`, as BuildKit's `DirectiveParser` reads one.
fn directive(rest: &str) -> Option<(String, &str)> {
    let rest = rest.trim_start();
    let key_len = rest
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())))
        .map_or(rest.len(), |(i, _)| i);
    if key_len == 0 {
        return None;
    }
    let key = rest[..key_len].to_ascii_lowercase();
    let value = rest[key_len..].trim_start().strip_prefix('=')?.trim();
    if value.is_empty() || !matches!(key.as_str(), "syntax" | "escape" | "check") {
        return None;
    }
    Some((key, value))
}

/// The check configuration of an instruction's comments: the first `check=` one, when
/// it parses (BuildKit stops at the first, and keeps the file's config when it does
/// not parse).
fn comment_check(comments: &[&str]) -> Option<CheckConfig> {
    let value = comments
        .iter()
        .find_map(|c| directive(c).filter(|(key, _)| key == "check"))?
        .1;
    CheckConfig::parse(value.split(' ').next().unwrap_or(value)).ok()
}

/// Whether an ARG or ENV name looks like it holds a secret (BuildKit
/// `validateNoSecretKey`): one of its `_`-separated words is a secret word and none is
/// an allowed one, case-insensitively.
pub fn is_secret_key(key: &str) -> bool {
    const DENY: [&str; 10] = [
        "apikey",
        "auth",
        "credential",
        "credentials",
        "key",
        "password",
        "pword",
        "passwd",
        "secret",
        "token",
    ];
    const ALLOW: [&str; 3] = ["public", "file", "version"];
    let has = |set: &[&str]| key.split('_').any(|w| set.iter().any(|t| w.eq_ignore_ascii_case(t)));
    has(&DENY) && !has(&ALLOW)
}

/// What an EXPOSE port spec is flagged for (BuildKit `parsePort`): a protocol not in
/// lowercase (ExposeProtoCasing) and an IP address or host port (ExposeInvalidFormat).
pub fn expose_findings(raw: &str) -> (bool, bool) {
    let parts: Vec<&str> = raw.split(':').collect();
    let (ip, host_port, container) = match parts.len() {
        1 => ("".to_string(), "", parts[0]),
        2 => ("".to_string(), parts[0], parts[1]),
        n => (parts[..n - 2].join(":"), parts[n - 2], parts[n - 1]),
    };
    let proto = container.split_once('/').map_or("", |(_, p)| p);
    (proto != proto.to_lowercase(), !ip.is_empty() || !host_port.is_empty())
}

/// Go's `%q` of a string: double-quoted, `"` and `\` escaped, control characters as
/// escapes (enough for the names and paths the messages quote).
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Message formats, in BuildKit's words (`Format` of each rule in `ruleset.go`).
pub mod msg {
    use super::go_quote;

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
        format!("Duplicate stage name {}, stage names should be unique", go_quote(name))
    }
    /// ReservedStageName.
    pub fn reserved_stage(name: &str) -> String {
        format!(
            "Stage name should not use the same name as reserved stage {}",
            go_quote(name)
        )
    }
    /// ConsistentInstructionCasing.
    pub fn casing(instruction: &str, correct: &str) -> String {
        format!("Command '{instruction}' should match the case of the command majority ({correct})")
    }
    /// WorkdirRelativePath.
    pub fn workdir_relative(path: &str) -> String {
        format!(
            "Relative workdir {} can have unexpected results if the base image changes",
            go_quote(path)
        )
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
    /// UndefinedArgInFrom.
    pub fn undefined_arg_in_from(arg: &str, suggestion: Option<&str>) -> String {
        match suggestion {
            Some(s) => format!("FROM argument '{arg}' is not declared (did you mean {s}?)"),
            None => format!("FROM argument '{arg}' is not declared"),
        }
    }
    /// InvalidBaseImagePlatform.
    pub fn invalid_base_platform(image: &str, expected: &str, actual: &str) -> String {
        format!(
            "Base image {image} was pulled with platform {}, expected {} for current build",
            go_quote(actual),
            go_quote(expected)
        )
    }
    /// RedundantTargetPlatform.
    pub fn redundant_target_platform(platform_var: &str) -> String {
        format!("Setting platform to predefined {platform_var} in FROM is redundant as this is the default behavior")
    }
    /// SecretsUsedInArgOrEnv.
    pub fn secrets_in_arg_or_env(instruction: &str, key: &str) -> String {
        format!(
            "Do not use ARG or ENV instructions for sensitive data ({instruction} {})",
            go_quote(key)
        )
    }
    /// InvalidDefaultArgInFrom.
    pub fn invalid_default_arg_in_from(base: &str) -> String {
        format!("Default value for ARG {base} results in empty or invalid base image name")
    }
    /// FromPlatformFlagConstDisallowed.
    pub fn from_platform_const(platform: &str) -> String {
        format!(
            "FROM --platform flag should not use constant value {}",
            go_quote(platform)
        )
    }
    /// CopyIgnoredFile; `cmd` is `Copy` or `Add`.
    pub fn copy_ignored_file(cmd: &str, file: &str) -> String {
        format!(
            "Attempting to {cmd} file {} that is excluded by .dockerignore",
            go_quote(file)
        )
    }
    /// ExposeProtoCasing.
    pub fn expose_proto_casing(port: &str) -> String {
        format!("Defined protocol '{port}' in EXPOSE instruction should be lowercase")
    }
    /// ExposeInvalidFormat.
    pub fn expose_invalid_format(port: &str) -> String {
        format!("EXPOSE instruction should not define an IP address or host-port mapping, found '{port}'")
    }
}
