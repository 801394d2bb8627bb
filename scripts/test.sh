#!/usr/bin/env bash
# Every test: installs what a fresh Debian 12 machine lacks, builds the
# binaries the end-to-end tests start, then runs the whole workspace's tests
# and closes with one summary line.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --workspace --bins
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace -- "$@" 2>&1 | tee "$log" || status=$?
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
