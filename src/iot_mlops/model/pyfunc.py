"""The MLflow pyfunc, logged as code (MLflow's "models from code").

Input: a context frame (``item_id``, ``timestamp``, ``target``) holding recent history per
series. Output: the forecast for the next ``prediction_length`` steps of each series
(``item_id``, ``timestamp``, ``mean`` and one column per quantile level, e.g. ``"0.01"``).
Never a frame with a made-up target: the seed system's one-row, target-0 input is exactly what
this contract rules out.

This file is executed by MLflow at load time, possibly where ``iot_mlops`` is not installed
(``mlflow models serve``), so it imports only MLflow, pandas and AutoGluon. The detector does
not go through ``predict`` (pyfunc schema enforcement costs time per call): it unwraps this
object and calls ``forecast`` directly (see ``iot_mlops.lifecycle.registry.load_forecaster``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

PREDICTOR_ARTIFACT = "predictor"
METADATA_ARTIFACT = "metadata"
# iot_mlops.model.metadata.SCHEMA_VERSION, for where iot_mlops is not installed.
SCHEMA_VERSION = 1


def _to_naive_utc(ts: pd.Series) -> tuple[pd.Series, bool]:
    """AutoGluon wants tz-naive timestamps; we treat naive input as UTC already."""
    if not pd.api.types.is_datetime64_any_dtype(ts.dtype):
        # Only when needed: on a datetime column to_datetime walks every value in Python
        # (12 % of a detector forecast call when profiled).
        ts = pd.to_datetime(ts, utc=False)
    if isinstance(ts.dtype, pd.DatetimeTZDtype):
        return ts.dt.tz_convert("UTC").dt.tz_localize(None), True
    return ts, False


def prepare_context(context: pd.DataFrame, context_length: int) -> tuple[pd.DataFrame, bool]:
    """The model's input: item_id (str), naive UTC timestamp, float target, sorted by item and
    time, at most ``context_length`` points per item. Returns it and whether the input was
    tz-aware."""
    missing = {"item_id", "timestamp", "target"} - set(context.columns)
    if missing:
        raise ValueError(f"context frame lacks columns {sorted(missing)}")
    ts, tz_aware = _to_naive_utc(context["timestamp"])
    df = pd.DataFrame(
        {
            "item_id": context["item_id"].astype(str).to_numpy(),
            "timestamp": ts.to_numpy(),
            "target": pd.to_numeric(context["target"], errors="coerce").astype("float64"),
        }
    )
    df = df.sort_values(["item_id", "timestamp"], kind="stable")
    # Only the last context_length points matter; trimming keeps predict cost bounded.
    if context_length > 0:
        df = df.groupby("item_id", sort=False).tail(context_length)
    return df, tz_aware


def finish_forecast(out: pd.DataFrame, tz_aware: bool, metadata: dict[str, Any]) -> pd.DataFrame:
    """String column names, timestamps back in UTC when the input had a zone, and quantile
    columns sorted per row."""
    out.columns = [str(c) for c in out.columns]
    if tz_aware:
        out["timestamp"] = out["timestamp"].dt.tz_localize("UTC")
    # Quantile crossing is possible with per-quantile tabular models; sorting restores a
    # valid interval (lower <= median <= upper), which the scoring rule relies on.
    levels = sorted(float(q) for q in metadata.get("quantile_levels", []))
    qcols = [c for c in (str(q) for q in levels) if c in out.columns]
    if len(qcols) > 1:
        out[qcols] = np.sort(out[qcols].to_numpy(dtype="float64"), axis=1)
    return out


def check_metadata(metadata: dict[str, Any]) -> None:
    """Refuse an older or foreign model at load time: with iot_mlops installed, its typed check
    (``iot_mlops.model.metadata``); without it (``mlflow models serve``), the schema version."""
    try:
        from iot_mlops.model.metadata import ModelMetadata
    except ImportError:
        if metadata.get("format_version") != SCHEMA_VERSION:
            raise ValueError(
                f"model metadata version {metadata.get('format_version')!r}, expected "
                f"{SCHEMA_VERSION}: retrain the model with `iot-mlops train`"
            ) from None
        return
    ModelMetadata.from_dict(metadata)


class ForecastModel(PythonModel):
    """An AutoGluon ``TimeSeriesPredictor`` plus the metadata it was trained and calibrated
    with (frequency, horizon, context length, quantiles, calibrated threshold, metrics)."""

    def __init__(self) -> None:
        self.predictor: Any = None
        self.metadata: dict[str, Any] = {}

    # --- construction ------------------------------------------------------------------------
    @classmethod
    def from_predictor(cls, predictor: Any, metadata: dict[str, Any]) -> ForecastModel:
        """Wrap an in-memory predictor (training uses this to evaluate exactly what ships)."""
        m = cls()
        m.predictor = predictor
        m.metadata = dict(metadata)
        return m

    def load_context(self, context: Any) -> None:
        from autogluon.timeseries import TimeSeriesPredictor

        self.metadata = json.loads(Path(context.artifacts[METADATA_ARTIFACT]).read_text())
        check_metadata(self.metadata)
        # The artifact directory is a copy in a temporary location; a version mismatch would
        # silently change behaviour, so AutoGluon's own check stays on.
        self.predictor = TimeSeriesPredictor.load(context.artifacts[PREDICTOR_ARTIFACT])

    # --- inference ---------------------------------------------------------------------------
    @property
    def model_name(self) -> str | None:
        return self.metadata.get("best_model")

    def forecast(self, context: pd.DataFrame) -> pd.DataFrame:
        """Forecast the next ``prediction_length`` steps after each item's last timestamp."""
        df, tz_aware = prepare_context(context, int(self.metadata.get("context_length", 0) or 0))
        return finish_forecast(self.library_predict(df), tz_aware, self.metadata)

    def library_predict(self, df: pd.DataFrame) -> pd.DataFrame:
        """AutoGluon's own predict on the sorted long frame (item_id, timestamp, target)."""
        from autogluon.timeseries import TimeSeriesDataFrame

        tsdf = TimeSeriesDataFrame(df.set_index(["item_id", "timestamp"]))
        pred = self.predictor.predict(tsdf, model=self.model_name, use_cache=False)
        return pd.DataFrame(pred).reset_index()

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
        return self.forecast(model_input)


mlflow.models.set_model(ForecastModel())
