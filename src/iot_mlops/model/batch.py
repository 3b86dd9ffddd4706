"""The forecaster's numpy interface: ``forecast(ContextBatch) -> ForecastBatch``.

Every caller (the scoring engine, training's backtest, the holdout replay) hands a forecaster
a matrix of recent history and gets matrices back; DataFrames live only inside the AutoGluon
adapter (``iot_mlops.model.forecaster``). Rows are series, in the caller's order, and a
forecast's rows are in the order of its context's rows.

A context is right-aligned: row ``i`` holds its series' last ``lengths[i]`` grid values in its
right-most columns (NaN inside them is a gap), and the columns to the left are padding, not
part of the series. Times are epoch milliseconds on a fixed grid of ``step_ms``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd


def step_ms(freq: str) -> int:
    """A fixed pandas frequency (``"min"``, ``"5s"``, ...) in milliseconds."""
    return int(pd.Timedelta(pd.tseries.frequencies.to_offset(freq)).total_seconds() * 1000)


@dataclass(frozen=True)
class ContextBatch:
    """Recent history of ``n`` series on one grid (see module doc)."""

    ids: tuple[str, ...]
    last_ms: np.ndarray  # int64 (n,): grid time of each row's last value
    step_ms: int
    values: np.ndarray  # float64 (n, width), right-aligned
    lengths: np.ndarray  # int64 (n,): how many right-most columns belong to the series

    def __post_init__(self) -> None:
        n = len(self.ids)
        if self.values.ndim != 2 or self.values.shape[0] != n:
            raise ValueError(f"values must be ({n}, width), got {self.values.shape}")
        if self.last_ms.shape != (n,) or self.lengths.shape != (n,):
            raise ValueError("last_ms and lengths need one entry per id")
        if n and (self.lengths.min() < 1 or self.lengths.max() > self.values.shape[1]):
            raise ValueError("every series needs 1..width values")

    @classmethod
    def from_rows(
        cls, ids: Sequence[str], last_ms: Sequence[int], rows: Sequence[np.ndarray], step_ms: int
    ) -> ContextBatch:
        """From one value array per series (any lengths), each ending at its ``last_ms``."""
        lengths = np.array([len(r) for r in rows], dtype=np.int64)
        width = int(lengths.max()) if len(rows) else 1
        values = np.full((len(rows), width), np.nan)
        for i, r in enumerate(rows):
            values[i, width - len(r) :] = r
        return cls(tuple(ids), np.asarray(last_ms, dtype=np.int64), step_ms, values, lengths)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def width(self) -> int:
        return int(self.values.shape[1])

    def row(self, i: int) -> np.ndarray:
        """Series ``i``'s own values (no padding)."""
        return self.values[i, self.width - int(self.lengths[i]) :]

    def timestamps_ms(self, i: int) -> np.ndarray:
        """The grid times of ``row(i)``."""
        n = int(self.lengths[i])
        return int(self.last_ms[i]) - np.arange(n - 1, -1, -1, dtype=np.int64) * self.step_ms

    def tail(self, length: int) -> ContextBatch:
        """At most the last ``length`` values of every series (a model's context length)."""
        if length <= 0 or length >= self.width:
            return self
        return replace(
            self, values=self.values[:, -length:], lengths=np.minimum(self.lengths, length)
        )

    def select(self, rows: Sequence[int]) -> ContextBatch:
        """The given rows, in that order."""
        idx = np.asarray(rows, dtype=np.int64)
        ids = tuple(self.ids[i] for i in idx)
        sub = replace(
            self,
            ids=ids,
            last_ms=self.last_ms[idx],
            values=self.values[idx],
            lengths=self.lengths[idx],
        )
        return sub.tail(int(sub.lengths.max())) if len(idx) else sub


@dataclass(frozen=True)
class ForecastBatch:
    """The next ``horizon`` steps of each series, rows in the context's order."""

    ids: tuple[str, ...]
    start_ms: np.ndarray  # int64 (n,): time of the first forecast step (last_ms + step)
    step_ms: int
    mean: np.ndarray  # float64 (n, horizon)
    quantiles: dict[float, np.ndarray] = field(default_factory=dict)  # level -> (n, horizon)

    @property
    def horizon(self) -> int:
        return int(self.mean.shape[1])

    def quantile(self, level: float) -> np.ndarray:
        for q, m in self.quantiles.items():
            if math.isclose(q, level, rel_tol=0, abs_tol=1e-12):
                return m
        raise KeyError(f"the forecast has no {level} quantile (has {sorted(self.quantiles)})")

    @property
    def median(self) -> np.ndarray:
        """The 0.5 quantile, or the mean for a model without one."""
        try:
            return self.quantile(0.5)
        except KeyError:
            return self.mean

    def select(self, rows: Sequence[int]) -> ForecastBatch:
        """The given rows, in that order."""
        idx = np.asarray(rows, dtype=np.int64)
        quantiles = {q: m[idx] for q, m in self.quantiles.items()}
        ids = tuple(self.ids[i] for i in idx)
        return replace(
            self, ids=ids, start_ms=self.start_ms[idx], mean=self.mean[idx], quantiles=quantiles
        )


def sorted_quantiles(quantiles: dict[float, np.ndarray]) -> dict[float, np.ndarray]:
    """Quantiles re-sorted per step: crossing is possible with per-quantile tabular models, and
    the scoring rule relies on a valid interval (lower <= median <= upper)."""
    levels = sorted(quantiles)
    if len(levels) < 2:
        return dict(quantiles)
    stacked = np.sort(np.stack([quantiles[q] for q in levels]), axis=0)
    return {q: stacked[k] for k, q in enumerate(levels)}
