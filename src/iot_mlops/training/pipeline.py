"""Train, evaluate, calibrate, log and register the forecaster (``iot-mlops train``).

1. ``split``: read the readings parquet, regularise each series onto one shared grid (the
   frequency is inferred and checked), hold out the last ``holdout_fraction`` of every series
   and mask labelled anomalies out of the fit part (NaN; AutoGluon fills), so the model learns
   normal behaviour only.
2. ``fit``: AutoGluon on the fit part with an explicit offline model set (nothing is
   downloaded) and a time limit.
3. ``calibrate``: backtest accuracy on the holdout, then the threshold calibrated, and the
   precision/recall measured, by replaying the holdout through the detector's own engine.
4. ``log``: one MLflow run (params, metrics, leaderboard CSV, a forecast-vs-actual PNG, and
   the pyfunc carrying the predictor and its typed metadata), registered, optionally promoted
   through the same gate as ``iot-mlops promote``.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from iot_mlops.config import Settings
from iot_mlops.data.grid import PreparedData, prepare
from iot_mlops.errors import ConfigError
from iot_mlops.model import profile
from iot_mlops.model.metadata import ModelMetadata
from iot_mlops.model.pyfunc import ForecastModel
from iot_mlops.progress import Reporter
from iot_mlops.scoring.calibrate import Calibration
from iot_mlops.training.calibrate import evaluate_holdout
from iot_mlops.training.fit import fit_predictor, parse_models
from iot_mlops.training.log import TrainedRun, log_and_register
from iot_mlops.training.split import SplitSeries, data_hash, fit_frame, read_parquet, split_series

__all__ = ["TrainResult", "train"]


@dataclass
class TrainResult:
    run_id: str
    version: str
    model_uri: str
    metrics: dict[str, float]
    params: dict[str, Any]
    calibration: Calibration
    best_model: str
    leaderboard: pd.DataFrame
    train_seconds: float
    dropped_series: list[str]
    promotion: Any = None  # registry.PromotionDecision when --promote was asked
    promotion_error: str | None = None
    # The split the metrics came from: retrain compares production on the same holdout.
    holdout: list[SplitSeries] = field(default_factory=list)


@dataclass
class TrainingData:
    path: Path
    n_rows: int
    data: PreparedData
    series: list[SplitSeries]
    dropped: list[str]
    masked: int  # labelled points masked out of the fit part


@dataclass
class Fitted:
    predictor: Any
    leaderboard: pd.DataFrame
    best: str
    seconds: float


def train(
    settings: Settings,
    data_path: Path,
    promote: bool = False,
    console: Any | None = None,
) -> TrainResult:
    from iot_mlops.lifecycle import registry

    rep = Reporter(console)
    models = parse_models(settings.train_models)
    td = _read(Path(data_path), settings, rep)
    # Bad data is reported first (cheap to check); then MLflow, before minutes of fitting.
    registry.check_mlflow(settings)
    workdir = Path(tempfile.mkdtemp(prefix="iot-mlops-train-"))
    try:
        with rep.phase(f"fit AutoGluon ({', '.join(models)}, ≤{settings.train_time_limit_s} s)"):
            fitted = _fit(td, settings, models, workdir)
        meta = _metadata(settings, td, models, fitted.best)
        model = ForecastModel.from_predictor(fitted.predictor, meta.to_dict())
        model.predictor.persist()
        ev = evaluate_holdout(model, td.series, settings, rep)
        metrics = {**ev.metrics, "train_seconds": fitted.seconds}
        meta = meta.calibrated(
            ev.calibration,
            {k: v for k, v in metrics.items() if math.isfinite(v)},
            {
                "hash": data_hash(td.path),
                "n_series": len(td.series),
                "trained_at": time.time(),  # the detector exports the model's age
                "profile": _profile(td.series),  # input drift (PSI) against these values
            },
        )
        model.metadata = meta.to_dict()
        params = _params(settings, td, models, fitted.best, meta)
        with rep.phase("log the run and register the model"):
            run = TrainedRun(model, meta, params, metrics, fitted.leaderboard, td.series, ev)
            run_id, version = log_and_register(settings, run, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result = TrainResult(
        run_id=run_id, version=version, model_uri=f"models:/{settings.model_name}/{version}",
        metrics=metrics, params=params, calibration=ev.calibration, best_model=fitted.best,
        leaderboard=fitted.leaderboard, train_seconds=fitted.seconds, dropped_series=td.dropped,
        holdout=td.series,
    )  # fmt: skip
    if promote:
        try:
            result.promotion = registry.promote(settings, version)
        except registry.PromotionRefused as e:
            result.promotion_error = str(e)
    return result


def _read(path: Path, settings: Settings, rep: Reporter) -> TrainingData:
    with rep.phase("read and regularise the data"):
        raw = read_parquet(path)
        data = prepare(raw)
        series, dropped = split_series(data, settings.prediction_length, settings.holdout_fraction)
        masked = int(sum(s.label[: s.start].sum() for s in series))
        rep.note(
            f"{len(series)} series at {data.freq}, {len(raw)} rows, {data.n_gaps} gaps, "
            f"{masked} labelled anomaly points masked out of training"
        )
        for d in dropped:
            rep.note(f"[yellow]dropped (too short):[/] {d}")
    return TrainingData(path, len(raw), data, series, dropped, masked)


def _fit(td: TrainingData, settings: Settings, models: list[str], workdir: Path) -> Fitted:
    t0 = time.perf_counter()
    predictor = fit_predictor(
        fit_frame(td.series), settings, models, td.data.freq, workdir / "predictor",
        settings.train_time_limit_s,
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    return Fitted(predictor, predictor.leaderboard(), str(predictor.model_best), seconds)


def _profile(series: list[SplitSeries]) -> dict[str, Any]:
    """Each metric's training-value deciles, from the fit part (labelled anomalies out)."""
    values: dict[str, list[Any]] = {}
    for s in series:
        y = s.y[: s.start][~s.label[: s.start]]
        values.setdefault(profile.metric_of(s.item_id), []).append(y)
    return profile.build({m: np.concatenate(v) for m, v in values.items()})


def _metadata(settings: Settings, td: TrainingData, models: list[str], best: str) -> ModelMetadata:
    levels = sorted(float(q) for q in settings.quantile_levels)
    if 0.5 not in levels:
        raise ConfigError("quantile_levels must include 0.5 (the forecast median)")
    return ModelMetadata(
        freq=td.data.freq,
        prediction_length=settings.prediction_length,
        context_length=settings.context_length,
        quantile_levels=tuple(levels),
        best_model=best,
        models=tuple(models),
    )


def _params(
    settings: Settings, td: TrainingData, models: list[str], best: str, meta: ModelMetadata
) -> dict[str, Any]:
    return {
        "models": ",".join(models),
        "best_model": best,
        "freq": td.data.freq,
        "prediction_length": settings.prediction_length,
        "context_length": settings.context_length,
        "quantile_levels": ",".join(f"{q:g}" for q in meta.quantile_levels),
        "time_limit_s": settings.train_time_limit_s,
        "holdout_fraction": settings.holdout_fraction,
        "target_false_alarm_rate": settings.target_false_alarm_rate,
        "n_series": len(td.series),
        "n_rows": td.n_rows,
        "n_gaps": td.data.n_gaps,
        "n_masked_train_points": td.masked,
        "n_dropped_series": len(td.dropped),
        "data_path": str(td.path),
        "data_hash": meta.data["hash"],
        "ensemble": False,
    }
