"""Generates the Grafana dashboard of the anomaly detector, in its two forms:

- deploy/grafana/dashboards/iot-anomaly-detection.json: provisioned (Compose mounts it), panels
  bound to the provisioned datasource uid ``prometheus-iot``;
- grafana.json at the repo root: the same dashboard for a manual import (Dashboards → New →
  Import), its datasource an ``__inputs`` entry ``DS_PROMETHEUS`` chosen at import time.

Built with Grafana's typed builders (``grafana-foundation-sdk``, a dev dependency) and written by
the SDK's JSON encoder. The panels are data: ``SECTIONS`` lists each row's panels as ``Spec``
values (title, queries, size, unit, thresholds, ...); one small function per panel kind turns a
spec into the SDK's builder, and the SDK's dashboard builder places the panels row by row.

Edit this file, then run ``.venv/bin/python deploy/grafana/build_dashboard.py``;
tests/test_deploy.py fails when the committed JSON differs from what this writes.
Every metric name used here must be one the detector exports (src/iot_mlops/detector/metrics.py).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import heatmap, prometheus, stat, table, timeseries
from grafana_foundation_sdk.builders.dashboard import (
    Dashboard,
    QueryVariable,
    Row,
    ThresholdsConfig,
)
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import units
from grafana_foundation_sdk.models.heatmap import HeatmapColorMode
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from iot_mlops.model import profile

ROOT = Path(__file__).resolve().parents[2]
PROVISIONED = ROOT / "deploy/grafana/dashboards/iot-anomaly-detection.json"
IMPORTABLE = ROOT / "grafana.json"

DATASOURCE_UID = "prometheus-iot"  # deploy/grafana/provisioning/datasources/prometheus.yaml
DASHBOARD_UID = "iot-anomaly-detection"
JOB = profile.DETECTOR_JOB
RI = "$__rate_interval"
# The device-type filter applied to the fleet-wide panels.
DT = f'{JOB}, device_type=~"$device_type"'
# The chosen series (dashboard variables).
SERIES = f'{JOB}, device_id="$device_id", metric_name="$metric_name"'
# anomaly_score is L / (L + L*) with L = -log p (src/iot_mlops/scoring/channels.py): exactly 0.5
# where the evidence is as rare as target_false_alarm_rate, the onset of an episode.
ONSET_SCORE = 0.5
# The thresholds of the alert rules the panels show (deploy/prometheus/alerts.yml).
LATENCY_ALERT_S = 5  # DetectionLatencyHigh: p99 above 5 s
LAG_ALERT = 1000  # ConsumerLagGrowing: more than 1000 messages behind (and growing)

Steps = tuple[tuple[str, float | None], ...]
BLUE: Steps = (("blue", None),)
GREEN: Steps = (("green", None),)
RED_GREEN: Steps = (("red", None), ("green", 1))
UP_DOWN = {"0": ("no", "red"), "1": ("yes", "green")}


@dataclass(frozen=True)
class Query:
    """One Prometheus query of a panel (its refId follows its position: A, B, ...)."""

    expr: str
    legend: str = ""
    instant: bool = False  # the latest value only (stats and tables), else a range query
    fmt: PromQueryFormat | None = None


@dataclass(frozen=True)
class Spec:
    """One panel: what it shows and how. ``kind`` picks the builder (``KINDS``)."""

    kind: str
    title: str
    queries: tuple[Query, ...]
    size: tuple[int, int]  # width (of 24 columns), height
    description: str = ""
    unit: str = units.Short
    steps: Steps = GREEN  # absolute thresholds: (color, from value); the first from None
    limits: tuple[float, float] | None = None  # axis / gauge min and max
    decimals: int | None = None
    mapping: dict[str, tuple[str, str]] | None = None  # value -> (text, color)
    text_mode: cm.BigValueTextMode = cm.BigValueTextMode.AUTO
    bars: bool = False  # bars (event counts) instead of lines
    stack: bool = False
    fill: int = 10
    threshold_line: bool = False  # draw the thresholds on the graph
    overrides: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...] = field(default=())
    query_overrides: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...] = field(default=())
    organize: dict[str, Any] | None = None  # a table's "organize fields" transformation


def _range(metric: str, sel: str = JOB, by: str = "") -> str:
    """``sum [by (...)] (rate(metric{sel}[$__rate_interval]))``."""
    agg = f"sum by ({by}) " if by else "sum"
    return f"{agg}(rate({metric}{{{sel}}}[{RI}]))"


def _quantiles(metric: str, sel: str = JOB, by: str = "", qs=(0.5, 0.99)) -> tuple[Query, ...]:
    group = f"le{', ' + by if by else ''}"
    legend = f" {{{{{by}}}}}" if by else ""
    return tuple(
        Query(
            f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket{{{sel}}}[{RI}])))",
            f"p{round(q * 100)}{legend}",
        )
        for q in qs
    )


def _live(over: str, instant: bool) -> tuple[Query, Query]:
    """Live precision and recall over ``over`` against the simulator's is_anomaly labels."""
    fn = "increase" if instant else "rate"
    tp, fp, fn_ = (
        f"sum({fn}(iot_live_{kind}_total{{{DT}}}[{over}]))"
        for kind in ("true_positives", "false_positives", "false_negatives")
    )
    return (
        Query(f"{tp} / ({tp} + {fp})", "precision", instant),
        Query(f"{tp} / ({tp} + {fn_})", "recall", instant),
    )


def _color(color: str) -> tuple[str, dm.FieldColor]:
    return ("color", dm.FieldColor(mode=dm.FieldColorModeId.FIXED, fixed_color=color))


BAND = "#8AB8FF"
STATUS = (
    Spec(
        "stat", "Detectors up", (Query(f"count(up{{{JOB}}} == 1) or vector(0)", "up"),), (3, 4),
        "Detector replicas Prometheus scrapes successfully.", steps=RED_GREEN,
    ),
    Spec(
        "stat", "Model loaded", (Query(f"min(iot_model_loaded{{{JOB}}})", "loaded"),), (3, 4),
        "1 when every detector has a model loaded (the production alias resolved).",
        steps=RED_GREEN, mapping=UP_DOWN,
    ),
    Spec(
        "stat", "Registry reachable",
        (Query(f"min(iot_registry_reachable{{{JOB}}})", "reachable"),), (3, 4),
        "1 when every detector's last MLflow registry poll succeeded.",
        steps=RED_GREEN, mapping=UP_DOWN,
    ),
    Spec(
        "stat", "Model version",
        (Query(
            f"max by (model_name, model_version, model_alias) (iot_model_info{{{JOB}}})",
            "{{model_name}} v{{model_version}} @{{model_alias}}", instant=True,
        ),),
        (6, 4), "The registered model version the detectors score with (iot_model_info).",
        steps=BLUE, text_mode=cm.BigValueTextMode.NAME,
    ),
    Spec(
        "stat", "Readings/s", (Query(_range("iot_readings_total", DT), "readings/s"),), (3, 4),
        "Valid readings consumed per second, every outcome.",
        unit=units.RequestsPerSecond, steps=BLUE,
    ),
    Spec(
        "stat", "Episodes opened",
        (Query(f"sum(increase(iot_anomalies_total{{{DT}}}[$__range]))", "episodes", True),),
        (3, 4), "Anomaly episodes (one per departure from normal, series level) opened over "
        "the dashboard's time range.", steps=BLUE,
    ),
    Spec(
        "stat", "Live precision / recall", _live("$__range", instant=True), (3, 4),
        "Over the dashboard's time range, against the is_anomaly labels the simulator sets "
        "(empty when readings carry no labels).",
        unit=units.PercentUnit, steps=(("red", None), ("orange", 0.5), ("green", 0.8)),
        limits=(0, 1), decimals=1,
    ),
)  # fmt: skip

THROUGHPUT = (
    Spec(
        "timeseries", "Readings/s by device type and metric",
        (Query(_range("iot_readings_total", DT, "device_type, metric_name"),
               "{{device_type}} / {{metric_name}}"),),
        (12, 8), "Valid readings consumed per second, stacked.",
        unit=units.RequestsPerSecond, stack=True,
    ),
    Spec(
        "timeseries", "Episodes opened by device type and metric, and episode events by level",
        (
            Query(f"sum by (device_type, metric_name) (increase(iot_anomalies_total{{{DT}}}"
                  f"[{RI}]))", "{{device_type}} / {{metric_name}}"),
            # No device_type filter: episode events carry only level and event.
            Query(f"sum by (level, event) (increase(iot_episode_events_total{{{JOB}}}[{RI}]))",
                  "{{level}} {{event}}"),
        ),
        (12, 8), "Series episodes opened, stacked by device type and metric; beside them (a "
        "stack of their own) the episode events published, series and device level, opened "
        "and closed.",
        bars=True, stack=True, fill=80,
        query_overrides=(("B", (("custom.stacking", {"mode": "normal", "group": "B"}),)),),
    ),
)  # fmt: skip

CHOSEN_SERIES = (
    Spec(
        "timeseries", "Actual vs predicted: $device_id / $metric_name",
        tuple(
            Query(f"iot_series_{name}{{{SERIES}}}", legend)
            for name, legend in (("actual_value", "actual"), ("predicted_value", "predicted"),
                                 ("lower", "lower"), ("upper", "upper"))
        ),
        (16, 9), "The latest reading, the model's forecast median and its interval (shaded): "
        "the residual evidence grows as a reading leaves the band. Choose the series with the "
        "device_id and metric_name variables (capped to IOT_MLOPS_SERIES_GAUGE_LIMIT series "
        "per detector).",
        fill=0,
        overrides=(
            ("actual", (_color("yellow"), ("custom.lineWidth", 2))),
            ("predicted", (_color("blue"),
                           ("custom.lineStyle", cm.LineStyle(fill="dash", dash=[10, 10])))),
            ("upper", (_color(BAND), ("custom.fillBelowTo", "lower"),
                       ("custom.fillOpacity", 20), ("custom.lineWidth", 0))),
            ("lower", (_color(BAND), ("custom.lineWidth", 0))),
        ),
    ),
    Spec(
        "timeseries", "Anomaly score: $device_id / $metric_name",
        (Query(f"iot_series_anomaly_score{{{SERIES}}}", "score"),), (8, 9),
        f"Calibrated per series: higher is rarer under the series' own history; an episode "
        f"opens at {ONSET_SCORE} (the red line: evidence as rare as the target false-alarm "
        "rate).",
        unit=units.PercentUnit, steps=(("green", None), ("red", ONSET_SCORE)), limits=(0, 1),
        threshold_line=True,
    ),
)  # fmt: skip

SCORES = (
    Spec(
        "heatmap", "Anomaly score distribution",
        (Query(f"sum by (le) (increase(iot_anomaly_score_bucket{{{DT}}}[{RI}]))", "{{le}}",
               fmt=PromQueryFormat.HEATMAP),),
        (8, 8), f"All scored readings by score bucket; from {ONSET_SCORE} up the evidence is "
        "rarer than the target false-alarm rate.",
    ),
    Spec(
        "timeseries", "Anomaly score quantiles by device type",
        _quantiles("iot_anomaly_score", DT, "device_type"), (8, 8),
        f"Median and p99 of the scores; an episode opens at {ONSET_SCORE} (red line).",
        unit=units.PercentUnit, steps=(("green", None), ("red", ONSET_SCORE)),
        threshold_line=True,
    ),
    Spec(
        "timeseries", "Detection latency p50 / p99", _quantiles("iot_detection_latency_seconds"),
        (8, 8), "From a reading's Kafka timestamp to its batch's transaction committed; the red "
        f"line is the DetectionLatencyHigh alert's {LATENCY_ALERT_S} s.",
        unit=units.Seconds, steps=(("green", None), ("red", LATENCY_ALERT_S)),
        threshold_line=True,
    ),
)  # fmt: skip

MODEL_CALLS = (
    Spec(
        "timeseries", "Model call duration p50 / p99",
        _quantiles("iot_model_call_duration_seconds"), (8, 8),
        "Duration of one batched forecast call.", unit=units.Seconds,
    ),
    Spec(
        "timeseries", "Forecast batch size",
        (*_quantiles("iot_forecast_batch_size"),
         Query(f"{_range('iot_forecast_batch_size_sum')} / "
               f"{_range('iot_forecast_batch_size_count')}", "mean")),
        (8, 8), "Series forecast per batched model call.",
    ),
    Spec(
        "timeseries", "Series tracked / warming up",
        (Query(f"sum(iot_series_tracked{{{JOB}}})", "tracked"),
         Query(f"sum(iot_series_warming_up{{{JOB}}})", "warming up")),
        (8, 8), "Series with state in the detectors, and those with too little history to be "
        "scored yet.",
    ),
)  # fmt: skip

KAFKA = (
    Spec(
        "timeseries", "Consumer lag by partition",
        (Query(f"max by (topic, partition) (iot_consumer_lag{{{JOB}}})",
               "{{topic}}[{{partition}}]"),),
        (8, 8), "Messages behind each partition's end offset; the red line is the "
        f"ConsumerLagGrowing alert's floor ({LAG_ALERT}).",
        stack=True, steps=(("green", None), ("red", LAG_ALERT)), threshold_line=True,
    ),
    Spec(
        "timeseries", "Dead letters/s by reason",
        (Query(_range("iot_dead_letters_total", by="reason"), "{{reason}}"),), (8, 8),
        "Malformed messages sent to the dead-letter topic.",
        unit=units.RequestsPerSecond, bars=True, stack=True, fill=80,
    ),
    Spec(
        "timeseries", "Readings/s by outcome",
        (Query(_range("iot_readings_total", DT, "outcome"), "{{outcome}}"),
         Query(_range("iot_transactions_total", by="result"), "transactions {{result}}"),
         Query(_range("iot_partition_changes_total", by="change"), "partitions {{change}}")),
        (8, 8), "scored, warming_up, late, duplicate; Kafka transactions by result; input "
        "partitions assigned / revoked (a rebalance; none when a named replica restarts).",
        unit=units.RequestsPerSecond,
    ),
)  # fmt: skip

QUALITY = (
    Spec(
        "timeseries", "Live precision / recall (15 min window)", _live("15m", instant=False),
        (12, 8), "tp / (tp + fp) and tp / (tp + fn) against the simulator's is_anomaly labels.",
        unit=units.PercentUnit, limits=(0, 1),
    ),
    Spec(
        "table", "Models in use",
        (Query(f"iot_model_info{{{JOB}}}", instant=True, fmt=PromQueryFormat.TABLE),), (12, 8),
        "The registered model, version and alias each detector scores with.",
        organize={
            "excludeByName": {"Time": True, "Value": True, "__name__": True, "job": True},
            "indexByName": {"instance": 0, "model_name": 1, "model_version": 2},
        },
    ),
)  # fmt: skip


def _psi(over: str) -> str:
    """Population stability index per metric, fleet-wide (the InputDriftHigh alert's)."""
    return profile.psi_promql(JOB, over)


SCORED = f'{DT}, outcome="scored"'
MONITORING = (
    Spec(
        "timeseries", "Forecast interval coverage: live vs promised",
        (
            Query(f"sum(rate(iot_forecast_in_interval_total{{{DT}}}[30m])) / "
                  f"sum(rate(iot_readings_total{{{SCORED}}}[30m]))", "live (30 m)"),
            Query(f"max(iot_model_interval_nominal_coverage{{{JOB}}})", "promised"),
        ),
        (8, 8), "Share of scored readings inside the forecast interval, against the share the "
        "served model's quantiles promise. Far below it (the ForecastCoverageLow alert), the "
        "model no longer fits the data.",
        unit=units.PercentUnit, limits=(0, 1), fill=0,
    ),
    Spec(
        "timeseries", "Input drift (PSI) by metric",
        (Query(_psi("1h"), "{{metric_name}}"),), (8, 8),
        "Population stability index of each metric's live values (last hour) against the "
        "served model's training deciles: above 0.1 a shift, above 0.25 (red line, the "
        "InputDriftHigh alert) a drift: retrain on recent data.",
        steps=(("green", None), ("orange", 0.1), ("red", 0.25)), threshold_line=True, fill=0,
    ),
    Spec(
        "timeseries", "Mean scaled forecast error",
        (Query(f"sum by (device_type) (rate(iot_forecast_abs_deviation_total{{{DT}}}[{RI}])) / "
               f"sum by (device_type) (rate(iot_readings_total{{{SCORED}}}[{RI}]))",
               "{{device_type}}"),),
        (4, 8), "Mean |value - forecast median| of scored readings, in half-interval units "
        "(1 = at the interval's edge): scale-free, comparable across metrics.", fill=0,
    ),
    Spec(
        "stat", "Model age", (Query(f"max(iot_model_age_seconds{{{JOB}}})", "age", True),),
        (4, 8), "Since the served model was trained (the ModelStale alert at 30 days).",
        unit=units.Seconds, steps=(("green", None), ("orange", 14 * 86400), ("red", 30 * 86400)),
    ),
)  # fmt: skip

SECTIONS: tuple[tuple[str, tuple[Spec, ...]], ...] = (
    ("Status", STATUS),
    ("Throughput and episodes", THROUGHPUT),
    ("The chosen series", CHOSEN_SERIES),
    ("Scores and latency", SCORES),
    ("Model calls and series state", MODEL_CALLS),
    ("Kafka", KAFKA),
    ("Live quality and the model in use", QUALITY),
    ("Model monitoring: live fit and input drift", MONITORING),
)


# --- specs -> SDK builders ---------------------------------------------------------------------
def _target(q: Query, ref: str, ds: dm.DataSourceRef) -> prometheus.Dataquery:
    t = prometheus.Dataquery().ref_id(ref).expr(q.expr).datasource(ds)
    t = t.instant() if q.instant else t.range()
    if q.legend:
        t = t.legend_format(q.legend)
    return t.format(q.fmt) if q.fmt else t


def _thresholds(steps: Steps) -> ThresholdsConfig:
    return (
        ThresholdsConfig()
        .mode(dm.ThresholdsMode.ABSOLUTE)
        .steps([dm.Threshold(value=v, color=c) for c, v in steps])
    )


def _mappings(mapping: dict[str, tuple[str, str]]) -> list[dm.ValueMapping]:
    results = {
        value: dm.ValueMappingResult(text=text, color=color, index=i)
        for i, (value, (text, color)) in enumerate(mapping.items())
    }
    return [dm.ValueMap(options=results)]


def _common(b: Any, spec: Spec, ds: dm.DataSourceRef) -> Any:
    """What every panel kind shares: title, queries, size, unit, thresholds, overrides."""
    b = (
        b.title(spec.title)
        .description(spec.description)
        .datasource(ds)
        .span(spec.size[0])
        .height(spec.size[1])
        .unit(spec.unit)
        .thresholds(_thresholds(spec.steps))
        .targets([_target(q, chr(ord("A") + i), ds) for i, q in enumerate(spec.queries)])
    )
    if spec.limits is not None:
        b = b.min(spec.limits[0]).max(spec.limits[1])
    if spec.decimals is not None:
        b = b.decimals(spec.decimals)
    if spec.mapping:
        b = b.mappings(_mappings(spec.mapping))
    for name, props in spec.overrides:
        b = b.override_by_name(name, [dm.DynamicConfigValue(k, v) for k, v in props])
    for ref, props in spec.query_overrides:
        b = b.override_by_query(ref, [dm.DynamicConfigValue(k, v) for k, v in props])
    return b


def _timeseries(spec: Spec) -> timeseries.Panel:
    style = cm.GraphDrawStyle.BARS if spec.bars else cm.GraphDrawStyle.LINE
    stacking = cm.StackingMode.NORMAL if spec.stack else cm.StackingMode.NONE
    b = (
        timeseries.Panel()
        .draw_style(style)
        .line_width(1)
        .fill_opacity(spec.fill)
        .show_points(cm.VisibilityMode.NEVER)
        .span_nulls(False)
        .stacking(cb.StackingConfig().mode(stacking).group("A"))
        .legend(
            cb.VizLegendOptions()
            .display_mode(cm.LegendDisplayMode.TABLE)
            .placement(cm.LegendPlacement.RIGHT)
            .show_legend(True)
            .calcs(["lastNotNull"])
        )
        .tooltip(
            cb.VizTooltipOptions().mode(cm.TooltipDisplayMode.MULTI).sort(cm.SortOrder.DESCENDING)
        )
    )
    if spec.threshold_line:
        b = b.thresholds_style(
            cb.GraphThresholdsStyleConfig().mode(cm.GraphTresholdsStyleMode.LINE)
        )
    return b


def _stat(spec: Spec) -> stat.Panel:
    return (
        stat.Panel()
        .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).fields("").values(False))
        .color_mode(cm.BigValueColorMode.BACKGROUND)
        .graph_mode(cm.BigValueGraphMode.NONE)
        .text_mode(spec.text_mode)
        .justify_mode(cm.BigValueJustifyMode.AUTO)
        .orientation(cm.VizOrientation.AUTO)
    )


def _heatmap(spec: Spec) -> heatmap.Panel:
    return (
        heatmap.Panel()
        .calculate(False)
        .y_axis(heatmap.YAxisConfig().axis_placement(cm.AxisPlacement.LEFT))
        .cell_gap(1)
        .color(
            heatmap.HeatmapColorOptions()
            .mode(HeatmapColorMode.SCHEME)
            .scheme("Oranges")
            .exponent(0.5)
            .steps(64)
        )
        .rows_frame(heatmap.RowsHeatmapOptions().layout(cm.HeatmapCellLayout.AUTO))
        .show_tooltip()
        .show_y_histogram()
    )


def _table(spec: Spec) -> table.Panel:
    b = table.Panel().show_header(True).cell_height(cm.TableCellHeight.SM)
    if spec.organize:
        b = b.with_transformation(dm.DataTransformerConfig("organize", options=spec.organize))
    return b


KINDS: dict[str, Callable[[Spec], Any]] = {
    "timeseries": _timeseries,
    "stat": _stat,
    "heatmap": _heatmap,
    "table": _table,
}


def _variables(ds: dm.DataSourceRef) -> list[QueryVariable]:
    """device_type (multi, all = .*) filters the fleet panels; device_id and metric_name pick
    the series of the per-series panels (only series the detectors export gauges for)."""
    specs = (
        ("device_type", "Device type", "label_values(iot_readings_total, device_type)", True),
        ("device_id", "Device", "label_values(iot_series_actual_value, device_id)", False),
        ("metric_name", "Metric",
         'label_values(iot_series_actual_value{device_id="$device_id"}, metric_name)', False),
    )  # fmt: skip
    out = []
    for name, label, query, multi in specs:
        v = (
            QueryVariable(name)
            .id(name)  # the SDK's default id is one zero uuid for every variable
            .label(label)
            # A plain string: Grafana parses label_values(...) into its variable editor itself.
            .query(query)
            .datasource(ds)
            .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(dm.VariableSort.ALPHABETICAL_ASC)
            .multi(multi)
            .include_all(multi)
        )
        out.append(v.all_value(".*") if multi else v)
    return out


def _check_rows() -> None:
    """Each section fills whole lines of the 24-column grid (the SDK wraps at 24)."""
    for title, specs in SECTIONS:
        width = sum(s.size[0] for s in specs)
        assert width % 24 == 0, f"section {title!r} is {width} columns wide"


def build(datasource_uid: str = DATASOURCE_UID) -> Dashboard:
    """The dashboard builder: every panel, target and variable bound to ``datasource_uid``."""
    _check_rows()
    ds = dm.DataSourceRef(type_val="prometheus", uid=datasource_uid)
    b = (
        Dashboard("IoT anomaly detection")
        .uid(DASHBOARD_UID)
        .description(
            "Real-time anomaly detection over IoT sensor streams: throughput, anomaly "
            "episodes, forecasts, scores, latency, Kafka lag, dead letters and the model in use."
        )
        .tags(["iot", "anomaly-detection", "mlops"])
        .timezone(cm.TimeZoneBrowser)
        .editable()
        .tooltip(dm.DashboardCursorSync.CROSSHAIR)
        .refresh("10s")
        .time("now-30m", "now")
        .version(1)
        .variables(_variables(ds))
    )
    ids = iter(range(1, 1000))
    for title, specs in SECTIONS:
        b = b.with_row(Row(title).id(next(ids)))
        for spec in specs:
            b = b.with_panel(_common(KINDS[spec.kind](spec), spec, ds).id(next(ids)))
    return b


def dashboard(datasource_uid: str = DATASOURCE_UID) -> dm.Dashboard:
    """The dashboard model (the provisioned form by default)."""
    return build(datasource_uid).build()


def importable() -> dict[str, Any]:
    """The dashboard for a manual import: the datasource is chosen at import time."""
    d = dashboard("${DS_PROMETHEUS}")
    kinds = sorted({p.type_val for p in d.panels or [] if p.type_val != "row"})
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
            {"type": "grafana", "id": "grafana", "name": "Grafana", "version": "10.1.0"},
            {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"},
            *({"type": "panel", "id": t, "name": t, "version": ""} for t in kinds),
        ],
        **d.to_json(),
        "id": None,
    }


def render(obj: dm.Dashboard | dict[str, Any]) -> str:
    """The JSON text, written by the SDK's encoder (it serialises the typed models)."""
    return JSONEncoder(indent=2, ensure_ascii=False).encode(obj) + "\n"


def main() -> int:
    PROVISIONED.write_text(render(dashboard()))
    IMPORTABLE.write_text(render(importable()))
    print(f"wrote {PROVISIONED.relative_to(ROOT)} and {IMPORTABLE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
