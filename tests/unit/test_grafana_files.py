"""The Grafana files the compose stack's optional profile provisions: the dashboard's
panels query only metrics the processes define (or Prometheus's own ``ALERTS``), through the
provisioned data source, and compose mounts both where Grafana reads them. The dashboard
is built from ``ops.dashboard.panels`` (tests/unit/test_dashboard_panels.py holds the file
equal to it); tests/e2e/test_grafana_queries.py runs every query against a live Prometheus."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "ops/grafana"
SUFFIXES = ("_bucket", "_count", "_sum", "_total")


def defined_metrics() -> set[str]:
    """Metric names the project's code defines (quoted "movierec_..." strings)."""
    names: set[str] = set()
    for package in ("movierec", "stores", "recommender", "stream_consumer", "online_eval", "ops"):
        for path in (ROOT / package).rglob("*.py"):
            names |= set(re.findall(r'"(movierec_[a-z0-9_]+)"', path.read_text(encoding="utf-8")))
    return {n.removesuffix("_total") for n in names}


def base(name: str) -> str:
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def test_every_panel_queries_defined_metrics_through_the_provisioned_source() -> None:
    dashboard = json.loads((GRAFANA / "dashboards/movierec.json").read_text(encoding="utf-8"))
    source = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    uid = source["datasources"][0]["uid"]
    defined = defined_metrics()
    assert dashboard["uid"] and dashboard["panels"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == uid, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            used = set(re.findall(r"movierec_[a-z0-9_]+", target["expr"]))
            # or one of Prometheus's own series (the alerts panel counts ALERTS)
            assert used or re.search(r"\bALERTS\{", target["expr"]), (panel["title"], target["expr"])
            unknown = {name for name in used if base(name) not in defined and name not in defined}
            assert not unknown, (panel["title"], unknown)


def test_compose_mounts_the_provisioning_and_the_dashboards_where_grafana_reads_them() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    grafana = compose["services"]["grafana"]
    assert grafana["profiles"] == ["grafana"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"] if v.startswith("./")}
    assert mounts["/etc/grafana/provisioning"] == "./ops/grafana/provisioning"
    provider = yaml.safe_load((GRAFANA / "provisioning/dashboards/movierec.yml").read_text())
    assert mounts[provider["providers"][0]["options"]["path"]] == "./ops/grafana/dashboards"
