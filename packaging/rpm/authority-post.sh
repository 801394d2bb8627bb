# tessera-authority %post: /run/tessera and /var/lib/tessera now. A first install
# follows the distribution's presets (Fedora, RHEL: disabled) and never
# starts the service: /etc/tessera/authority.toml must be filled in first.
systemd-tmpfiles --create tessera-authority.conf >/dev/null 2>&1 || :
if [ "$1" -eq 1 ]; then
    systemctl --no-reload preset tessera-authority.service >/dev/null 2>&1 || :
fi
