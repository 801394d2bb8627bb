# tessera-agent %pre: the user must exist before /etc/tessera/agent.toml
# (root:tessera-agent 0640) is unpacked; the lines are those of
# /usr/lib/sysusers.d/tessera-agent.conf, which is not unpacked yet.
systemd-sysusers --replace=/usr/lib/sysusers.d/tessera-agent.conf - <<'SYSUSERS'
u tessera-agent - "tessera agent" /var/lib/tessera/agent
m tessera-agent tss
SYSUSERS
