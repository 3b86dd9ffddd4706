"""Replay history through the detector's own engine (no Kafka): used by training to calibrate
the threshold and to measure precision/recall, so what training reports is what the detector
does, block-aligned forecasts, per-series adaptation, context cleaning and alarm hygiene
included.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from iot_mlops.scoring.calibrate import MAX_THRESHOLD, Calibration
from iot_mlops.scoring.engine import Engine, ForecasterLike


@dataclass
class ReplaySeries:
    """One series on its grid: epoch-ms timestamps, values (NaN = missing) and labels."""

    key: str
    timestamps_ms: np.ndarray
    values: np.ndarray
    labels: np.ndarray  # bool
    start: int  # index where scoring starts; everything before is context


@dataclass(frozen=True, slots=True)
class ReplayPoint:
    """One point of a replayed series, as the engine reads it: each series is its own
    device, so no device-level aggregation mixes series that only share a replay."""

    series_id: str
    metric_value: float
    timestamp_ms: int
    metric_name: str = ""

    @property
    def device_id(self) -> str:
        return self.series_id


@dataclass
class ReplayResult:
    scored: dict[str, np.ndarray]  # bool per point
    deviation: dict[str, np.ndarray]  # adapted deviation (NaN where not scored)
    score: dict[str, np.ndarray]
    alarm: dict[str, np.ndarray]
    model_calls: int
    horizon_step: dict[str, np.ndarray] = field(default_factory=dict)  # -1 where not scored


class _Counting:
    """Wraps a model to count calls (and to allow a calibration override)."""

    def __init__(self, model: ForecasterLike, calibration: Calibration) -> None:
        self._m = model
        self.version = model.version
        self.freq = model.freq
        self.prediction_length = model.prediction_length
        self.context_length = model.context_length
        self.calibration = calibration
        self.calls = 0

    def forecast(self, context):  # type: ignore[no-untyped-def]
        self.calls += 1
        return self._m.forecast(context)


def replay(
    model: ForecasterLike,
    series: Sequence[ReplaySeries],
    calibration: Calibration | None = None,
    options: dict[str, Any] | None = None,
    hide_labels: bool = False,
    on_block: Callable[[], None] | None = None,
) -> ReplayResult:
    """Stream each series' points from ``start`` through a fresh engine, in time order across
    series, after priming it with the points before ``start``.

    ``options``: the engine's channel and episode configuration (``engine_options``).
    ``calibration=None`` scores without ever flagging (to collect the deviations of clean data,
    so no outlier is swapped for the forecast in the context); ``hide_labels`` drops labelled
    points (they become gaps)."""
    cal = calibration or Calibration(
        lower_quantile=model.calibration.lower_quantile,
        upper_quantile=model.calibration.upper_quantile,
        threshold=MAX_THRESHOLD * 1e6,
    )
    wrapped = _Counting(model, cal)
    eng = Engine(wrapped, min_history=1, observe_only=calibration is None, **(options or {}))
    out = ReplayResult({}, {}, {}, {}, 0)
    events = _prime(eng, series, out, hide_labels)
    step = eng.step_ms * eng.horizon
    # One engine call per forecast block keeps every series' refresh in one model call.
    for chunk in _blocks(events, step):
        points = [
            ReplayPoint(series[si].key, float(series[si].values[i]), ts) for ts, si, i in chunk
        ]
        results = eng.process(points)
        for (_ts, si, i), res in zip(chunk, results, strict=True):
            sc = res.scored
            if sc is None:
                continue
            k = series[si].key
            out.scored[k][i] = True
            out.deviation[k][i] = sc.deviation
            out.score[k][i] = sc.score
            out.alarm[k][i] = sc.alarm
            out.horizon_step[k][i] = sc.horizon_step
        if on_block is not None:
            on_block()
    out.model_calls = wrapped.calls
    return out


def _prime(
    eng: Engine, series: Sequence[ReplaySeries], out: ReplayResult, hide_labels: bool
) -> list[tuple[int, int, int]]:
    """Allocate the result arrays, prime the engine with each series' points before
    ``start``, and return the points to replay as (timestamp, series index, point index) in
    time order."""
    events: list[tuple[int, int, int]] = []
    for si, s in enumerate(series):
        n = len(s.values)
        out.scored[s.key] = np.zeros(n, dtype=bool)
        out.deviation[s.key] = np.full(n, np.nan)
        out.score[s.key] = np.full(n, np.nan)
        out.alarm[s.key] = np.zeros(n, dtype=bool)
        out.horizon_step[s.key] = np.full(n, -1, dtype=np.int64)
        ctx = s.values[: s.start].astype(np.float64).copy()
        ctx[s.labels[: s.start]] = np.nan  # the detector would not have learnt from these
        lo = max(0, s.start - eng.model.context_length)
        if s.start > 0:
            eng.prime(s.key, int(s.timestamps_ms[s.start - 1]), ctx[lo:])
        for i in range(s.start, n):
            if np.isfinite(s.values[i]) and not (hide_labels and s.labels[i]):
                events.append((int(s.timestamps_ms[i]), si, i))
    events.sort()
    return events


def _blocks(events: list[tuple[int, int, int]], step: int) -> Iterator[list[tuple[int, int, int]]]:
    """The events cut at every multiple of ``step`` (a forecast block)."""
    start = 0
    while start < len(events):
        block_end = (events[start][0] // step + 1) * step
        end = start
        while end < len(events) and events[end][0] < block_end:
            end += 1
        yield events[start:end]
        start = end
