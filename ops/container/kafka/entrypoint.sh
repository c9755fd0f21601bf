#!/bin/bash
# The compose stack's broker: format the KRaft storage on the volume once (a fresh
# cluster id), then run the broker in its place, so SIGTERM (compose stop) reaches it and
# it shuts down cleanly. Topics: the stack's `topics` one-shot (`movierec infra topic`);
# auto-creation is off, as on the local stack.
set -euo pipefail
cp="/opt/kafka/lib/*"
props=/opt/kafka/server.properties
if [ ! -f /data/kafka/meta.properties ]; then
    mkdir -p /data/kafka
    id="$(java -cp "$cp" kafka.tools.StorageTool random-uuid | tail -1)"
    java -cp "$cp" kafka.tools.StorageTool format -t "$id" -c "$props" >/dev/null
fi
exec java "-Xmx${KAFKA_HEAP:-512m}" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -Djava.awt.headless=true -Dlog4j2.configurationFile=/opt/kafka/log4j2.yaml \
    -Dkafka.logs.dir=/data/logs -cp "$cp" kafka.Kafka "$props"
