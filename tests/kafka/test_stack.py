"""The embedded stack, for real: Kafka answers, a reading round-trips through the broker with
the project's codec, MLflow records a run, and `stack down` leaves no process behind."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import mlflow
import psutil
import pytest
from confluent_kafka import Consumer, Producer

from iot_mlops.config import Settings
from iot_mlops.errors import ServiceError
from iot_mlops.events import Reading, decode_reading, encode_reading
from iot_mlops.kafka.stack import MLflow, Stack, free_port

pytestmark = pytest.mark.integration


def test_services_are_healthy(stack: Stack) -> None:
    statuses = {st.name: st for st in stack.status()}
    assert statuses["kafka"].healthy and statuses["mlflow"].healthy
    assert httpx.get(f"{statuses['mlflow'].url}/health").status_code == 200
    if "prometheus" in statuses:
        assert httpx.get(f"{statuses['prometheus'].url}/-/ready").status_code == 200


def test_stack_created_the_contract_topics(stack_settings: Settings) -> None:
    from iot_mlops.kafka.topics import admin_client

    topics = admin_client(stack_settings).list_topics(timeout=10).topics
    assert len(topics[stack_settings.input_topic].partitions) == stack_settings.input_partitions
    assert stack_settings.anomalies_topic in topics
    assert stack_settings.dlq_topic in topics


def test_reading_round_trips_through_the_broker(settings: Settings) -> None:
    readings = [
        Reading(
            f"pump-{i:03d}", "pump", "temperature", 70.0 + i, 1_795_665_600_000 + i * 1000, i == 3
        )
        for i in range(10)
    ]
    producer = Producer({**settings.kafka_common(), "enable.idempotence": True})
    errors: list[object] = []
    for r in readings:
        producer.produce(
            settings.input_topic, encode_reading(r), key=r.device_id,
            on_delivery=lambda err, _msg: errors.append(err) if err else None,
        )  # fmt: skip
    assert producer.flush(30) == 0 and not errors

    consumer = Consumer(
        {
            **settings.kafka_common(),
            "group.id": f"g-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([settings.input_topic])
    got: list[Reading] = []
    try:
        for _ in range(60):
            for msg in consumer.consume(100, timeout=1.0):
                assert msg.error() is None
                got.append(decode_reading(msg.value()))
                assert msg.key() == got[-1].device_id.encode()
            if len(got) >= len(readings):
                break
    finally:
        consumer.close()
    assert sorted(got, key=lambda r: r.device_id) == readings


def test_mlflow_records_a_run(settings: Settings) -> None:
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_experiment(settings.experiment_name)
    with mlflow.start_run() as run:
        mlflow.log_param("answer", 42)
        mlflow.log_metric("mase", 0.81)
        mlflow.log_text("hello", "notes/hello.txt")
    client = mlflow.MlflowClient(settings.mlflow_tracking_uri)
    got = client.get_run(run.info.run_id)
    assert got.data.params["answer"] == "42"
    assert got.data.metrics["mase"] == pytest.approx(0.81)
    # Artifacts are served by the tracking server (proxied), not written to a local path.
    assert client.list_artifacts(run.info.run_id, "notes")[0].path == "notes/hello.txt"


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        svc = MLflow(Settings(state_dir=tmp_path, mlflow_port=port))
        with pytest.raises(ServiceError) as exc:
            svc.start()
    msg = str(exc.value)
    assert f"127.0.0.1:{port} is already in use" in msg and "mlflow" in msg
    assert svc.pid() is None


def test_missing_kafka_jars_is_a_clear_error(tmp_path: Path) -> None:
    s = Settings(state_dir=tmp_path, kafka_libs_dir=tmp_path / "nope", kafka_port=free_port())
    with pytest.raises(ServiceError, match="make setup"):
        Stack(s, with_prometheus=False).up()


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("iot-mlops")
    return subprocess.run([str(exe), *args], env=env, capture_output=True, text=True, timeout=300)


def test_cli_up_status_down_leaves_no_process(tmp_path: Path) -> None:
    """The user's path end to end, on its own ports and state dir."""
    env = dict(os.environ)
    kafka_port = free_port()
    env.update(
        IOT_MLOPS_STATE_DIR=str(tmp_path / "state"),
        IOT_MLOPS_KAFKA_PORT=str(kafka_port),
        KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{kafka_port}",
        IOT_MLOPS_KAFKA_CONTROLLER_PORT=str(free_port()),
        IOT_MLOPS_MLFLOW_PORT=str(free_port()),
        IOT_MLOPS_PROMETHEUS_PORT=str(free_port()),
        IOT_MLOPS_INPUT_PARTITIONS="2",
    )
    try:
        _up_status_down(tmp_path / "state", env)
    finally:  # a failed assertion must not leave the stack running
        _cli("stack", "down", env=env)


def _up_status_down(state: Path, env: dict[str, str]) -> None:
    up = _cli("stack", "up", env=env)
    assert up.returncode == 0, up.stdout + up.stderr
    # It says what happens, not how the health probe's client retries (issue 13, item 10).
    assert "kafka: healthy" in up.stderr + up.stdout
    assert "Connection refused" not in up.stderr + up.stdout, up.stderr
    status = _cli("stack", "status", env=env)
    assert status.returncode == 0, status.stdout + status.stderr
    assert "kafka" in status.stdout and "healthy" in status.stdout
    pids = [int(p) for p in _pids(state)]
    assert len(pids) >= 2
    down = _cli("stack", "down", env=env)
    assert down.returncode == 0 and "stopped" in down.stderr
    assert not [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]
    after = _cli("stack", "status", env=env)
    assert after.returncode == 1 and "stopped" in after.stdout
    # Data survives down/up: the formatted Kafka storage is still there.
    assert (state / "kafka" / "data" / "meta.properties").exists()


def _pids(state: Path) -> list[str]:
    import json

    return [str(json.loads(p.read_text())["pid"]) for p in (state / "run").glob("*.pid")]
