"""Helpers for tests that run real detectors against the real broker and registry."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from iot_mlops.config import Settings
from iot_mlops.data.simulate import readings
from iot_mlops.detector.runner import Detector
from iot_mlops.events import decode_anomaly, encode_reading
from iot_mlops.kafka import clients
from iot_mlops.kafka.stack import free_port


@dataclass
class ProductionModel:
    settings: Settings  # model name / experiment of the session's trained model
    fleet: list
    end_ms: int  # first step after the training data
    interval_s: int
    seed: int
    version: str
    run_id: str


def produce_frame(
    settings: Settings, df: pd.DataFrame, extra: Iterable[tuple[bytes, bytes]] = ()
) -> int:
    """Produce the frame's readings (and extra raw (key, value) messages) in time order."""
    p = clients.producer(settings, **{"enable.idempotence": True, "linger.ms": 5})
    n = 0
    for r in readings(df):
        p.produce(settings.input_topic, encode_reading(r), key=r.device_id)
        n += 1
        if n % 10_000 == 0:
            p.poll(0)
    for key, value in extra:
        p.produce(settings.input_topic, value, key=key)
        n += 1
    assert p.flush(60) == 0
    return n


def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    return clients.high_watermarks(settings, topic)


def committed_offsets(settings: Settings) -> dict[int, int]:
    """The group's committed offsets; empty while the coordinator is still moving/loading or
    the offsets are unstable (a killed detector's open transaction holds them until the broker
    aborts it or a restarted producer fences it, so a read_committed fetch times out)."""
    c = clients.consumer(settings, settings.consumer_group)
    try:
        parts = (
            c.list_topics(settings.input_topic, timeout=10).topics[settings.input_topic].partitions
        )
        tps = [TopicPartition(settings.input_topic, p) for p in parts]
        return {tp.partition: tp.offset for tp in c.committed(tps, timeout=10)}
    except KafkaException as e:
        code = e.args[0].code()
        if e.args[0].retriable() or code in (KafkaError.NOT_COORDINATOR, KafkaError._TIMED_OUT):
            return {}
        raise
    finally:
        c.close()


def wait_until(cond: Callable[[], bool], timeout: float, what: str, every: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def caught_up(settings: Settings) -> bool:
    try:
        ends = end_offsets(settings, settings.input_topic)
    except KafkaException:
        # Not yet: a broker that has just restarted may not know the partitions' leaders
        # yet (UNKNOWN_PARTITION); the polling callers retry.
        return False
    done = committed_offsets(settings)
    return all(done.get(p, -1) >= end for p, end in ends.items() if end > 0)


def read_all(settings: Settings, topic: str, timeout: float | None = None) -> list:
    """Every committed message of ``topic`` (read_committed), up to its end offsets now. By
    default it waits out a transaction left open (the broker aborts it after the producer's
    transaction timeout, checked every 10 s) rather than fail."""
    if timeout is None:
        timeout = settings.transaction_timeout_ms / 1000 + 60
    return clients.read_topic(settings, topic, timeout_s=timeout)


def anomalies(
    settings: Settings, event: str | None = "opened", timeout: float | None = None
) -> list[dict]:
    """The episode events of the anomalies topic (by default the openings: one per
    departure); ``event=None`` returns every event."""
    msgs = read_all(settings, settings.anomalies_topic, timeout)
    evs = [decode_anomaly(m.value()) for m in msgs]
    return [e for e in evs if event is None or e["event"] == event]


class RunningDetector:
    """A real Detector in a thread of the test process (its own metrics registry)."""

    def __init__(self, settings: Settings) -> None:
        self.detector = Detector(settings)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.detector.run()
        except BaseException as e:  # surfaced by stop()
            self.error = e

    def stop(self) -> None:
        self.detector.stop()
        self.thread.join(60)
        assert not self.thread.is_alive(), "detector did not stop within 60 s"
        if self.error is not None:
            raise self.error

    def metric(self, name: str, **labels: str) -> float:
        v = self.detector.metrics.registry.get_sample_value(name, labels or None)
        return 0.0 if v is None else v


def detector_settings(s: Settings, pm: ProductionModel) -> Settings:
    """``s`` (topics, group, broker) serving the session's production model."""
    return s.model_copy(
        update={
            "model_name": pm.settings.model_name,
            "experiment_name": pm.settings.experiment_name,
            "alias_poll_interval_s": 1.0,
            "metrics_port": free_port(),
            "batch_max_messages": 2000,
        }
    )


def stop_detector(proc: subprocess.Popen, log: Path) -> str:
    """SIGTERM a detector process, which must exit 0 within 60 s; returns its log."""
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(60)
    text = log.read_text(errors="replace")
    assert rc == 0, text[-3000:]
    return text


# The settings a detector process takes from the test's (as IOT_MLOPS_<NAME>).
_PASSED_ON = ("input_topic", "anomalies_topic", "dlq_topic", "consumer_group", "model_name",
              "metrics_port")  # fmt: skip


def detector_process(s: Settings, log: Path, **extra_env: str) -> subprocess.Popen:
    """`iot-mlops detect` as a real process configured like ``s`` (output to ``log``)."""
    env = dict(os.environ)
    env.update(
        KAFKA_BOOTSTRAP_SERVERS=s.kafka_bootstrap_servers,
        MLFLOW_TRACKING_URI=s.mlflow_tracking_uri,
        IOT_MLOPS_BATCH_MAX_MESSAGES="300",
        IOT_MLOPS_ALIAS_POLL_INTERVAL_S="1",
    )
    env.update({f"IOT_MLOPS_{name.upper()}": str(getattr(s, name)) for name in _PASSED_ON})
    env.update(extra_env)
    exe = Path(sys.executable).with_name("iot-mlops")
    return subprocess.Popen(
        [str(exe), "detect"], env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT
    )


def register_copy(settings: Settings, version: str, digest: bool = True) -> str:
    """Register the artifacts of ``version`` again as a new version, tagged with their digest
    as `train` tags its versions (unless not ``digest``): a promotion that loads fine.
    (register_model, not create_model_version: MLflow 3 wants the logged model's id with a
    models:/ source.)"""
    import mlflow

    from iot_mlops.lifecycle.registry import record_integrity

    uri = settings.mlflow_tracking_uri
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    source = client.get_model_version(settings.model_name, version).source
    saved = (mlflow.get_tracking_uri(), mlflow.get_registry_uri())
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        new = str(mlflow.register_model(source, settings.model_name).version)
    finally:
        mlflow.set_tracking_uri(saved[0])
        mlflow.set_registry_uri(saved[1])
    if digest:
        record_integrity(settings, new)
    return new
