"""Training data: read the parquet, split every series into its fit part and its holdout,
and the fit frame (labelled anomalies masked out, so the model learns normal behaviour)."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from iot_mlops.data.grid import PreparedData, min_series_length
from iot_mlops.errors import ConfigError


def read_parquet(path: Path) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise ConfigError(
            f"training data {str(path)!r} does not exist",
            fix="create it with `iot-mlops collect --out PATH` or "
            "`iot-mlops simulate --hours 24 --parquet PATH`",
        )
    try:
        df = pd.read_parquet(path)
    except Exception as e:  # any unreadable file is the user's input problem
        raise ConfigError(f"cannot read {str(path)!r} as parquet: {e}") from None
    if df.empty:
        raise ConfigError(
            f"training data {str(path)!r} has no rows",
            fix="collect or simulate some history first",
        )
    return df


def data_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


@dataclass
class SplitSeries:
    """One series on its grid, split into fit part ``[:start]`` and holdout ``[start:]``."""

    item_id: str
    timestamps: pd.DatetimeIndex
    y: np.ndarray
    label: np.ndarray
    start: int

    @property
    def n(self) -> int:
        return len(self.y)


def split_series(
    data: PreparedData, prediction_length: int, holdout_fraction: float
) -> tuple[list[SplitSeries], list[str]]:
    """Per-series holdout split; too-short series are dropped (all too short → error)."""
    need = min_series_length(prediction_length, holdout_fraction)
    series: list[SplitSeries] = []
    dropped: list[str] = []
    for item, g in data.frame.groupby("item_id", sort=True):
        n = len(g)
        if n < need:
            dropped.append(f"{item} ({n} points)")
            continue
        holdout = max(math.ceil(n * holdout_fraction), prediction_length)
        series.append(
            SplitSeries(
                item_id=str(item),
                timestamps=pd.DatetimeIndex(g["timestamp"].to_numpy()),
                y=g["target"].to_numpy(dtype="float64"),
                label=g["is_anomaly"].to_numpy(dtype=bool),
                start=n - holdout,
            )
        )
    if not series:
        longest = int(data.frame.groupby("item_id").size().max())
        raise ConfigError(
            f"every series is too short: with prediction_length {prediction_length} and a "
            f"{holdout_fraction:.0%} holdout each series needs at least {need} points at "
            f"{data.freq}; the longest has {longest}",
            fix="collect more history, or lower --prediction-length",
        )
    return series, dropped


def fit_frame(series: list[SplitSeries]) -> pd.DataFrame:
    """The fit part of every series, labelled anomalies masked to NaN."""
    parts = []
    for s in series:
        y = s.y[: s.start].copy()
        y[s.label[: s.start]] = np.nan
        parts.append(
            pd.DataFrame({"item_id": s.item_id, "timestamp": s.timestamps[: s.start], "target": y})
        )
    return pd.concat(parts, ignore_index=True)


def segments(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each run of True values."""
    m = np.r_[False, mask, False].astype(np.int8)
    d = np.diff(m)
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist(), strict=True))
