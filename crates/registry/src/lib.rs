//! berth-registry: the OCI distribution-spec client (pull, push, auth, the local image store
//! it fills) and the server behind `berth registry serve`.
//!
//! It sits on `berth-image` only: the client writes what it fetches through the image
//! crate's content store and layer store, the server keeps its own content-addressed
//! storage. Async (tokio, hyper, reqwest) is allowed here and nowhere below the CLI.

pub mod client;
pub mod server;
