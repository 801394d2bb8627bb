#!/usr/bin/env bash
# Every test: installs what a fresh Debian 12 machine lacks, builds the
# binaries the end-to-end tests start, then runs the whole workspace's tests
# (--no-fail-fast: a failing crate does not hide the others' results) and
# closes with one summary line; the exit status is cargo's.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --workspace --bins
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
# The fuzz targets build at low priority while the tests run (much of the
# end-to-end tests' time is waiting), into their own target dir.
fuzz_build=
if [ $# -eq 0 ]; then
  fuzz_log=$(mktemp)
  trap 'rm -f "$log" "$fuzz_log"' EXIT
  nice -n 10 scripts/fuzz-smoke.sh build >"$fuzz_log" 2>&1 &
  fuzz_build=$!
fi
cargo test --workspace --no-fail-fast -- "$@" 2>&1 | tee "$log" || status=$?
# Every fuzz target for a few seconds (its corpus already ran in cargo test);
# a crash counts as one failure.
fuzz_failed=0
if [ -n "$fuzz_build" ]; then
  if wait "$fuzz_build"; then
    scripts/fuzz-smoke.sh run 2>&1 | tee -a "$log" || { status=1; fuzz_failed=1; }
  else
    tail -40 "$fuzz_log" | tee -a "$log"
    echo "fuzz smoke: the targets did not build" | tee -a "$log"
    status=1
    fuzz_failed=1
  fi
fi
# A test binary that dies (a signal, no result line) or a target that does not
# compile counts as one failure, so the line never reads "0 failed" after a failure.
awk -v fuzz_failed="$fuzz_failed" '/^test result:/ { p += $4; f += $6; if ($3 == "FAILED.") reported++ }
     /^error: test failed, to rerun pass/ { targets++ }
     /^error: could not compile/ { f++ }
     END { if (targets > reported) f += targets - reported
           f += fuzz_failed
           printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
