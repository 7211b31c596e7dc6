//! Errors of the Dockerfile frontend: what went wrong ([`ErrorKind`]) and where
//! ([`FrontendError`]).

use std::fmt;

use kiln_image::ReferenceError;

use crate::shell::ShellError;

/// FrontendError is an error in a Dockerfile, located at a file and line.
#[derive(Debug)]
pub struct FrontendError(Box<Located>);

#[derive(Debug)]
struct Located {
    file: String,
    line: Option<u32>,
    end_line: Option<u32>,
    source_line: Option<String>,
    kind: ErrorKind,
}

impl FrontendError {
    /// Builds an error of `kind` for `file` at the 1-based `line` range of `text`.
    pub(crate) fn new(file: &str, text: &str, lines: Option<(u32, u32)>, kind: ErrorKind) -> Self {
        let source_line = lines.and_then(|(l, _)| {
            let idx = usize::try_from(l).ok()?.checked_sub(1)?;
            text.strip_prefix('\u{feff}')
                .unwrap_or(text)
                .lines()
                .nth(idx)
                .map(|s| s.trim_end_matches('\r').to_string())
        });
        FrontendError(Box::new(Located {
            file: file.to_string(),
            line: lines.map(|l| l.0),
            end_line: lines.map(|l| l.1),
            source_line,
            kind,
        }))
    }

    /// The Dockerfile name the error is in, e.g. `Dockerfile`.
    pub fn file(&self) -> &str {
        &self.0.file
    }

    /// The 1-based line the error is at, when it has one.
    pub fn line(&self) -> Option<usize> {
        self.0.line.map(|l| l as usize)
    }

    /// The last line of the instruction the error is in.
    pub fn end_line(&self) -> Option<usize> {
        self.0.end_line.map(|l| l as usize)
    }

    /// The text of the offending source line, without its line ending.
    pub fn source_line(&self) -> Option<&str> {
        self.0.source_line.as_deref()
    }

    /// What went wrong.
    pub fn kind(&self) -> &ErrorKind {
        &self.0.kind
    }
}

impl fmt::Display for FrontendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.line {
            Some(l) => write!(f, "{}:{}: {}", self.0.file, l, self.0.kind),
            None => write!(f, "{}: {}", self.0.file, self.0.kind),
        }
    }
}

impl std::error::Error for FrontendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.0.kind)
    }
}

/// SyntaxError is an [`ErrorKind`] at a line range, before the file name is known.
#[derive(Debug)]
pub struct SyntaxError {
    /// First line of the offending instruction (1-based); 0 when the error has no line.
    pub line: u32,
    /// Last line of the offending instruction.
    pub end_line: u32,
    pub kind: ErrorKind,
}

impl SyntaxError {
    /// An error at the line range `start..=end`.
    pub fn at(start: u32, end: u32, kind: ErrorKind) -> Self {
        SyntaxError {
            line: start,
            end_line: end.max(start),
            kind,
        }
    }

    /// An error about the whole file.
    pub fn whole_file(kind: ErrorKind) -> Self {
        SyntaxError {
            line: 0,
            end_line: 0,
            kind,
        }
    }

    /// Locates the error in `file` whose contents are `text`.
    pub fn into_frontend(self, file: &str, text: &str) -> FrontendError {
        let lines = (self.line > 0).then_some((self.line, self.end_line));
        FrontendError::new(file, text, lines, self.kind)
    }
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "line {}: {}", self.line, self.kind)
        } else {
            self.kind.fmt(f)
        }
    }
}

impl std::error::Error for SyntaxError {}

fn did_you_mean(s: &Option<String>) -> String {
    match s {
        Some(s) => format!(" (did you mean \"{s}\"?)"),
        None => String::new(),
    }
}

fn did_you_mean_bt(s: &Option<String>) -> String {
    match s {
        Some(s) => format!(" (did you mean `{s}`?)"),
        None => String::new(),
    }
}

/// ErrorKind says what is wrong with a Dockerfile or the build options.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    #[error("the Dockerfile is empty")]
    EmptyDockerfile,
    #[error("the Dockerfile is larger than the limit of {limit} bytes (16 MiB)")]
    DockerfileTooLarge { limit: usize },
    #[error("the build graph grew past the limit of {limit} bytes here: every step carries its own copy of the environment, so keep large values out of ENV and ARG")]
    GraphTooLarge { limit: u64 },
    #[error("the Dockerfile has no instructions")]
    NoInstructions,
    #[error("the Dockerfile has no `FROM` instruction")]
    NoStage,
    #[error("`{instruction}` comes before the first `FROM`: only `ARG` may")]
    InstructionBeforeFrom { instruction: String },
    #[error("unknown instruction \"{instruction}\"{}", did_you_mean(.suggestion))]
    UnknownInstruction {
        instruction: String,
        suggestion: Option<String>,
    },
    #[error("only one `{name}` parser directive can be used")]
    DirectiveRepeated { name: String },
    #[error("invalid escape token `{value}`: expected `\\` or `` ` ``")]
    InvalidEscapeToken { value: String },
    #[error("invalid `check` directive `{value}`: {reason}")]
    InvalidCheckDirective { value: String, reason: String },
    #[error("failed to parse build-arg:BUILDKIT_DOCKERFILE_CHECK: {reason}")]
    InvalidCheckArg { reason: String },
    #[error("`{instruction}` requires {expected}")]
    ArgumentCount {
        instruction: &'static str,
        expected: &'static str,
    },
    #[error("`{instruction}` requires a name and a value: use `{instruction} name=value`")]
    MissingValue { instruction: &'static str },
    #[error("`{instruction}` argument `{word}` is not of the form `name=value`")]
    NotKeyValue { instruction: &'static str, word: String },
    #[error("`{instruction}` names cannot be blank")]
    BlankName { instruction: &'static str },
    #[error("`{instruction}` JSON arrays must contain only strings")]
    JsonNotStrings { instruction: String },
    #[error("`{instruction}` requires a JSON array, e.g. `{instruction} [\"/bin/sh\", \"-c\"]`")]
    NotJson { instruction: &'static str },
    #[error("unterminated heredoc: no line `{delimiter}` ends it")]
    UnterminatedHeredoc { delimiter: String },
    #[error("`{instruction}` cannot take a heredoc as its destination")]
    HeredocDestination { instruction: &'static str },
    #[error("unknown flag `--{flag}` for `{instruction}`")]
    UnknownFlag { instruction: &'static str, flag: String },
    #[error("`{instruction}` argument `{arg}` looks like a flag but does not start with `--`")]
    FlagSyntax { instruction: &'static str, arg: String },
    #[error("flag `--{flag}` is given twice")]
    DuplicateFlag { flag: String },
    #[error("flag `--{flag}` requires a value")]
    FlagNeedsValue { flag: String },
    #[error("invalid value `{value}` for `--{flag}`: {reason}")]
    FlagValue {
        flag: String,
        value: String,
        reason: String,
    },
    #[error(
        "invalid stage name `{name}`: it must start with a letter and hold only letters, digits, `-`, `_` and `.`"
    )]
    InvalidStageName { name: String },
    #[error("{trigger}")]
    Onbuild { trigger: OnbuildError },
    #[error("`HEALTHCHECK NONE` takes no arguments")]
    HealthcheckNoneArgs,
    #[error("unknown type `{kind}` in `HEALTHCHECK` (try `CMD`)")]
    HealthcheckType { kind: String },
    #[error("`HEALTHCHECK CMD` requires a command")]
    HealthcheckMissingCommand,
    #[error("cannot expand `{word}`: {source}")]
    Expansion {
        word: String,
        #[source]
        source: ShellError,
    },
    #[error("base name `{base}` should not be blank")]
    BlankBaseName { base: String },
    #[error("invalid image reference `{reference}`")]
    InvalidReference {
        reference: String,
        #[source]
        source: ReferenceError,
    },
    #[error("build context `{name}` is a directory; FROM needs an image (`--build-context {name}=docker-image://REF` or `oci-layout://DIR`)")]
    LocalContextAsBase { name: String },
    #[error("cannot resolve image `{reference}`: {reason}")]
    ResolveImage { reference: String, reason: String },
    #[error("invalid platform `{value}`: expected `os/arch[/variant]`")]
    InvalidPlatform { value: String },
    #[error(
        "variable expansion is not supported for `--from`: define a stage with `FROM` using a global `ARG` instead"
    )]
    FromExpansion { value: String },
    #[error("`--from={index}` names no stage: the Dockerfile has {count} stage(s)")]
    StageIndex { index: String, count: usize },
    #[error("cannot copy from stage `{from}`: it must be defined before the current stage `{stage}`")]
    StageNotDefinedYet { from: String, stage: String },
    #[error("circular dependency detected on stage `{stage}`")]
    CircularDependency { stage: String },
    #[error("target stage `{target}` could not be found{}", did_you_mean_bt(.suggestion))]
    TargetNotFound { target: String, suggestion: Option<String> },
    #[error("`VOLUME` paths cannot be empty")]
    EmptyVolume,
    #[error("invalid port `{port}` in `EXPOSE`: {reason}")]
    InvalidPort { port: String, reason: String },
    #[error("invalid signal `{signal}` in `STOPSIGNAL`")]
    InvalidSignal { signal: String },
    #[error("`COPY` cannot copy from a URL or git repository: `{source_url}` (use `ADD`)")]
    CopyFromUrl { source_url: String },
    #[error("`--checksum` requires an HTTP(S) or git source")]
    ChecksumNeedsRemote,
    #[error("`--checksum` can't be specified for multiple sources")]
    ChecksumSeveralSources,
    #[error("invalid git source `{source_url}`: {reason}")]
    InvalidGitSource { source_url: String, reason: String },
    #[error("`{flag}` is not supported yet")]
    UnsupportedFlag { flag: &'static str },
    #[error("invalid `RUN --mount={value}`: {reason}")]
    InvalidMount { value: String, reason: String },
    #[error("invalid `RUN --network` value `{value}`: expected `default`, `none` or `host`")]
    InvalidNetwork { value: String },
    #[error("invalid `RUN --security` value `{value}`: expected `sandbox` or `insecure`")]
    InvalidSecurity { value: String },
    #[error("granting entitlement `{entitlement}` is not allowed: `{what}` needs `--allow {entitlement}`")]
    NotEntitled {
        what: &'static str,
        entitlement: &'static str,
    },
    /// `check=error=true` and rules reported: BuildKit's message; `warnings` are
    /// every warning of the build, for the caller to show before the error.
    #[error("lint violation found for rules: {rules}")]
    Lint {
        rules: String,
        warnings: Vec<crate::lint::Warning>,
    },
}

/// OnbuildError says why an `ONBUILD` trigger is not allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnbuildError {
    /// `ONBUILD ONBUILD ...`.
    Chained,
    /// `ONBUILD FROM` or `ONBUILD MAINTAINER`.
    Forbidden(&'static str),
    /// `ONBUILD` without an instruction.
    Empty,
}

impl fmt::Display for OnbuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OnbuildError::Chained => f.write_str("chaining `ONBUILD` via `ONBUILD ONBUILD` is not allowed"),
            OnbuildError::Forbidden(i) => write!(f, "`{i}` is not allowed as an `ONBUILD` trigger"),
            OnbuildError::Empty => f.write_str("`ONBUILD` requires an instruction"),
        }
    }
}

impl ErrorKind {
    /// ErrorKind::expansion is the failure to expand `word`, shortened in the message
    /// when it is long (a heredoc body can be megabytes).
    pub fn expansion(word: &str, source: ShellError) -> ErrorKind {
        const SHOWN: usize = 80;
        let word = match word.char_indices().nth(SHOWN) {
            Some((end, _)) => format!("{}…", &word[..end]),
            None => word.to_string(),
        };
        ErrorKind::Expansion { word, source }
    }
}
