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

from iot_mlops.model.batch import ContextBatch

log = logging.getLogger(__name__)


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

    def forecast(self, batch: ContextBatch) -> tuple[np.ndarray, dict[float, np.ndarray]]:
        """The mean (n, horizon) and one (n, horizon) matrix per quantile level, rows in the
        batch's order, as the predictor would forecast the batch's series."""
        n = len(batch)
        keep = batch.lengths.astype(np.int64)
        width = int(keep.max())
        if self.max_len is not None:
            width = min(width, self.max_len)
        keep = np.minimum(keep, width)
        # ``valid`` marks real positions (left padding is not part of the series). ``pad``
        # NaN columns more on the left make a lag longer than the history NaN, as in
        # mlforecast.
        pad = max(self.lags)
        hist = batch.values[:, batch.width - width :].astype(np.float64, copy=True)
        valid = np.arange(width)[None, :] >= (width - keep)[:, None]
        hist[~valid] = np.nan
        hist = pd.DataFrame(hist).ffill(axis=1).bfill(axis=1).to_numpy()
        empty = np.isnan(hist).all(axis=1)
        if empty.any() and self.median is not None:
            hist[empty] = self.median
        hist[~valid] = np.nan
        loc, scale = self._scaling(hist, keep, width)
        y = np.full((n, pad + width + self.horizon), np.nan)
        y[:, pad : pad + width] = (hist - loc[:, None]) / scale[:, None]
        base = pd.to_datetime(batch.last_ms, unit="ms")
        x = np.empty((n, len(self.lgb_features)))
        for h in range(self.horizon):
            t = pad + width + h  # column of this step
            for j, k in self.lag_cols:
                x[:, j] = y[:, t - k]
            if self.date_cols:
                dates = base + (h + 1) * self.step
                for j, fn in self.date_cols:
                    x[:, j] = np.asarray(getattr(dates, fn) if isinstance(fn, str) else fn(dates))
            y[:, t] = self.booster.predict(x, num_threads=1)
        mean = y[:, pad + width :] * scale[:, None] + loc[:, None]
        return mean, self._quantiles(np.asarray(batch.ids, dtype=object), mean, hist, valid)

    def _scaling(
        self, hist: np.ndarray, keep: np.ndarray, width: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """The model's per-series standard scaling (mean, sample std floored at min_scale),
        row by row on each series' own values: the same arithmetic whatever other series
        share the call (a batch-wide reduction rounds differently with the batch's shape, and
        replicas must score a series identically however it is batched)."""
        n = len(hist)
        loc, scale = np.zeros(n), np.ones(n)
        if not self.standard:
            return loc, scale
        for i in range(n):
            v = hist[i, width - keep[i] :]
            m = float(np.mean(v))
            sd = float(np.std(v, ddof=1)) if len(v) > 1 else math.nan
            loc[i] = m if math.isfinite(m) else 0.0
            scale[i] = max(sd, self.min_scale) if math.isfinite(sd) else 1.0
        return loc, scale

    def _quantiles(
        self, ids: np.ndarray, mean: np.ndarray, hist: np.ndarray, valid: np.ndarray
    ) -> dict[float, np.ndarray]:
        """The model's Gaussian quantiles: its residual std per item (for items it did not see
        in training, the in-sample seasonal error of their history), times sqrt(step)."""
        from autogluon.timeseries.metrics.utils import in_sample_squared_seasonal_error
        from scipy.stats import norm

        m = self.model
        std = m._residuals_std_per_item.reindex(ids).to_numpy(dtype=np.float64)
        unseen = np.isnan(std)
        if unseen.any():
            # Only the unseen items' (filled) history, in order; item ids are unique per call.
            rows_unseen = valid & unseen[:, None]
            idx = pd.Index(np.repeat(ids, rows_unseen.sum(axis=1)), name="item_id")
            y_past = pd.Series(hist[rows_unseen], index=idx)
            err = in_sample_squared_seasonal_error(y_past=y_past).pow(0.5)
            std[unseen] = err.reindex(ids[unseen]).to_numpy(dtype=np.float64)
        h = self.horizon
        spread = std[:, None] * np.sqrt(np.arange(1, h + 1))[None, :]
        return {float(q): mean + norm.ppf(q) * spread for q in m.quantile_levels}
