//! berth-seccomp: Compiles the OCI runtime-spec seccomp section into a classic BPF filter.
