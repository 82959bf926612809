//! Helpers shared by the end-to-end tests (bundles, binaries, cleanup checks).
