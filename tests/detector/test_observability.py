"""The real detector process, scraped by the real Prometheus of the embedded stack: the anomaly
counter moves in Prometheus's HTTP API, and every metric named by the dashboard and the alert
rules is exported by the running detector's /metrics."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import httpx
import pytest
from detector_helpers import (
    ProductionModel,
    caught_up,
    detector_process,
    produce_frame,
    wait_until,
)
from test_deploy import _alert_rules, _dashboard, _dashboard_exprs, _metric_names

from iot_mlops.config import Settings
from iot_mlops.data.simulate import generate
from iot_mlops.kafka.stack import Stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _prom_value(url: str, query: str) -> float:
    r = httpx.get(f"{url}/api/v1/query", params={"query": query}, timeout=5).json()
    res = r["data"]["result"]
    return float(res[0]["value"][1]) if res else 0.0


def test_prometheus_scrapes_the_detector_and_dashboard_metrics_exist(
    stack: Stack, settings: Settings, production_model: ProductionModel, tmp_path: Path
) -> None:
    prom = {st.name: st for st in stack.status()}.get("prometheus")
    assert prom is not None and prom.healthy, "make setup installs Prometheus"
    # The embedded Prometheus scrapes the stack's metrics port: run the detector there.
    s = settings.model_copy(
        update={
            "model_name": production_model.settings.model_name,
            "metrics_port": stack.s.metrics_port,
        }
    )
    start = production_model.end_ms - 200 * production_model.interval_s * 1000
    produce_frame(s, generate(production_model.fleet, start, 600, 60, production_model.seed))
    log = tmp_path / "detector.log"
    proc = detector_process(s, log)
    try:
        wait_until(lambda: caught_up(s), 300, "the detector caught up")
        text = httpx.get(f"http://127.0.0.1:{s.metrics_port}/metrics").text
        exported = set(re.findall(r"^# TYPE (\S+) (\S+)", text, re.M))
        families = {name for name, _ in exported}
        names = set()
        for e in _dashboard_exprs(_dashboard()):
            names |= _metric_names(e)
        for rule in _alert_rules():
            names |= _metric_names(rule["expr"])
        suffixes = ("_total", "_bucket", "_sum", "_count", "_created")
        missing = {
            n
            for n in names
            if n not in families
            and not any(n.endswith(x) and n[: -len(x)] in families for x in suffixes)
        }
        assert not missing, f"named in dashboard/alerts but not exported: {sorted(missing)}"
        # Prometheus sees the anomaly counter move (scrape interval 5 s).
        wait_until(
            lambda: _prom_value(prom.url, "sum(iot_anomalies_total)") > 0,
            90, "Prometheus to scrape a non-zero anomaly counter", every=2,
        )  # fmt: skip
        assert _prom_value(prom.url, 'up{job="anomaly-detector"}') == 1
        assert _prom_value(prom.url, "sum(iot_readings_total)") > 0
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        finally:
            if proc.poll() is None:
                proc.kill()
