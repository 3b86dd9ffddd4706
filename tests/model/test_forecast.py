"""Data preparation, metrics, the promotion rule, and the ``Forecaster`` contract the detector
relies on (one tiny real AutoGluon fit, no MLflow)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from series_helpers import synthetic_readings

from iot_mlops.errors import ConfigError
from iot_mlops.lifecycle import registry
from iot_mlops.model.forecaster import (
    Forecaster,
    freq_alias,
    mase_scale,
    min_series_length,
    prepare,
    wql,
)
from iot_mlops.model.pyfunc import ForecastModel
from iot_mlops.training.fit import hyperparameters, parse_models
from iot_mlops.training.split import fit_frame, split_series

# --- data preparation --------------------------------------------------------------------------


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


# --- metrics and model set ---------------------------------------------------------------------


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


@pytest.mark.unit
def test_promotion_rule() -> None:
    assert registry.compare({"mase": 0.5}, {"mase": 0.6})[0]
    assert registry.compare({"mase": 0.6}, {"mase": 0.6})[0]
    ok, why = registry.compare({"mase": 0.7}, {"mase": 0.6})
    assert not ok and "0.7000" in why and "0.6000" in why
    assert not registry.compare({"mase": 0.5, "f1": 0.5}, {"mase": 0.6, "f1": 0.9})[0]
    assert registry.compare({"mase": 0.5, "f1": 0.88}, {"mase": 0.6, "f1": 0.9})[0]
    assert not registry.compare({}, {"mase": 0.6})[0]
    assert registry.compare({"mase": 0.9}, {})[0]  # nothing to beat


# --- the Forecaster contract (one tiny real fit) ----------------------------------------------


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


@pytest.mark.slow
@pytest.mark.integration
def test_forecaster_contract(naive_forecaster: Forecaster) -> None:
    f = naive_forecaster
    assert f.freq == "min" and f.prediction_length == 6 and f.context_length == 32
    assert f.quantile_levels == (0.01, 0.5, 0.99)
    assert f.calibration.threshold == 2.0 and f.calibration.upper_column == "0.99"
    ts = pd.date_range("2026-12-01 10:00", periods=50, freq="min")
    ctx = pd.DataFrame(
        {
            "item_id": ["a/x"] * 50 + ["b/y"] * 50,
            "timestamp": list(ts) * 2,
            "target": np.r_[np.arange(50.0), np.full(50, 7.0)],
        }
    )
    ctx.loc[45, "target"] = np.nan  # a gap is allowed
    out = f.forecast(ctx.sample(frac=1, random_state=0))  # order must not matter
    assert list(out.columns[:3]) == ["item_id", "timestamp", "mean"]
    assert {"0.01", "0.5", "0.99"} <= set(out.columns)
    assert out.groupby("item_id").size().to_dict() == {"a/x": 6, "b/y": 6}
    a = out[out["item_id"] == "a/x"]
    expected = pd.date_range("2026-12-01 10:50", periods=6, freq="min")
    assert list(a["timestamp"]) == list(expected)  # continues the grid
    assert (a["0.5"] == 49.0).all()  # Naive: last value
    assert (out["0.01"] <= out["0.5"]).all() and (out["0.5"] <= out["0.99"]).all()
    # tz-aware in → tz-aware UTC out, same instants.
    aware = ctx.assign(timestamp=ctx["timestamp"].dt.tz_localize("UTC"))
    out2 = f.forecast(aware)
    assert str(out2["timestamp"].dt.tz) == "UTC"
    assert sorted(out2["timestamp"].dt.tz_localize(None)) == sorted(out["timestamp"])
