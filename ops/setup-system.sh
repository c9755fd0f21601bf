#!/usr/bin/env bash
# Install the system programs the local stack runs: Java 17+, Maven, redis-server,
# prometheus (+ promtool), prometheus-alertmanager, wrk for the serving benchmark, and
# chromium with its driver for the dashboard's browser test. Fast and silent when everything is already there.
# As root it uses apt-get; otherwise it says what to install.
set -euo pipefail

need=()
command -v java >/dev/null 2>&1 || need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || need+=(maven)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v prometheus-alertmanager >/dev/null 2>&1 || need+=(prometheus-alertmanager)
command -v wrk >/dev/null 2>&1 || need+=(wrk)  # the serving benchmark (benchmarks/serve.py)
# the dashboard's browser test (tests/e2e/test_dashboard.py) drives Debian's Chromium
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)

if [ ${#need[@]} -eq 0 ]; then
    exit 0
fi
bash "$(dirname "${BASH_SOURCE[0]}")/apt-install.sh" movierec "${need[@]}"
# Debian's packages may start their own services where an init system runs; the
# project starts its own copies on its own ports and data folders, so stop those.
for svc in redis-server prometheus prometheus-alertmanager; do
    if command -v service >/dev/null 2>&1; then service "$svc" stop >/dev/null 2>&1 || true; fi
done
