#!/usr/bin/env bash
# The main job on the embedded defaults: an authority (SQLite), an agent
# attested with a join token, an entry for the current user, and an
# X.509-SVID fetched over the Workload API and printed.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --quiet --bins
bin=${CARGO_TARGET_DIR:-target}/debug

work=$(mktemp -d /tmp/tessera-demo.XXXXXX)
chmod 0755 "$work"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "${KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$work/authority.toml" <<TOML
trust_domain = "example.org"
listen_address = "127.0.0.1:$port"
admin_socket_path = "$work/admin.sock"
data_dir = "$work/authority"
TOML
"$bin/tessera-authority" run --config "$work/authority.toml" 2>"$work/authority.log" &
pids+=($!)
admin=(--admin-socket "$work/admin.sock")
for _ in $(seq 100); do [ -S "$work/admin.sock" ] && break; sleep 0.1; done
"$bin/tessera-authority" bundle show --format pem "${admin[@]}" > "$work/bundle.pem"
token=$("$bin/tessera-authority" token generate "${admin[@]}")

cat > "$work/agent.toml" <<TOML
trust_domain = "example.org"
authority_address = "127.0.0.1:$port"
trust_bundle_path = "$work/bundle.pem"
socket_path = "$work/agent.sock"
data_dir = "$work/agent"
sync_interval = "1s"
[node_attestation]
method = "join_token"
join_token = "$token"
TOML
"$bin/tessera-agent" run --config "$work/agent.toml" 2>"$work/agent.log" &
pids+=($!)

user=$(id -un)
entry=$("$bin/tessera-authority" entry create "${admin[@]}" \
  --parent-id "spiffe://example.org/tessera/agent/join_token/$token" \
  --spiffe-id "spiffe://example.org/demo/$user" --selector "unix:uid:$(id -u)")
echo "Registered entry $entry: spiffe://example.org/demo/$user for uid $(id -u)" >&2

for _ in $(seq 100); do
  if out=$("$bin/tessera-agent" api fetch x509 --socket "unix://$work/agent.sock" 2>&1); then
    echo "$out"
    exit 0
  fi
  sleep 0.2
done
echo "no SVID: $out" >&2
echo "--- authority log" >&2; tail -20 "$work/authority.log" >&2
echo "--- agent log" >&2; tail -20 "$work/agent.log" >&2
exit 1
