//! berth-image: Image references, content store, layers (safe apply/diff), snapshots, OCI layout.
