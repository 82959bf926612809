//! berth-build: the Dockerfile front end.
//!
//! This crate turns a Dockerfile into what a builder needs, and behaves as
//! BuildKit's Dockerfile front end does, because the same file must build
//! the same image under `docker build` and `berth build`. The executor and
//! exporters come later and build on these pieces; nothing here runs
//! anything.
//!
//! The flow, one module per concern:
//!
//! 1. [`parser`] reads physical lines into a [`Dockerfile`] ([`ast`]):
//!    parser directives, line continuations, comments, JSON/shell forms,
//!    `--flags`, ONBUILD, and [`heredoc`] bodies. [`parse_raw`] is the
//!    syntax-level parse whose [`Dockerfile::dump`] matches BuildKit's parse
//!    dump; [`parse`] adds [`instructions`] validation (unknown
//!    instructions, flags, argument counts).
//! 2. [`shell`] is BuildKit's word-expansion lexer (`$v`, `${v:-w}`,
//!    patterns, quotes, escapes), used for every instruction argument.
//! 3. [`stages`] builds the [`stages::StageGraph`]: stages, their bases,
//!    ARG/ENV scoping with build args and platform args, the variables each
//!    instruction sees, stage dependencies, cycle detection, and the plan
//!    of stages a target needs (grouped into parallel levels).
//! 4. [`dockerignore`] reads and matches `.dockerignore` files as
//!    moby/patternmatcher does, and picks `<Dockerfile>.dockerignore` over
//!    `.dockerignore`.
//! 5. [`check`] is `docker build --check`: BuildKit's lint rules that the
//!    file alone decides.
//!
//! Errors are one type, [`Error`], that displays as `Dockerfile:LINE: what
//! is wrong` with the file name the caller gave.
//!
//! ```
//! let df = berth_build::parse("FROM alpine AS base\nRUN echo hi\n", "Dockerfile").unwrap();
//! let graph = berth_build::stages::StageGraph::new(&df, &Default::default(), "Dockerfile").unwrap();
//! assert_eq!(graph.plan(Some("base")).unwrap().order, vec![0]);
//! ```

pub mod ast;
pub mod check;
pub mod dockerignore;
pub mod error;
pub mod heredoc;
pub mod instructions;
pub mod parser;
pub mod shell;
pub mod stages;

pub use ast::{Directive, Dockerfile, Heredoc, Instruction, Kind};
pub use check::{check, Diagnostic};
pub use error::{Error, ErrorKind, Result};
pub use parser::{parse, parse_raw};
pub use shell::{expand_word, expand_words};
