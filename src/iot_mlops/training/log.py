"""What a training run leaves in MLflow: the forecast plot, the input example, the pinned
requirements, and the run itself with the registered pyfunc."""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from iot_mlops.config import Settings
from iot_mlops.model import pyfunc
from iot_mlops.model.metadata import ModelMetadata
from iot_mlops.model.pyfunc import METADATA_ARTIFACT, PREDICTOR_ARTIFACT, ForecastModel
from iot_mlops.training.calibrate import Evaluation
from iot_mlops.training.split import SplitSeries


def plot_forecasts(
    series: list[SplitSeries],
    ev: Evaluation,
    path: Path,
    max_series: int = 4,
    max_points: int = 360,
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bt = ev.clean
    cal = ev.calibration
    # Series with labelled anomalies in the holdout are the interesting ones to look at.
    ranked = sorted(series, key=lambda s: -int(s.label[s.start :].sum()))[:max_series]
    fig, axes = plt.subplots(len(ranked), 1, figsize=(12, 2.8 * len(ranked)), squeeze=False)
    for ax, s in zip(axes[:, 0], ranked, strict=True):
        lo = max(s.start - 60, s.n - max_points)
        t = s.timestamps[lo:]
        qs = bt.quantiles[s.item_id]
        ax.plot(t, s.y[lo:], color="black", lw=0.8, label="actual")
        ax.plot(t, qs[0.5][lo:], color="tab:blue", lw=1.0, label="forecast median")
        ax.fill_between(
            t,
            qs[cal.lower_quantile][lo:],
            qs[cal.upper_quantile][lo:],
            color="tab:blue",
            alpha=0.2,
            label=f"{cal.lower_quantile:g}-{cal.upper_quantile:g} interval",
        )
        lab = s.label[lo:]
        if lab.any():
            ax.scatter(t[lab], s.y[lo:][lab], color="red", s=14, zorder=3, label="labelled anomaly")
        if ev.replay is not None:
            al = ev.replay.alarm[s.item_id][lo:]
            if al.any():
                ax.scatter(
                    t[al],
                    s.y[lo:][al],
                    marker="x",
                    color="darkorange",
                    s=30,
                    zorder=4,
                    label="flagged",
                )
        ax.axvline(s.timestamps[s.start], color="grey", ls="--", lw=0.8)
        ax.set_title(s.item_id, fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def input_example(series: list[SplitSeries], context_length: int) -> pd.DataFrame:
    """Two real contexts (tails of the fit part): what the detector sends."""
    n = min(context_length, 64)
    parts = []
    for s in series[:2]:
        lo = max(0, s.start - n)
        parts.append(
            pd.DataFrame(
                {
                    "item_id": s.item_id,
                    "timestamp": s.timestamps[lo : s.start],
                    "target": np.nan_to_num(
                        s.y[lo : s.start], nan=float(np.nanmedian(s.y[: s.start]))
                    ),
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


def requirements() -> list[str]:
    from importlib.metadata import version

    reqs = []
    for pkg in ("autogluon.timeseries", "mlflow", "pandas", "numpy"):
        with contextlib.suppress(Exception):
            reqs.append(f"{pkg}=={version(pkg)}")
    return reqs


@dataclass(frozen=True)
class TrainedRun:
    """What one training run logs: the calibrated model, its typed metadata, the run's params
    and metrics, AutoGluon's leaderboard, and the split series and holdout evaluation that the
    forecast plot and the input example are drawn from."""

    model: ForecastModel
    meta: ModelMetadata
    params: dict[str, Any]
    metrics: dict[str, float]
    leaderboard: pd.DataFrame
    series: list[SplitSeries]
    ev: Evaluation


def log_and_register(settings: Settings, run: TrainedRun, workdir: Path) -> tuple[str, str]:
    """One MLflow run (params, metrics, leaderboard, plot, calibration and the pyfunc logged
    as code with its predictor and metadata), registered as a new version carrying its
    metrics as tags. Returns (run id, version)."""
    import mlflow

    from iot_mlops.lifecycle import registry

    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_registry_uri(settings.mlflow_tracking_uri)
    files = _stage_files(run, workdir)
    # log_model loads the logged model back to check the input example (a download).
    with registry.mlflow_env(**settings.mlflow_client_env()):
        mlflow.set_experiment(settings.experiment_name)
        run_id, version = _log_run(settings, run, files)
    registry.set_version_tags(settings, version, _version_tags(run))
    registry.record_integrity(settings, version)
    return run_id, version


def _log_run(settings: Settings, run: TrainedRun, files: dict[str, Path]) -> tuple[str, str]:
    import mlflow

    with mlflow.start_run(run_name=f"train-{run.meta.best_model}") as mr:
        mlflow.log_params(run.params)
        mlflow.log_metrics({k: v for k, v in run.metrics.items() if math.isfinite(v)})
        mlflow.log_artifact(str(files["leaderboard"]))
        mlflow.log_artifact(str(files["plot"]))
        mlflow.log_dict(run.ev.calibration.to_dict(), "calibration.json")
        mlflow.set_tags({"best_model": run.meta.best_model, "freq": run.meta.freq})
        info = _log_pyfunc(settings, run, files["metadata"])
        mv = mlflow.register_model(info.model_uri, settings.model_name)
    return mr.info.run_id, str(mv.version)


def _stage_files(run: TrainedRun, workdir: Path) -> dict[str, Path]:
    meta_path = workdir / "metadata.json"
    meta_path.write_text(json.dumps(run.meta.to_dict(), indent=2))
    lb_path = workdir / "leaderboard.csv"
    run.leaderboard.to_csv(lb_path, index=False)
    png = plot_forecasts(run.series, run.ev, workdir / "forecast_vs_actual.png")
    return {"metadata": meta_path, "leaderboard": lb_path, "plot": png}


def _log_pyfunc(settings: Settings, run: TrainedRun, meta_path: Path) -> Any:
    import mlflow
    from mlflow.models import infer_signature

    example = input_example(run.series, settings.context_length)
    return mlflow.pyfunc.log_model(
        name="model",
        python_model=str(pyfunc.__file__),
        artifacts={
            PREDICTOR_ARTIFACT: str(run.model.predictor.path),
            METADATA_ARTIFACT: str(meta_path),
        },
        signature=infer_signature(example, run.model.forecast(example)),
        input_example=example,
        # Explicit: inferring requirements would load the model in a subprocess.
        pip_requirements=requirements(),
        metadata={"iot_mlops": {k: run.meta.to_dict()[k] for k in _MLFLOW_METADATA}},
    )


def _version_tags(run: TrainedRun) -> dict[str, str]:
    from iot_mlops.lifecycle import registry

    tags = {
        f"{registry.METRIC_TAG_PREFIX}{k}": f"{run.metrics[k]:.6g}"
        for k in registry.VERSION_METRICS
        if k in run.metrics and math.isfinite(run.metrics[k])
    }
    tags.update(
        best_model=run.meta.best_model, freq=run.meta.freq, data_hash=run.params["data_hash"]
    )
    return tags


# The metadata fields shown in MLflow's model metadata (MLmodel).
_MLFLOW_METADATA = (
    "freq",
    "prediction_length",
    "context_length",
    "quantile_levels",
    "calibration",
    "best_model",
)
