//! The build checks that need lowering state, each where BuildKit runs it
//! (`dockerfile2llb/validations.go` and its callers in `convert.go`,
//! `convert_copy.go`, `convert_expose.go`); the messages are in [`crate::lint`].

use std::collections::BTreeSet;

use kiln_image::{Platform, Reference};

use crate::lint::{self, msg, Rule};
use crate::shell::Expanded;
use crate::syntax::{Dockerfile, Instruction, InstructionKind};

use super::state::EnvList;
use super::Converter;

/// Stage names BuildKit reserves (`reservedStageNames`).
const RESERVED_STAGE_NAMES: [&str; 2] = ["context", "scratch"];

impl Converter<'_> {
    /// ReservedStageName, for a stage's (lowercase) `AS` name.
    pub(super) fn check_stage_name(&mut self, name: &str, line: u32) {
        if RESERVED_STAGE_NAMES.contains(&name) {
            self.lint
                .report(Rule::ReservedStageName, msg::reserved_stage(name), line);
        }
    }

    /// InvalidDefaultArgInFrom (BuildKit `validateBaseImagesWithDefaultArgs`): each
    /// stage's base name, expanded with the global ARGs' defaults only (no
    /// `--build-arg`), must be a valid image reference. `global` is the predefined ARGs.
    pub(super) fn check_default_bases(&mut self, global: &EnvList, meta_args: &[Instruction], df: &Dockerfile) {
        let mut env = global.clone();
        for a in meta_args {
            let InstructionKind::Arg(decls) = &a.kind else { continue };
            for d in decls {
                let Some(def) = &d.default else { continue };
                // An expansion error fails the build later; the check gives up.
                let Ok(r) = self.lexer.expand_word(def, &env) else {
                    return;
                };
                env.set(&d.name, &r.value);
            }
        }
        for i in &df.instructions {
            let InstructionKind::From(fi) = &i.kind else { continue };
            let Ok(r) = self.lexer.expand_word(&fi.image, &env) else {
                return;
            };
            if Reference::parse(&r.value).is_err() {
                self.lint.report(
                    Rule::InvalidDefaultArgInFrom,
                    msg::invalid_default_arg_in_from(&fi.image),
                    i.start_line,
                );
            }
        }
    }

    /// UndefinedArgInFrom (BuildKit `reportUnusedFromArgs`): a variable in a FROM
    /// line that is neither a global ARG (declared, with a value or not) nor predefined.
    pub(super) fn check_from_args(&mut self, r: &Expanded, declared: &BTreeSet<String>, line: u32) {
        let keys: BTreeSet<&str> = declared.iter().map(String::as_str).chain(self.global.keys()).collect();
        for arg in &r.unmatched {
            if keys.contains(arg.as_str()) {
                continue;
            }
            let suggestion = crate::suggest::closest(arg, keys.iter().copied());
            self.lint.report(
                Rule::UndefinedArgInFrom,
                msg::undefined_arg_in_from(arg, suggestion),
                line,
            );
        }
    }

    /// RedundantTargetPlatform and FromPlatformFlagConstDisallowed for
    /// `FROM --platform=written`, expanded to `r`, in stage `stage` (lowercase name).
    pub(super) fn check_from_platform(&mut self, written: &str, r: &Expanded, stage: Option<&str>, line: u32) {
        let matched: Vec<&String> = r.used.iter().filter(|u| !r.unmatched.contains(*u)).collect();
        // Only the one variable, expanding to the target platform: it was written
        // `$TARGETPLATFORM` or `${TARGETPLATFORM}` (BuildKit's inference).
        let only_target = matched.len() == 1 && r.unmatched.is_empty() && matched[0] == "TARGETPLATFORM";
        if only_target && self.global.value("TARGETPLATFORM") == Some(r.value.as_str()) {
            self.lint.report(
                Rule::RedundantTargetPlatform,
                msg::redundant_target_platform(written),
                line,
            );
        }
        if !r.used.is_empty() {
            return;
        }
        let Some(p) = Platform::parse(&r.value) else { return };
        let stage = stage.unwrap_or("");
        if stage.contains(&p.os) || stage.contains(&p.architecture) {
            return;
        }
        self.lint.report(
            Rule::FromPlatformFlagConstDisallowed,
            msg::from_platform_const(&r.value),
            line,
        );
    }

    /// InvalidBaseImagePlatform: the base image resolved for `expected` is for
    /// another OS or architecture.
    pub(super) fn check_base_platform(&mut self, name: &str, expected: &Platform, actual: &Platform, line: u32) {
        if expected.os != actual.os || expected.architecture != actual.architecture {
            self.lint.report(
                Rule::InvalidBaseImagePlatform,
                msg::invalid_base_platform(name, &normalized(expected), &normalized(actual)),
                line,
            );
        }
    }

    /// SecretsUsedInArgOrEnv for an ARG or ENV name.
    pub(super) fn check_secret_key(&mut self, instruction: &str, key: &str, line: u32) {
        if lint::is_secret_key(key) {
            self.lint.report(
                Rule::SecretsUsedInArgOrEnv,
                msg::secrets_in_arg_or_env(instruction, key),
                line,
            );
        }
    }

    /// ExposeProtoCasing and ExposeInvalidFormat for one expanded EXPOSE word.
    pub(super) fn check_expose(&mut self, raw: &str, line: u32) {
        let (casing, format) = lint::expose_findings(raw);
        if casing {
            self.lint
                .report(Rule::ExposeProtoCasing, msg::expose_proto_casing(raw), line);
        }
        if format {
            self.lint
                .report(Rule::ExposeInvalidFormat, msg::expose_invalid_format(raw), line);
        }
    }

    /// CopyIgnoredFile (BuildKit `validateCopySourcePath`) for a local source of a
    /// COPY or ADD from the build context. Not checked when the .dockerignore has `!`
    /// patterns (BuildKit: too hard to tell statically).
    pub(super) fn check_copy_source(&mut self, is_add: bool, src: &str, line: u32) {
        let patterns = &self.opts.ignore_patterns;
        if patterns.is_empty() || patterns.iter().any(|p| p.trim().starts_with('!')) {
            return;
        }
        let src = kiln_context::dockerignore::clean(src);
        if src == "." || src == "/" {
            // The context root itself: only when a pattern excludes every entry (and
            // then it matches `.`, as `*`, `**` and `**/*` do in patternmatcher).
            let all = patterns.iter().any(|p| matches!(p.trim(), "*" | "**" | "**/*"));
            if !all {
                return;
            }
        }
        let matched = if src == "." || src == "/" {
            true
        } else {
            if self.ignore.is_none() {
                self.ignore = Some(kiln_context::dockerignore::PatternMatcher::new(patterns).ok());
            }
            matches!(&self.ignore, Some(Some(m)) if m.matches_or_parent_matches(&src))
        };
        if matched {
            let cmd = if is_add { "Add" } else { "Copy" };
            self.lint
                .report(Rule::CopyIgnoredFile, msg::copy_ignored_file(cmd, &src), line);
        }
    }
}

/// containerd's `platforms.FormatAll(platforms.Normalize(p))` for Linux platforms:
/// `arm64/v8` and `amd64/v1` drop the variant, bare `arm` is `arm/v7`.
fn normalized(p: &Platform) -> String {
    let variant = match (p.architecture.as_str(), p.variant.as_deref()) {
        ("arm64", Some("8" | "v8" | "v8.0")) | ("amd64", Some("v1")) => None,
        ("arm", None | Some("")) => Some("v7".to_string()),
        (_, v) => v.filter(|v| !v.is_empty()).map(str::to_string),
    };
    match variant {
        Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
        None => format!("{}/{}", p.os, p.architecture),
    }
}
