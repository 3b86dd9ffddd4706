"""Deterministic numpy stand-in forecasters for pure units (the real AutoGluon forecasters are
exercised by the contract suite and the integration tests), and the contexts that suite feeds
every forecaster."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from iot_mlops.model.batch import ContextBatch, ForecastBatch, step_ms
from iot_mlops.scoring.calibrate import Calibration


class LastValueModel:
    """Forecasts each series' last non-NaN value with a ±1 interval; records its calls."""

    version = "7"
    freq = "min"
    prediction_length = 4
    context_length = 16
    quantile_levels = (0.01, 0.5, 0.99)
    calibration = Calibration(threshold=1.0)

    def __init__(self) -> None:
        self.calls: list[ContextBatch] = []

    def forecast(self, context: ContextBatch) -> ForecastBatch:
        self.calls.append(context)
        last = np.full(len(context), np.nan)
        for i in range(len(context)):
            seen = context.row(i)[np.isfinite(context.row(i))]
            last[i] = seen[-1] if len(seen) else np.nan
        mean = np.repeat(last[:, None], self.prediction_length, axis=1)
        return ForecastBatch(
            context.ids,
            context.last_ms + context.step_ms,
            context.step_ms,
            mean,
            {0.01: mean - 1, 0.5: mean.copy(), 0.99: mean + 1},
        )


def contexts(model: Any, seed: int) -> ContextBatch:
    """Series of several lengths (shorter and longer than the context), with gaps (the first
    point included), a constant one, each ending at its own time."""
    rng = np.random.default_rng(seed)
    step = step_ms(model.freq)
    end = int(pd.Timestamp("2026-11-20T12:00:00").value // 1_000_000) // step * step
    cl = model.context_length
    lengths = [cl, cl, max(8, cl // 3), cl // 2 + 5, cl + 30, cl]
    rows = []
    for i, n in enumerate(lengths):
        t = np.arange(n)
        y = 20 + 5 * np.sin(2 * np.pi * t / 60) + rng.normal(0, 1, n).cumsum() * 0.3 + i
        y[rng.choice(n, size=n // 10, replace=False)] = np.nan
        rows.append(y)
    rows[1][0] = np.nan
    rows[-1] = np.full(cl, 7.0)
    ids = [f"contract-{i}/value" for i in range(len(rows))]
    last = [end - i * step for i in range(len(rows))]
    return ContextBatch.from_rows(ids, last, rows, step)
