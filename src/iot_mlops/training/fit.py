"""The AutoGluon fit: the offline model set and per-model settings that make training match
how the detector runs the model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from iot_mlops.config import Settings
from iot_mlops.errors import ConfigError, ModelError

# Pretrained foundation models need a model hub, which nothing here can reach.
PRETRAINED = ("Chronos", "Chronos2", "Chronos-2", "Toto", "Toto2")
# A calendar feature is used only when the training data shows its cycle at least this many
# times (in the median series): a tree model that saw one value of day_of_year, or the hours of
# half a day, extrapolates blindly on the next. Month and year cycles are never learnable from
# the weeks of history this trains on, so they are not listed.
_MIN_CYCLES = 2
_CYCLE = {
    "second_of_minute": pd.Timedelta(minutes=1),
    "minute_of_hour": pd.Timedelta(hours=1),
    "hour_of_day": pd.Timedelta(days=1),
    "day_of_week": pd.Timedelta(days=7),
}


def parse_models(spec: str | list[str] | tuple[str, ...]) -> list[str]:
    from autogluon.timeseries.models.registry import ModelRegistry

    names = [m.strip() for m in (spec.split(",") if isinstance(spec, str) else spec)]
    names = [m for m in names if m]
    if not names:
        raise ConfigError("no models given", fix="e.g. --models DirectTabular,RecursiveTabular")
    known = sorted(
        a
        for a in ModelRegistry.available_aliases()
        if not a.startswith("Abstract") and a != "MultiWindowBacktesting"
    )
    for m in names:
        if m in PRETRAINED:
            raise ConfigError(
                f"{m} is a pretrained model that must be downloaded from a model hub, "
                "which is not reachable here",
                fix="choose offline models, e.g. DirectTabular,RecursiveTabular,SeasonalNaive,ETS",
            )
        if m not in known:
            raise ConfigError(
                f"unknown AutoGluon model {m!r}",
                fix=f"choose from: {', '.join(k for k in known if k not in PRETRAINED)}",
            )
    return names


def hyperparameters(
    models: list[str],
    freq: str,
    context_length: int,
    span: pd.Timedelta,
    date_features: bool = True,
) -> dict[str, dict[str, Any]]:
    """Per-model settings that make training match how the detector runs the model."""
    from autogluon.timeseries.models.local.abstract_local_model import AbstractLocalModel
    from autogluon.timeseries.models.registry import ModelRegistry
    from autogluon.timeseries.utils.datetime import (
        get_lags_for_frequency,
        get_time_features_for_frequency,
    )

    # The detector passes only context_length points: lags beyond it would be features the
    # model saw in training and never at inference.
    lags = [lag for lag in get_lags_for_frequency(freq) if lag < context_length]
    calendar = [
        f
        for f in (get_time_features_for_frequency(freq) if date_features else [])
        if f.__name__ in _CYCLE and span >= _MIN_CYCLES * _CYCLE[f.__name__]
    ]
    hp: dict[str, dict[str, Any]] = {}
    for m in models:
        cls = ModelRegistry.get_model_class(m)
        if m in ("DirectTabular", "RecursiveTabular", "PerStepTabular"):
            hp[m] = {"lags": lags, "date_features": calendar}
            if m == "RecursiveTabular":
                hp[m]["differences"] = []
        elif issubclass(cls, AbstractLocalModel):
            # One process per core by default: contention in the detector, not speed.
            hp[m] = {"n_jobs": 1}
        else:
            hp[m] = {}
    return hp


def fit_predictor(
    train_df: pd.DataFrame,
    settings: Settings,
    models: list[str],
    freq: str,
    path: Path,
    time_limit: int,
) -> Any:
    from autogluon.timeseries import TimeSeriesDataFrame, TimeSeriesPredictor

    tsdf = TimeSeriesDataFrame(train_df.set_index(["item_id", "timestamp"]))
    ts = train_df.groupby("item_id", sort=False)["timestamp"]
    span = (ts.max() - ts.min()).median()  # what a typical series shows of each cycle
    predictor = TimeSeriesPredictor(
        prediction_length=settings.prediction_length,
        freq=freq,
        target="target",
        eval_metric="WQL",
        quantile_levels=sorted(float(q) for q in settings.quantile_levels),
        path=str(path),
        verbosity=1,
        cache_predictions=False,
    )
    predictor.fit(
        tsdf,
        hyperparameters=hyperparameters(
            models, freq, settings.context_length, span, settings.train_date_features
        ),
        time_limit=time_limit,
        enable_ensemble=False,
        num_val_windows=1,
        random_seed=123,
    )
    names = predictor.model_names()
    if not names:
        raise ModelError(
            f"AutoGluon trained no model out of {models} within {time_limit} s",
            fix="raise --time-limit or choose cheaper models",
        )
    return predictor
