#!/usr/bin/env bash
# Source this to run podman (and docker-compose through podman's socket) the project's
# way: its containers.conf, and image storage under var/containers (overlay), so nothing
# is written to the machine's own /var/lib/containers. Sets CONTAINERS_CONF,
# CONTAINERS_STORAGE_CONF, DOCKER_HOST, and PROJECT_ROOT.
PROJECT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export PROJECT_ROOT
_store="${CONTAINER_STORAGE:-$PROJECT_ROOT/var/containers}"
mkdir -p "$_store/storage" "$_store/run"
cat > "$_store/storage.conf" <<CONF
[storage]
driver = "overlay"
graphroot = "$_store/storage"
runroot = "$_store/run"
CONF
export CONTAINERS_CONF="$PROJECT_ROOT/ops/container/containers.conf"
export CONTAINERS_STORAGE_CONF="$_store/storage.conf"
export DOCKER_HOST="unix://$_store/podman.sock"
unset _store
