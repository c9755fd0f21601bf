#!/usr/bin/env bash
# `make compose-up` / `make compose-down`: the compose stack (docker-compose.yml) through
# podman's Docker API, which runs as a background service on var/containers/podman.sock
# while the stack is up. On a machine with Docker, use `docker compose` directly instead.
#   compose.sh up         build nothing, start everything (simulator profile included)
#   compose.sh course-up  against the course's broker and API (MOVIEREC_KAFKA_BOOTSTRAP,
#                         MOVIEREC_KAFKA_TOPIC, MOVIEREC_USER_API_URL): no local Kafka,
#                         no simulator (ops/container/compose.course.yml)
#   compose.sh down       stop and remove the containers (volumes are kept)
#   compose.sh ARGS       any other docker-compose arguments, e.g. `ps`, `logs serve`,
#                         `down -v` (volumes too)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/podman-env.sh"
cd "$PROJECT_ROOT"
sock="${DOCKER_HOST#unix://}"
pidfile="$PROJECT_ROOT/var/containers/podman-service.pid"
PROJECT="${CONTAINER_PROJECT:-movierec}"

service_up() {
    if [ -S "$sock" ] && [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        return
    fi
    podman system service --time=0 "$DOCKER_HOST" >"$PROJECT_ROOT/var/containers/podman-service.log" 2>&1 &
    echo $! >"$pidfile"
    for _ in $(seq 100); do [ -S "$sock" ] && return; sleep 0.1; done
    echo "podman's API service did not start: read var/containers/podman-service.log" >&2
    exit 1
}

service_down() {
    if [ -f "$pidfile" ]; then
        kill "$(cat "$pidfile")" 2>/dev/null || true
        rm -f "$pidfile" "$sock"
    fi
    # podman 4.3's Docker API leaves the conmon of each `exec` session behind once its
    # container is gone: stop those of this image store
    pkill -f "conmon.*$PROJECT_ROOT/var/containers/storage" 2>/dev/null || true
}

case "${1:-}" in
    up)
        service_up
        docker-compose -p "$PROJECT" --profile sim up -d
        echo "the API: http://127.0.0.1:${CONTAINER_API_PORT:-8082}/recommend/1"
        ;;
    course-up)
        for var in MOVIEREC_KAFKA_BOOTSTRAP MOVIEREC_KAFKA_TOPIC MOVIEREC_USER_API_URL; do
            if [ -z "${!var:-}" ]; then echo "set $var (README: Containers)" >&2; exit 1; fi
        done
        service_up
        docker-compose -p "$PROJECT" -f docker-compose.yml -f ops/container/compose.course.yml up -d
        ;;
    down)
        shift
        service_up
        docker-compose -p "$PROJECT" --profile sim down --remove-orphans "$@"
        service_down
        ;;
    *)
        service_up
        docker-compose -p "$PROJECT" --profile sim "$@"
        ;;
esac
