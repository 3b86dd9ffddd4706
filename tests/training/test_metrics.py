"""Training's metrics and model set: WQL and the MASE scale, anomaly segments, the offline
AutoGluon model set and its per-model settings."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from iot_mlops.errors import ConfigError
from iot_mlops.training.fit import hyperparameters, parse_models
from iot_mlops.training.metrics import mase_scale, wql


@pytest.mark.unit
def test_wql_and_mase_scale() -> None:
    y = np.array([10.0, 10.0, 10.0, 10.0])
    assert wql(y, {0.5: y.copy()}) == 0.0
    # Median off by 1 everywhere: pinball 0.5 per point → 2·0.5·4 / 40.
    assert wql(y, {0.5: y + 1}) == pytest.approx(0.1)
    assert mase_scale(np.array([0.0, 1.0, 3.0, np.nan])) == pytest.approx(1.5)


@pytest.mark.unit
def test_anomaly_event_segments() -> None:
    from iot_mlops.training.split import segments

    assert segments(np.array([1, 1, 0, 0, 1, 0, 1], dtype=bool)) == [(0, 2), (4, 5), (6, 7)]
    assert segments(np.zeros(3, dtype=bool)) == []


@pytest.mark.unit
def test_model_set_is_offline_and_matches_the_detector() -> None:
    assert parse_models("DirectTabular, RecursiveTabular") == ["DirectTabular", "RecursiveTabular"]
    with pytest.raises(ConfigError, match="pretrained"):
        parse_models("Chronos")
    with pytest.raises(ConfigError, match="unknown AutoGluon model"):
        parse_models("NoSuchModel")
    hp = hyperparameters(
        ["DirectTabular", "RecursiveTabular", "ETS"], "min", 128, pd.Timedelta(days=2)
    )
    assert max(hp["DirectTabular"]["lags"]) < 128
    assert hp["RecursiveTabular"]["differences"] == []
    names = {f.__name__ for f in hp["DirectTabular"]["date_features"]}
    assert "hour_of_day" in names and "day_of_year" not in names and "day_of_week" not in names
    assert hp["ETS"] == {"n_jobs": 1}
    off = hyperparameters(["RecursiveTabular"], "min", 128, pd.Timedelta(days=30), False)
    assert off["RecursiveTabular"]["date_features"] == [] and off["RecursiveTabular"]["lags"]
    # A calendar feature needs two of its cycles in the typical series' history.
    short = hyperparameters(["DirectTabular"], "min", 128, pd.Timedelta(hours=10))
    assert [f.__name__ for f in short["DirectTabular"]["date_features"]] == ["minute_of_hour"]
