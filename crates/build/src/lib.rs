//! berth-build: Dockerfile front end (parser, word expansion, .dockerignore), stage graph and builder.
