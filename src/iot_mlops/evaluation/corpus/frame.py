"""A series' rows as written: the reported (irregular) timestamps, values in the units a sensor
reports, and the frame with its label windows."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from iot_mlops.evaluation.corpus.signal import (
    _Anomaly,
)
from iot_mlops.evaluation.corpus.spec import (
    BASE_TIME,
    DAY_S,
    LabelWindow,
)


def _clock_jumps(
    rng: np.random.Generator, t: np.ndarray, interval_s: int, windows: list[_Anomaly]
) -> tuple[np.ndarray, int]:
    """Shift a few blocks of rows backwards in time, away from every window."""
    n = len(t)
    rep = t.copy()
    busy = np.zeros(n + 1, dtype=bool)
    for an in windows:
        busy[an.a : an.b + 1] = True
    done = 0
    want = int(rng.integers(1, 4))
    for _ in range(50):
        if done == want:
            break
        length = int(rng.integers(5, 51))
        back_rows = int(rng.integers(2, 21))
        p = int(rng.integers(n // 10, max(n // 10 + 1, n - length - 1)))
        # Keep clear of windows down to the earliest time the shifted block reaches back to
        # (in rows that depends on drops, gaps and repeats, so search the true times).
        reach = t[p] - (back_rows + 1) * interval_s
        lo = max(int(np.searchsorted(t, reach, side="left")) - 5, 0)
        hi = min(p + length + 5, n)
        if busy[lo:hi].any():
            continue
        rep[p : p + length] -= back_rows * interval_s
        busy[lo:hi] = True
        done += 1
    return rep, done


def _iso(t: np.ndarray) -> np.ndarray:
    return np.char.add(np.datetime_as_string(t, unit="ms"), "Z")


def _report_times(
    rng: np.random.Generator,
    t: np.ndarray,
    interval_s: int,
    feats: set[str],
    anomalies: list[_Anomaly],
    info: list[str],
) -> np.ndarray:
    """The timestamps the sensor reports: the true times, or with clock jumps if asked."""
    if "clock_jumps" not in feats:
        return t
    reported, jumps = _clock_jumps(rng, t, interval_s, anomalies)
    if jumps:
        info.append("clock_jumps")
    return reported


def _to_units(rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
    """Physical units: a level and a scale per series; a sensor resolution of ~sigma/20."""
    scale = 10 ** rng.uniform(-1.5, 2.0)
    level = rng.uniform(-2.0, 10.0) * scale * 10
    decimals = max(0, -math.floor(math.log10(scale / 20)))
    return np.round(level + scale * x, decimals)


def _frame(
    rng: np.random.Generator,
    t: np.ndarray,
    reported: np.ndarray,
    values: np.ndarray,
    anomalies: list[_Anomaly],
    feats: set[str],
    info: list[str],
    interval_s: int,
    offset_days: int | None = None,
) -> tuple[pd.DataFrame, list[LabelWindow], list[str]]:
    """The series' file content and its label windows (at the true times of their rows)."""
    if offset_days is None:  # the standard profile draws it here: keep its draw order
        offset_days = int(rng.integers(0, 300))
    t0 = BASE_TIME + np.timedelta64(offset_days * DAY_S * 1000, "ms")
    ts = t0 + np.round(reported * 1000).astype(np.int64).astype("timedelta64[ms]")
    true_ts = t0 + np.round(t * 1000).astype(np.int64).astype("timedelta64[ms]")
    if interval_s >= 60 and "jitter" not in feats and rng.random() < 0.5:
        # NAB's own format (tz-naive = UTC), to exercise both in the reader.
        text = np.char.replace(np.datetime_as_string(ts, unit="s"), "T", " ")
        info.append("naive_timestamps")
    else:
        text = _iso(ts)
    windows = [
        LabelWindow(
            str(_iso(true_ts[an.a : an.a + 1])[0]), str(_iso(true_ts[an.b : an.b + 1])[0]), an.kind
        )
        for an in anomalies
    ]
    return pd.DataFrame({"timestamp": text, "value": values}), windows, info
