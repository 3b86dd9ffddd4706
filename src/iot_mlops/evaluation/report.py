"""The outputs of ``evaluate``: one result CSV per input file, ``scores.json``, and the MLflow
evaluation run.

Result CSVs (DESIGN.md): a single-series file keeps ``timestamp,value,anomaly_score,is_anomaly``
and adds ``in_episode``; a device file (several metrics) gets the device-level
``timestamp,anomaly_score,is_anomaly,in_episode`` plus ``<metric>_score`` per metric (the
series scores). ``is_anomaly`` is the onset of an episode, ``in_episode`` means in an episode
after this row. Timestamps are the input's text.
"""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from iot_mlops.config import Settings
from iot_mlops.errors import ServiceError
from iot_mlops.evaluation.datasets import SeriesData
from iot_mlops.evaluation.results import FileResult
from iot_mlops.evaluation.score_report import ScoreReport

DEVICE_COLUMNS = ("timestamp", "anomaly_score", "is_anomaly", "in_episode")


def _bool_text(a: np.ndarray) -> np.ndarray:
    return np.where(a, "true", "false")


def metric_score_columns(metrics: list[str]) -> list[str]:
    """``<metric>_score`` per metric; ``metric_<metric>_score`` if that would repeat a column."""
    out, taken = [], set(DEVICE_COLUMNS)
    for m in metrics:
        name = f"{m}_score"
        if name in taken:
            name = f"metric_{m}_score"
        taken.add(name)
        out.append(name)
    return out


def result_frame(s: SeriesData, r: FileResult) -> pd.DataFrame:
    d = r.device
    cols: dict[str, Any] = {"timestamp": s.ts_text}
    if s.single:
        cols["value"] = s.value_text[:, 0]
    cols["anomaly_score"] = np.round(d.score, 6)
    cols["is_anomaly"] = _bool_text(d.onset)
    cols["in_episode"] = _bool_text(d.in_episode)
    if not s.single:
        for j, name in enumerate(metric_score_columns(s.metrics)):
            cols[name] = np.round(r.series.score[:, j], 6)
    return pd.DataFrame(cols)


def write_results(out_dir: Path, series: list[SeriesData], results: list[FileResult]) -> None:
    for s, r in zip(series, results, strict=True):
        path = out_dir / s.rel
        path.parent.mkdir(parents=True, exist_ok=True)
        result_frame(s, r).to_csv(path, index=False)


def score_frames(series: list[SeriesData], results: list[FileResult]) -> dict[str, pd.DataFrame]:
    """What the scorer reads of each file: the device-level decisions per row."""
    return {
        s.rel: pd.DataFrame(
            {
                "timestamp": s.ts_ns.view("datetime64[ns]"),
                "is_anomaly": r.device.onset,
                "in_episode": r.device.in_episode,
                "closed": r.device.closed,
                "anomaly_score": r.device.score,
            }
        )
        for s, r in zip(series, results, strict=True)
    }


def write_scores(out_dir: Path, report: ScoreReport, summary: dict[str, Any]) -> Path:
    path = out_dir / "scores.json"
    path.write_text(json.dumps({"evaluation": summary, **report.to_dict()}, indent=1) + "\n")
    return path


def mlflow_metrics(report: ScoreReport, timing: dict[str, float]) -> dict[str, float]:
    m: dict[str, float] = {}
    for prof, v in report.scores.items():
        if v is not None:
            m[f"nab_{prof}"] = float(v)
    for prof, b in report.best_thresholds.items():
        if b.score is not None:
            m[f"nab_{prof}_best"] = float(b.score)
            m[f"nab_{prof}_best_threshold"] = -1.0 if b.threshold is None else b.threshold
    for view, met in (("point", report.point), ("event", report.event)):
        for k in ("precision", "recall", "f1"):
            m[f"{view}_{k}"] = float(getattr(met, k))
    for kind, ks in report.kinds.items():
        m[f"recall_{kind}"] = float(ks.recall)
    o = report.outliers
    m.update({"skab_f1": o.f1, "skab_far": o.far, "skab_mar": o.mar})
    for prof, v in report.changepoint_scores.items():
        if v is not None:
            m[f"skab_changepoint_{prof}"] = float(v)
    m["top_score"] = report.top.score
    m["top_score_share"] = report.top.share
    m.update({f"{k}": float(v) for k, v in timing.items()})
    return {k: v for k, v in m.items() if math.isfinite(v)}


def log_evaluation(
    settings: Settings,
    scores_path: Path,
    *,
    report: ScoreReport,
    summary: dict[str, Any],
    params: dict[str, Any],
) -> str:
    """One MLflow run (tag run_type=evaluation) in the experiment, linked to the model version
    and its training run; returns its id."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from iot_mlops.lifecycle.registry import check_mlflow, get_version, mlflow_env

    check_mlflow(settings)
    timing = {
        k: summary[k]
        for k in ("train_seconds", "stream_seconds", "total_seconds", "rows_per_second")
        if k in summary
    }
    try:
        mv = get_version(settings, summary["model_version"])
        mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
        mlflow.set_registry_uri(settings.mlflow_tracking_uri)
        mlflow.set_experiment(settings.experiment_name)
        run_name = f"evaluate-{settings.model_name}-v{summary['model_version']}"
        with (
            mlflow_env(**settings.mlflow_client_env()),
            mlflow.start_run(run_name=run_name, tags=_run_tags(settings, summary)) as run,
        ):
            mlflow.log_params(params)
            _log_metrics(mlflow_metrics(report, timing), getattr(mv, "model_id", None))
            _attach_scores(settings, run.info.run_id, scores_path, summary)
        return run.info.run_id
    except MlflowException as e:
        raise ServiceError(
            f"logging the evaluation to MLflow at {settings.mlflow_tracking_uri} failed: "
            f"{str(e).splitlines()[0][:300]}"
        ) from None


def _run_tags(settings: Settings, summary: dict[str, Any]) -> dict[str, str]:
    return {
        "run_type": "evaluation",
        "model_name": settings.model_name,
        "model_version": summary["model_version"],
        "model_uri": f"models:/{settings.model_name}/{summary['model_version']}",
        "training_run_id": summary["training_run_id"],
        "mlflow.note.content": (
            f"Causal evaluation of {settings.model_name} version {summary['model_version']} "
            f"on {summary['files']} labelled files ({summary['rows']:,} rows) streamed "
            "through the real detector."
        ),
    }


def _log_metrics(metrics: dict[str, float], model_id: str | None) -> None:
    """MLflow 3 links metrics to the logged model behind the version (shown on the model's
    page); older servers without logged models get plain run metrics."""
    import mlflow
    from mlflow.exceptions import MlflowException

    if model_id:
        with contextlib.suppress(MlflowException):
            mlflow.log_metrics(metrics, model_id=model_id)
            return
    mlflow.log_metrics(metrics)


def _attach_scores(settings: Settings, run_id: str, path: Path, summary: dict[str, Any]) -> None:
    """Put the run id into scores.json, log it as an artifact and tag the model version."""
    import mlflow
    from mlflow.exceptions import MlflowException

    summary["evaluation_run_id"] = run_id
    data = json.loads(path.read_text())
    data["evaluation"]["evaluation_run_id"] = run_id
    path.write_text(json.dumps(data, indent=1) + "\n")
    mlflow.log_artifact(str(path))
    with contextlib.suppress(MlflowException):
        mlflow.MlflowClient().set_model_version_tag(
            settings.model_name, summary["model_version"], "evaluation_run_id", run_id
        )
