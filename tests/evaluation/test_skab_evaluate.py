"""``iot-mlops evaluate`` end to end on three real SKAB files (multi-sensor device files, labels
from the ``anomaly`` column, SKAB's protocol of 400 training rows), through the session's real
Kafka, detector and MLflow, with one small real AutoGluon fit."""

from __future__ import annotations

import json
import logging
import shutil
import sys
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
from cli_helpers import cli_env, isolated, run_cli

from iot_mlops.config import Settings

FILES = ["valve1/0.csv", "other/9.csv", "valve2/1.csv"]
METRICS = [
    "Accelerometer1RMS", "Accelerometer2RMS", "Current", "Pressure", "Temperature",
    "Thermocouple", "Voltage", "Volume Flow RateRMS",
]  # fmt: skip
TRAIN_ROWS = 400


def reopen_log_streams() -> None:
    """A logger handler created during an earlier CliRunner call (AutoGluon's) still holds
    that call's stream, closed now: a message on it prints a "--- Logging error ---" report,
    which is not ours. Point such handlers at the current stderr."""
    names = list(logging.root.manager.loggerDict)
    for lg in [logging.getLogger(), *(logging.getLogger(n) for n in names)]:
        for h in getattr(lg, "handlers", []):
            if isinstance(h, logging.StreamHandler) and getattr(h.stream, "closed", False):
                h.stream = sys.stderr  # not setStream: it flushes the closed stream first


@pytest.fixture(scope="module")
def skab_run(
    stack_settings: Settings, skab_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("skab")
    data = root / "data"
    for rel in FILES:  # copied at test time, never into the repository
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(skab_data / rel, data / rel)
    s = isolated(stack_settings, "skab")
    out = root / "out"
    reopen_log_streams()
    result = run_cli(
        ["evaluate", str(data), "--out", str(out), "--train-rows", str(TRAIN_ROWS),
         "--label-column", "anomaly", "--ignore-column", "changepoint",
         "--time-limit", "60", "--models", "DirectTabular"],
        cli_env(s),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return {
        "data": data,
        "out": out,
        "output": result.output,
        "scores": json.loads((out / "scores.json").read_text()),
        "settings": s,
    }


@pytest.mark.slow
@pytest.mark.integration
def test_skab_end_to_end(skab_run: dict[str, Any]) -> None:
    data, out, sc = skab_run["data"], skab_run["out"], skab_run["scores"]
    ev = sc["evaluation"]
    src = {rel: pd.read_csv(data / rel, sep=";") for rel in FILES}
    n_rows = sum(len(d) for d in src.values())
    # Every reading got a result: one per metric per row, none missing.
    assert ev["files"] == 3 and ev["rows"] == n_rows and ev["readings"] == 8 * n_rows
    assert sum(ev["outcomes"].values()) == 8 * n_rows and "missing" not in ev["outcomes"]
    assert ev["train_rows"] == TRAIN_ROWS and sc["train_rows"] == TRAIN_ROWS
    assert ev["metrics"]["valve1/0.csv"] == METRICS

    # Per-file CSVs: device level plus one score column per metric, every row, input text.
    cols = ["timestamp", "anomaly_score", "is_anomaly", "in_episode"]
    tp = fp = fn = tn = 0
    for rel, raw in src.items():
        res = pd.read_csv(out / rel, dtype=str, keep_default_na=False)
        assert list(res.columns) == cols + [f"{m}_score" for m in METRICS], rel
        assert len(res) == len(raw) and res["timestamp"].tolist() == raw["datetime"].tolist()
        for c in ["anomaly_score"] + [f"{m}_score" for m in METRICS]:
            assert res[c].astype(float).between(0.0, 1.0).all(), (rel, c)
        in_ep = (res["in_episode"] == "true").to_numpy()[TRAIN_ROWS:]
        truth = (raw["anomaly"] == 1).to_numpy()[TRAIN_ROWS:]
        tp += int((in_ep & truth).sum())
        fp += int((in_ep & ~truth).sum())
        fn += int((~in_ep & truth).sum())
        tn += int((~in_ep & ~truth).sum())

    # SKAB's outlier metrics, recomputed from the CSVs, are the reported ones.
    o = sc["skab"]["outliers"]
    assert (o["tp"], o["fp"], o["fn"], o["tn"]) == (tp, fp, fn, tn)
    assert o["f1"] == pytest.approx(2 * tp / max(2 * tp + fp + fn, 1))
    assert o["far"] == pytest.approx(fp / max(fp + tn, 1))
    assert o["mar"] == pytest.approx(fn / max(fn + tp, 1))
    assert tp + fn == sum(
        int((d["anomaly"] == 1).to_numpy()[TRAIN_ROWS:].sum()) for d in src.values()
    )

    # The changepoint score: two changepoints per file (the anomaly's start, the row after it).
    cp = sc["skab"]["changepoints"]
    assert set(cp["scores"]) == {"standard", "reward_low_fp", "reward_low_fn"}
    assert cp["windows"] == 6
    assert all(v is not None and -1000 < v <= 100 for v in cp["scores"].values())
    # NAB-style window scores as before; one labelled window per file.
    assert sc["totals"]["windows"] == 3 and all(v is not None for v in sc["scores"].values())
    assert 0 <= sc["top_score"]["share"] <= 1 and sc["top_score"]["rows"] >= 1
    assert "Outlier detection" in skab_run["output"] and "changepoint score" in skab_run["output"]


@pytest.mark.slow
@pytest.mark.integration
def test_skab_metrics_in_mlflow(skab_run: dict[str, Any]) -> None:
    s: Settings = skab_run["settings"]
    sc = skab_run["scores"]
    client = mlflow.MlflowClient(s.mlflow_tracking_uri, s.mlflow_tracking_uri)
    run = client.get_run(sc["evaluation"]["evaluation_run_id"])
    m = run.data.metrics
    assert m["skab_f1"] == pytest.approx(sc["skab"]["outliers"]["f1"])
    assert m["skab_far"] == pytest.approx(sc["skab"]["outliers"]["far"])
    assert m["skab_changepoint_standard"] == pytest.approx(
        sc["skab"]["changepoints"]["scores"]["standard"]
    )
    assert m["top_score_share"] == pytest.approx(sc["top_score"]["share"])
    assert run.data.params["label_column"] == "anomaly"
    assert np.isfinite(m["nab_standard"])
