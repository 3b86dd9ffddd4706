"""The forecaster the detector uses, and the data preparation shared with training.

``Forecaster`` is the contract between training and the detector: it wraps a trained AutoGluon
predictor with the metadata that was versioned with it (frequency, horizon, context length,
quantile levels and the calibrated anomaly threshold). ``forecast`` takes a long context frame
(item_id, timestamp, target) and returns, per item, ``prediction_length`` rows with ``mean`` and
one column per quantile (``"0.01"``, ...), timestamps continuing the item's grid.

The data helpers here turn readings (the parquet written by ``collect``/``simulate``) into a
regular grid per series, so the frequency the model was trained on is the one the detector
aligns readings to.
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from iot_mlops.errors import ConfigError
from iot_mlops.events import series_id
from iot_mlops.model.metadata import ModelMetadata
from iot_mlops.model.pyfunc import ForecastModel, finish_forecast, prepare_context
from iot_mlops.scoring.calibrate import Calibration

log = logging.getLogger(__name__)

# A series may miss this share of its grid points (regularised to NaN, which AutoGluon fills)
# before we call the data broken rather than gappy.
MAX_GAP_FRACTION = 0.25
# The modal interval must account for at least this share of a series' steps; below it the
# series has no single sampling interval.
MIN_MODAL_SHARE = 0.5


class Forecaster:
    """A trained forecaster plus the calibration fitted with it (see module doc)."""

    def __init__(
        self,
        model: ForecastModel,
        name: str = "local",
        version: str | None = None,
        calibration: Calibration | None = None,
    ) -> None:
        """``calibration`` stands in for the metadata's (training's calibration pass, which
        runs before there is one); a model to serve must carry its own."""
        where = f"{name} version {version}" if version else f"model {name!r}"
        meta = ModelMetadata.from_dict(
            model.metadata, model=where, require_calibration=calibration is None
        )
        self._model = model
        self.name = name
        self.version = version
        self.metadata = meta
        self.freq: str = meta.freq
        self.prediction_length: int = meta.prediction_length
        self.context_length: int = meta.context_length
        self.quantile_levels: tuple[float, ...] = meta.quantile_levels
        cal = calibration or meta.calibration
        assert cal is not None  # from_dict required it
        self.calibration: Calibration = cal
        # Set by enable_fast_path once verified: a faster equivalent of the predictor's predict.
        self._fast: Any = None

    @property
    def predictor(self) -> Any:
        return self._model.predictor

    @property
    def model_name(self) -> str | None:
        """The AutoGluon model inside the predictor that produces the forecasts."""
        return self._model.model_name

    @property
    def metrics(self) -> dict[str, float]:
        return dict(self.metadata.metrics)

    def forecast(self, context: pd.DataFrame) -> pd.DataFrame:
        """context: long frame (item_id, timestamp, target), tz-naive UTC or tz-aware, NaN for
        gaps, on the ``freq`` grid. Returns item_id, timestamp, mean and the quantile columns,
        ``prediction_length`` rows per item (timestamps tz-aware UTC when the input was)."""
        if self._fast is None:
            # The logged model's own code (which may predate this package's version).
            return self._model.forecast(context)
        df, tz_aware = prepare_context(context, self.context_length)
        try:
            out = self._fast(df)
        except Exception as e:  # never let the optimisation take the detector down
            log.warning(
                "forecast fast path failed (%s: %s); using AutoGluon's", type(e).__name__, e
            )
            self._fast = None
            return self._model.forecast(context)
        return finish_forecast(out, tz_aware, self._model.metadata)

    def prepare(self, single_process: bool = True, warm_up: bool = True) -> Forecaster:
        """Make the predictor ready for the hot path: models kept in memory, no worker pools,
        and the first (slow: imports, lazy init) predict call paid now instead of on a
        reading."""
        predictor = self._model.predictor
        # Persisting is an optimisation (~20 ms per call), never fatal.
        with contextlib.suppress(Exception):
            predictor.persist()
        if single_process:
            _force_single_process(predictor)
        # Checking the fast path forecasts through both paths, which warms them up; only a
        # model the fast path does not handle still needs a warm-up call of its own.
        if not self.enable_fast_path() and warm_up:
            self.forecast(self.example_context(n_items=2))
        return self

    @property
    def fast_path(self) -> bool:
        return self._fast is not None

    def enable_fast_path(self) -> bool:
        """Use ``iot_mlops.model.fast_path`` when the model is one it reproduces and it gives
        the library's forecasts on check contexts (gaps, short and constant series included);
        otherwise keep AutoGluon's predict. Returns whether it is on."""
        from iot_mlops.model.fast_path import RecursiveTabularFastPath, Unsupported

        self._fast = None
        try:
            fast = RecursiveTabularFastPath(
                self.predictor, self._model.model_name, self.prediction_length
            )
        except Unsupported as e:
            log.info("forecast fast path off: %s", e)
            return False
        except Exception as e:  # AutoGluon internals moved: the library path still works
            log.warning("forecast fast path off: %s: %s", type(e).__name__, e)
            return False
        check = self.check_contexts()
        # Together and alone: a call of short series only has a narrower matrix.
        checks = [check, check[check["item_id"] == "check/short"]]
        expected = [self._model.forecast(c) for c in checks]
        self._fast = fast.forecast
        try:
            problem = None
            for c, e in zip(checks, expected, strict=True):
                problem = problem or _forecast_mismatch(e, self.forecast(c))
        except Exception as e:  # any failure means: not equivalent, use the library
            problem = f"{type(e).__name__}: {e}"
        if problem:
            self._fast = None
            log.warning("forecast fast path off, it disagrees with AutoGluon: %s", problem)
            return False
        log.info("forecast fast path on (%s, verified against AutoGluon)", self._model.model_name)
        return True

    def check_contexts(self) -> pd.DataFrame:
        """Contexts that exercise the cases the fast path must get right."""
        rng = np.random.default_rng(0)
        base = self.example_context(n_items=3)
        n = self.context_length
        parts = [base]
        noisy = base[base["item_id"] == base["item_id"].iloc[0]].copy()
        noisy["item_id"] = "check/noisy-gappy"
        target = noisy["target"].to_numpy() * 10 + rng.normal(0, 3, n).cumsum()
        target[[0, 5, n // 2, n // 2 + 1, n - 3]] = np.nan  # gaps, including the first point
        noisy["target"] = target
        short = noisy.tail(max(8, n // 5)).copy()
        short["item_id"] = "check/short"
        short["target"] = rng.normal(1000.0, 50.0, len(short))
        flat = noisy.copy()
        flat["item_id"] = "check/constant"
        flat["target"] = 7.0
        parts += [noisy, short, flat]
        return pd.concat(parts, ignore_index=True)

    def example_context(self, n_items: int = 2, start: str = "2026-01-01") -> pd.DataFrame:
        """A small synthetic context on this model's grid (warm-up and input examples)."""
        n = self.context_length
        return example_context(self.freq, n, n_items=n_items, start=start)


def _forecast_mismatch(expected: pd.DataFrame, got: pd.DataFrame) -> str | None:
    """Why two forecasts differ (same items, steps and columns, values within 1e-6 of the
    series' scale), or None."""
    key = ["item_id", "timestamp"]
    a = expected.sort_values(key).reset_index(drop=True)
    b = got.sort_values(key).reset_index(drop=True)
    if len(a) != len(b) or not (a[key].to_numpy() == b[key].to_numpy()).all():
        return "different items or timestamps"
    cols = [c for c in a.columns if c not in key]
    if missing := [c for c in cols if c not in b.columns]:
        return f"missing columns {missing}"
    x, y = a[cols].to_numpy(dtype=float), b[cols].to_numpy(dtype=float)
    tol = 1e-6 * np.maximum(1.0, np.abs(x))
    bad = ~(np.abs(x - y) <= tol)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        return f"{cols[j]} of {a['item_id'][i]}: {x[i, j]!r} vs {y[i, j]!r}"
    return None


def _force_single_process(predictor: Any) -> None:
    """Local statistical models (ETS, Theta, ...) fan out to one process per core by default;
    in the detector that is contention, not speed. Set their ``n_jobs`` to 1 when present."""
    try:
        trainer = predictor._learner.load_trainer()
        for name in trainer.get_model_names():
            model = trainer.load_model(name)
            if hasattr(model, "n_jobs"):
                model.n_jobs = 1
    except Exception:  # best effort: internals differ across versions
        pass


def example_context(freq: str, n: int, n_items: int = 2, start: str = "2026-01-01") -> pd.DataFrame:
    idx = pd.date_range(start, periods=n, freq=freq)
    rows = []
    for i in range(n_items):
        t = np.arange(n, dtype="float64")
        rows.append(
            pd.DataFrame(
                {
                    "item_id": f"example-{i}/value",
                    "timestamp": idx,
                    "target": 50.0 + 5.0 * np.sin(2 * np.pi * t / 60.0) + i,
                }
            )
        )
    return pd.concat(rows, ignore_index=True)


# --- data preparation -------------------------------------------------------------------------


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


# --- accuracy metrics (numpy; clean points only) ----------------------------------------------


def mase_scale(history: np.ndarray) -> float:
    """Mean absolute one-step naive error on the training part: MASE's denominator. Lag 1,
    because seasonal lags (1440 for minute data) are longer than many training series."""
    h = history[np.isfinite(history)]
    if len(h) < 2:
        return float("nan")
    d = np.abs(np.diff(h))
    s = float(d.mean())
    return s if s > 0 else float("nan")


def wql(actual: np.ndarray, quantiles: dict[float, np.ndarray]) -> float:
    """Weighted quantile loss (AutoGluon's WQL): 2·Σ pinball / Σ|y|, averaged over levels."""
    denom = float(np.abs(actual).sum())
    if denom == 0 or len(actual) == 0:
        return float("nan")
    losses = []
    for q, pred in quantiles.items():
        diff = actual - pred
        losses.append(2.0 * float(np.maximum(q * diff, (q - 1) * diff).sum()) / denom)
    return float(np.mean(losses))
