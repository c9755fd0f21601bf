#!/usr/bin/env bash
# Install what the container story needs, with apt-get, when missing: rootful podman with
# runc (crun refuses this kind of machine's cgroup set-up), debootstrap for the local base
# image, the CNI plugins (and dnsname) and iptables for compose networks, catatonit for --init, and
# docker-compose (v1, Debian's) to run docker-compose.yml through podman's Docker API.
# Fast and silent when everything is there. `make setup` does not need any of it.
set -euo pipefail
need=()
command -v podman >/dev/null 2>&1 || need+=(podman)
command -v runc >/dev/null 2>&1 || need+=(runc)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
command -v iptables >/dev/null 2>&1 || need+=(iptables)
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
[ -x /usr/libexec/podman/catatonit ] || command -v catatonit >/dev/null 2>&1 || need+=(catatonit)
[ -d /usr/lib/cni ] || need+=(containernetworking-plugins)
# containers find each other by service name through the CNI dnsname plugin
[ -x /usr/lib/cni/dnsname ] || need+=(golang-github-containernetworking-plugin-dnsname)
if [ ${#need[@]} -eq 0 ]; then
    exit 0
fi
bash "$(dirname "${BASH_SOURCE[0]}")/../apt-install.sh" "the container story" "${need[@]}"
