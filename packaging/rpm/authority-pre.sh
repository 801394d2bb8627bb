# tessera-authority %pre: the user must exist before /etc/tessera/authority.toml
# (root:tessera-authority 0640) is unpacked; the lines are those of
# /usr/lib/sysusers.d/tessera-authority.conf, which is not unpacked yet.
systemd-sysusers --replace=/usr/lib/sysusers.d/tessera-authority.conf - <<'SYSUSERS'
u tessera-authority - "tessera authority" /var/lib/tessera/authority
SYSUSERS
