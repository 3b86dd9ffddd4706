"""Generates the Grafana dashboard of the anomaly detector, in its two forms:

- deploy/grafana/dashboards/iot-anomaly-detection.json: provisioned (Compose mounts it), panels
  bound to the provisioned datasource uid ``prometheus-iot``;
- grafana.json at the repo root: the same dashboard for a manual import (Dashboards → New →
  Import), its datasource an ``__inputs`` entry ``DS_PROMETHEUS`` chosen at import time.

Edit this file, then run ``.venv/bin/python deploy/grafana/build_dashboard.py``;
tests/test_deploy.py fails when the committed JSON differs from what this writes.
Every metric name used here must be one the detector exports (src/iot_mlops/detector/metrics.py).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PROVISIONED = ROOT / "deploy/grafana/dashboards/iot-anomaly-detection.json"
IMPORTABLE = ROOT / "grafana.json"

DATASOURCE_UID = "prometheus-iot"  # deploy/grafana/provisioning/datasources/prometheus.yaml
DASHBOARD_UID = "iot-anomaly-detection"
JOB = 'job="anomaly-detector"'
RI = "$__rate_interval"
# The device-type filter applied to the fleet-wide panels.
DT = f'{JOB}, device_type=~"$device_type"'
# The chosen series (dashboard variables).
SERIES = f'{JOB}, device_id="$device_id", metric_name="$metric_name"'

Panel = dict[str, Any]


def _target(expr: str, legend: str = "", ref: str = "A", **extra: Any) -> dict[str, Any]:
    return {"refId": ref, "expr": expr, "legendFormat": legend, "range": True, **extra}


def _panel(
    ptype: str,
    title: str,
    targets: list[dict[str, Any]],
    grid: tuple[int, int, int, int],
    *,
    description: str = "",
    unit: str = "short",
    options: dict[str, Any] | None = None,
    custom: dict[str, Any] | None = None,
    overrides: list[dict[str, Any]] | None = None,
    mappings: list[dict[str, Any]] | None = None,
    thresholds: list[dict[str, Any]] | None = None,
    extra_defaults: dict[str, Any] | None = None,
) -> Panel:
    x, y, w, h = grid
    defaults: dict[str, Any] = {"unit": unit}
    if custom is not None:
        defaults["custom"] = custom
    if mappings is not None:
        defaults["mappings"] = mappings
    defaults["thresholds"] = {
        "mode": "absolute",
        "steps": thresholds or [{"color": "green", "value": None}],
    }
    defaults.update(extra_defaults or {})
    return {
        "type": ptype,
        "title": title,
        "description": description,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
        "options": options or {},
    }


def _timeseries(
    title: str,
    targets: list[dict[str, Any]],
    grid: tuple[int, int, int, int],
    *,
    stack: bool = False,
    **kw: Any,
) -> Panel:
    custom = {
        "drawStyle": "line",
        "lineWidth": 1,
        "fillOpacity": 10,
        "showPoints": "never",
        "spanNulls": False,
        "stacking": {"mode": "normal" if stack else "none", "group": "A"},
    }
    custom.update(kw.pop("custom", {}))
    options = {
        "legend": {"displayMode": "table", "placement": "right", "calcs": ["lastNotNull"]},
        "tooltip": {"mode": "multi", "sort": "desc"},
    }
    return _panel("timeseries", title, targets, grid, custom=custom, options=options, **kw)


def _stat(
    title: str, targets: list[dict[str, Any]], grid: tuple[int, int, int, int], **kw: Any
) -> Panel:
    options = {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "colorMode": "background",
        "graphMode": "none",
        "textMode": kw.pop("text_mode", "auto"),
        "justifyMode": "auto",
        "orientation": "auto",
    }
    return _panel("stat", title, targets, grid, options=options, **kw)


def _override(name: str, *props: tuple[str, Any]) -> dict[str, Any]:
    return {
        "matcher": {"id": "byName", "options": name},
        "properties": [{"id": k, "value": v} for k, v in props],
    }


def _quantiles(metric: str, by: str = "", qs: tuple[float, ...] = (0.5, 0.99)) -> list[Any]:
    group = f"le{', ' + by if by else ''}"
    return [
        _target(
            f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket{{{JOB}}}[{RI}])))",
            f"p{round(q * 100)}" + (f" {{{{{by}}}}}" if by else ""),
            chr(ord("A") + i),
        )
        for i, q in enumerate(qs)
    ]


UP_DOWN = [
    {
        "type": "value",
        "options": {
            "0": {"text": "no", "color": "red", "index": 0},
            "1": {"text": "yes", "color": "green", "index": 1},
        },
    }
]
RED_GREEN = [{"color": "red", "value": None}, {"color": "green", "value": 1}]


def panels() -> list[Panel]:
    p: list[Panel] = []
    # --- row 0: status at a glance -----------------------------------------------------------
    p.append(_stat(
        "Detectors up",
        [_target(f"count(up{{{JOB}}} == 1) or vector(0)", "up")],
        (0, 0, 3, 4),
        description="Detector replicas Prometheus scrapes successfully.",
        thresholds=RED_GREEN,
    ))  # fmt: skip
    p.append(_stat(
        "Model loaded",
        [_target(f"min(iot_model_loaded{{{JOB}}})", "loaded")],
        (3, 0, 3, 4),
        description="1 when every detector has a model loaded (the production alias resolved).",
        mappings=UP_DOWN,
        thresholds=RED_GREEN,
    ))  # fmt: skip
    p.append(_stat(
        "Registry reachable",
        [_target(f"min(iot_registry_reachable{{{JOB}}})", "reachable")],
        (6, 0, 3, 4),
        description="1 when every detector's last MLflow registry poll succeeded.",
        mappings=UP_DOWN,
        thresholds=RED_GREEN,
    ))  # fmt: skip
    p.append(_stat(
        "Model version",
        [_target(
            f"max by (model_name, model_version, model_alias) (iot_model_info{{{JOB}}})",
            "{{model_name}} v{{model_version}} @{{model_alias}}",
            instant=True, range=False,
        )],
        (9, 0, 6, 4),
        description="The registered model version the detectors score with (iot_model_info).",
        text_mode="name",
        thresholds=[{"color": "blue", "value": None}],
    ))  # fmt: skip
    p.append(_stat(
        "Readings/s",
        [_target(f"sum(rate(iot_readings_total{{{DT}}}[{RI}]))", "readings/s")],
        (15, 0, 3, 4),
        unit="reqps",
        thresholds=[{"color": "blue", "value": None}],
    ))  # fmt: skip
    p.append(_stat(
        "Episodes opened",
        [_target(
            f"sum(increase(iot_anomalies_total{{{DT}}}[$__range]))", "episodes",
            instant=True, range=False,
        )],
        (18, 0, 3, 4),
        description="Anomaly episodes (one per departure from normal, series level) opened "
        "over the dashboard's time range.",
        unit="short",
        thresholds=[{"color": "blue", "value": None}],
    ))  # fmt: skip
    tp = f"sum(increase(iot_live_true_positives_total{{{DT}}}[$__range]))"
    fp = f"sum(increase(iot_live_false_positives_total{{{DT}}}[$__range]))"
    fn = f"sum(increase(iot_live_false_negatives_total{{{DT}}}[$__range]))"
    p.append(_stat(
        "Live precision / recall",
        [
            _target(f"{tp} / ({tp} + {fp})", "precision", "A", instant=True, range=False),
            _target(f"{tp} / ({tp} + {fn})", "recall", "B", instant=True, range=False),
        ],
        (21, 0, 3, 4),
        description="Over the dashboard's time range, against the is_anomaly labels the "
        "simulator sets (empty when readings carry no labels).",
        unit="percentunit",
        thresholds=[
            {"color": "red", "value": None},
            {"color": "orange", "value": 0.5},
            {"color": "green", "value": 0.8},
        ],
        extra_defaults={"min": 0, "max": 1, "decimals": 1},
    ))  # fmt: skip

    # --- throughput ----------------------------------------------------------------------------
    p.append(_timeseries(
        "Readings/s by device type and metric",
        [_target(
            f"sum by (device_type, metric_name) (rate(iot_readings_total{{{DT}}}[{RI}]))",
            "{{device_type}} / {{metric_name}}",
        )],
        (0, 4, 12, 8),
        unit="reqps",
        stack=True,
    ))  # fmt: skip
    p.append(_timeseries(
        "Episodes opened by device type and metric, and episode events by level",
        [
            _target(
                f"sum by (device_type, metric_name) (increase(iot_anomalies_total{{{DT}}}[{RI}]))",
                "{{device_type}} / {{metric_name}}",
            ),
            _target(
                f"sum by (level, event) (increase(iot_episode_events_total{{{DT}}}[{RI}]))",
                "{{level}} {{event}}", "B",
            ),
        ],
        (12, 4, 12, 8),
        unit="short",
        stack=True,
        custom={"drawStyle": "bars", "fillOpacity": 80},
    ))  # fmt: skip

    # --- the chosen series -------------------------------------------------------------------
    p.append(_timeseries(
        "Actual vs predicted: $device_id / $metric_name",
        [
            _target(f"iot_series_actual_value{{{SERIES}}}", "actual", "A"),
            _target(f"iot_series_predicted_value{{{SERIES}}}", "predicted", "B"),
            _target(f"iot_series_lower{{{SERIES}}}", "lower", "C"),
            _target(f"iot_series_upper{{{SERIES}}}", "upper", "D"),
        ],
        (0, 12, 16, 9),
        description="The latest reading, the model's forecast median and its interval "
        "(shaded); points outside the band are scored as anomalous. Choose the series with "
        "the device_id and metric_name variables (capped to IOT_MLOPS_SERIES_GAUGE_LIMIT "
        "series per detector).",
        custom={"fillOpacity": 0},
        overrides=[
            _override("actual", ("color", {"mode": "fixed", "fixedColor": "yellow"}),
                      ("custom.lineWidth", 2)),
            _override("predicted", ("color", {"mode": "fixed", "fixedColor": "blue"}),
                      ("custom.lineStyle", {"fill": "dash", "dash": [10, 10]})),
            _override("upper", ("color", {"mode": "fixed", "fixedColor": "#8AB8FF"}),
                      ("custom.fillBelowTo", "lower"), ("custom.fillOpacity", 20),
                      ("custom.lineWidth", 0)),
            _override("lower", ("color", {"mode": "fixed", "fixedColor": "#8AB8FF"}),
                      ("custom.lineWidth", 0)),
        ],
    ))  # fmt: skip
    p.append(_timeseries(
        "Anomaly score: $device_id / $metric_name",
        [_target(f"iot_series_anomaly_score{{{SERIES}}}", "score")],
        (16, 12, 8, 9),
        unit="percentunit",
        extra_defaults={"min": 0, "max": 1},
        thresholds=[{"color": "green", "value": None}, {"color": "red", "value": 0.99}],
        custom={"thresholdsStyle": {"mode": "line"}},
    ))  # fmt: skip

    # --- scores, latency, model calls ----------------------------------------------------------
    p.append(_panel(
        "heatmap",
        "Anomaly score distribution",
        [_target(
            f"sum by (le) (increase(iot_anomaly_score_bucket{{{DT}}}[{RI}]))",
            "{{le}}",
            format="heatmap",
        )],
        (0, 21, 8, 8),
        description="All scored readings; scores near 1 are far outside the forecast interval.",
        options={
            "calculate": False,
            "yAxis": {"axisPlacement": "left"},
            "cellGap": 1,
            "color": {"mode": "scheme", "scheme": "Oranges", "exponent": 0.5, "steps": 64},
            "rowsFrame": {"layout": "auto"},
            "tooltip": {"mode": "single", "yHistogram": True},
        },
    ))  # fmt: skip
    p.append(_timeseries(
        "Anomaly score quantiles by device type",
        _quantiles("iot_anomaly_score", by="device_type", qs=(0.5, 0.99)),
        (8, 21, 8, 8),
        unit="percentunit",
    ))  # fmt: skip
    p.append(_timeseries(
        "Detection latency p50 / p99",
        _quantiles("iot_detection_latency_seconds"),
        (16, 21, 8, 8),
        description="From a reading's Kafka timestamp to its batch's transaction committed.",
        unit="s",
    ))  # fmt: skip
    p.append(_timeseries(
        "Model call duration p50 / p99",
        _quantiles("iot_model_call_duration_seconds"),
        (0, 29, 8, 8),
        unit="s",
    ))  # fmt: skip
    p.append(_timeseries(
        "Forecast batch size",
        [
            *_quantiles("iot_forecast_batch_size"),
            _target(
                f"sum(rate(iot_forecast_batch_size_sum{{{JOB}}}[{RI}])) / "
                f"sum(rate(iot_forecast_batch_size_count{{{JOB}}}[{RI}]))",
                "mean",
                "C",
            ),
        ],
        (8, 29, 8, 8),
        description="Series forecast per batched model call.",
    ))  # fmt: skip
    p.append(_timeseries(
        "Series tracked / warming up",
        [
            _target(f"sum(iot_series_tracked{{{JOB}}})", "tracked", "A"),
            _target(f"sum(iot_series_warming_up{{{JOB}}})", "warming up", "B"),
        ],
        (16, 29, 8, 8),
    ))  # fmt: skip

    # --- Kafka ---------------------------------------------------------------------------------
    p.append(_timeseries(
        "Consumer lag by partition",
        [_target(
            f"max by (topic, partition) (iot_consumer_lag{{{JOB}}})",
            "{{topic}}[{{partition}}]",
        )],
        (0, 37, 8, 8),
        description="Messages behind each partition's end offset.",
        stack=True,
    ))  # fmt: skip
    p.append(_timeseries(
        "Dead letters/s by reason",
        [_target(
            f"sum by (reason) (rate(iot_dead_letters_total{{{JOB}}}[{RI}]))",
            "{{reason}}",
        )],
        (8, 37, 8, 8),
        description="Malformed messages sent to the dead-letter topic.",
        unit="reqps",
        stack=True,
        custom={"drawStyle": "bars", "fillOpacity": 80},
    ))  # fmt: skip
    p.append(_timeseries(
        "Readings/s by outcome",
        [
            _target(f"sum by (outcome) (rate(iot_readings_total{{{DT}}}[{RI}]))", "{{outcome}}"),
            _target(
                f"sum by (result) (rate(iot_transactions_total{{{JOB}}}[{RI}]))",
                "transactions {{result}}",
                "B",
            ),
        ],
        (16, 37, 8, 8),
        description="scored, warming_up, late, duplicate; and Kafka transactions by result.",
        unit="reqps",
    ))  # fmt: skip

    # --- quality and model -------------------------------------------------------------------
    tp_r = f"sum(rate(iot_live_true_positives_total{{{DT}}}[15m]))"
    fp_r = f"sum(rate(iot_live_false_positives_total{{{DT}}}[15m]))"
    fn_r = f"sum(rate(iot_live_false_negatives_total{{{DT}}}[15m]))"
    p.append(_timeseries(
        "Live precision / recall (15 min window)",
        [
            _target(f"{tp_r} / ({tp_r} + {fp_r})", "precision", "A"),
            _target(f"{tp_r} / ({tp_r} + {fn_r})", "recall", "B"),
        ],
        (0, 45, 12, 8),
        description="tp / (tp + fp) and tp / (tp + fn) against the simulator's is_anomaly labels.",
        unit="percentunit",
        extra_defaults={"min": 0, "max": 1},
    ))  # fmt: skip
    p.append(_panel(
        "table",
        "Models in use",
        [_target(f"iot_model_info{{{JOB}}}", "", format="table", instant=True, range=False)],
        (12, 45, 12, 8),
        description="The registered model, version and alias each detector scores with.",
        options={"showHeader": True, "cellHeight": "sm"},
        extra_defaults={"custom": {"align": "auto", "cellOptions": {"type": "auto"}}},
    ))  # fmt: skip
    p[-1]["transformations"] = [
        {
            "id": "organize",
            "options": {
                "excludeByName": {"Time": True, "Value": True, "__name__": True, "job": True},
                "indexByName": {"instance": 0, "model_name": 1, "model_version": 2},
            },
        }
    ]
    for i, panel in enumerate(p, start=1):
        panel["id"] = i
    return p


def _variable(name: str, label: str, query: str, *, multi: bool = False) -> dict[str, Any]:
    return {
        "type": "query",
        "name": name,
        "label": label,
        "definition": query,
        # A plain string: Grafana parses label_values(...) into its variable editor itself.
        "query": query,
        "refresh": 2,  # on time range change
        "sort": 1,
        "multi": multi,
        "includeAll": multi,
        **({"allValue": ".*"} if multi else {}),
        "current": {},
        "options": [],
        "hide": 0,
    }


def dashboard(datasource_uid: str = DATASOURCE_UID) -> dict[str, Any]:
    """The dashboard with every panel, target and variable bound to ``datasource_uid``."""
    ds = {"type": "prometheus", "uid": datasource_uid}
    ps = panels()
    for panel in ps:
        panel["datasource"] = ds
        for t in panel["targets"]:
            t["datasource"] = ds
    variables = [
        _variable(
            "device_type",
            "Device type",
            "label_values(iot_readings_total, device_type)",
            multi=True,
        ),
        _variable("device_id", "Device", "label_values(iot_series_actual_value, device_id)"),
        _variable(
            "metric_name",
            "Metric",
            'label_values(iot_series_actual_value{device_id="$device_id"}, metric_name)',
        ),
    ]
    for v in variables:
        v["datasource"] = ds
    return {
        "uid": DASHBOARD_UID,
        "title": "IoT anomaly detection",
        "description": "Real-time anomaly detection over IoT sensor streams: throughput, "
        "anomalies, forecasts, latency, Kafka lag, dead letters and the model in use.",
        "tags": ["iot", "anomaly-detection", "mlops"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "refresh": "10s",
        "time": {"from": "now-30m", "to": "now"},
        "timepicker": {},
        "schemaVersion": 39,
        "version": 1,
        "links": [],
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "templating": {"list": variables},
        "panels": ps,
    }


def importable() -> dict[str, Any]:
    """The dashboard for a manual import: the datasource is chosen at import time."""
    d = dashboard("${DS_PROMETHEUS}")
    return {
        "__inputs": [
            {
                "name": "DS_PROMETHEUS",
                "label": "Prometheus",
                "description": "The Prometheus that scrapes the anomaly detectors",
                "type": "datasource",
                "pluginId": "prometheus",
                "pluginName": "Prometheus",
            }
        ],
        "__requires": [
            {"type": "grafana", "id": "grafana", "name": "Grafana", "version": "10.4.0"},
            {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"},
            *(
                {"type": "panel", "id": t, "name": t, "version": ""}
                for t in sorted({p["type"] for p in d["panels"]})
            ),
        ],
        **d,
        "id": None,
    }


def render(obj: dict[str, Any]) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"


def main() -> int:
    PROVISIONED.write_text(render(dashboard()))
    IMPORTABLE.write_text(render(importable()))
    print(f"wrote {PROVISIONED.relative_to(ROOT)} and {IMPORTABLE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
