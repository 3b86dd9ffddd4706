"""Typed model metadata: round trip, and clear refusals of older or foreign models."""

from __future__ import annotations

import pytest

from iot_mlops.errors import ModelError
from iot_mlops.model.metadata import SCHEMA_VERSION, ModelMetadata
from iot_mlops.model.pyfunc import SCHEMA_VERSION as PYFUNC_SCHEMA_VERSION
from iot_mlops.model.pyfunc import check_metadata
from iot_mlops.scoring.calibrate import Calibration

pytestmark = pytest.mark.unit


def _meta() -> ModelMetadata:
    return ModelMetadata(
        freq="min", prediction_length=4, context_length=64,
        quantile_levels=(0.01, 0.5, 0.99), best_model="RecursiveTabular",
        models=("RecursiveTabular",),
    )  # fmt: skip


def test_round_trip_after_calibration() -> None:
    m = _meta().calibrated(Calibration(threshold=3.0), {"mase": 0.8}, {"hash": "abc"})
    back = ModelMetadata.from_dict(m.to_dict())
    assert back == m
    assert back.calibration is not None and back.calibration.threshold == 3.0
    assert SCHEMA_VERSION == PYFUNC_SCHEMA_VERSION


def test_an_older_or_foreign_model_is_refused_with_the_fix() -> None:
    d = _meta().calibrated(Calibration(), {}, {}).to_dict()
    for bad in ({**d, "format_version": 0}, {k: v for k, v in d.items() if k != "format_version"}):
        with pytest.raises(ModelError, match="metadata version") as e:
            ModelMetadata.from_dict(bad, model="models:/M/3")
        assert "models:/M/3" in str(e.value) and "iot-mlops train" in str(e.value)
    with pytest.raises(ModelError, match="no iot-mlops metadata"):
        ModelMetadata.from_dict({}, model="models:/M/4")
    with pytest.raises(ModelError, match="lacks calibration"):
        ModelMetadata.from_dict(_meta().to_dict(), model="models:/M/5")
    with pytest.raises(ModelError, match="invalid"):
        ModelMetadata.from_dict({**d, "prediction_length": "four"})
    with pytest.raises(ModelError):
        check_metadata({**d, "format_version": 2})


def test_uncalibrated_metadata_is_accepted_only_when_asked() -> None:
    m = ModelMetadata.from_dict(_meta().to_dict(), require_calibration=False)
    assert m.calibration is None
