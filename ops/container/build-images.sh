#!/usr/bin/env bash
# `make image`: build every image the compose stack runs, from the local base image
# (built by base-image.sh when missing): movierec:local (the service, every role) and the
# stack's parts from infra.Dockerfile (movierec-kafka, -redis, -prometheus,
# -alertmanager:local). Prints each image's size.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"$here/setup-podman.sh"
source "$here/podman-env.sh"
"$here/base-image.sh"
cd "$PROJECT_ROOT"
BASE="${CONTAINER_BASE_IMAGE:-movierec-base:bookworm}"
TAG="${CONTAINER_TAG:-local}"
commit="$(git rev-parse HEAD 2>/dev/null || true)"
dirty=false
[ -n "$(git status --porcelain 2>/dev/null)" ] && dirty=true
build() {  # name, then podman build arguments
    local name="$1"; shift
    echo "image: $name:$TAG"
    podman build -q --format docker --network=host --build-arg "BASE=localhost/$BASE" \
        -t "$name:$TAG" "$@" >/dev/null
}
build movierec --build-arg "MOVIEREC_CODE_COMMIT=$commit" \
    --build-arg "MOVIEREC_CODE_DIRTY=$dirty" -f Dockerfile .
# the broker's build context: its jars (`make kafka-jars` fetched them) and its files
jars="$(ls -d var/lib/kafka-*/ 2>/dev/null | head -1)"
if [ -z "$jars" ]; then
    echo "no Kafka jars under var/lib: run 'make kafka-jars' first" >&2
    exit 1
fi
context="$PROJECT_ROOT/var/containers/context"
rm -rf "$context" && mkdir -p "$context/lib"
cp "$jars"*.jar "$context/lib/"
cp ops/container/kafka/server.properties ops/container/kafka/entrypoint.sh ops/kafka/log4j2.yaml "$context/"
for part in kafka redis prometheus alertmanager; do
    build "movierec-$part" --target "$part" -f ops/container/infra.Dockerfile "$context"
done
podman images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E "movierec.*:($TAG|bookworm) "
