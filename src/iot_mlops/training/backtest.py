"""Rolling-origin backtest over the holdout: forecasts in steps of ``prediction_length`` with
the detector's context length, every series batched into one predict call per window."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from iot_mlops.errors import ModelError
from iot_mlops.model.batch import ContextBatch, ForecastBatch
from iot_mlops.model.forecaster import Forecaster
from iot_mlops.training.split import SplitSeries

# Rolling windows evaluated on the holdout at most; beyond, windows are strided evenly.
MAX_BACKTEST_WINDOWS = 120


@dataclass
class Backtest:
    """Forecasts aligned with each series' points (NaN where not forecast)."""

    mean: dict[str, np.ndarray]
    quantiles: dict[str, dict[float, np.ndarray]]
    n_windows: int = 0
    predict_seconds: float = 0.0


def windows(series: list[SplitSeries], prediction_length: int, max_windows: int) -> list[int]:
    k_max = max(math.ceil((s.n - s.start) / prediction_length) for s in series)
    if k_max <= max_windows:
        return list(range(k_max))
    return sorted({round(x) for x in np.linspace(0, k_max - 1, max_windows)})


def backtest(
    model: Forecaster,
    series: list[SplitSeries],
    prediction_length: int,
    context_length: int,
    *,
    hide_labels: bool,
    max_windows: int = MAX_BACKTEST_WINDOWS,
    on_window: Callable[[], None] | None = None,
) -> Backtest:
    """Rolling-origin forecasts over every series' holdout, all series batched per window.

    ``hide_labels``: labelled points are NaN in the context (clean-accuracy pass); otherwise
    only the fit part's labelled points are (the masked training target)."""
    levels = [float(q) for q in model.quantile_levels]
    ctx = {s.item_id: _context_values(s, hide_labels) for s in series}
    bt = Backtest(
        mean={s.item_id: np.full(s.n, np.nan) for s in series},
        quantiles={s.item_id: {q: np.full(s.n, np.nan) for q in levels} for s in series},
    )
    for k in windows(series, prediction_length, max_windows):
        context, positions = _window_context(
            series, ctx, k, context_length, prediction_length, model.step_ms
        )
        if context is None:
            continue
        t0 = time.perf_counter()
        try:
            fc = model.forecast(context)
        except Exception as e:  # never register a predictor that cannot predict
            raise ModelError(f"the fitted predictor failed to predict: {e}") from None
        bt.predict_seconds += time.perf_counter() - t0
        bt.n_windows += 1
        _store(bt, fc, positions, prediction_length, levels)
        if on_window is not None:
            on_window()
    if bt.n_windows == 0:
        raise ModelError("the holdout produced no forecast windows")
    return bt


def _context_values(s: SplitSeries, hide_labels: bool) -> np.ndarray:
    v = s.y.copy()
    if hide_labels:
        v[s.label] = np.nan
    else:
        # Before the holdout the detector would have run with its own flags; the masked
        # training target is the closest stand-in for that history.
        v[: s.start][s.label[: s.start]] = np.nan
    return v


def _window_context(
    series: list[SplitSeries],
    ctx: dict[str, np.ndarray],
    k: int,
    context_length: int,
    prediction_length: int,
    step_ms: int,
) -> tuple[ContextBatch | None, list[int]]:
    """The context of window ``k`` and where each of its series' forecast starts."""
    ids, last, rows, positions = [], [], [], []
    for s in series:
        pos = s.start + k * prediction_length
        if pos >= s.n or pos == 0:
            continue
        lo = max(0, pos - context_length)
        ids.append(s.item_id)
        last.append(int(s.timestamps[pos - 1].value // 1_000_000))
        rows.append(ctx[s.item_id][lo:pos])
        positions.append(pos)
    if not ids:
        return None, []
    return ContextBatch.from_rows(ids, last, rows, step_ms), positions


def _store(
    bt: Backtest,
    fc: ForecastBatch,
    positions: list[int],
    prediction_length: int,
    levels: list[float],
) -> None:
    for i, (item, pos) in enumerate(zip(fc.ids, positions, strict=True)):
        m = min(prediction_length, len(bt.mean[item]) - pos, fc.horizon)
        bt.mean[item][pos : pos + m] = fc.mean[i, :m]
        for q in levels:
            bt.quantiles[item][q][pos : pos + m] = fc.quantile(q)[i, :m]
