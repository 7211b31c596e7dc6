//! BuildError: why a build failed, with the whole cause chain kept for the renderer;
//! Snippet: a Dockerfile error shown with the offending lines, as BuildKit does.

use std::error::Error;

type Cause = Box<dyn Error + Send + Sync + 'static>;

/// BuildError is why [`crate::build`] (or a spec parser) failed. Its `Display` is the
/// first line; `source()` walks the causes (an IO error's errno included).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// An error of a Dockerfile line: the renderer prints the excerpt above it.
    #[error(transparent)]
    Dockerfile(Box<Snippet>),
    /// The solve stopped: a step failed without a Dockerfile line, or it was canceled.
    #[error(transparent)]
    Solve(Box<kiln_solver::SolveError<kiln_worker::WorkerError>>),
    /// What was being done, and the error that stopped it.
    #[error("{what}")]
    Context {
        what: String,
        #[source]
        source: Cause,
    },
    /// An error of a library below, as it says it.
    #[error(transparent)]
    Other(Cause),
    /// A request that cannot be built, or a failure with nothing below it.
    #[error("{0}")]
    Message(String),
}

impl From<std::io::Error> for BuildError {
    fn from(e: std::io::Error) -> Self {
        BuildError::Other(Box::new(e))
    }
}

impl BuildError {
    /// An error of a library below, kept as it is.
    pub fn other(e: impl Into<Cause>) -> Self {
        BuildError::Other(e.into())
    }

    /// The Dockerfile excerpt to show above the message, if the error has a line.
    pub fn snippet(&self) -> Option<&Snippet> {
        match self {
            BuildError::Dockerfile(s) => Some(s),
            _ => None,
        }
    }
}

/// `e` and its causes on one line, `: `-separated.
pub fn chain_text(e: &(dyn Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut next = e.source();
    while let Some(c) = next {
        s.push_str(": ");
        s.push_str(&c.to_string());
        next = c.source();
    }
    s
}

/// `.ctx(|| what)`: wraps an error in [`BuildError::Context`].
pub(crate) trait Ctx<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, BuildError>;
}

impl<T, E: Into<Cause>> Ctx<T> for Result<T, E> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, BuildError> {
        self.map_err(|e| BuildError::Context {
            what: what(),
            source: e.into(),
        })
    }
}

/// `return Err(BuildError::Message(format!(…)))`.
macro_rules! bail {
    ($($t:tt)*) => {
        return Err($crate::BuildError::Message(format!($($t)*)))
    };
}
pub(crate) use bail;

/// Snippet is a Dockerfile error shown with the offending line, as BuildKit does.
#[derive(Debug)]
pub struct Snippet {
    pub file: String,
    pub line: usize,
    pub lines: Vec<(usize, String)>,
    pub message: String,
    /// What caused it (an op's error), so that the whole chain is printed, e.g. the
    /// `No space left on device` below `cannot write `PATH``.
    pub source: Option<Cause>,
}

impl Snippet {
    /// The excerpt printed above the error message.
    pub fn render(&self) -> String {
        if self.lines.is_empty() {
            return String::new();
        }
        let mut s = format!("{}:{}\n--------------------\n", self.file, self.line);
        for (n, text) in &self.lines {
            let mark = if *n == self.line { ">>>" } else { "   " };
            s.push_str(&format!("{n:>4} | {mark} {text}\n"));
        }
        s.push_str("--------------------\n");
        s
    }

    /// The error at `line` of `text` (the Dockerfile named `file`), with a line of
    /// context either side.
    pub fn new(file: &str, text: &str, line: usize, message: String) -> Snippet {
        let all: Vec<&str> = text.lines().collect();
        let lines = if line >= 1 && line <= all.len() {
            let lo = line.saturating_sub(2).max(1);
            let hi = (line + 1).min(all.len());
            (lo..=hi).map(|n| (n, all[n - 1].to_string())).collect()
        } else {
            Vec::new()
        };
        Snippet {
            file: file.to_string(),
            line,
            lines,
            message,
            source: None,
        }
    }
}

impl std::fmt::Display for Snippet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl Error for Snippet {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn Error + 'static))
    }
}
