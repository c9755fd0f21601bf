# The stack's other parts, each a target of this file, all from the same base as the
# service's image (no registry is reachable here; a real deployment may take the official
# images instead: compose reads their names from IMAGE_*):
#   kafka          Apache Kafka in KRaft mode: Java 17 and the jars Maven fetched
#                  (`make kafka-jars`; ops/container/build-images.sh puts them in the context)
#   redis          redis-server, AOF on
#   prometheus     Prometheus (and promtool)
#   alertmanager   Prometheus Alertmanager
# Debian packages are unpinned on purpose: a stable mirror serves one version of each,
# its security-patched one, so an exact pin breaks at the next point release.
ARG BASE=python:3.11-slim

FROM ${BASE} AS kafka
# Debian packages unpinned (this file's header); slim images drop man pages, and
# openjdk's postinst needs the man1 folder
# hadolint ignore=DL3008
RUN mkdir -p /usr/share/man/man1 \
    && apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 kafka \
    && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home kafka \
    && mkdir -p /data && chown 10001:10001 /data
COPY lib/ /opt/kafka/lib/
COPY server.properties log4j2.yaml entrypoint.sh /opt/kafka/
USER 10001:10001
EXPOSE 9092
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=5 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9092"]
ENTRYPOINT ["/bin/bash", "/opt/kafka/entrypoint.sh"]

FROM ${BASE} AS redis
# Debian packages unpinned: see this file's header
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends redis-server \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 store \
    && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home store \
    && mkdir -p /data && chown 10001:10001 /data
USER 10001:10001
EXPOSE 6379
HEALTHCHECK --interval=10s --timeout=3s --retries=5 CMD ["redis-cli", "ping"]
# Append-only file on the volume, fsync every second (Redis's own durable default).
CMD ["redis-server", "--dir", "/data", "--appendonly", "yes", "--appendfsync", "everysec", \
     "--bind", "0.0.0.0", "--protected-mode", "no", "--save", ""]

FROM ${BASE} AS prometheus
# Debian packages unpinned: see this file's header
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends prometheus \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /data && chown 10001:10001 /data
USER 10001:10001
EXPOSE 9090
HEALTHCHECK --interval=10s --timeout=3s --retries=5 \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9090/-/ready', timeout=2)"]
ENTRYPOINT ["/usr/bin/prometheus", "--storage.tsdb.path=/data", "--web.enable-lifecycle"]
CMD ["--config.file=/etc/movierec/prometheus.yml"]

FROM ${BASE} AS alertmanager
# Debian packages unpinned: see this file's header
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends prometheus-alertmanager \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /data && chown 10001:10001 /data
USER 10001:10001
EXPOSE 9093
HEALTHCHECK --interval=10s --timeout=3s --retries=5 \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9093/-/ready', timeout=2)"]
ENTRYPOINT ["/usr/bin/prometheus-alertmanager", "--storage.path=/data"]
CMD ["--config.file=/etc/movierec/alertmanager.yml"]
