"""Shared fixtures: one real embedded stack (Kafka + MLflow + Prometheus when installed) per
test session, on free ports in a temporary directory, started by the same code as
`iot-mlops stack up`. Tests get unique topic names so they never see each other's data."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable, Iterator

import pytest

from iot_mlops.config import Settings
from iot_mlops.kafka.stack import Stack, free_port
from iot_mlops.kafka.topics import create_topics


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


@pytest.fixture(scope="session")
def production_model(stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory):
    """A real AutoGluon model trained on simulator history, registered and promoted once per
    session in the session's MLflow (small and fast: 4 devices, three days at 1 minute)."""
    from cli_helpers import isolated
    from detector_helpers import ProductionModel

    from iot_mlops.data.simulate import build_fleet, generate
    from iot_mlops.training.pipeline import train

    seed, interval = 7, 60
    s = isolated(
        stack_settings, "detector",
        train_models="RecursiveTabular", train_time_limit_s=60, context_length=128,
    )  # fmt: skip
    fleet = build_fleet(seed, 4)
    start = 1_795_000_000_000 // (interval * 1000) * (interval * 1000)
    steps = 3 * 1440
    path = tmp_path_factory.mktemp("train") / "history.parquet"
    generate(fleet, start, steps, interval, seed).to_parquet(path)
    result = train(s, path, promote=True)
    assert result.promotion is not None, result.promotion_error
    return ProductionModel(
        settings=s, fleet=fleet, end_ms=start + steps * interval * 1000, interval_s=interval,
        seed=seed, version=result.version, run_id=result.run_id,
    )  # fmt: skip


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
