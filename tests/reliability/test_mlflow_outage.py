"""Fault 5: the model registry fails. A private MLflow server (the embedded stack's ``MLflow``
service on its own port and state dir, holding a copy of the session's registry: SQLite backup
plus the artifact store, so the production model is really served from it) is

* down when the detector starts: the detector waits (``/healthz`` 503, a log line naming the
  fix), then loads the model and scores as soon as MLflow is up;
* stopped while the detector runs: scoring goes on with the loaded model and
  ``iot_registry_reachable`` drops to 0;
* back, with the alias moved to a version whose artifacts are corrupted, then to one whose
  artifacts do not exist: the old model keeps serving, ``iot_model_reloads_total{result=
  "failure"}`` counts each, the process never crashes.
"""

from __future__ import annotations

import shutil
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from detector_helpers import (
    ProductionModel,
    caught_up,
    detector_process,
    end_offsets,
    produce_frame,
    read_all,
    stop_detector,
    wait_until,
)
from reliability_helpers import healthz, log_problems, metric_sum, private_services, record, scrape

from iot_mlops.config import Settings
from iot_mlops.data.simulate import generate
from iot_mlops.events import decode_anomaly
from iot_mlops.kafka.stack import MLflow


@pytest.fixture
def private_mlflow(
    stack_settings: Settings, production_model: ProductionModel, tmp_path: Path
) -> Iterator[MLflow]:
    """A stopped MLflow service whose store is a copy of the session's (model included)."""
    svc = MLflow(private_services(stack_settings, tmp_path / "private", "mlflow"))
    src = MLflow(stack_settings).dir
    svc.dir.mkdir(parents=True)
    with sqlite3.connect(src / "mlflow.db") as a, sqlite3.connect(svc.dir / "mlflow.db") as b:
        a.backup(b)  # consistent while the session server writes
    shutil.copytree(src / "artifacts", svc.dir / "artifacts")
    try:
        yield svc
    finally:
        svc.stop()


def _frame(pm: ProductionModel, start_step: int, steps: int):
    return generate(
        pm.fleet, pm.end_ms + start_step * pm.interval_s * 1000, steps, pm.interval_s, pm.seed
    )


def _bad_versions(s: Settings, pm: ProductionModel, tmp: Path) -> tuple[str, str]:
    """Register two broken versions in the private registry: one whose artifacts are the
    production model's with every file corrupted, one whose artifacts do not exist.

    MLflow's registry URI is process-global (the in-process detectors set it to the session
    server), so it is pointed at the private server here and restored afterwards: the
    session's registry must never see these versions."""
    uri = s.mlflow_tracking_uri
    saved = (mlflow.get_tracking_uri(), mlflow.get_registry_uri())
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
        local = Path(
            mlflow.artifacts.download_artifacts(
                f"models:/{s.model_name}/{pm.version}", dst_path=str(tmp / "dl")
            )
        )
        corrupted = 0
        for f in local.rglob("*"):
            if f.is_file() and f.name != "MLmodel":
                f.write_bytes(b"\x80\x04corrupted\x00" + f.read_bytes()[:16][::-1])
                corrupted += 1
        assert corrupted
        exp = client.get_experiment_by_name(s.experiment_name)
        run = client.create_run(exp.experiment_id, run_name="corrupted-artifacts")
        client.log_artifacts(run.info.run_id, str(local), "model")
        client.set_terminated(run.info.run_id)
        rid = run.info.run_id
        bad = client.create_model_version(s.model_name, f"runs:/{rid}/model", rid)
        missing = client.create_model_version(s.model_name, f"runs:/{rid}/no-such-model", rid)
        return str(bad.version), str(missing.version)
    finally:
        mlflow.set_tracking_uri(saved[0])
        mlflow.set_registry_uri(saved[1])


def test_registry_down_at_start_while_running_and_bad_models(
    det_settings: Settings,
    production_model: ProductionModel,
    private_mlflow: MLflow,
    tmp_path: Path,
) -> None:
    pm, svc = production_model, private_mlflow
    s = det_settings.model_copy(update={"mlflow_tracking_uri": svc.url})
    port = s.metrics_port
    figures: dict = {}
    log = tmp_path / "detector.log"
    n1 = produce_frame(s, _frame(pm, -200, 200))

    # 1. MLflow down at start: the detector waits and says how to fix it.
    proc = detector_process(s, log, IOT_MLOPS_ALIAS_POLL_INTERVAL_S="1")
    pid = proc.pid
    try:
        wait_until(lambda: healthz(port) == 503, 120, "/healthz answering 503")
        wait_until(lambda: "unreachable" in log.read_text(errors="replace"), 60, "the log line")
        flat = " ".join(log.read_text(errors="replace").split())  # rich wraps long lines
        line = flat[flat.index("MLflow registry at") :][:400]
        assert "unreachable" in line and "iot-mlops stack up" in line, line
        assert "MLFLOW_TRACKING_URI" in line, line
        time.sleep(3)
        assert proc.poll() is None and healthz(port) == 503
        assert committed(s) == 0, "scored without a model?"
        t0 = time.monotonic()
        svc.start()
        svc.wait_healthy(120)
        figures["mlflow_start_to_healthy_s"] = round(time.monotonic() - t0, 2)
        t1 = time.monotonic()
        wait_until(lambda: healthz(port) == 200, 180, "the detector ready", every=0.2)
        figures["mlflow_healthy_to_detector_ready_s"] = round(time.monotonic() - t1, 2)
        wait_until(lambda: caught_up(s), 240, "first part scored")
        figures["mlflow_healthy_to_first_part_committed_s"] = round(time.monotonic() - t1, 2)

        # 2. MLflow down while running: scoring goes on; the metric shows it.
        t2 = time.monotonic()
        svc.stop()
        wait_until(
            lambda: metric_sum(scrape(port), "iot_registry_reachable") == 0, 60,
            "iot_registry_reachable 0",
        )  # fmt: skip
        figures["mlflow_down_to_metric_0_s"] = round(time.monotonic() - t2, 2)
        n2 = produce_frame(s, _frame(pm, 0, 100))
        wait_until(lambda: caught_up(s), 240, "readings scored while MLflow is down")
        m = scrape(port)
        assert metric_sum(m, "iot_registry_reachable") == 0
        assert metric_sum(m, "iot_model_loaded") == 1
        figures["readings_scored_while_registry_down"] = n2
        assert metric_sum(m, "iot_readings_total") == n1 + n2

        # 3. MLflow back; the alias moves to broken versions.
        t3 = time.monotonic()
        svc.start()
        svc.wait_healthy(120)
        wait_until(
            lambda: metric_sum(scrape(port), "iot_registry_reachable") == 1, 60,
            "iot_registry_reachable 1",
        )  # fmt: skip
        figures["mlflow_restart_to_metric_1_s"] = round(time.monotonic() - t3, 2)
        bad, missing = _bad_versions(s, pm, tmp_path)
        client = mlflow.MlflowClient(tracking_uri=svc.url, registry_uri=svc.url)
        for i, version in enumerate((bad, missing), start=1):
            client.set_registered_model_alias(s.model_name, s.model_alias, version)
            # Failed versions are retried with backoff, so each may count more than once.
            wait_until(
                lambda i=i, v=version: metric_sum(
                    scrape(port), "iot_model_reloads_total", result="failure"
                ) >= i and f"version {v} failed; keeping version" in _flat(log),
                120, f"failure {i} counted and logged",
            )  # fmt: skip
        n3 = produce_frame(s, _frame(pm, 100, 100))
        wait_until(lambda: caught_up(s), 240, "readings scored after the failed reloads")
        m = scrape(port)
        assert proc.poll() is None and proc.pid == pid
        text = stop_detector(proc, log)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert metric_sum(m, "iot_model_reloads_total", result="failure") >= 2
    assert metric_sum(m, "iot_model_reloads_total", result="success") == 1
    assert metric_sum(m, "iot_model_info", model_version=pm.version) == 1
    assert metric_sum(m, "iot_readings_total") == n1 + n2 + n3
    assert sum(end_offsets(s, s.input_topic).values()) == n1 + n2 + n3
    versions = {decode_anomaly(x.value())["model_version"] for x in read_all(s, s.anomalies_topic)}
    assert versions <= {pm.version}
    flat = " ".join(text.split())
    for v in (bad, missing):
        assert f"version {v} failed; keeping version {pm.version}" in flat
    problems = log_problems(text)
    record(
        "mlflow_outage_and_bad_models",
        {
            **figures,
            "readings_in": n1 + n2 + n3,
            "readings_counted": int(metric_sum(m, "iot_readings_total")),
            "bad_versions_tried": 2,
            "reload_failures_counted": int(
                metric_sum(m, "iot_model_reloads_total", result="failure")
            ),
            "model_version_kept": pm.version,
            "detector_restarts": 0,
        },
    )
    assert not problems, problems[:5]


def _flat(log: Path) -> str:
    return " ".join(log.read_text(errors="replace").split())  # rich wraps long lines


def committed(s: Settings) -> int:
    from detector_helpers import committed_offsets

    return sum(max(0, o) for o in committed_offsets(s).values())
