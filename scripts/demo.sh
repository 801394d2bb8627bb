#!/usr/bin/env bash
# The main job on the embedded defaults: an authority (SQLite), an agent that
# attests the host through its TPM (a freshly provisioned swtpm when there is
# no /dev/tpmrm0), a node alias for TPM-attested hosts, an entry for the
# current user under it, and an X.509-SVID fetched over the Workload API.
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
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

if [ -e /dev/tpmrm0 ]; then
  tcti="device:/dev/tpmrm0"
  event_log=/sys/kernel/security/tpm0/binary_bios_measurements
  ek_ca_dir=${TESSERA_EK_CA_DIR:-/etc/tessera/ek-ca}
  [ -d "$ek_ca_dir" ] || { echo "put your TPM vendor's EK CA certificates in $ek_ca_dir (or set TESSERA_EK_CA_DIR)" >&2; exit 1; }
  echo "Using the host's TPM ($tcti); EK CAs from $ek_ca_dir" >&2
else
  # A software TPM with an EK certificate from a private local CA, which the
  # authority is configured to trust as the manufacturer.
  mkdir -p "$work/swtpm/state" "$work/swtpm/ca" "$work/ek-ca"
  cat > "$work/swtpm/swtpm_setup.conf" <<CONF
create_certs_tool = /usr/bin/swtpm_localca
create_certs_tool_config = $work/swtpm/swtpm-localca.conf
create_certs_tool_options = $work/swtpm/swtpm-localca.options
active_pcr_banks = sha1,sha256
CONF
  cat > "$work/swtpm/swtpm-localca.conf" <<CONF
statedir = $work/swtpm/ca
signingkey = $work/swtpm/ca/signkey.pem
issuercert = $work/swtpm/ca/issuercert.pem
certserial = $work/swtpm/ca/certserial
CONF
  printf -- '--platform-manufacturer Tessera\n--platform-version 2.1\n--platform-model swtpm\n' > "$work/swtpm/swtpm-localca.options"
  HOME="$work/swtpm" XDG_CONFIG_HOME="$work/swtpm" swtpm_setup --tpm2 --tpmstate "$work/swtpm/state" \
    --create-ek-cert --create-platform-cert --config "$work/swtpm/swtpm_setup.conf" \
    --pcr-banks sha1,sha256 --overwrite --logfile "$work/swtpm/setup.log" >/dev/null
  cp "$work/swtpm/ca/issuercert.pem" "$work/swtpm/ca/swtpm-localca-rootca-cert.pem" "$work/ek-ca/"
  tport=$(free_port)
  while ! python3 -c "import socket,sys; s=socket.socket(); s.bind(('127.0.0.1',$tport+1))" 2>/dev/null; do tport=$(free_port); done
  swtpm socket --tpm2 --tpmstate dir="$work/swtpm/state" \
    --server type=tcp,port="$tport",bindaddr=127.0.0.1 --ctrl type=tcp,port=$((tport + 1)),bindaddr=127.0.0.1 \
    --flags not-need-init,startup-clear --log file="$work/swtpm/swtpm.log" &
  pids+=($!)
  tcti="swtpm:host=127.0.0.1,port=$tport"
  # swtpm booted no firmware: its PCRs are at reset and its event log is empty.
  event_log="$work/swtpm/binary_bios_measurements"
  : > "$event_log"
  ek_ca_dir="$work/ek-ca"
  echo "No /dev/tpmrm0: using a fresh swtpm ($tcti) with its EK CA as the trusted manufacturer" >&2
fi

# Port 0: the authority binds a free port itself and logs which.
cat > "$work/authority.toml" <<TOML
trust_domain = "example.org"
listen_address = "127.0.0.1:0"
admin_socket_path = "$work/admin.sock"
data_dir = "$work/authority"
[tpm]
ek_ca_dir = "$ek_ca_dir"
TOML
TESSERA_LOG=info "$bin/tessera-authority" run --config "$work/authority.toml" 2>"$work/authority.log" &
pids+=($!)
admin=(--admin-socket "$work/admin.sock")
port=
for _ in $(seq 100); do
  port=$(sed -n 's/.* authority ready listen=127\.0\.0\.1:\([0-9]*\) .*/\1/p' "$work/authority.log")
  [ -n "$port" ] && break
  sleep 0.1
done
[ -n "$port" ] || { echo "the authority did not start:" >&2; cat "$work/authority.log" >&2; exit 1; }
"$bin/tessera-authority" bundle show --format pem "${admin[@]}" > "$work/bundle.pem"

# Every host whose EK certificate chains to a trusted manufacturer is a
# "tpm-host"; the current user on such hosts gets an identity.
user=$(id -un)
"$bin/tessera-authority" entry create "${admin[@]}" --parent-id spiffe://example.org/tessera/authority \
  --spiffe-id spiffe://example.org/nodes/tpm-host --selector tpm:ek_cert_verified:true >/dev/null
entry=$("$bin/tessera-authority" entry create "${admin[@]}" --parent-id spiffe://example.org/nodes/tpm-host \
  --spiffe-id "spiffe://example.org/demo/$user" --selector "unix:uid:$(id -u)")
echo "Registered entry $entry: spiffe://example.org/demo/$user for uid $(id -u) on TPM-attested hosts" >&2

cat > "$work/agent.toml" <<TOML
trust_domain = "example.org"
authority_address = "127.0.0.1:$port"
trust_bundle_path = "$work/bundle.pem"
socket_path = "$work/agent.sock"
data_dir = "$work/agent"
sync_interval = "1s"
[node_attestation]
method = "tpm"
[tpm]
tcti = "$tcti"
event_log_path = "$event_log"
TOML
"$bin/tessera-agent" run --config "$work/agent.toml" 2>"$work/agent.log" &
pids+=($!)

for _ in $(seq 150); do
  if out=$("$bin/tessera-agent" api fetch x509 --socket "unix://$work/agent.sock" 2>&1); then
    "$bin/tessera-authority" agent list "${admin[@]}" | grep -E 'Agent ID|tpm:(ek|secure)' >&2 || true
    echo "$out"
    exit 0
  fi
  sleep 0.2
done
echo "no SVID: $out" >&2
echo "--- authority log" >&2; tail -20 "$work/authority.log" >&2
echo "--- agent log" >&2; tail -20 "$work/agent.log" >&2
exit 1
