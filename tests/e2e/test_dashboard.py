"""The team's dashboard in a real browser: with the demo's stack and services running and
simulated users calling the service, headless Chromium (Debian's ``chromium`` and
``chromium-driver``, installed by ``make setup``) opens the page through Selenium.

Every panel must show data; the availability figure must equal what Prometheus itself
returns for the same query at the same instant; the provenance lookup must trace a fresh
answer to its model, code commit and data snapshot. A screenshot of the page is saved
under the demo's var/ folder (``dashboard/dashboard.png``).
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from ops.dashboard.panels import PANELS

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
DATA_WAIT_S = 240  # the online counters lag a checkpoint (30 s), a list its take window (30 s)


def _get(url: str, timeout_s: float = 10.0) -> tuple[int, bytes, dict[str, str]]:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as answer:
            return answer.status, answer.read(), dict(answer.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)
    except OSError:
        return 0, b"", {}


def _spawn(env: dict[str, str], log: Path, *args: str) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "movierec", *args], cwd=REPO, env=env,
                                stdout=out, stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def dashboard(demo_env: dict[str, str], report: dict) -> Iterator[str]:
    """The dashboard's URL, the one the demo's ``dashboard`` stage started and left
    running, with simulated users calling the service meanwhile."""
    var = Path(demo_env["MOVIEREC_VAR_DIR"])
    env = {"MOVIEREC_LOOP_DIR": str(var / "loop"), **demo_env,
           "MOVIEREC_SIM_USERS": demo_env["MOVIEREC_DEMO_USERS"],
           "MOVIEREC_SIM_MOVIES": demo_env["MOVIEREC_DEMO_MOVIES"]}
    url = f"http://127.0.0.1:{demo_env['MOVIEREC_DASHBOARD_PORT']}"
    assert _get(f"{url}/health")[0] == 200, "the demo's dashboard stage left it running"
    traffic = _spawn(env, var / "dashboard-traffic.log", "sim", "live", "--url",
                     f"http://127.0.0.1:{demo_env['MOVIEREC_SERVE_PORT']}", "--rate", "20",
                     "--duration", "240", "--start-day", demo_env["MOVIEREC_DEMO_DAYS"],
                     "--truth", str(var / "dashboard-truth.jsonl"))
    try:
        yield url
    finally:
        traffic.terminate()
        try:
            traffic.wait(timeout=30)
        except subprocess.TimeoutExpired:
            traffic.kill()


@pytest.fixture(scope="module")
def browser() -> Iterator:
    from selenium import webdriver  # a dev dependency: missing is a failure, not a skip
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    assert CHROMIUM.exists() and CHROMEDRIVER.exists(), "run `make setup` (chromium, chromium-driver)"
    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1500,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _panels(browser) -> dict[str, tuple[str, str]]:
    """data-panel -> (data-state, visible text) of every panel on the page."""
    from selenium.webdriver.common.by import By

    return {e.get_attribute("data-panel"): (e.get_attribute("data-state"), e.text)
            for e in browser.find_elements(By.CSS_SELECTOR, "section.panel")}


def test_every_panel_shows_data_and_the_availability_is_prometheus_own(
        dashboard: str, browser, demo_env: dict[str, str]) -> None:
    from selenium.webdriver.common.by import By

    deadline = time.monotonic() + DATA_WAIT_S
    while True:
        began = time.perf_counter()
        browser.get(f"{dashboard}/?range=15m&refresh=off")
        load_s = time.perf_counter() - began
        panels = _panels(browser)
        empty = {k: text for k, (state, text) in panels.items() if state != "ok" or "no data" in text}
        if not empty or time.monotonic() > deadline:
            break
        time.sleep(10)
    assert set(panels) == {p.key for p in PANELS}
    assert empty == {}, f"panels without data after {DATA_WAIT_S} s: {empty}"
    charts = {p.key: browser.find_elements(By.CSS_SELECTOR, f'section[data-panel="{p.key}"] svg')
              for p in PANELS if p.kind not in ("stat", "alerts", "provenance")}
    assert [k for k, found in charts.items() if not found] == [], "a panel without its chart"
    lines = browser.find_elements(By.CSS_SELECTOR, 'section[data-panel="latency"] polyline.series')
    assert lines and browser.find_elements(By.CSS_SELECTOR, 'section[data-panel="latency"] .threshold')

    stat = browser.find_element(By.CSS_SELECTOR, 'section[data-panel="availability"] .stat')
    shown, at = float(stat.get_attribute("data-value")), stat.get_attribute("data-time")
    query = stat.get_attribute("data-query")
    assert "$__" not in query and 0 < shown <= 1
    prometheus = f"http://127.0.0.1:{demo_env['MOVIEREC_PROMETHEUS_PORT']}"
    status, body, _ = _get(f"{prometheus}/api/v1/query?"
                           + urllib.parse.urlencode({"query": query, "time": at}))
    assert status == 200, body[:500]
    [series] = json.loads(body)["data"]["result"]
    assert math.isclose(float(series["value"][1]), shown, rel_tol=1e-12), (series, shown)
    assert stat.text == f"{shown * 100:.2f} %"

    built = re.search(r"built in (\d+) ms", browser.find_element(By.TAG_NAME, "header").text)
    assert built, "the header says how long the page took"
    shots = Path(demo_env["MOVIEREC_VAR_DIR"]) / "dashboard"
    shots.mkdir(exist_ok=True)
    height = browser.execute_script("return document.body.scrollHeight")
    browser.set_window_size(1500, height + 40)
    assert browser.save_screenshot(str(shots / "dashboard.png"))
    assert (shots / "dashboard.png").stat().st_size > 20_000
    (shots / "timing.json").write_text(json.dumps({"built_ms": int(built.group(1)),
                                                   "browser_load_s": round(load_s, 3)}))


def test_the_range_links_change_the_range(dashboard: str, browser) -> None:
    from selenium.webdriver.common.by import By

    browser.get(f"{dashboard}/?range=15m&refresh=30s")
    browser.find_element(By.LINK_TEXT, "6h").click()
    assert "range=6h" in browser.current_url and "refresh=30s" in browser.current_url
    assert browser.find_element(By.CSS_SELECTOR, "header a.on").text == "6h"
    refresh = browser.find_element(By.CSS_SELECTOR, 'meta[http-equiv="refresh"]')
    assert refresh.get_attribute("content") == "30"


def test_the_provenance_lookup_traces_a_fresh_answer(dashboard: str, browser,
                                                     demo_env: dict[str, str]) -> None:
    from selenium.webdriver.common.by import By

    serve = f"http://127.0.0.1:{demo_env['MOVIEREC_SERVE_PORT']}"
    status, _, headers = _get(f"{serve}/recommend/7")
    assert status == 200
    request_id = headers["X-Request-Id"]
    deadline = time.monotonic() + 30
    while (answer := _get(f"{serve}/provenance/{request_id}"))[0] != 200:
        assert time.monotonic() < deadline, "the served record never reached the store"
        time.sleep(0.5)
    truth = json.loads(answer[1])
    browser.get(f"{dashboard}/?range=15m&refresh=off")
    box = browser.find_element(By.CSS_SELECTOR, 'section[data-panel="provenance"] input[name="request_id"]')
    box.send_keys(request_id)
    box.submit()
    fields = {e.get_attribute("data-field"): e.text
              for e in browser.find_elements(By.CSS_SELECTOR, "td[data-field]")}
    assert fields["request"] == request_id
    assert fields["model"].startswith(truth["served"]["model_version"])
    assert fields["code commit"].startswith(truth["model"]["code"]["commit"])
    assert fields["data snapshot"].startswith(truth["model"]["data"]["snapshot_id"])
