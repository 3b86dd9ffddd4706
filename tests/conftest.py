"""Shared fixtures: one real embedded stack (Kafka + MLflow + Prometheus when installed) per
test session, on free ports in a temporary directory, started by the same code as
`iot-mlops stack up`. Tests get unique topic names so they never see each other's data."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable, Iterator

import pytest

from iot_mlops.config import Settings
from iot_mlops.stack import Stack, free_port
from iot_mlops.topics import create_topics


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    state = tmp_path_factory.mktemp("stack")
    kafka_port, controller_port, mlflow_port, prom_port, metrics_port = (
        free_port() for _ in range(5)
    )
    settings = Settings(
        state_dir=state,
        kafka_bootstrap_servers=f"127.0.0.1:{kafka_port}",
        kafka_port=kafka_port,
        kafka_controller_port=controller_port,
        mlflow_tracking_uri=f"http://127.0.0.1:{mlflow_port}",
        mlflow_port=mlflow_port,
        prometheus_port=prom_port,
        metrics_port=metrics_port,
        input_partitions=3,
        input_topic=f"iot_sensor_data-{uuid.uuid4().hex[:8]}",
    )
    st = Stack(settings, with_prometheus=shutil.which("prometheus") is not None)
    try:
        st.up()
        yield st
    finally:
        st.down()


@pytest.fixture(scope="session")
def stack_settings(stack: Stack) -> Settings:
    return stack.s


@pytest.fixture
def topic_factory(stack_settings: Settings) -> Callable[..., str]:
    """Creates a fresh topic with a unique name; returns the name."""

    def make(prefix: str = "t", partitions: int = 3) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        create_topics(stack_settings, {name: partitions})
        return name

    return make


@pytest.fixture
def settings(stack_settings: Settings, topic_factory: Callable[..., str]) -> Settings:
    """Settings for one test: the session's stack with its own input/output/DLQ topics."""
    base = topic_factory("in", partitions=3)
    create_topics(stack_settings, {f"{base}.anomalies": 3, f"{base}.dlq": 3})
    return stack_settings.model_copy(
        update={
            "input_topic": base,
            "anomalies_topic": f"{base}.anomalies",
            "dlq_topic": f"{base}.dlq",
            "consumer_group": f"grp-{base}",
            "experiment_name": f"exp-{base}",
            "model_name": f"model-{base}",
        }
    )
