"""The registered model as the detector sees it (``models:/<name>@production``), and the
promotion gate, against the session's real MLflow server with real AutoGluon fits: a good
DirectTabular model (version 1, promoted) and a deliberately worse Naive one (version 2)."""

from __future__ import annotations

import contextlib
import math
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
from cli_helpers import isolated
from markers import slow_integration
from series_helpers import AMPLITUDE, clean_signal, synthetic_readings
from typer.testing import CliRunner

from iot_mlops.cli import app
from iot_mlops.config import Settings
from iot_mlops.errors import ModelError, ServiceError
from iot_mlops.kafka.stack import free_port
from iot_mlops.lifecycle import registry
from iot_mlops.model.forecaster import Forecaster, forecast_to_frame, frame_to_context
from iot_mlops.scoring import channels
from iot_mlops.training.pipeline import TrainResult, train

runner = CliRunner()
N = 400


@pytest.fixture(scope="module")
def models(stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    s = isolated(
        stack_settings, "registry",
        train_models="DirectTabular", train_time_limit_s=60, context_length=128,
    )  # fmt: skip
    path = tmp_path_factory.mktemp("registry") / "history.parquet"
    synthetic_readings(n_devices=2, n=N, spikes=3, seed=5).to_parquet(path)
    good = train(s, path, promote=True)
    # A real, logged, deliberately worse model: last value carried forward.
    worse = train(s.model_copy(update={"train_models": "Naive"}), path, promote=True)
    return {"settings": s, "good": good, "worse": worse}


@pytest.fixture(scope="module")
def production(models: dict[str, Any]) -> Forecaster:
    return registry.load_forecaster(models["settings"])


def cli(args: list[str], s: Settings) -> Any:
    env = {
        "COLUMNS": "250",
        "MLFLOW_TRACKING_URI": s.mlflow_tracking_uri,
        "IOT_MLOPS_MODEL_NAME": s.model_name,
    }
    r = runner.invoke(app, args, env=env)
    assert "Traceback" not in r.output, r.output
    return r


def continuation(device: int, metric: int, start: int, n: int, freq: str = "min") -> pd.DataFrame:
    """A clean stretch of one training series' signal, on its grid."""
    t = np.arange(start, start + n)
    rng = np.random.default_rng(100 + device * 10 + metric)
    name = ("temperature", "pressure")[metric]
    return pd.DataFrame(
        {
            "item_id": f"pump-{device:03d}/{name}",
            "timestamp": pd.Timestamp("2026-11-20") + pd.to_timedelta(t, unit=freq),
            "target": clean_signal(device, metric, t) + rng.normal(0, 0.3, n),
        }
    )


@slow_integration
def test_alias_resolves_and_loads_the_promoted_version(
    models: dict[str, Any], production: Forecaster
) -> None:
    s, good = models["settings"], models["good"]
    assert good.promotion is not None and good.promotion.allowed
    assert registry.resolve_alias(s) == good.version == "1"
    assert registry.resolve_alias(s, "no-such-alias") is None
    assert registry.resolve_alias(s.model_copy(update={"model_name": "no-such-model"})) is None
    assert production.version == "1" and production.name == s.model_name
    assert production.freq == "min" and production.prediction_length == 12
    assert production.context_length == 128
    assert production.quantile_levels == (0.01, 0.05, 0.1, 0.5, 0.9, 0.95, 0.99)
    assert production.model_name == "DirectTabular"


@slow_integration
def test_concurrent_loads_leave_no_stand_in_module(
    models: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """MLflow puts a stand-in ``dbutils`` into ``sys.modules`` while it runs a model's code and
    restores what it found; two loads at once (two detectors in one process, or evaluate's
    detector thread) used to nest that and leave the stand-in behind for the process's life,
    which broke whatever scans ``sys.modules`` later (CI: Hypothesis's constant collection)."""
    import mlflow.models.utils as mlflow_utils

    real = mlflow_utils._mock_dbutils

    @contextlib.contextmanager
    def held_open(globals_dict: dict[str, Any]) -> Iterator[None]:
        with real(globals_dict):
            time.sleep(0.3)  # widen the window so that unserialised loads do overlap
            yield

    monkeypatch.setattr(mlflow_utils, "_mock_dbutils", held_open)
    s, barrier, loaded, errors = models["settings"], threading.Barrier(4), [], []

    def load() -> None:
        barrier.wait()
        try:
            loaded.append(registry.load_forecaster(s).version)
        except Exception as e:
            errors.append(e)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors and loaded == ["1"] * 4, (errors, loaded)
    assert "dbutils" not in sys.modules, type(sys.modules["dbutils"]).__name__


@slow_integration
def test_calibration_is_stored_in_and_read_back_from_the_model(
    models: dict[str, Any], production: Forecaster
) -> None:
    good: TrainResult = models["good"]
    assert production.calibration == good.calibration
    assert production.calibration.threshold == pytest.approx(good.metrics["threshold"])
    assert production.calibration.lower_quantile == 0.01
    assert production.calibration.upper_quantile == 0.99
    assert production.metrics["mase"] == pytest.approx(good.metrics["mase"])


@slow_integration
def test_forecasts_a_clean_seasonal_series_and_brackets_it(production: Forecaster) -> None:
    f = production
    ctxs, truths = [], []
    # Continue every training series past the end of its history.
    for device in range(2):
        for metric in range(2):
            ctxs.append(continuation(device, metric, N - f.context_length + 12, f.context_length))
            truths.append(continuation(device, metric, N + 12, f.prediction_length))
    out = forecast_to_frame(f.forecast(frame_to_context(pd.concat(ctxs), f.freq)))
    truth = pd.concat(truths, ignore_index=True)
    merged = truth.merge(out, on=["item_id", "timestamp"], how="left")
    assert len(merged) == len(truth) and merged["0.5"].notna().all()
    mae = float((merged["target"] - merged["0.5"]).abs().mean())
    assert mae < 0.25 * AMPLITUDE, mae
    # The raw 1-99 % band holds nearly all of them (small-data quantiles are a bit narrow) ...
    inside = (merged["target"] >= merged["0.01"]) & (merged["target"] <= merged["0.99"])
    assert inside.mean() >= 0.85, merged[["item_id", "target", "0.01", "0.5", "0.99"]]
    # ... and the interval the detector decides with (the band widened by the calibrated
    # threshold) brackets every one: no alarm on clean data.
    cal = f.calibration
    scores = [
        channels.score_point(a, m, lo, hi, cal)
        for a, m, lo, hi in zip(
            merged["target"], merged["0.5"], merged["0.01"], merged["0.99"], strict=True
        )
    ]
    assert not any(p.outlier for p in scores)


@slow_integration
def test_injected_spike_falls_outside_the_interval(production: Forecaster) -> None:
    f = production
    ctx = continuation(0, 0, N, f.context_length)
    nxt = continuation(0, 0, N + f.context_length, f.prediction_length)
    out = forecast_to_frame(f.forecast(frame_to_context(ctx, f.freq)))
    step = out.iloc[2]
    assert step["timestamp"] == nxt["timestamp"].iloc[2]
    spike = float(nxt["target"].iloc[2]) + 8 * AMPLITUDE
    assert spike > step["0.99"]
    dev = channels.deviation(spike, step["0.5"], step["0.01"], step["0.99"])
    assert dev > f.calibration.threshold
    p = channels.score_point(spike, step["0.5"], step["0.01"], step["0.99"], f.calibration)
    assert p.outlier and p.score > 0.5


@slow_integration
def test_pyfunc_serves_the_same_contract(models: dict[str, Any]) -> None:
    """The generic MLflow path (schema-enforced predict) gives the same forecast frame."""
    s = models["settings"]
    mlflow.set_tracking_uri(s.mlflow_tracking_uri)
    pyfunc = mlflow.pyfunc.load_model(f"models:/{s.model_name}@production")
    ctx = continuation(1, 1, N, 64)
    out = pyfunc.predict(ctx)
    assert list(out.columns[:3]) == ["item_id", "timestamp", "mean"]
    assert len(out) == 12 and "0.5" in out.columns and "target" not in out.columns


@slow_integration
def test_gate_refuses_the_worse_model_and_force_overrides(models: dict[str, Any]) -> None:
    s, good, worse = models["settings"], models["good"], models["worse"]
    assert worse.version == "2" and worse.best_model == "Naive"
    assert worse.metrics["mase"] > good.metrics["mase"]
    # train --promote went through the gate and was refused; the alias did not move.
    assert worse.promotion is None and "refusing" in (worse.promotion_error or "")
    assert registry.resolve_alias(s) == "1"

    r = cli(["promote", "2"], s)
    assert r.exit_code == 1
    assert f"{worse.metrics['mase']:.4f}" in r.output and f"{good.metrics['mase']:.4f}" in r.output
    assert "--force" in r.output
    assert registry.resolve_alias(s) == "1"

    r = cli(["promote", "2", "--force"], s)
    assert r.exit_code == 0 and "forced" in r.output, r.output
    assert registry.resolve_alias(s) == "2"

    # Back to the better one: allowed without --force.
    r = cli(["promote", "1"], s)
    assert r.exit_code == 0, r.output
    assert registry.resolve_alias(s) == "1"


@slow_integration
def test_rollback_returns_the_alias_to_the_versions_before(models: dict[str, Any]) -> None:
    """After the gate test the alias went 1 (train --promote) → 2 (--force) → 1: each
    rollback undoes one move, and with no earlier version it says so."""
    s = models["settings"]
    assert registry.resolve_alias(s) == "1"
    r = cli(["promote", "--rollback"], s)
    assert r.exit_code == 0, r.output
    assert "version 2 (rolled back from 1)" in r.output
    assert registry.resolve_alias(s) == "2"
    assert registry.rollback(s) == ("2", "1")
    assert registry.resolve_alias(s) == "1"
    r = cli(["promote", "--rollback"], s)
    assert r.exit_code == 1 and "no version held" in r.output, r.output
    assert registry.resolve_alias(s) == "1"
    assert cli(["promote", "1", "--rollback"], s).exit_code == 2  # one or the other
    assert cli(["promote"], s).exit_code == 2


@pytest.mark.unit
def test_alias_history_rules() -> None:
    from iot_mlops.lifecycle import history

    h = history.promoted([], None, "1")
    assert h == ["1"]
    assert history.promoted(h, "1", "1") == ["1"]  # promoting the holder again: no new turn
    h = history.promoted(history.promoted(h, "1", "2"), "2", "3")
    assert h == ["1", "2", "3"]
    # Moved by hand to 7 (MLflow's UI): the next promotion records 7's turn too.
    assert history.promoted(h, "7", "8") == ["1", "2", "3", "7", "8"]
    assert history.rolled_back(h, "3") == ("2", ["1", "2"])
    assert history.rolled_back(["1"], "1") == (None, [])
    assert history.rolled_back(h, "9") == ("3", h)  # moved by hand: back to the last known
    assert history.parse("not json") == [] and history.parse('{"a": 1}') == []
    assert history.parse(history.render([str(i) for i in range(80)]))[0] == "30"


@slow_integration
def test_models_lists_versions_aliases_and_metrics(models: dict[str, Any]) -> None:
    s = models["settings"]
    r = cli(["promote", "1", "--alias", "staging"], s)
    assert r.exit_code == 0
    infos = registry.list_versions(s)
    assert [i.version for i in infos] == ["2", "1"]
    v1 = infos[1]
    assert "staging" in v1.aliases and v1.best_model == "DirectTabular"
    assert math.isclose(v1.metrics["mase"], models["good"].metrics["mase"], rel_tol=1e-4)
    r = cli(["models"], s)
    assert r.exit_code == 0
    assert "Naive" in r.output and "DirectTabular" in r.output and "staging" in r.output


@slow_integration
def test_unknown_version_and_alias(models: dict[str, Any]) -> None:
    s = models["settings"]
    r = cli(["promote", "99"], s)
    assert r.exit_code == 1 and "no version '99'" in r.output and "versions: 1, 2" in r.output
    with pytest.raises(ModelError, match="no version"):
        registry.load_forecaster(s, version="99")
    with pytest.raises(ModelError, match="iot-mlops promote"):
        registry.load_forecaster(s, alias="no-such-alias")


@pytest.mark.unit
def test_unreachable_mlflow_fails_fast_with_the_fix(tmp_path: Path) -> None:
    s = Settings(mlflow_tracking_uri=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ServiceError) as e:
        registry.resolve_alias(s)
    assert s.mlflow_tracking_uri in e.value.message
    assert "iot-mlops stack up" in (e.value.fix or "") and "MLFLOW_TRACKING_URI" in e.value.fix
    with pytest.raises(ServiceError):
        registry.load_forecaster(s)


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
