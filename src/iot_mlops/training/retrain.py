"""``iot-mlops retrain``: one continuous-training cycle.

Collect the input topic, keep a bounded recent window (the last ``hours`` of event time), fit a
challenger on it, register it under the alias ``challenger`` with its lineage (window, parent
version, code version, trigger), then compare it with ``production`` **on the same recent
holdout** (the production model forecasts the challenger's holdout, same backtest, same MASE)
and promote it only when it is at least as good. Every decision is an MLflow run with its
evidence. A failure before registration leaves the registry as it was; after it, the
challenger alias is the only change and production is untouched.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

import iot_mlops
from iot_mlops.config import Settings
from iot_mlops.errors import ConfigError, ModelError
from iot_mlops.events import format_ts

CHALLENGER = "challenger"


@dataclass
class RetrainDecision:
    challenger: str
    production: str | None  # the version that held production before the cycle
    challenger_mase: float
    production_mase: float | None  # production's MASE on the challenger's holdout
    promoted: bool
    reason: str
    trigger: str
    window_start: str
    window_end: str
    rows: int
    run_id: str = ""  # the decision's MLflow run


def recent_window(df: pd.DataFrame, hours: float) -> pd.DataFrame:
    """The readings of the last ``hours`` before the newest one (event time). Pure."""
    if hours <= 0:
        raise ConfigError(f"--hours must be positive, got {hours:g}")
    ts = pd.to_datetime(df["timestamp"], utc=True)
    keep = ts > ts.max() - pd.Timedelta(hours=hours)
    return df.loc[keep].reset_index(drop=True)


def retrain(
    settings: Settings,
    hours: float,
    trigger: str = "manual",
    console: Any | None = None,
    drift_psi: float | None = None,
) -> RetrainDecision:
    """One cycle; ``drift_psi``: the drift evidence that triggered it (recorded)."""
    from iot_mlops.data.collect import collect
    from iot_mlops.lifecycle import registry
    from iot_mlops.training.pipeline import train

    registry.check_mlflow(settings)  # before minutes of collecting and fitting
    parent = registry.resolve_alias(settings)
    with tempfile.TemporaryDirectory(prefix="iot-mlops-retrain-") as tmp:
        everything, window = Path(tmp) / "topic.parquet", Path(tmp) / "window.parquet"
        collect(settings, everything, progress=console is not None, console=console)
        df = recent_window(pd.read_parquet(everything), hours)
        df.to_parquet(window)
        result = train(settings, window, promote=False, console=console)
    ts = pd.to_datetime(df["timestamp"], utc=True)
    decision = RetrainDecision(
        challenger=result.version, production=parent,
        challenger_mase=float(result.metrics.get("mase", math.nan)), production_mase=None,
        promoted=False, reason="", trigger=trigger, rows=len(df),
        window_start=format_ts(int(ts.min().value // 1_000_000)),
        window_end=format_ts(int(ts.max().value // 1_000_000)),
    )  # fmt: skip
    registry.set_version_tags(settings, result.version, _lineage(decision, hours, drift_psi))
    registry.set_alias(settings, CHALLENGER, result.version)
    _decide(settings, decision, result.holdout)
    if decision.promoted:
        registry.promote(settings, result.version, force=True)  # decided on the same slice
    decision.run_id = _log_decision(settings, decision)
    return decision


def _lineage(d: RetrainDecision, hours: float, drift_psi: float | None) -> dict[str, Any]:
    tags = {
        "lineage.trigger": d.trigger,
        "lineage.parent_version": d.production or "none",
        "lineage.window_start": d.window_start,
        "lineage.window_end": d.window_end,
        "lineage.window_hours": f"{hours:g}",
        "lineage.rows": d.rows,
        "lineage.code_version": iot_mlops.__version__,
    }
    if drift_psi is not None and math.isfinite(drift_psi):
        tags["lineage.drift_psi"] = f"{drift_psi:.4f}"
    return tags


def _decide(settings: Settings, d: RetrainDecision, holdout: list) -> None:
    """Fill in production's MASE on the challenger's holdout and the decision."""
    from iot_mlops.lifecycle import registry

    if d.production is None:
        d.promoted, d.reason = True, "no version held production"
        return
    try:
        d.production_mase = production_mase(registry.load_forecaster(settings), holdout)
    except ModelError as e:
        d.promoted, d.reason = True, f"production cannot forecast the recent data ({e.message})"
        return
    ok, why = registry.compare({"mase": d.challenger_mase}, {"mase": d.production_mase})
    c, p = d.challenger_mase, d.production_mase
    d.promoted = ok
    d.reason = (
        f"challenger MASE {c:.4f} {'<=' if ok else '>'} production {p:.4f} on the same "
        "recent holdout"
        if math.isfinite(c) and math.isfinite(p)
        else why
    )


def production_mase(model: Any, holdout: list) -> float:
    """The served model's MASE on ``holdout`` (the challenger's), by the same clean backtest
    that gave the challenger its own."""
    from iot_mlops.training.backtest import backtest
    from iot_mlops.training.calibrate import accuracy

    bt = backtest(model, holdout, model.prediction_length, model.context_length, hide_labels=True)
    return accuracy(bt, holdout, sorted(float(q) for q in model.quantile_levels))["mase"]


def _log_decision(settings: Settings, d: RetrainDecision) -> str:
    import mlflow

    from iot_mlops.lifecycle import registry

    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    with registry.mlflow_env(**settings.mlflow_client_env()):
        mlflow.set_experiment(settings.experiment_name)
        with mlflow.start_run(run_name=f"retrain-decision-v{d.challenger}") as run:
            mlflow.set_tags(
                {"iot.kind": "retrain_decision", "decision": "promoted" if d.promoted else "kept"}
            )
            mlflow.log_params(
                {k: v for k, v in asdict(d).items() if k not in ("run_id",) and "mase" not in k}
            )
            mlflow.log_metrics(
                {k: v for k in ("challenger_mase", "production_mase")
                 if (v := getattr(d, k)) is not None and math.isfinite(v)}
            )  # fmt: skip
            mlflow.log_dict(json.loads(json.dumps(asdict(d), default=str)), "decision.json")
            return run.info.run_id
