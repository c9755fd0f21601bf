# movierec: one image for every role (serve, consume, loop/train, eval, simulator),
# chosen by the command: `movierec serve`, `movierec consume`, `movierec loop run`, ...
#
# BASE is any Debian-based image with Python 3.11 and venv: python:3.11-slim from a
# registry in a real deployment; here ops/container/base-image.sh builds
# movierec-base:bookworm with debootstrap (no registry is reachable). `make image` builds
# both. Versions are pinned by ops/container/requirements.lock (the tested virtualenv's).
ARG BASE=python:3.11-slim

FROM ${BASE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/movierec
COPY ops/container/requirements.lock /src/ops/container/requirements.lock
# dependencies first: a code change does not reinstall them
RUN /opt/movierec/bin/pip install --only-binary=:all: -r /src/ops/container/requirements.lock
COPY . /src
RUN /opt/movierec/bin/pip install --no-deps /src

FROM ${BASE}
ARG MOVIEREC_CODE_COMMIT=""
ARG MOVIEREC_CODE_DIRTY="false"
# libgomp1: the OpenMP runtime implicit and lightgbm link (slim images lack it).
# Unpinned on purpose: a Debian stable mirror serves one version of a package, its
# security-patched one, so an exact pin breaks at the next point release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*
# A numeric non-root user; state lives in /data (a volume per role in compose). The
# folders exist, owned by that user, so a new named volume mounted there takes their owner
# (Docker copies it up; podman does too).
RUN groupadd --system --gid 10001 movierec \
    && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home movierec \
    && mkdir -p /data/registry /data/store /data/loop /data/online /data/alerts \
    && chown -R 10001:10001 /data
COPY --from=build /opt/movierec /opt/movierec
# One BLAS/OpenMP thread per process: gunicorn runs workers, implicit sets its own threads
# (threadpoolctl), and oversubscribed cores are what hurts latency (docs/serving.md).
ENV PATH=/opt/movierec/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 \
    MOVIEREC_CODE_COMMIT=${MOVIEREC_CODE_COMMIT} \
    MOVIEREC_CODE_DIRTY=${MOVIEREC_CODE_DIRTY} \
    MOVIEREC_REGISTRY_DIR=/data/registry \
    MOVIEREC_STORE_DIR=/data/store \
    MOVIEREC_LOOP_DIR=/data/loop \
    MOVIEREC_SERVE_EXPERIMENTS_FILE=/data/registry/experiments.json
WORKDIR /data
USER 10001:10001
EXPOSE 8082
# The serve role's health; other roles override it in compose (`movierec health ...`).
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python3", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8082/health', timeout=2).status == 200 else 1)"]
# gunicorn stops gracefully on SIGTERM; run with --init (or tini/catatonit) so signals
# reach it and zombies are reaped.
CMD ["movierec", "serve"]
