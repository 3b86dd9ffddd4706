"""The training data's profile, stored with the model: for each metric, the deciles of its
training values and the share of values in each bin. The detector counts live readings in
the same bins, and Prometheus turns the two into the population stability index (PSI) per
metric (deploy/prometheus/alerts.yml): input drift against what the model was fit on. Pure."""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping

import numpy as np

BINS = 10
MAX_METRICS = 50  # a metric label per profiled metric: bounded like every other label
EPS = 1e-4  # a bin empty on one side counts as this share (PSI is infinite otherwise)


def metric_of(series_id: str) -> str:
    """The metric part of ``device/metric`` (percent-encoded as events.series_id makes it)."""
    return series_id.rsplit("/", 1)[-1]


def build(values_by_metric: Mapping[str, Iterable[float]]) -> dict[str, dict[str, list[float]]]:
    """``{metric: {"edges": [9 inner decile edges], "shares": [share per bin]}}`` for the
    metrics with the most finite values (at most ``MAX_METRICS``)."""
    arrays = {m: np.asarray(list(v), dtype="float64") for m, v in values_by_metric.items()}
    arrays = {m: a[np.isfinite(a)] for m, a in arrays.items()}
    kept = sorted((m for m in arrays if arrays[m].size), key=lambda m: -arrays[m].size)
    out = {}
    for m in kept[:MAX_METRICS]:
        a = arrays[m]
        edges = np.unique(np.quantile(a, np.linspace(0, 1, BINS + 1)[1:-1]))
        counts = np.bincount(np.searchsorted(edges, a, side="right"), minlength=len(edges) + 1)
        out[m] = {"edges": edges.tolist(), "shares": (counts / a.size).tolist()}
    return out


def bin_of(edges: list[float], value: float) -> int:
    """The bin of ``value``: 0 below the first edge, len(edges) at or above the last."""
    return bisect.bisect_right(edges, value)


def psi(expected: list[float], observed_counts: list[float]) -> float:
    """The PSI of live counts against the training shares (what the alert computes):
    sum of (p - q) ln(p / q); about 0.1 is a shift worth watching, above 0.25 a drift."""
    total = sum(observed_counts)
    if total <= 0:
        return 0.0
    out = 0.0
    for q, c in zip(expected, observed_counts, strict=True):
        p, q = max(c / total, EPS), max(q, EPS)
        out += (p - q) * math.log(p / q)
    return out


# The Prometheus job that scrapes the detectors (deploy/prometheus, the embedded stack's config).
DETECTOR_JOB = 'job="anomaly-detector"'


def psi_promql(selector: str, window: str, by: tuple[str, ...] = ("metric_name",)) -> str:
    """The PSI per ``by`` group as PromQL: live bin shares over ``window`` against the served
    model's training shares, each clamped to ``EPS`` (one definition for the InputDriftHigh
    alert, the dashboard and the trainer's drift trigger)."""
    g = ", ".join(by)
    bins = f"iot_input_value_bin_total{{{selector}}}"
    live = (
        f"clamp_min(sum by ({g}, bin) (rate({bins}[{window}])) / on ({g}) group_left "
        f"sum by ({g}) (rate({bins}[{window}])), {EPS:g})"
    )
    train = f"clamp_min(max by ({g}, bin) (iot_training_value_bin_share{{{selector}}}), {EPS:g})"
    return f"sum by ({g}) (({live} - {train}) * ln({live} / {train}))"
