"""The forecaster the detector uses.

``Forecaster`` is the contract between training and the detector: it wraps a trained AutoGluon
predictor with the metadata that was versioned with it (frequency, horizon, context length,
quantile levels and the calibrated anomaly threshold). ``forecast`` takes a ``ContextBatch``
(ids, last grid times, a values matrix) and returns a ``ForecastBatch`` (start times, mean and
one matrix per quantile level), ``prediction_length`` steps continuing each series' grid
(``iot_mlops.model.batch``). This module is the AutoGluon adapter: the long frames AutoGluon
takes are built and read here and nowhere else on the forecasting path.

"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import numpy as np
import pandas as pd

from iot_mlops.model.batch import ContextBatch, ForecastBatch, sorted_quantiles, step_ms
from iot_mlops.model.metadata import ModelMetadata
from iot_mlops.model.pyfunc import ForecastModel
from iot_mlops.scoring.calibrate import Calibration

log = logging.getLogger(__name__)


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

    @property
    def step_ms(self) -> int:
        return step_ms(self.freq)

    def forecast(self, batch: ContextBatch) -> ForecastBatch:
        """The next ``prediction_length`` steps of every series in ``batch`` (rows in its
        order), from at most its last ``context_length`` values; NaN values are gaps."""
        batch = batch.tail(self.context_length)
        if self._fast is not None:
            try:
                mean, quantiles = self._fast(batch)
                return ForecastBatch(
                    batch.ids, batch.last_ms + batch.step_ms, batch.step_ms, mean,
                    sorted_quantiles(quantiles),
                )  # fmt: skip
            except Exception as e:  # never let the optimisation take the detector down
                log.warning(
                    "forecast fast path failed (%s: %s); using AutoGluon's", type(e).__name__, e
                )
                self._fast = None
        return self.library_forecast(batch)

    def library_forecast(self, batch: ContextBatch) -> ForecastBatch:
        """The logged model's own code (which may predate this package's version) on the
        long frame AutoGluon takes: the one place the forecast passes through pandas."""
        return frame_to_forecast(self._model.forecast(context_to_frame(batch)), batch)

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
        checks = [check, check.select([check.ids.index("check/short")])]
        expected = [self.library_forecast(c) for c in checks]
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

    def check_contexts(self) -> ContextBatch:
        """Contexts that exercise the cases the fast path must get right."""
        rng = np.random.default_rng(0)
        base = self.example_context(n_items=3)
        n = self.context_length
        noisy = base.row(0) * 10 + rng.normal(0, 3, n).cumsum()
        noisy[[0, 5, n // 2, n // 2 + 1, n - 3]] = np.nan  # gaps, including the first point
        short = rng.normal(1000.0, 50.0, max(8, n // 5))
        rows = [base.row(i) for i in range(len(base))] + [noisy, short, np.full(n, 7.0)]
        ids = [*base.ids, "check/noisy-gappy", "check/short", "check/constant"]
        last = np.full(len(rows), base.last_ms[0])
        return ContextBatch.from_rows(ids, last, rows, base.step_ms)

    def example_context(self, n_items: int = 2, start: str = "2026-01-01") -> ContextBatch:
        """A small synthetic context on this model's grid (warm-up and input examples)."""
        frame = example_context(self.freq, self.context_length, n_items=n_items, start=start)
        return frame_to_context(frame, self.freq)


def _forecast_mismatch(expected: ForecastBatch, got: ForecastBatch) -> str | None:
    """Why two forecasts differ (same items, steps and quantiles, values within 1e-6 of the
    series' scale), or None."""
    if expected.ids != got.ids or not np.array_equal(expected.start_ms, got.start_ms):
        return "different items or start times"
    if sorted(expected.quantiles) != sorted(got.quantiles):
        return f"quantiles {sorted(got.quantiles)}, expected {sorted(expected.quantiles)}"
    pairs = [("mean", expected.mean, got.mean)] + [
        (str(q), m, got.quantile(q)) for q, m in expected.quantiles.items()
    ]
    for name, x, y in pairs:
        if x.shape != y.shape:
            return f"{name}: shape {y.shape}, expected {x.shape}"
        bad = ~(np.abs(x - y) <= 1e-6 * np.maximum(1.0, np.abs(x)))
        if bad.any():
            i, j = np.argwhere(bad)[0]
            return f"{name} of {expected.ids[i]}: {x[i, j]!r} vs {y[i, j]!r}"
    return None


def context_to_frame(batch: ContextBatch) -> pd.DataFrame:
    """The long frame (item_id, timestamp naive UTC, target) AutoGluon takes."""
    lengths = batch.lengths
    rows = np.repeat(np.arange(len(batch)), lengths)
    j = np.arange(len(rows)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    cols = batch.width - lengths[rows] + j
    stamps = batch.last_ms[rows] - (lengths[rows] - 1 - j) * batch.step_ms
    return pd.DataFrame(
        {
            "item_id": np.repeat(np.asarray(batch.ids, dtype=object), lengths),
            "timestamp": pd.to_datetime(stamps, unit="ms"),
            "target": batch.values[rows, cols],
        }
    )


def frame_to_context(frame: pd.DataFrame, freq: str) -> ContextBatch:
    """A long context frame (item_id, timestamp naive or tz-aware, target; every item on the
    ``freq`` grid without missing rows) as a batch, items in order of first appearance."""
    ts = pd.to_datetime(frame["timestamp"])
    if isinstance(ts.dtype, pd.DatetimeTZDtype):
        ts = ts.dt.tz_convert("UTC").dt.tz_localize(None)
    df = pd.DataFrame(
        {"item_id": frame["item_id"].astype(str).to_numpy(), "ms": ts.to_numpy()}
    ).assign(target=pd.to_numeric(frame["target"], errors="coerce").to_numpy(dtype=np.float64))
    df["ms"] = df["ms"].to_numpy().astype("datetime64[ms]").astype(np.int64)
    ids = list(dict.fromkeys(df["item_id"]))
    groups = {k: g.sort_values("ms", kind="stable") for k, g in df.groupby("item_id", sort=False)}
    step = step_ms(freq)
    for k, g in groups.items():
        if (np.diff(g["ms"].to_numpy()) != step).any():
            raise ValueError(f"context of {k!r} is not on the {freq} grid without missing rows")
    last = [int(groups[k]["ms"].iloc[-1]) for k in ids]
    return ContextBatch.from_rows(ids, last, [groups[k]["target"].to_numpy() for k in ids], step)


def frame_to_forecast(out: pd.DataFrame, batch: ContextBatch) -> ForecastBatch:
    """The predictor's long output (item_id, timestamp, mean, one column per quantile) as
    matrices in the batch's row order."""
    out = out.sort_values(["item_id", "timestamp"], kind="stable")
    items = out["item_id"].astype(str).to_numpy()
    uniq, first, counts = np.unique(items, return_index=True, return_counts=True)
    where = dict(zip(uniq.tolist(), first.tolist(), strict=True))
    horizon = int(counts.min()) if len(counts) else 0
    if missing := [k for k in batch.ids if k not in where]:
        raise RuntimeError(f"model returned no forecast for series {missing[0]!r}")
    if len(counts) and (counts != horizon).any():
        raise RuntimeError("model returned forecasts of different lengths")
    idx = np.array([where[k] for k in batch.ids], dtype=np.int64)[:, None] + np.arange(horizon)
    levels = [c for c in out.columns if _is_level(c)]
    return ForecastBatch(
        batch.ids,
        batch.last_ms + batch.step_ms,
        batch.step_ms,
        out["mean"].to_numpy(dtype=np.float64)[idx],
        {float(c): out[c].to_numpy(dtype=np.float64)[idx] for c in levels},
    )


def forecast_to_frame(fc: ForecastBatch) -> pd.DataFrame:
    """A forecast as the long frame the predictor returns (item_id, timestamp naive UTC, mean,
    one column per quantile), for people and plots rather than the hot path."""
    h = fc.horizon
    stamps = fc.start_ms[:, None] + np.arange(h, dtype=np.int64)[None, :] * fc.step_ms
    out = pd.DataFrame(
        {
            "item_id": np.repeat(np.asarray(fc.ids, dtype=object), h),
            "timestamp": pd.to_datetime(stamps.ravel(), unit="ms"),
            "mean": fc.mean.ravel(),
        }
    )
    for q in sorted(fc.quantiles):
        out[str(q)] = fc.quantiles[q].ravel()
    return out


def _is_level(column: object) -> bool:
    try:
        return 0.0 < float(str(column)) < 1.0
    except ValueError:
        return False


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
