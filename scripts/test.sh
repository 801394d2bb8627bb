#!/usr/bin/env bash
# Every test: installs what a fresh Debian 12 machine lacks, builds the
# binaries the end-to-end tests start, then runs the whole workspace's tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --workspace --bins
cargo test --workspace -- "$@"
