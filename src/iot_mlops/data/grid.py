"""The time grid: readings (the parquet written by ``collect``/``simulate``) turned into one
regular grid per series, with the frequency inferred and checked, so the frequency the model is
trained on is the one the detector aligns readings to."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from iot_mlops.errors import ConfigError
from iot_mlops.events import series_id

# A series may miss this share of its grid points (regularised to NaN, which AutoGluon fills)
# before we call the data broken rather than gappy.
MAX_GAP_FRACTION = 0.25
# The modal interval must account for at least this share of a series' steps; below it the
# series has no single sampling interval.
MIN_MODAL_SHARE = 0.5


@dataclass(frozen=True)
class PreparedData:
    """Readings on a regular grid: one row per (item_id, timestamp), NaN where missing."""

    frame: pd.DataFrame  # item_id, timestamp (tz-naive UTC), target, is_anomaly (bool)
    freq: str
    step: pd.Timedelta
    n_raw_rows: int
    n_gaps: int
    dropped_items: tuple[str, ...] = ()


REQUIRED_COLUMNS = ("device_id", "metric_name", "metric_value", "timestamp")


def freq_alias(step: pd.Timedelta) -> str:
    """Pandas offset alias for a fixed step, lower case for s/min/h (``60s`` → ``min``)."""
    return pd.tseries.frequencies.to_offset(step).freqstr


def to_long(readings: pd.DataFrame) -> pd.DataFrame:
    """Readings (device_id, metric_name, metric_value, timestamp[, is_anomaly]) → item_id,
    timestamp (tz-naive UTC), target, is_anomaly."""
    missing = [c for c in REQUIRED_COLUMNS if c not in readings.columns]
    if missing:
        raise ConfigError(
            f"the data lacks columns {missing}; expected {list(REQUIRED_COLUMNS)}",
            fix="produce it with `iot-mlops collect --out PATH` or "
            "`iot-mlops simulate --hours 24 --parquet PATH`",
        )
    ts = pd.to_datetime(readings["timestamp"], utc=True, errors="coerce")
    out = pd.DataFrame(
        {
            "item_id": [
                series_id(d, m)
                for d, m in zip(readings["device_id"], readings["metric_name"], strict=True)
            ],
            "timestamp": ts.dt.tz_localize(None),
            "target": pd.to_numeric(readings["metric_value"], errors="coerce").astype("float64"),
            "is_anomaly": (
                readings["is_anomaly"].fillna(False).astype(bool).to_numpy()
                if "is_anomaly" in readings.columns
                else False
            ),
        }
    )
    out = out[out["timestamp"].notna()]
    out.loc[~np.isfinite(out["target"]), "target"] = np.nan
    return out


def infer_step(long: pd.DataFrame) -> pd.Timedelta:
    """The sampling interval shared by all series; a mix of intervals is an error."""
    steps: dict[str, pd.Timedelta] = {}
    for item, g in long.groupby("item_id", sort=False):
        d = g["timestamp"].sort_values().diff().dropna()
        d = d[d > pd.Timedelta(0)]
        if d.empty:
            continue
        counts = d.value_counts()
        mode = counts.index[0]
        if counts.iloc[0] / len(d) < MIN_MODAL_SHARE:
            top = ", ".join(str(x) for x in counts.index[:3])
            raise ConfigError(
                f"series {item!r} has no regular sampling interval (most common steps: {top})",
                fix="resample the data to one interval per series before training",
            )
        steps[str(item)] = mode
    if not steps:
        raise ConfigError("no series has two or more readings: cannot infer a frequency")
    distinct = sorted(set(steps.values()))
    if len(distinct) > 1:
        examples = []
        for s in distinct[:3]:
            item = next(i for i, v in steps.items() if v == s)
            examples.append(f"{item}: {s}")
        raise ConfigError(
            f"series are sampled at different intervals ({'; '.join(examples)})",
            fix="train one model per sampling interval, or resample the data to one interval",
        )
    return distinct[0]


def regularise(long: pd.DataFrame, step: pd.Timedelta) -> tuple[pd.DataFrame, int]:
    """Snap each series onto its grid (first timestamp + k·step), one row per grid point,
    NaN where a reading is missing. Duplicates keep the last reading. Returns (frame, gaps)."""
    parts = []
    gaps = 0
    for item, g in long.groupby("item_id", sort=True):
        g = g.sort_values("timestamp", kind="stable")
        t0 = g["timestamp"].iloc[0]
        k = np.rint((g["timestamp"] - t0) / step).astype("int64")
        g = g.assign(_k=k.to_numpy()).drop_duplicates("_k", keep="last")
        n = int(g["_k"].max()) + 1
        target = np.full(n, np.nan)
        label = np.zeros(n, dtype=bool)
        target[g["_k"].to_numpy()] = g["target"].to_numpy()
        label[g["_k"].to_numpy()] = g["is_anomaly"].to_numpy(dtype=bool)
        missing = n - len(g)
        if n > 1 and missing / n > MAX_GAP_FRACTION:
            raise ConfigError(
                f"series {item!r} misses {missing} of its {n} points at {step} "
                f"({missing / n:.0%}): too gappy to train on",
                fix="collect a longer, continuous stretch of data",
            )
        gaps += missing
        parts.append(
            pd.DataFrame(
                {
                    "item_id": item,
                    "timestamp": t0 + step * np.arange(n),
                    "target": target,
                    "is_anomaly": label,
                }
            )
        )
    return pd.concat(parts, ignore_index=True), gaps


def prepare(readings: pd.DataFrame) -> PreparedData:
    if readings.empty:
        raise ConfigError("the training data has no rows", fix="collect or simulate data first")
    long = to_long(readings)
    if long.empty:
        raise ConfigError("the training data has no rows with a valid timestamp")
    step = infer_step(long)
    frame, gaps = regularise(long, step)
    return PreparedData(
        frame=frame, freq=freq_alias(step), step=step, n_raw_rows=len(readings), n_gaps=gaps
    )


def min_series_length(prediction_length: int, holdout_fraction: float) -> int:
    """Shortest series we can both fit (AutoGluon needs > 2·H points for one validation
    window plus some training rows) and evaluate (a holdout of at least one horizon)."""
    min_train = 3 * prediction_length + 2
    # holdout = max(ceil(n·f), H) and train = n - holdout must reach min_train.
    n = min_train + prediction_length
    while n - max(math.ceil(n * holdout_fraction), prediction_length) < min_train:
        n += 1
    return n
