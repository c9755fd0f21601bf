#!/usr/bin/env bash
# Build the local base image (movierec-base:bookworm) when it is missing: Debian bookworm
# (debootstrap --variant=minbase, from the mirror in this machine's own apt sources) with
# Python 3.11 and venv, standing in for a registry image such as python:3.11-slim where no
# container registry can be reached. The host's apt sources and CA certificates are copied
# into the image at build time (never committed), so apt and pip inside work as they do
# on the host (a machine behind a TLS-inspecting proxy needs its CA).
#
# The image is cached as a tar at $CONTAINER_CACHE (default var/containers/cache):
# a fresh image store loads it in seconds instead of a minute of debootstrap.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/podman-env.sh"
IMAGE="${CONTAINER_BASE_IMAGE:-movierec-base:bookworm}"
CACHE="${CONTAINER_CACHE:-$PROJECT_ROOT/var/containers/cache}"
TAR="$CACHE/$(echo "$IMAGE" | tr ':/' '--').tar"

if podman image exists "$IMAGE"; then
    exit 0
fi
if [ -f "$TAR" ]; then
    echo "base image: loading $IMAGE from $TAR"
    podman load -q -i "$TAR" >/dev/null
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "building the base image needs root (debootstrap, rootful podman)" >&2
    exit 1
fi
mirror="$(grep -hoE '^URIs: *https?://[^ ]+' /etc/apt/sources.list.d/*.sources 2>/dev/null \
          | grep -v security | head -1 | awk '{print $2}')"
mirror="${mirror:-$(grep -hoE '^deb +https?://[^ ]+' /etc/apt/sources.list 2>/dev/null | head -1 | awk '{print $2}')}"
mirror="${mirror:-http://deb.debian.org/debian}"
root="$PROJECT_ROOT/var/containers/rootfs"
rm -rf "$root"
echo "base image: debootstrap bookworm from $mirror (about a minute)"
debootstrap --variant=minbase bookworm "$root" "$mirror" >/dev/null
# the host's view of the package mirrors and its CA bundle, so apt and pip work inside
rm -f "$root/etc/apt/sources.list"
cp /etc/apt/sources.list.d/*.sources "$root/etc/apt/sources.list.d/" 2>/dev/null || true
[ -f /etc/apt/sources.list ] && cp /etc/apt/sources.list "$root/etc/apt/sources.list"
find "$root/etc/apt/sources.list.d" -name '*.disabled*' -delete
for conf in /etc/apt/apt.conf.d/99*; do [ -f "$conf" ] && cp "$conf" "$root/etc/apt/apt.conf.d/"; done
chroot "$root" /bin/sh -c 'DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
    apt-get install -y -qq --no-install-recommends ca-certificates python3 python3-venv >/dev/null && \
    ln -sf /usr/bin/python3 /usr/local/bin/python && apt-get clean && rm -rf /var/lib/apt/lists/*'
mkdir -p "$root/etc/ssl/certs"
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
tar -C "$root" -c . | podman import -q -c 'CMD ["/bin/bash"]' -c 'ENV LANG=C.UTF-8' - "$IMAGE" >/dev/null
rm -rf "$root"
mkdir -p "$CACHE"
podman save -q -o "$TAR" "$IMAGE"
echo "base image: $IMAGE built and cached at $TAR"
