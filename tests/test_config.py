"""The settings object honours the contract's environment variables and CLI overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from iot_mlops.config import Settings

pytestmark = pytest.mark.unit


def test_defaults_match_the_contract() -> None:
    s = Settings()
    assert s.input_topic == "iot_sensor_data"
    assert s.anomalies_topic == "iot_anomalies"
    assert s.dlq_topic == "iot_sensor_data.dlq"
    assert s.model_name == "AutoGluonIoTAnomalyDetector"
    assert s.model_alias == "production"
    assert s.experiment_name == "IoT Anomaly Detection"
    assert (s.kafka_port, s.mlflow_port, s.metrics_port, s.prometheus_port) == (
        9092,
        5000,
        8000,
        9090,
    )


def test_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka:29092")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    monkeypatch.setenv("IOT_MLOPS_INPUT_PARTITIONS", "12")
    monkeypatch.setenv("IOT_MLOPS_STATE_DIR", "/tmp/x")
    monkeypatch.setenv("IOT_MLOPS_KAFKA_CLIENT_CONFIG", '{"security.protocol": "SASL_SSL"}')
    s = Settings()
    assert s.kafka_bootstrap_servers == "kafka:29092"
    assert s.mlflow_tracking_uri == "http://mlflow:5000"
    assert s.input_partitions == 12
    assert s.state_dir == Path("/tmp/x")
    common = s.kafka_common()
    assert common["bootstrap.servers"] == "kafka:29092"
    assert common["security.protocol"] == "SASL_SSL"


def test_flags_override_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IOT_MLOPS_INPUT_PARTITIONS", "12")
    s = Settings().with_overrides(input_partitions=3, state_dir=None)
    assert s.input_partitions == 3
    assert s.state_dir == Path(".iot-mlops")  # None means "flag not given"


def test_invalid_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IOT_MLOPS_INPUT_PARTITIONS", "0")
    with pytest.raises(ValueError, match="input_partitions"):
        Settings()
