"""The RecursiveTabular fast path against AutoGluon's own predict, on the session's real model
(trained, registered and loaded through MLflow like the detector does)."""

from __future__ import annotations

import numpy as np
import pytest
from detector_helpers import ProductionModel
from stand_ins import contexts

from iot_mlops.lifecycle.registry import load_forecaster
from iot_mlops.model.batch import ContextBatch
from iot_mlops.model.fast_path import RecursiveTabularFastPath
from iot_mlops.model.forecaster import Forecaster

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def forecaster(production_model: ProductionModel) -> Forecaster:
    return load_forecaster(production_model.settings, version=production_model.version)


def test_fast_path_is_on_and_equals_autogluon(forecaster: Forecaster) -> None:
    assert forecaster.fast_path, "the session model is RecursiveTabular: the fast path applies"
    for seed in range(3):
        ctx = contexts(forecaster, seed)
        fast = forecaster.forecast(ctx)
        library = forecaster.library_forecast(ctx)
        assert fast.ids == library.ids and sorted(fast.quantiles) == sorted(library.quantiles)
        np.testing.assert_array_equal(fast.start_ms, library.start_ms)
        for q in library.quantiles:
            np.testing.assert_allclose(fast.quantile(q), library.quantile(q), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(fast.mean, library.mean, rtol=1e-6, atol=1e-6)


def test_a_fast_path_that_disagrees_is_turned_off(
    forecaster: Forecaster, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = RecursiveTabularFastPath.forecast

    def off_by_a_little(
        self: RecursiveTabularFastPath, batch: ContextBatch
    ) -> tuple[np.ndarray, dict[float, np.ndarray]]:
        mean, quantiles = original(self, batch)
        return mean + 1e-3, quantiles

    monkeypatch.setattr(RecursiveTabularFastPath, "forecast", off_by_a_little)
    try:
        assert forecaster.enable_fast_path() is False
        assert not forecaster.fast_path
    finally:
        monkeypatch.undo()
        assert forecaster.enable_fast_path() is True
