#!/usr/bin/env bash
# Installs the Debian packages tessera builds and tests with (root only; a
# no-op when everything is present).
set -euo pipefail
pkgs=(libtss2-dev swtpm swtpm-tools tpm2-tools pkg-config python3)
# libFuzzer (C++, built by libfuzzer-sys) for the fuzz smoke run (scripts/fuzz-smoke.sh).
pkgs+=(g++)
# py-spiffe in a virtualenv (tests/tests/e2e/py_spiffe.rs).
pkgs+=(python3-venv)
# libfaketime steps the agent's wall clock (tests/tests/e2e/faults_more/clock.rs).
pkgs+=(libfaketime)
# The packaging and systemd tests (tests/tests/e2e/{packaging,systemd}.rs).
pkgs+=(lintian rpm rpmlint dpkg-dev systemd)
# Installed without recommends: only promtool is wanted (the metrics tests).
lean=(prometheus)
# A real container (tests/tests/e2e/containers.rs): podman with runc (crun refuses hybrid
# cgroup hosts) and busybox-static for the image's rootfs; no network stack needed.
lean+=(podman runc busybox-static)
# A FUSE daemon serving a forged executable (attestors/src/workload/unix/exe_fs/tests.rs).
lean+=(python3-fusepy)
# PostgreSQL server binaries (/usr/lib/postgresql/15/bin) for the private cluster the
# datastore checks and tests/tests/e2e/postgres_replicas.rs start (tests/postgres).
lean+=(postgresql)
missing=()
lean_missing=()
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
for p in "${pkgs[@]}"; do installed "$p" || missing+=("$p"); done
for p in "${lean[@]}"; do installed "$p" || lean_missing+=("$p"); done
[ ${#missing[@]} -eq 0 ] && [ ${#lean_missing[@]} -eq 0 ] && exit 0
missing_all=("${missing[@]}" "${lean_missing[@]}")
if [ "$(id -u)" -ne 0 ]; then
  echo "missing packages: ${missing_all[*]}; run as root or: sudo apt-get install ${missing_all[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
[ ${#missing[@]} -eq 0 ] || apt-get install -y -qq "${missing[@]}" >/dev/null
[ ${#lean_missing[@]} -eq 0 ] || apt-get install -y -qq --no-install-recommends "${lean_missing[@]}" >/dev/null
