"""``iot-mlops train`` end to end against the session's real MLflow server (one small real
AutoGluon fit for the module), and its bad-input handling (no services needed)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pytest
from cli_helpers import cli_env, isolated, run_cli
from markers import slow_integration
from series_helpers import synthetic_readings

from iot_mlops.config import Settings
from iot_mlops.kafka.stack import free_port
from iot_mlops.scoring.calibrate import Calibration


@pytest.fixture(scope="module")
def trained(stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One `iot-mlops train --promote` for the whole module."""
    s = isolated(stack_settings, "train")
    env = cli_env(s, kafka=False)
    path = tmp_path_factory.mktemp("train") / "history.parquet"
    synthetic_readings(n_devices=3, n=400, spikes=4, seed=3).to_parquet(path)
    result = run_cli(
        ["train", "--data", str(path), "--promote", "--models", "DirectTabular",
         "--time-limit", "60", "--context-length", "128"],
        env,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    client = mlflow.MlflowClient(s.mlflow_tracking_uri, s.mlflow_tracking_uri)
    exp = client.get_experiment_by_name(s.experiment_name)
    runs = client.search_runs([exp.experiment_id])
    return {"settings": s, "client": client, "runs": runs, "output": result.output, "path": path}


@slow_integration
def test_train_output_says_what_happens_without_progress_bars(trained: dict[str, Any]) -> None:
    """MLflow's per-file "Downloading artifacts" bars are plumbing (issue 13, item 10)."""
    assert "log the run and register the model" in trained["output"], trained["output"]
    assert "Downloading artifacts" not in trained["output"], trained["output"][-2000:]


@slow_integration
def test_train_logs_one_run_with_params_and_metrics(trained: dict[str, Any]) -> None:
    runs = trained["runs"]
    assert len(runs) == 1
    params, metrics = runs[0].data.params, runs[0].data.metrics
    assert params["models"] == "DirectTabular" and params["best_model"] == "DirectTabular"
    assert params["freq"] == "min"
    assert params["prediction_length"] == "12" and params["context_length"] == "128"
    assert params["quantile_levels"] == "0.01,0.05,0.1,0.5,0.9,0.95,0.99"
    assert params["time_limit_s"] == "60"
    assert params["n_series"] == "6" and params["n_rows"] == "2400"
    assert len(params["data_hash"]) == 16
    for k in ("mase", "wql", "threshold", "precision", "recall", "f1", "train_seconds"):
        assert k in metrics, k
    # Holdout accuracy on a clean seasonal signal. Measured ~0.6 on a quiet machine, up to ~2
    # when the fit's time budget is eaten by other load; a flat or broken forecast is > 4.
    assert metrics["mase"] < 3.0
    assert metrics["threshold"] > 0
    # The labelled spikes (8 times the amplitude) are found by the detector's scoring code.
    assert metrics["recall"] >= 0.8 and metrics["precision"] >= 0.5
    # The summary table is printed.
    assert "holdout MASE" in trained["output"]
    assert "interval scale, first / last step" in trained["output"]


@slow_integration
def test_train_logs_artifacts(trained: dict[str, Any], tmp_path: Path) -> None:
    client, run = trained["client"], trained["runs"][0]
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"leaderboard.csv", "forecast_vs_actual.png", "calibration.json"} <= names
    local = Path(client.download_artifacts(run.info.run_id, "leaderboard.csv", str(tmp_path)))
    lb = pd.read_csv(local)
    assert "model" in lb.columns and "DirectTabular" in set(lb["model"])
    png = Path(client.download_artifacts(run.info.run_id, "forecast_vs_actual.png", str(tmp_path)))
    assert png.read_bytes()[:4] == b"\x89PNG"


@slow_integration
def test_model_registered_promoted_with_signature_and_calibration(
    trained: dict[str, Any], tmp_path: Path
) -> None:
    s, client = trained["settings"], trained["client"]
    versions = client.search_model_versions(f"name='{s.model_name}'")
    assert [v.version for v in versions] == ["1"]
    assert client.get_model_version_by_alias(s.model_name, "production").version == "1"
    v = versions[0]
    assert v.run_id == trained["runs"][0].info.run_id
    assert float(v.tags["metric.mase"]) == pytest.approx(
        trained["runs"][0].data.metrics["mase"], rel=1e-4
    )
    mlflow.set_tracking_uri(s.mlflow_tracking_uri)
    info = mlflow.models.get_model_info(f"models:/{s.model_name}/1")
    assert info.signature.inputs.input_names() == ["item_id", "timestamp", "target"]
    outputs = info.signature.outputs.input_names()
    assert outputs[:3] == ["item_id", "timestamp", "mean"] and "0.99" in outputs
    assert "target" not in outputs
    # The calibration travels inside the model, identical to the run's record of it.
    # The model age and the input-drift profile travel with the model (model/profile.py).
    from iot_mlops.lifecycle import registry

    data = registry.load_forecaster(s).metadata.data  # as the detector reads it
    assert 0 < time.time() - data["trained_at"] < 3600
    assert data["profile"], "no metric profiled"
    for metric, prof in data["profile"].items():
        assert "/" not in metric and len(prof["shares"]) == len(prof["edges"]) + 1, metric
        assert sum(prof["shares"]) == pytest.approx(1.0)
    stored = info.metadata["iot_mlops"]["calibration"]
    run_cal = json.loads(
        Path(
            client.download_artifacts(
                trained["runs"][0].info.run_id, "calibration.json", str(tmp_path)
            )
        ).read_text()
    )
    assert stored == run_cal
    assert stored["threshold"] == pytest.approx(trained["runs"][0].data.metrics["threshold"])
    # One interval factor per horizon step, fitted on the clean holdout replay, and loaded back
    # as the detector reads it.
    scale = stored["step_scale"]
    assert len(scale) == s.prediction_length and all(0 < k < 10 for k in scale)
    assert Calibration.from_dict(stored).step_scale == tuple(scale)
    assert trained["runs"][0].data.metrics["step_scale_first"] == pytest.approx(scale[0])


# --- bad input (no services needed) ------------------------------------------------------------


@pytest.fixture
def offline_env() -> dict[str, str]:
    """An MLflow URI where nothing listens: data errors must be reported before MLflow's."""
    return {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"}


@pytest.mark.unit
def test_missing_parquet(offline_env: dict[str, str], tmp_path: Path) -> None:
    r = run_cli(["train", "--data", str(tmp_path / "nope.parquet")], offline_env)
    assert r.exit_code == 2
    assert "does not exist" in r.output and "iot-mlops collect" in r.output


@pytest.mark.unit
def test_empty_and_unreadable_parquet(offline_env: dict[str, str], tmp_path: Path) -> None:
    empty = tmp_path / "empty.parquet"
    synthetic_readings(n=5).iloc[:0].to_parquet(empty)
    r = run_cli(["train", "--data", str(empty)], offline_env)
    assert r.exit_code == 2 and "has no rows" in r.output
    junk = tmp_path / "junk.parquet"
    junk.write_text("not parquet")
    r = run_cli(["train", "--data", str(junk)], offline_env)
    assert r.exit_code == 2 and "cannot read" in r.output


@pytest.mark.unit
@pytest.mark.parametrize(
    ("n", "args", "says"),
    [
        (40, ["--prediction-length", "12"], ("too short", "prediction-length")),
        (200, ["--models", "Chronos"], ("model hub",)),
    ],
    ids=["series_too_short", "pretrained_model_refused"],
)
def test_usage_errors(
    offline_env: dict[str, str], tmp_path: Path, n: int, args: list[str], says: tuple[str, ...]
) -> None:
    p = tmp_path / "readings.parquet"
    synthetic_readings(n=n).to_parquet(p)
    r = run_cli(["train", "--data", str(p), *args], offline_env)
    assert r.exit_code == 2
    assert all(x in r.output for x in says), r.output


@pytest.mark.unit
def test_mixed_intervals(offline_env: dict[str, str], tmp_path: Path) -> None:
    p = tmp_path / "mixed.parquet"
    pd.concat(
        [
            synthetic_readings(n_devices=1, metrics=("temperature",), n=200, step="1min"),
            synthetic_readings(n_devices=1, metrics=("pressure",), n=200, step="10s"),
        ]
    ).to_parquet(p)
    r = run_cli(["train", "--data", str(p)], offline_env)
    assert r.exit_code == 2 and "different intervals" in r.output


@pytest.mark.unit
def test_unreachable_mlflow(offline_env: dict[str, str], tmp_path: Path) -> None:
    p = tmp_path / "ok.parquet"
    synthetic_readings(n=200).to_parquet(p)
    r = run_cli(["train", "--data", str(p)], offline_env)
    assert r.exit_code == 1
    assert offline_env["MLFLOW_TRACKING_URI"] in r.output and "iot-mlops stack up" in r.output
    for cmd in (["models"], ["promote", "1"]):
        r = run_cli(cmd, offline_env)
        assert r.exit_code == 1 and "unreachable" in r.output, r.output
