"""The model watcher against a real MLflow server that goes away between resolving the alias
and loading the version (issue 13, item 3): the failed load is retried once MLflow is back,
and the version is deployed; meanwhile the old version keeps serving."""

from __future__ import annotations

import logging
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from detector_helpers import ProductionModel, register_copy, wait_until

from iot_mlops.config import Settings
from iot_mlops.detector.metrics import DetectorMetrics
from iot_mlops.detector.watcher import ModelWatcher, default_resolver
from iot_mlops.kafka.stack import MLflow, free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def private_mlflow(
    stack_settings: Settings, production_model: ProductionModel, tmp_path: Path
) -> Iterator[MLflow]:
    """A running MLflow on its own port whose store is a copy of the session's (so the
    production model is really served from it, and stopping it disturbs no other test)."""
    port = free_port()
    svc = MLflow(
        stack_settings.model_copy(
            update={
                "state_dir": tmp_path / "private",
                "mlflow_port": port,
                "mlflow_tracking_uri": f"http://127.0.0.1:{port}",
            }
        )
    )
    src = MLflow(stack_settings).dir
    svc.dir.mkdir(parents=True)
    with sqlite3.connect(src / "mlflow.db") as a, sqlite3.connect(svc.dir / "mlflow.db") as b:
        a.backup(b)  # consistent while the session server writes
    shutil.copytree(src / "artifacts", svc.dir / "artifacts")
    saved = (mlflow.get_tracking_uri(), mlflow.get_registry_uri())
    try:
        svc.start()
        svc.wait_healthy(120)
        yield svc
    finally:
        svc.stop()
        mlflow.set_tracking_uri(saved[0])  # the loader points MLflow's globals at svc
        mlflow.set_registry_uri(saved[1])


def test_version_that_failed_while_mlflow_restarted_is_loaded_once_it_is_back(
    production_model: ProductionModel,
    private_mlflow: MLflow,
    caplog: pytest.LogCaptureFixture,
) -> None:
    pm, svc = production_model, private_mlflow
    s = pm.settings.model_copy(
        update={
            "mlflow_tracking_uri": svc.url,
            "alias_poll_interval_s": 0.5,
            "model_retry_max_s": 2.0,
        }
    )
    client = mlflow.MlflowClient(tracking_uri=svc.url, registry_uri=svc.url)
    promoted = register_copy(s, pm.version)
    stopped = threading.Event()

    def resolve_then_stop_mlflow(settings: Settings) -> str | None:
        # The fault: MLflow goes down right after the alias resolves to the new version.
        version = default_resolver(settings)
        if version == promoted and not stopped.is_set():
            svc.stop()
            stopped.set()
        return version

    metrics, stop = DetectorMetrics(), threading.Event()
    watcher = ModelWatcher(s, metrics, stop, resolve=resolve_then_stop_mlflow)

    name = "iot_model_reloads_total"

    def failures() -> float:
        return metrics.registry.get_sample_value(name, {"result": "failure"}) or 0.0

    caplog.set_level(logging.INFO, logger="iot_mlops.detector")
    watcher.start()
    try:
        wait_until(lambda: watcher.current == pm.version, 300, "the first version loaded")
        assert watcher.take() is not None
        client.set_registered_model_alias(s.model_name, s.model_alias, promoted)
        wait_until(lambda: promoted in watcher.failed, 120, "the load to fail")
        assert watcher.current == pm.version and watcher.take() is None  # old one serves
        svc.start()
        svc.wait_healthy(120)
        # Without retries this never happens: the version stays marked as failed for good.
        wait_until(lambda: watcher.current == promoted, 180, "the promoted version loaded")
    finally:
        stop.set()
        watcher.wake.set()
        watcher.join(60)
    model = watcher.take()
    assert model is not None and str(model.version) == promoted
    assert promoted not in watcher.failed
    assert failures() >= 1
    lines = [r.getMessage() for r in caplog.records if "failed; keeping" in r.getMessage()]
    assert f"version {promoted} failed; keeping version {pm.version} (attempt 1" in lines[0]
    assert len(lines) == failures(), "one log line per failed attempt"


def test_loading_a_model_prints_no_artifact_progress_bars(
    production_model: ProductionModel, capfd: pytest.CaptureFixture[str]
) -> None:
    """What the detector prints when it loads a model: no per-file progress bars."""
    from iot_mlops.lifecycle.registry import load_forecaster

    pm = production_model
    capfd.readouterr()
    model = load_forecaster(pm.settings, version=pm.version)
    assert str(model.version) == pm.version
    out, err = capfd.readouterr()
    assert "Downloading artifacts" not in out + err, err[-500:]


@pytest.mark.unit
def test_retries_back_off_doubling_up_to_the_cap_and_only_when_due() -> None:
    """The schedule itself (no I/O): delays double from the poll interval to the cap; a poll
    before the retry is due does not try again; a success clears the failure."""
    s = Settings(alias_poll_interval_s=1.0, model_retry_max_s=4.0)
    metrics, outcomes = DetectorMetrics(), iter([RuntimeError("artifact timeout")] * 4)

    def load(_s: Settings, version: str) -> object:
        outcome = next(outcomes, None)
        if outcome is not None:
            raise outcome
        return f"model {version}"

    watcher = ModelWatcher(s, metrics, threading.Event(), resolve=lambda _s: "7", load=load)
    delays = []
    for _ in range(4):
        watcher.poll_once()
        failure = watcher.failed["7"]
        delays.append(round(failure.retry_at - time.monotonic()))
        watcher.poll_once()  # not due yet: no attempt
        assert watcher.failed["7"] is failure
        failure.retry_at = 0.0  # due now
    assert delays == [1, 2, 4, 4]
    assert watcher.failed["7"].attempts == 4 and watcher.failed["7"].reason == "artifact timeout"
    name = "iot_model_reloads_total"
    assert metrics.registry.get_sample_value(name, {"result": "failure"}) == 4
    watcher.poll_once()
    assert watcher.current == "7" and "7" not in watcher.failed and watcher.take() == "model 7"
