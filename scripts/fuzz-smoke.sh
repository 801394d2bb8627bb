#!/usr/bin/env bash
# Builds every fuzz target with cargo-fuzz (libFuzzer, coverage-guided) on
# the stable toolchain and runs each for a few seconds from its seeds
# (tests/data, via fuzz/examples/seed.rs). Fails on the first crash; the
# crashing input is left in fuzz/artifacts/<target>/.
#
#   scripts/fuzz-smoke.sh [build|run|all] [seconds per target, default 5] [target...]
#
# `build` and `run` split the two halves so scripts/test.sh can build while
# the other tests run (its own target dir, target/fuzz, so neither waits on
# the other's cargo lock).
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO_FUZZ_VERSION=0.13.1
phase=all
case "${1:-}" in build | run | all) phase=$1; shift ;; esac
secs=${1:-5}
shift || true
# Stable rustc: cargo-fuzz's flags need no nightly feature with --sanitizer
# none; RUSTC_BOOTSTRAP only lets cargo-fuzz's -Z checks pass. The vendored
# h2 has a `cfg(fuzzing)` module whose docs lints would stop the build.
export RUSTC_BOOTSTRAP=1 RUSTFLAGS="--cap-lints warn"
triple=$(rustc -vV | awk '/^host:/ { print $2 }')
target_dir=target/fuzz
bin_dir=$target_dir/$triple/debug

if [ "$phase" != run ]; then
  if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install --locked --version "$CARGO_FUZZ_VERSION" cargo-fuzz
  fi
  cargo fuzz build --sanitizer none --features libfuzzer --dev --target-dir "$target_dir"
fi
[ "$phase" = build ] && exit 0

mapfile -t targets < <(if [ $# -gt 0 ]; then printf '%s\n' "$@"; else cargo fuzz list; fi)
cargo run -q -p tessera-fuzz --example seed >/dev/null
for t in "${targets[@]}"; do
  start=$SECONDS
  mkdir -p "fuzz/artifacts/$t"
  # The built binary directly, with the arguments `cargo fuzz run` would pass.
  out=$("$bin_dir/$t" -artifact_prefix="fuzz/artifacts/$t/" -max_total_time="$secs" \
    -print_final_stats=1 "fuzz/corpus/$t" 2>&1) || {
    printf '%s\n' "$out" | tail -40 >&2
    echo "fuzz smoke: $t crashed (input in fuzz/artifacts/$t/)" >&2
    exit 1
  }
  runs=$(printf '%s\n' "$out" | awk '/stat::number_of_executed_units/ { print $2 }')
  echo "fuzz smoke: $t: ${runs:-?} runs in $((SECONDS - start)) s"
done
