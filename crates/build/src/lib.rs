//! berth-build: Dockerfile front end (parser, word expansion, .dockerignore), stage graph and builder.

pub mod ast;
pub mod dockerignore;
pub mod error;
pub mod heredoc;
pub mod instructions;
pub mod parser;
pub mod shell;
pub mod stages;

pub use ast::{Directive, Dockerfile, Heredoc, Instruction, Kind};
pub use error::{Error, ErrorKind, Result};
pub use parser::{parse, parse_raw};
