#!/usr/bin/env bash
# apt-install.sh WHAT PACKAGE...: install the Debian packages named, de-duplicated, with
# apt-get as root; otherwise say which are needed and how to install them (exit 1).
# WHAT names the need in that message. Shared by ops/setup-system.sh (the local stack)
# and ops/container/setup-podman.sh (the container story).
set -euo pipefail
what="$1"
shift
[ $# -eq 0 ] && exit 0
mapfile -t need < <(printf '%s\n' "$@" | sort -u)
if [ "$(id -u)" -ne 0 ]; then
    echo "$what needs these Debian packages: ${need[*]}" >&2
    echo "install them with: sudo apt-get update && sudo apt-get install -y ${need[*]}" >&2
    exit 1
fi
echo "installing ${need[*]} with apt-get ..."
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
