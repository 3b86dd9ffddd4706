"""The RecursiveTabular fast path against AutoGluon's own predict, on the session's real model
(trained, registered and loaded through MLflow like the detector does)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from detector_helpers import ProductionModel

from iot_mlops.lifecycle.registry import load_forecaster
from iot_mlops.model.fast_path import RecursiveTabularFastPath
from iot_mlops.model.forecaster import Forecaster

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def forecaster(production_model: ProductionModel) -> Forecaster:
    return load_forecaster(production_model.settings, version=production_model.version)


def _contexts(f: Forecaster, seed: int) -> pd.DataFrame:
    """Series the model saw in training and new ones, of several lengths, with gaps."""
    rng = np.random.default_rng(seed)
    frames = []
    end = pd.Timestamp("2026-11-20T12:00:00")
    step = pd.Timedelta(pd.tseries.frequencies.to_offset(f.freq))
    for i, n in enumerate([f.context_length, f.context_length, 40, 90, f.context_length + 30]):
        t = np.arange(n)
        y = 20 + 5 * np.sin(2 * np.pi * t / 60) + rng.normal(0, 1, n).cumsum() * 0.3
        y[rng.choice(n, size=n // 10, replace=False)] = np.nan
        frames.append(
            pd.DataFrame(
                {
                    "item_id": f"new-{i}/value",
                    "timestamp": pd.date_range(end=end - i * step, periods=n, freq=step),
                    "target": y,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def test_fast_path_is_on_and_equals_autogluon(forecaster: Forecaster) -> None:
    assert forecaster.fast_path, "the session model is RecursiveTabular: the fast path applies"
    for seed in range(3):
        ctx = _contexts(forecaster, seed)
        fast = forecaster.forecast(ctx).sort_values(["item_id", "timestamp"])
        library = forecaster._model.forecast(ctx).sort_values(["item_id", "timestamp"])
        assert list(fast.columns) == list(library.columns)
        assert (
            fast[["item_id", "timestamp"]].to_numpy()
            == library[["item_id", "timestamp"]].to_numpy()
        ).all()
        cols = [c for c in fast.columns if c not in ("item_id", "timestamp")]
        np.testing.assert_allclose(
            fast[cols].to_numpy(float), library[cols].to_numpy(float), rtol=1e-6, atol=1e-6
        )


def test_a_fast_path_that_disagrees_is_turned_off(
    forecaster: Forecaster, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = RecursiveTabularFastPath.forecast

    def off_by_a_little(self: RecursiveTabularFastPath, df: pd.DataFrame) -> pd.DataFrame:
        out = original(self, df)
        out["mean"] += 1e-3
        return out

    monkeypatch.setattr(RecursiveTabularFastPath, "forecast", off_by_a_little)
    try:
        assert forecaster.enable_fast_path() is False
        assert not forecaster.fast_path
    finally:
        monkeypatch.undo()
        assert forecaster.enable_fast_path() is True


def test_a_series_forecast_does_not_depend_on_its_batch(forecaster: Forecaster) -> None:
    # Replicas batch series differently; a series must be forecast bit for bit the same.
    ctx = _contexts(forecaster, seed=7)
    together = forecaster.forecast(ctx)
    for item in ctx["item_id"].unique():
        alone = forecaster.forecast(ctx[ctx["item_id"] == item]).reset_index(drop=True)
        same = together[together["item_id"] == item].reset_index(drop=True)
        pd.testing.assert_frame_equal(alone, same, check_exact=True)
