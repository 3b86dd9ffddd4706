"""One contract run over every forecaster implementation (in the spirit of River's
``check_estimator``): the test stand-in, AutoGluon's own predict (a Naive model and the
session's RecursiveTabular model) and the verified fast path. Each must return one row per
context row in its order with the horizon and quantile levels it declares, continue each
series' grid, be deterministic, forecast a series the same whatever else shares the call, and
forecast the same after a save and load."""

from __future__ import annotations

import pickle
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from detector_helpers import ProductionModel
from series_helpers import synthetic_readings
from stand_ins import LastValueModel, contexts

from iot_mlops.data.grid import prepare
from iot_mlops.lifecycle.registry import load_forecaster
from iot_mlops.model.batch import ForecastBatch
from iot_mlops.model.forecaster import Forecaster, forecast_to_frame, frame_to_context
from iot_mlops.model.pyfunc import ForecastModel


@dataclass
class Impl:
    model: Any
    exact: bool  # bit-identical across batch compositions (else within 1e-6 relative)
    reload: Callable[[Path], Any]  # the model after a save and load


def _reload_autogluon(f: Forecaster, fast: bool) -> Callable[[Path], Forecaster]:
    def reload(tmp: Path) -> Forecaster:
        from autogluon.timeseries import TimeSeriesPredictor

        f.predictor.save()
        shutil.copytree(f.predictor.path, tmp / "predictor")
        loaded = TimeSeriesPredictor.load(str(tmp / "predictor"))
        g = Forecaster(ForecastModel.from_predictor(loaded, f._model.metadata), version="copy")
        g.prepare(warm_up=False)
        if not fast:
            g._fast = None
        return g

    return reload


@pytest.fixture(scope="module")
def naive_forecaster(tmp_path_factory: pytest.TempPathFactory) -> Forecaster:
    from autogluon.timeseries import TimeSeriesDataFrame, TimeSeriesPredictor

    data = prepare(synthetic_readings(n=200))
    tsdf = TimeSeriesDataFrame(
        data.frame.drop(columns="is_anomaly").set_index(["item_id", "timestamp"])
    )
    levels = [0.01, 0.5, 0.99]
    predictor = TimeSeriesPredictor(
        prediction_length=6,
        freq=data.freq,
        quantile_levels=levels,
        path=str(tmp_path_factory.mktemp("naive")),
        verbosity=0,
    )
    predictor.fit(tsdf, hyperparameters={"Naive": {"n_jobs": 1}}, enable_ensemble=False)
    meta = {
        "format_version": 1,
        "freq": data.freq,
        "prediction_length": 6,
        "context_length": 32,
        "quantile_levels": levels,
        "best_model": "Naive",
        "calibration": {"threshold": 2.0, "lower_quantile": 0.01, "upper_quantile": 0.99},
    }
    return Forecaster(ForecastModel.from_predictor(predictor, meta)).prepare()


@pytest.fixture(scope="module")
def recursive(production_model: ProductionModel) -> tuple[Forecaster, Forecaster]:
    """The session's registered RecursiveTabular model twice: fast path on, and off."""
    s, v = production_model.settings, production_model.version
    fast, library = load_forecaster(s, version=v), load_forecaster(s, version=v)
    assert fast.fast_path, "the session model is RecursiveTabular: the fast path applies"
    library._fast = None
    return fast, library


IMPLS = ["stand-in", "autogluon-naive", "autogluon-recursive", "fast-path"]


@pytest.fixture(params=IMPLS)
def impl(request: pytest.FixtureRequest) -> Impl:
    if request.param == "stand-in":
        m = LastValueModel()
        return Impl(m, True, lambda _tmp: pickle.loads(pickle.dumps(m)))
    if request.param == "autogluon-naive":
        f = request.getfixturevalue("naive_forecaster")
        return Impl(f, False, _reload_autogluon(f, fast=False))
    fast, library = request.getfixturevalue("recursive")
    if request.param == "fast-path":
        return Impl(fast, True, _reload_autogluon(fast, fast=True))
    return Impl(library, False, _reload_autogluon(library, fast=False))


def assert_same(a: ForecastBatch, b: ForecastBatch, exact: bool) -> None:
    assert a.ids == b.ids
    np.testing.assert_array_equal(a.start_ms, b.start_ms)
    pairs = [(a.mean, b.mean)] + [(m, b.quantile(q)) for q, m in a.quantiles.items()]
    for x, y in pairs:
        if exact:
            np.testing.assert_array_equal(x, y)
        else:
            np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-9)


@pytest.mark.integration
def test_shapes_order_and_grid(impl: Impl) -> None:
    m = impl.model
    ctx = contexts(m, seed=0)
    fc = m.forecast(ctx)
    assert fc.ids == ctx.ids
    assert fc.mean.shape == (len(ctx), m.prediction_length)
    assert sorted(fc.quantiles) == sorted(float(q) for q in m.quantile_levels)
    np.testing.assert_array_equal(fc.start_ms, ctx.last_ms + ctx.step_ms)
    assert fc.step_ms == ctx.step_ms
    assert np.isfinite(fc.mean).all()
    levels = sorted(fc.quantiles)
    for lo, hi in pairwise(levels):
        assert (fc.quantiles[lo] <= fc.quantiles[hi]).all()
    # Reversed rows: the same forecasts, reversed.
    rev = ctx.select(range(len(ctx) - 1, -1, -1))
    assert_same(m.forecast(rev), fc.select(range(len(fc.ids) - 1, -1, -1)), impl.exact)


@pytest.mark.integration
def test_deterministic(impl: Impl) -> None:
    ctx = contexts(impl.model, seed=1)
    assert_same(impl.model.forecast(ctx), impl.model.forecast(ctx), exact=True)


@pytest.mark.integration
def test_a_series_forecast_does_not_depend_on_its_batch(impl: Impl) -> None:
    # Replicas batch series differently; a series must be forecast the same alone.
    ctx = contexts(impl.model, seed=7)
    together = impl.model.forecast(ctx)
    for i in range(len(ctx)):
        assert_same(impl.model.forecast(ctx.select([i])), together.select([i]), impl.exact)


@pytest.mark.integration
def test_same_forecasts_after_save_and_load(impl: Impl, tmp_path: Path) -> None:
    ctx = contexts(impl.model, seed=3)
    assert_same(impl.reload(tmp_path).forecast(ctx), impl.model.forecast(ctx), exact=True)


@pytest.mark.integration
def test_naive_specifics_and_the_frame_adapters(naive_forecaster: Forecaster) -> None:
    f = naive_forecaster
    assert f.freq == "min" and f.prediction_length == 6 and f.context_length == 32
    assert f.quantile_levels == (0.01, 0.5, 0.99)
    assert f.calibration.threshold == 2.0 and f.calibration.upper_quantile == 0.99
    ts = pd.date_range("2026-12-01 10:00", periods=50, freq="min")
    frame = pd.DataFrame(
        {
            "item_id": ["a/x"] * 50 + ["b/y"] * 50,
            "timestamp": list(ts) * 2,
            "target": np.r_[np.arange(50.0), np.full(50, 7.0)],
        }
    )
    frame.loc[45, "target"] = np.nan  # a gap is allowed
    ctx = frame_to_context(frame.sample(frac=1, random_state=0), f.freq)  # order must not matter
    assert set(ctx.ids) == {"a/x", "b/y"} and ctx.width == 50
    out = forecast_to_frame(f.forecast(ctx))
    assert list(out.columns) == ["item_id", "timestamp", "mean", "0.01", "0.5", "0.99"]
    a = out[out["item_id"] == "a/x"]
    assert list(a["timestamp"]) == list(pd.date_range("2026-12-01 10:50", periods=6, freq="min"))
    assert (a["0.5"] == 49.0).all()  # Naive: last value, from its last 32 points
    # The MLflow pyfunc keeps the frame contract: tz-aware in → tz-aware UTC out.
    aware = frame.assign(timestamp=frame["timestamp"].dt.tz_localize("UTC"))
    out2 = f._model.forecast(aware)
    assert str(out2["timestamp"].dt.tz) == "UTC"
    assert sorted(out2["timestamp"].dt.tz_localize(None)) == sorted(out["timestamp"])
    with pytest.raises(ValueError, match="grid"):
        frame_to_context(frame.drop(index=[10]), f.freq)
