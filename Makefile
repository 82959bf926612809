# berth — the two commands a fresh Debian machine needs:
#   make demo   installs what is missing, builds, and runs the main demo
#   make test   installs what is missing, builds, and runs every test (as root)
SHELL := /bin/bash
DEB_PACKAGES := busybox-static bsdutils runc crun containerd hyperfine jq time docker-registry skopeo apache2-utils openssl podman wrk iptables iproute2 docker.io zstd xz-utils bzip2 docker-compose podman-compose curl openssh-client git qemu-user-static
# Peer test data (BuildKit parser cases, moby's .dockerignore table, ...): see README.
TESTDATA ?= $(firstword $(wildcard $(BERTH_TESTDATA) shared/testdata ../shared/testdata /work/shared/testdata))

HOST := $(shell rustc -vV 2>/dev/null | sed -n 's/^host: //p')
STATIC_DIR := target/$(HOST)/release

.PHONY: setup build build-static test demo bench lint

setup:
	@missing=$$(for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing: $$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	@command -v cargo >/dev/null || { echo "cargo is required (https://rustup.rs)"; exit 1; }
	@scripts/emulation-setup.sh

build: setup
	cargo build --release --bins

test: setup
	cargo build --workspace --bins
	BERTH_TESTDATA=$(TESTDATA) cargo test --workspace

# Fully static binaries (glibc linked in): nothing to install beside them, a faster start
# and a smaller footprint. --target keeps crt-static away from build scripts and proc macros.
build-static: setup
	RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --bins --target $(HOST)

demo: build
	scripts/demo.sh

bench: build-static
	BERTH_RUNC_BIN=$(STATIC_DIR)/berth-runc bench/runtime.sh

lint:
	cargo fmt --all --check
	cargo clippy --all-targets -- -D warnings
