# tessera-authority %postun: an upgrade restarts the service if it was running. Erase
# keeps /var/lib/tessera/authority and the user (RPM has no purge).
systemctl daemon-reload >/dev/null 2>&1 || :
if [ "$1" -ge 1 ]; then
    systemctl try-restart tessera-authority.service >/dev/null 2>&1 || :
fi
