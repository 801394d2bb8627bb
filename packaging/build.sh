#!/usr/bin/env bash
# Builds the .deb and .rpm packages of tessera-agent (with its TPM helper,
# tessera-agent-tpm) and tessera-authority into target/packages/ from release
# builds. Installs cargo-deb and
# cargo-generate-rpm (cargo install --locked) when they are missing.
#
#   TESSERA_PACKAGE_BIN_DIR=DIR  package the binaries already built in DIR
#                                instead of building (the test suite passes
#                                target/debug: no second build of the workspace)
#   TESSERA_PACKAGE_FAST=1       faster, larger compression (the test suite)
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DEB_VERSION=3.8.0
CARGO_GENERATE_RPM_VERSION=0.21.1

target=${CARGO_TARGET_DIR:-target}
out=$target/packages
# Both tools read binaries from target/<profile>/: the stripped copies go to
# a directory named like a profile.
stage_profile=packaging
stage=$target/$stage_profile

if ! cargo deb --version >/dev/null 2>&1; then
  cargo install --locked --version "$CARGO_DEB_VERSION" cargo-deb
fi
if ! cargo generate-rpm --version >/dev/null 2>&1; then
  cargo install --locked --version "$CARGO_GENERATE_RPM_VERSION" cargo-generate-rpm
fi

bin_dir=${TESSERA_PACKAGE_BIN_DIR:-}
if [ -z "$bin_dir" ]; then
  # One package per build: built together, Cargo would unify features and
  # build the TPM code (libtss2) into the authority and the agent too.
  cargo build --release --locked -p tessera-authority
  cargo build --release --locked -p tessera-agent
  cargo build --release --locked -p tessera-agent-tpm
  bin_dir=$target/release
fi

mkdir -p "$stage" "$out"
for b in tessera-agent tessera-agent-tpm tessera-authority; do
  strip --strip-all -o "$stage/$b" "$bin_dir/$b"
done

# Man pages, one per command, generated from the CLI definitions by the
# binaries themselves; gzip -n (no name or time stamp) as Debian policy wants.
for b in tessera-agent tessera-authority; do
  rm -rf "$stage/man/$b"
  "$stage/$b" man "$stage/man/$b"
  gzip -9n "$stage/man/$b"/*.1
done

deb_flags=() rpm_flags=()
if [ -n "${TESSERA_PACKAGE_FAST:-}" ]; then
  deb_flags=(--fast) rpm_flags=(--payload-compress gzip)
fi
for p in tessera-agent tessera-authority; do
  cargo deb --no-build --profile "$stage_profile" -p "$p" -o "$out/" "${deb_flags[@]}"
  cargo generate-rpm --profile "$stage_profile" -p "${p#tessera-}" -o "$out/" "${rpm_flags[@]}"
done
ls -l "$out"
