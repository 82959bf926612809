//! berth-build: Dockerfile front end (parser, word expansion, .dockerignore), stage graph and builder.

pub mod error;
pub mod shell;

pub use error::{Error, ErrorKind, Result};
