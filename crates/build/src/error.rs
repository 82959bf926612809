//! The crate's error type.
//!
//! Every error that comes from a Dockerfile carries the file name the caller
//! gave and the 1-based line it concerns, and displays as
//! `Dockerfile:LINE: what is wrong` — the shape `docker build` users know.

/// What went wrong, without the location.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ErrorKind {
    /// The file holds no instruction at all (empty, or only comments).
    #[error("file with no instructions")]
    NoInstructions,
    /// A parser directive is repeated or has a bad value.
    #[error("{0}")]
    Directive(String),
    /// An instruction keyword that Dockerfiles do not know.
    #[error("unknown instruction: {0}")]
    UnknownInstruction(String),
    /// A `--flag` the instruction does not take.
    #[error("unknown flag: {0}")]
    UnknownFlag(String),
    /// A known flag used wrongly (missing value, duplicate, bad boolean...).
    #[error("{0}")]
    BadFlag(String),
    /// A heredoc whose terminator never came.
    #[error("unterminated heredoc")]
    UnterminatedHeredoc,
    /// A JSON (exec form) argument list that parses as JSON but is unusable.
    #[error("{0}")]
    Json(String),
    /// Wrong number or shape of arguments.
    #[error("{0}")]
    Args(String),
    /// Variable expansion failed (bad substitution, `${v:?msg}`...).
    #[error("{0}")]
    Expansion(String),
    /// `--from`, `FROM` or a mount names a stage that does not exist.
    #[error("undefined stage in --from: {0}")]
    UndefinedStage(String),
    /// Stages depend on each other in a loop.
    #[error("circular dependency detected on stage: {0}")]
    CyclicStages(String),
    /// An instruction other than ARG comes before the first FROM.
    #[error("no build stage in current context (instruction {0} needs a FROM before it)")]
    MissingFrom(String),
    /// The file has instructions (global ARGs) but no FROM at all.
    #[error("dockerfile contains no stages to build")]
    NoStages,
    /// The requested target stage is not in the file.
    #[error("target stage \"{0}\" could not be found")]
    UnknownTarget(String),
}

/// An error located in a Dockerfile: displays as `FILE:LINE: message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {kind}")]
pub struct Error {
    /// The name the caller gave the file (usually `Dockerfile`).
    pub file: String,
    /// 1-based line number the error is about.
    pub line: usize,
    /// What is wrong.
    #[source]
    pub kind: ErrorKind,
}

impl Error {
    /// Builds an error for `file` at `line`.
    pub fn new(file: &str, line: usize, kind: ErrorKind) -> Self {
        Error {
            file: file.to_string(),
            line,
            kind,
        }
    }
}

/// Result alias used across the crate.
pub type Result<T> = std::result::Result<T, Error>;
