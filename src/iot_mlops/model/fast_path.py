"""A fast, verified path for AutoGluon's ``RecursiveTabular`` forecasts.

Why: a detector refresh forecasts every due series in one call, but the calls of one series are
sequential, so their fixed cost sets the throughput. Profiled (py-spy) on a 60-series call,
``TimeSeriesPredictor.predict`` spends most of its time in per-call checks and pandas work
around mlforecast's recursive loop, not in LightGBM. This path runs the same recursion on
numpy arrays and calls the fitted tabular model (AutoGluon's own feature pipeline + booster)
once per step:

* gaps filled like AutoGluon (forward, then backward fill; an all-gap series gets the
  training median), series shortened to the model's maximum length;
* the model's per-series standard scaling (mean, sample std, floored at ``min_scale``);
* lag features from the scaled series with each step's prediction appended, date features
  computed by the model's own functions, columns in the fitted order;
* inverse scaling, then the model's own Gaussian quantiles (``_add_gaussian_quantiles``).

It is used only for a model it knows (no differencing, lag transforms, covariates or static
features) and only after ``verify`` found it equal to ``TimeSeriesPredictor.predict`` on the
caller's contexts; otherwise the library path runs, so correctness never depends on it.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

ITEM, TS = "item_id", "timestamp"


class Unsupported(Exception):
    """The model is not one this path reproduces; the caller uses the library path."""


def _inner_model(predictor: Any, model_name: str | None) -> Any:
    from autogluon.timeseries.models.autogluon_tabular.mlforecast import RecursiveTabularModel

    trainer = predictor._learner.load_trainer()
    name = model_name or predictor.model_best
    model = trainer.load_model(name)
    # Backtesting wrappers forecast with their most recent fold's model.
    model = getattr(model, "most_recent_model", None) or model
    if not isinstance(model, RecursiveTabularModel):
        raise Unsupported(f"{name} is {type(model).__name__}, not RecursiveTabular")
    return model


def _booster(tabular: Any) -> tuple[Any, list[str]]:
    """The LightGBM booster inside AutoGluon's tabular wrapper and the columns it reads, when
    the wrapper's feature pipeline only passes numeric columns through (our lag and date
    features); then the booster on those columns is what the wrapper computes."""
    lgb = getattr(tabular, "model", None)
    booster = getattr(lgb, "model", None)
    if type(lgb).__name__ != "LGBModel" or not hasattr(booster, "predict"):
        raise Unsupported(f"tabular model {type(lgb).__name__}")
    pipeline = tabular.feature_pipeline
    raw_types = set(pipeline.feature_metadata_in.type_map_raw.values())
    if not raw_types <= {"float", "int"}:
        raise Unsupported(f"feature types {sorted(raw_types)}")
    features = list(lgb.features)
    if not set(features) <= set(pipeline.features_in) or lgb.problem_type != "regression":
        raise Unsupported("feature pipeline transforms columns")
    return booster, features


class RecursiveTabularFastPath:
    def __init__(self, predictor: Any, model_name: str | None, prediction_length: int) -> None:
        m = _inner_model(predictor, model_name)
        mlf = m._mlf
        ts = mlf.ts
        if m._sum_of_differences or m.covariate_metadata.known_covariates:
            raise Unsupported("differencing or known covariates")
        if getattr(ts, "static_features_", None) is not None and ts.static_features_.shape[1] > 1:
            raise Unsupported("static features")
        lag_names = {f"lag{int(k)}" for k in m._target_lags}
        if set(ts.transforms) != lag_names:
            raise Unsupported(f"lag transforms {sorted(set(ts.transforms) - lag_names)}")
        scaler = m._scaler
        if scaler is not None and scaler.scaler_type != "standard":
            raise Unsupported(f"target scaler {scaler.scaler_type}")
        if len(mlf.models_) != 1 or m.prediction_length != prediction_length:
            raise Unsupported("several regressors or another horizon")
        self.model = m
        tabular = next(iter(mlf.models_.values()))
        self.booster, self.lgb_features = _booster(tabular)
        self.lags = [int(k) for k in m._target_lags]
        self.date_features = list(ts.date_features)
        known = {f"lag{k}" for k in self.lags} | {
            fn if isinstance(fn, str) else fn.__name__ for fn in self.date_features
        }
        if unknown := [f for f in self.lgb_features if f not in known]:
            raise Unsupported(f"features this path does not compute: {unknown[:5]}")
        # The booster's column of each lag and date feature, fixed for the model's life.
        col = {name: j for j, name in enumerate(self.lgb_features)}
        self.lag_cols = [(col[f"lag{k}"], k) for k in self.lags if f"lag{k}" in col]
        self.date_cols = [
            (col[name], fn)
            for fn in self.date_features
            if (name := fn if isinstance(fn, str) else fn.__name__) in col
        ]
        self.standard = scaler is not None
        self.min_scale = 1e-2
        self.max_len = m._max_ts_length
        self.median = m._train_target_median
        try:
            self.step = pd.Timedelta(pd.tseries.frequencies.to_offset(m.freq))
        except ValueError:
            raise Unsupported(f"calendar frequency {m.freq}") from None
        self.horizon = prediction_length

    def forecast(self, df: pd.DataFrame) -> pd.DataFrame:
        """``df``: item_id, timestamp (naive), target, sorted by item then time, on the grid.
        Returns item_id, timestamp, mean and one column per quantile, like the predictor."""
        items = df[ITEM].to_numpy()
        starts = np.flatnonzero(np.r_[True, items[1:] != items[:-1]])
        counts = np.diff(np.r_[starts, len(items)])
        uniq = items[starts]
        n = len(uniq)
        width = int(counts.max())
        if self.max_len is not None:
            width = min(width, self.max_len)
        keep = np.minimum(counts, width)
        # Right-aligned matrix of each series' last ``width`` values; ``valid`` marks real
        # positions (left padding is not part of the series). ``pad`` NaN columns more on the
        # left make a lag longer than the history NaN, as in mlforecast.
        pad = max(self.lags)
        y = np.full((n, pad + width + self.horizon), np.nan)
        rows = np.repeat(np.arange(n), keep)
        j = np.arange(len(rows)) - np.repeat(np.cumsum(keep) - keep, keep)  # index within a row
        cols = width - keep[rows] + j
        src = np.repeat(starts + counts - keep, keep) + j
        values = df["target"].to_numpy(dtype=np.float64)
        valid = np.zeros((n, width), dtype=bool)
        valid[rows, cols] = True
        hist = np.full((n, width), np.nan)
        hist[rows, cols] = values[src]
        hist = pd.DataFrame(hist).ffill(axis=1).bfill(axis=1).to_numpy()
        empty = np.isnan(hist).all(axis=1)
        if empty.any() and self.median is not None:
            hist[empty] = self.median
        hist[~valid] = np.nan
        if self.standard:
            # Row by row on each series' own values: the same arithmetic whatever other series
            # share the call (a batch-wide reduction rounds differently with the batch's shape,
            # and replicas must score a series identically however it is batched).
            loc, scale = np.zeros(n), np.ones(n)
            for i in range(n):
                v = hist[i, width - keep[i] :]
                m = float(np.mean(v))
                sd = float(np.std(v, ddof=1)) if len(v) > 1 else math.nan
                loc[i] = m if math.isfinite(m) else 0.0
                scale[i] = max(sd, self.min_scale) if math.isfinite(sd) else 1.0
        else:
            loc, scale = np.zeros(n), np.ones(n)
        y[:, pad : pad + width] = (hist - loc[:, None]) / scale[:, None]
        last_ts = df[TS].to_numpy()[starts + counts - 1]
        base = pd.DatetimeIndex(last_ts)
        lag_cols, date_cols = self.lag_cols, self.date_cols
        x = np.empty((n, len(self.lgb_features)))
        for h in range(self.horizon):
            t = pad + width + h  # column of this step
            for j, k in lag_cols:
                x[:, j] = y[:, t - k]
            if date_cols:
                dates = base + (h + 1) * self.step
                for j, fn in date_cols:
                    x[:, j] = np.asarray(getattr(dates, fn) if isinstance(fn, str) else fn(dates))
            y[:, t] = self.booster.predict(x, num_threads=1)
        mean = y[:, pad + width :] * scale[:, None] + loc[:, None]
        return self._with_quantiles(uniq, last_ts, mean, hist, valid)

    def _with_quantiles(
        self,
        uniq: np.ndarray,
        last_ts: np.ndarray,
        mean: np.ndarray,
        hist: np.ndarray,
        valid: np.ndarray,
    ) -> pd.DataFrame:
        """The model's Gaussian quantiles: its residual std per item (for items it did not see
        in training, the in-sample seasonal error of their history), times sqrt(step)."""
        from autogluon.timeseries.metrics.utils import in_sample_squared_seasonal_error
        from scipy.stats import norm

        m = self.model
        std = m._residuals_std_per_item.reindex(uniq).to_numpy(dtype=np.float64)
        unseen = np.isnan(std)
        if unseen.any():
            # Only the unseen items' (filled) history, in order.
            rows_unseen = valid & unseen[:, None]
            idx = pd.Index(np.repeat(uniq, rows_unseen.sum(axis=1)), name=ITEM)
            y_past = pd.Series(hist[rows_unseen], index=idx)
            err = in_sample_squared_seasonal_error(y_past=y_past).pow(0.5)
            std[unseen] = err.reindex(uniq[unseen]).to_numpy(dtype=np.float64)
        h = self.horizon
        spread = std[:, None] * np.sqrt(np.arange(1, h + 1))[None, :]
        steps = np.arange(1, h + 1) * self.step.to_timedelta64()
        out = pd.DataFrame(
            {
                ITEM: np.repeat(uniq, h),
                TS: (last_ts[:, None] + steps[None, :]).ravel(),
                "mean": mean.ravel(),
            }
        )
        for q in m.quantile_levels:
            out[str(q)] = (mean + norm.ppf(q) * spread).ravel()
        return out
