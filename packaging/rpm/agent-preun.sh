# tessera-agent %preun: erase (not upgrade) stops and disables the service.
if [ "$1" -eq 0 ]; then
    systemctl --no-reload disable --now tessera-agent.service >/dev/null 2>&1 || :
fi
