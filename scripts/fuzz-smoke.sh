#!/usr/bin/env bash
# Builds every fuzz target with cargo-fuzz (libFuzzer, coverage-guided) on
# the stable toolchain and runs each for a few seconds from its seeds
# (tests/data, via fuzz/examples/seed.rs). Fails on the first crash; the
# crashing input is left in fuzz/artifacts/<target>/.
#
#   scripts/fuzz-smoke.sh [seconds per target, default 5] [target...]
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO_FUZZ_VERSION=0.13.1
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install --locked --version "$CARGO_FUZZ_VERSION" cargo-fuzz
fi
secs=${1:-5}
shift || true
# Stable rustc: cargo-fuzz's flags need no nightly feature with --sanitizer
# none; RUSTC_BOOTSTRAP only lets cargo-fuzz's -Z checks pass. The vendored
# h2 has a `cfg(fuzzing)` module whose docs lints would stop the build.
export RUSTC_BOOTSTRAP=1 RUSTFLAGS="--cap-lints warn"
fuzz=(cargo fuzz run --sanitizer none --features libfuzzer --dev)
mapfile -t targets < <(if [ $# -gt 0 ]; then printf '%s\n' "$@"; else cargo fuzz list; fi)
cargo run -q -p tessera-fuzz --example seed >/dev/null
cargo fuzz build --sanitizer none --features libfuzzer --dev
for t in "${targets[@]}"; do
  start=$SECONDS
  out=$("${fuzz[@]}" "$t" -- -max_total_time="$secs" -print_final_stats=1 2>&1) || {
    printf '%s\n' "$out" | tail -40 >&2
    echo "fuzz smoke: $t crashed (input in fuzz/artifacts/$t/)" >&2
    exit 1
  }
  runs=$(printf '%s\n' "$out" | awk '/stat::number_of_executed_units/ { print $2 }')
  echo "fuzz smoke: $t: ${runs:-?} runs in $((SECONDS - start)) s"
done
