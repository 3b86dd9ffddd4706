"""Data preparation: readings onto one regular grid per series, the frequency inferred and
checked, the training split."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from series_helpers import synthetic_readings

from iot_mlops.data.grid import freq_alias, min_series_length, prepare
from iot_mlops.errors import ConfigError
from iot_mlops.training.split import fit_frame, split_series


@pytest.mark.unit
def test_prepare_infers_frequency_and_series_ids() -> None:
    data = prepare(synthetic_readings(n=50))
    assert data.freq == "min"
    assert sorted(data.frame["item_id"].unique()) == [
        "pump-000/pressure",
        "pump-000/temperature",
        "pump-001/pressure",
        "pump-001/temperature",
    ]
    assert data.frame["timestamp"].dt.tz is None  # AutoGluon wants tz-naive UTC
    assert data.n_gaps == 0


@pytest.mark.unit
def test_prepare_regularises_small_gaps_and_duplicates() -> None:
    df = synthetic_readings(n_devices=1, metrics=("temperature",), n=100)
    df = df.drop(index=[10, 11, 50])  # gaps
    df = pd.concat([df, df.iloc[[20]]])  # a duplicate reading
    data = prepare(df)
    g = data.frame
    assert len(g) == 100 and data.n_gaps == 3
    assert g["target"].isna().sum() == 3
    assert (g["timestamp"].diff().dropna() == pd.Timedelta(minutes=1)).all()


@pytest.mark.unit
def test_mixed_intervals_are_a_clear_error() -> None:
    a = synthetic_readings(n_devices=1, metrics=("temperature",), n=100, step="1min")
    b = synthetic_readings(n_devices=1, metrics=("pressure",), n=100, step="30s")
    with pytest.raises(ConfigError, match="different intervals"):
        prepare(pd.concat([a, b]))


@pytest.mark.unit
def test_irregular_series_is_a_clear_error() -> None:
    rng = np.random.default_rng(1)
    df = synthetic_readings(n_devices=1, metrics=("temperature",), n=100)
    jitter = pd.to_timedelta(rng.integers(1, 50, len(df)), unit="s")
    df["timestamp"] = df["timestamp"] + jitter
    with pytest.raises(ConfigError, match="no regular sampling interval"):
        prepare(df)


@pytest.mark.unit
def test_missing_columns_and_empty_data() -> None:
    with pytest.raises(ConfigError, match="lacks columns"):
        prepare(synthetic_readings(n=10).drop(columns=["metric_value"]))
    with pytest.raises(ConfigError, match="no rows"):
        prepare(synthetic_readings(n=10).iloc[:0])


@pytest.mark.unit
def test_split_drops_short_series_and_masks_labels() -> None:
    need = min_series_length(12, 0.2)
    long = synthetic_readings(n_devices=1, metrics=("temperature",), n=200, spikes=5)
    short = synthetic_readings(n_devices=1, metrics=("pressure",), n=need - 1)
    series, dropped = split_series(prepare(pd.concat([long, short])), 12, 0.2)
    assert [s.item_id for s in series] == ["pump-000/temperature"]
    assert dropped and "pump-000/pressure" in dropped[0]
    s = series[0]
    assert s.n - s.start == 40  # last 20 %
    train = fit_frame(series)
    assert len(train) == s.start
    labelled_in_train = s.label[: s.start]
    assert labelled_in_train.any()
    assert np.isnan(train["target"].to_numpy()[labelled_in_train]).all()
    assert not np.isnan(train["target"].to_numpy()[~labelled_in_train]).any()


@pytest.mark.unit
def test_all_series_too_short_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="too short") as e:
        split_series(prepare(synthetic_readings(n=30)), 12, 0.2)
    assert "prediction-length" in (e.value.fix or "")


@pytest.mark.unit
def test_freq_alias_lower_case() -> None:
    assert freq_alias(pd.Timedelta(seconds=60)) == "min"
    assert freq_alias(pd.Timedelta(seconds=1)) == "s"
    assert freq_alias(pd.Timedelta(seconds=90)) == "90s"
