//! berth-registry: the OCI distribution-spec client (pull, push, auth) and the server behind
//! `berth registry serve`.
//!
//! Not written yet (issues 3 and 6). It will sit on `berth-image` only: the client writes
//! what it fetches through the image crate's content store, the server keeps its own
//! content-addressed storage. Async (tokio/hyper) is allowed here and nowhere below the CLI.

pub mod client;
