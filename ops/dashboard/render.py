"""The dashboard page as HTML: pure functions from ``PanelData`` to text.

One ``<section class="panel" data-panel=KEY data-state=ok|nodata>`` per panel, grouped
by section. A panel without data says ``no data: <why>`` in a visible line. The page has
no JavaScript: the range and refresh are links (GET parameters), auto-refresh is a
``<meta http-equiv="refresh">``, and the charts are inline SVG (``charts``).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from html import escape
from urllib.parse import urlencode

from ops.dashboard import charts, sources
from ops.dashboard.page import PanelData, View, proportions
from ops.dashboard.panels import SECTIONS, Target
from ops.dashboard.prom import Result, Series
from ops.dashboard.settings import RANGES, REFRESHES

RESULT_COLOURS = {"promoted": "#009E73", "rolled_back": "#D55E00", "kept_champion": "#999999",
                  "gate_refused": "#E69F00", "failed": "#000000", None: "#0072B2"}
STATE_COLOURS = ("#009E73", "#D55E00", "#999999")  # the first state, the others, unknown
SECTION_TITLES = {"service": "Service", "data": "Data", "model": "Model",
                  "alerts": "Alerts and provenance"}

CSS = """
body{font-family:sans-serif;margin:0;background:#f4f5f7;color:#222}
header{background:#1f2d3d;color:#fff;padding:8px 16px;display:flex;gap:24px;align-items:center;
flex-wrap:wrap}
header h1{font-size:18px;margin:0}header a{color:#cfe3ff;margin-right:6px}
header a.on{color:#fff;font-weight:bold;text-decoration:none}
h2{font-size:15px;margin:14px 16px 4px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(460px,1fr));gap:10px;padding:0 16px}
.panel{background:#fff;border:1px solid #dde;border-radius:4px;padding:8px 10px;min-height:90px}
.panel h3{font-size:13px;margin:0 0 4px}.panel p.d{font-size:11px;color:#666;margin:0 0 4px}
.nodata{color:#b00;font-weight:bold}.stat{font-size:38px;font-weight:bold;color:#0072B2}
.legend span{font-size:11px;margin-right:10px}.legend i{display:inline-block;width:10px;
height:10px;margin-right:3px}svg{max-width:100%;height:auto}.panel svg.time{width:100%;max-width:660px}
table{border-collapse:collapse;font-size:12px}td,th{padding:2px 6px;text-align:left;
border-bottom:1px solid #eee}.panel p{font-size:13px}.state{font-size:30px;font-weight:bold}
.firing{color:#D55E00;font-weight:bold}.resolved{color:#009E73}
@media (min-width:1000px){.panel.wide{grid-column:span 2}}
"""


def legend(target: Target, series: Series) -> str:
    """Grafana's ``legendFormat``: each ``{{label}}`` replaced by the series' value."""
    text = target.legend
    for name, value in series.labels.items():
        text = text.replace("{{" + name + "}}", value)
    return text.replace("{{", "").replace("}}", "") or "value"


def _legend_html(labels: list[str]) -> str:
    items = "".join(f'<span><i style="background:{charts.PALETTE[i % len(charts.PALETTE)]}">'
                    f"</i>{escape(label)}</span>" for i, label in enumerate(labels))
    return f'<div class="legend">{items}</div>'


def _lines(data: PanelData, view: View, targets: list[tuple[Target, Result]]) -> str:
    why = [r.why_empty for _, r in targets]
    if all(why):
        return f'<p class="nodata">no data: {escape(str(why[0]))}</p>'
    series = [(legend(t, s), s.points) for t, r in targets for s in r.series]
    svg = charts.time_chart(series, start=view.start, end=view.end, unit=data.panel.unit,
                            threshold=data.panel.threshold, log_y=data.panel.log_y)
    return svg + _legend_html([label for label, _ in series])


def _stat(data: PanelData, view: View) -> str:
    result = data.results[0]
    value = result.series[0].last if result.series else math.nan
    return (f'<div class="stat" data-value="{value!r}" data-time="{view.end:.0f}" '
            f'data-query="{escape(result.query)}">{escape(charts.fmt(value, data.panel.unit))}</div>'
            f'<p class="d">over the last {view.range_key}, at {_clock(view.end)}</p>')


def _state(data: PanelData, view: View) -> str:
    names = dict(data.panel.states)
    series = data.results[0].series[0]
    now = series.last
    name = names.get(now, "unknown")
    colour = STATE_COLOURS[0 if now == data.panel.states[0][0] else 1 if name != "unknown" else 2]
    spans = []
    for (t0, v), (t1, _) in zip(series.points, [*series.points[1:], (view.end, 0.0)], strict=True):
        state = names.get(v, "unknown")
        c = STATE_COLOURS[0 if v == data.panel.states[0][0] else 1 if state != "unknown" else 2]
        spans.append((data.panel.key, t0, t1, c, f"{state} at {_clock(t0)}"))
    return (f'<div class="state" data-value="{now!r}" style="color:{colour}">{escape(name)}</div>'
            + charts.span_chart(spans, start=view.start, end=view.end))


def _drift(data: PanelData, view: View) -> str:
    alarms = {s.labels.get("feature", ""): s.last for s in data.results[1].series}
    on = sorted(f for f, v in alarms.items() if v >= 1)
    badge = (f'<p class="firing" data-alarms="{escape(",".join(on))}">alarm: {escape(", ".join(on))}</p>'
             if on else f'<p data-alarms="">no alarm ({len(alarms)} features watched)</p>')
    return badge + _lines(data, view, [(data.panel.targets[0], data.results[0])])


def _models(data: PanelData, view: View) -> str:
    cards: list[sources.ModelCard] = data.store
    rows = "".join(f"<tr><td><b>{escape(c.role)}</b></td><td>{escape(c.version)}</td>"
                   f"<td>{escape(c.created[:16])}</td><td>{escape(c.note)}</td></tr>" for c in cards)
    metrics = [m for m in sources.OFFLINE_METRICS if any(m in c.metrics for c in cards)]
    bars = charts.bar_chart([("" if i else m, c.metrics.get(m, math.nan)) for m in metrics
                             for i, c in enumerate(cards)], unit="short", group=len(cards))
    return (f"<table>{rows}</table><p class='d'>offline numbers (temporal split)</p>{bars}"
            f"{_legend_html([c.role for c in cards])}"
            f"<p class='d'>answers per second by model version</p>"
            + _lines(data, view, list(zip(data.panel.targets, data.results, strict=True))))


def _experiment(data: PanelData, view: View) -> str:
    info: sources.ExperimentInfo = data.store
    state = "running since" if info.running else "last canary, from"
    arms = "".join(f"<tr><td>{escape(a.name)}</td><td>{escape(a.model)}</td>"
                   f"<td>{a.share:.0%}</td></tr>" for a in info.arms)
    return (f'<p data-experiment="{escape(info.id)}"><b>{escape(info.id)}</b> {state} '
            f"{escape(info.since[:19])}<br><span class='d'>{escape(info.note)}</span></p>"
            f"<table><tr><th>arm</th><th>model</th><th>share</th></tr>{arms}</table>"
            + _lines(data, view, list(zip(data.panel.targets, data.results, strict=True))))


def _proportion(data: PanelData) -> str:
    rows = proportions(data.results[1], data.results[2])
    chart = charts.interval_chart([(arm, p, lo, hi) for arm, p, lo, hi, _ in rows],
                                  unit=data.panel.unit)
    counts = ", ".join(f"{arm}: {n:,} lists" for arm, *_, n in rows)
    return chart + f'<p class="d">{escape(counts)}</p>'


def _bars(data: PanelData) -> str:
    rows = [(legend(data.panel.targets[0], s), s.last) for s in data.results[0].series
            if math.isfinite(s.last)]
    return charts.bar_chart(rows, unit=data.panel.unit)


def _timeline(data: PanelData, view: View) -> str:
    cycles: list[sources.CycleInfo] = data.store[-8:]
    start = min([view.start, *(c.started.timestamp() for c in cycles)])
    spans = [(c.id[:4], c.started.timestamp(), (c.ended.timestamp() if c.ended else view.end),
              RESULT_COLOURS.get(c.result, "#0072B2"),
              f"cycle {c.id} ({c.trigger}): {c.result or c.stage}; {c.reason}") for c in cycles]
    rows = "".join(f"<tr><td>{escape(c.id)}</td><td>{escape(c.trigger)}</td>"
                   f"<td data-result='{escape(c.result or c.stage)}'>{escape(c.result or c.stage)}"
                   f"</td><td>{escape(c.reason[:70])}</td></tr>" for c in reversed(cycles))
    canary = data.results[1].series[0].last if data.results[1].series else math.nan
    return (charts.span_chart(spans, start=start, end=view.end) if spans else
            "<p>the loop has run no cycle yet</p>") + (
        f"<p class='d'>canary running now: {'yes' if canary >= 1 else 'no'}</p>"
        f"<table>{rows}</table>")


def _alerts(data: PanelData) -> str:
    firing, recent = data.store
    now = "".join(f"<tr><td class='firing'>{escape(a['alertname'])}</td><td>{escape(a['severity'])}"
                  f"</td><td>{escape(a['summary'][:90])}</td><td>{escape(a['since'][:19])}</td></tr>"
                  for a in firing) or "<tr><td>none firing</td></tr>"
    past = "".join(f"<tr><td>{escape(a['alertname'])}</td><td class='{escape(a['status'])}'>"
                   f"{escape(a['status'])}</td><td>{escape(a['summary'][:90])}</td>"
                   f"<td>{escape(a['since'][:19])}</td></tr>" for a in recent[:8]) or (
        "<tr><td>no notification yet</td></tr>")
    return (f'<p data-firing="{len(firing)}"><b>firing now: {len(firing)}</b></p><table>{now}</table>'
            f"<p><b>latest notifications</b></p><table>{past}</table>")


def _provenance() -> str:
    return ('<form action="provenance" method="get"><input name="request_id" size="36" '
            'placeholder="request id (X-Request-Id)"> <button>look up</button></form>')


def panel_html(data: PanelData, view: View) -> str:
    """One panel's ``<section>``."""
    panel = data.panel
    wide = " wide" if panel.kind == "alerts" else ""
    head = (f'<section class="panel{wide}" data-panel="{panel.key}" '
            f'data-state="{"nodata" if data.missing else "ok"}"><h3>{escape(panel.title)}</h3>'
            f'<p class="d">{escape(panel.description)}</p>')
    if data.missing is not None:
        return head + f'<p class="nodata">no data: {escape(data.missing)}</p></section>'
    body = {"line": lambda: _lines(data, view, list(zip(panel.targets, data.results, strict=True))),
            "stat": lambda: _stat(data, view), "state": lambda: _state(data, view),
            "drift": lambda: _drift(data, view), "models": lambda: _models(data, view),
            "experiment": lambda: _experiment(data, view), "proportion": lambda: _proportion(data),
            "bars": lambda: _bars(data), "timeline": lambda: _timeline(data, view),
            "alerts": lambda: _alerts(data), "provenance": _provenance}[panel.kind]()
    return head + body + "</section>"


def _clock(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _links(view: View) -> str:
    ranges = " ".join(f'<a class="{"on" if k == view.range_key else ""}" '
                      f'href="?{urlencode({"range": k, "refresh": view.refresh_key})}">{k}</a>'
                      for k in RANGES)
    refresh = " ".join(f'<a class="{"on" if k == view.refresh_key else ""}" '
                       f'href="?{urlencode({"range": view.range_key, "refresh": k})}">{k}</a>'
                       for k in REFRESHES)
    return f"<span>range: {ranges}</span><span>refresh: {refresh}</span>"


def page_html(panels: list[PanelData], view: View, *, elapsed_s: float) -> str:
    """The whole page."""
    period = REFRESHES[view.refresh_key]
    meta = f'<meta http-equiv="refresh" content="{period}">' if period else ""
    sections = []
    for section in SECTIONS:
        inner = "".join(panel_html(d, view) for d in panels if d.panel.section == section)
        sections.append(f'<h2>{SECTION_TITLES[section]}</h2><div class="grid">{inner}</div>')
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">{meta}'
            f"<title>movierec dashboard</title><style>{CSS}</style></head>"
            f'<body data-time="{view.end:.0f}"><header><h1>movierec</h1>{_links(view)}'
            f"<span>at {_clock(view.end)} · built in {elapsed_s * 1000:.0f} ms</span></header>"
            + "".join(sections) + "</body></html>")


def provenance_html(found: sources.Provenance | None, error: str | None, request_id: str) -> str:
    """The provenance lookup's page."""
    if found is None:
        body = f'<p class="nodata">no data: {escape(error or "")}</p>'
    else:
        rows = [("request", found.request_id), ("user", str(found.user_id)), ("arm", found.arm),
                ("served at", found.served_at), ("model", f"{found.model_version} ({found.model_name})"),
                ("code commit", f"{found.code_commit} dirty={found.code_dirty}"),
                ("data snapshot", f"{found.snapshot} ({found.rows} rows)")]
        body = "<table>" + "".join(f'<tr><th>{k}</th><td data-field="{k}">{escape(v)}</td></tr>'
                                   for k, v in rows) + "</table>"
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>provenance '
            f"{escape(request_id)}</title><style>{CSS}</style></head><body><header><h1>"
            f'<a href="./">movierec</a> · provenance</h1></header><div class="grid"><section '
            f'class="panel" data-panel="provenance"><h3>Provenance of {escape(request_id)}</h3>'
            f"{body}{_provenance()}</section></div></body></html>")
