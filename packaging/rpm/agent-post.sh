# tessera-agent %post: /run/tessera and /var/lib/tessera now. A first install
# follows the distribution's presets (Fedora, RHEL: disabled) and never
# starts the service: /etc/tessera/agent.toml must be filled in first.
systemd-tmpfiles --create tessera-agent.conf >/dev/null 2>&1 || :
if [ "$1" -eq 1 ]; then
    systemctl --no-reload preset tessera-agent.service >/dev/null 2>&1 || :
fi
