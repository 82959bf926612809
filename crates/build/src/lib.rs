//! berth-build: `berth build` — Dockerfile front end, stage graph,
//! executor with cache, and exporter.
//!
//! The design follows BuildKit's split, one concern per module, each
//! usable alone: **parser → stage graph → executor with cache → exporter**.
//! The front end behaves as BuildKit's Dockerfile front end does, because
//! the same file must build the same image under `docker build` and
//! `berth build`.
//!
//! The front end:
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
//! 5. [`check`](mod@check) is `docker build --check`: BuildKit's lint rules that the
//!    file alone decides.
//!
//! The builder:
//!
//! 6. [`executor`] runs the stages a target needs, in dependency order,
//!    independent stages at the same time (one forked process each).
//!    Metadata instructions edit the image config and history as BuildKit
//!    writes them; RUN runs in a real container through berth's runtime
//!    ([`runner`]) on an overlay of the stage's layers; COPY/ADD ([`copy`])
//!    write into the same kind of overlay. Each RUN/COPY/ADD first looks up
//!    its key in the [`cache`] (parent key + expanded instruction +
//!    environment, or the sources' content and metadata but never mtimes);
//!    a hit reuses the recorded layer without mounting anything.
//!    RUN's `--mount` (cache, tmpfs, bind, secret) is in [`mounts`]; the
//!    runtime's mount points for them are taken out of the layer again.
//! 7. [`export`] commits a step's overlay upper directory as a layer
//!    (timestamps set to SOURCE_DATE_EPOCH or 0, sorted gzip tar, blob in
//!    the content store, unpacked by chain id) and, once the whole build
//!    has succeeded, writes the config and OCI manifest into the local
//!    store with its tags, or an OCI layout archive. The same Dockerfile
//!    and context content give the same image digest wherever and
//!    whenever they are built.
//!
//! 8. [`cache_io`] carries the cache between machines (`--cache-to`,
//!    `--cache-from`): an OCI artifact of records and layer blobs, in an OCI
//!    layout directory or a registry.
//!
//! 9. [`prune`] (`berth builder prune`) forgets the cache and frees the
//!    layers and blobs only the cache used.
//!
//! 10. [`remote`] fetches contexts given as a git repository or an archive's URL.
//!
//! The executor never starts threads: base images are pulled and shared
//! caches imported (the registry client runs a tokio runtime for the call)
//! before the first RUN, because the runtime clones the container from this
//! process; parallel stages are processes for the same reason. RUN gets
//! Docker's default bridge network through berth-net ([`runner::BridgeNetns`]).
//!
//! Front-end errors are one type, [`Error`], that displays as `Dockerfile:LINE: what
//! is wrong` with the file name the caller gave.
//!
//! ```
//! let df = berth_build::parse("FROM alpine AS base\nRUN echo hi\n", "Dockerfile").unwrap();
//! let graph = berth_build::stages::StageGraph::new(&df, &Default::default(), "Dockerfile").unwrap();
//! assert_eq!(graph.plan(Some("base")).unwrap().order, vec![0]);
//! ```

pub mod ast;
pub mod cache;
pub mod cache_io;
pub mod check;
pub mod copy;
pub mod decompress;
pub mod dockerignore;
pub mod error;
pub mod executor;
pub mod export;
pub mod fetch;
pub mod fsutil;
pub mod git;
pub mod heredoc;
pub mod history;
pub mod instructions;
pub mod mounts;
pub mod par;
pub mod parser;
pub mod prune;
pub mod relink;
pub mod remote;
pub mod runner;
pub mod shell;
pub mod stages;

pub use ast::{Directive, Dockerfile, Heredoc, Instruction, Kind};
pub use check::{check, check_against, check_with, Diagnostic};
pub use error::{Error, ErrorKind, Result};
pub use executor::{BuildError, BuildRequest, Built, Executor};
pub use parser::{parse, parse_raw};
pub use runner::Network;
pub use shell::{expand_word, expand_words};
