"""Where generated or collected readings go: a Kafka topic (an idempotent producer that counts
deliveries) or a parquet file written atomically."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from confluent_kafka import KafkaException

from iot_mlops.config import Settings
from iot_mlops.events import Reading, encode_reading
from iot_mlops.kafka import clients

if TYPE_CHECKING:
    from iot_mlops.data.simulate import SimulationReport


class KafkaSink:
    """An idempotent producer that counts deliveries and failures in ``report``; creates the
    topic when it does not exist."""

    def __init__(self, settings: Settings, topic: str, report: SimulationReport) -> None:
        self.topic = topic
        self.report = report
        self.producer = clients.producer(
            settings,
            quiet=True,
            **{
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 20,
                "compression.type": "lz4",
                # Java clients' partitioner: devices producing with either client agree on
                # which partition holds a device.
                "partitioner": "murmur2_random",
                # Fail a stuck delivery within a minute instead of librdkafka's five.
                "message.timeout.ms": 60_000,
                "error_cb": self._on_error,
            },
        )
        try:
            md = self.producer.list_topics(timeout=clients.METADATA_TIMEOUT_S)
        except KafkaException as e:
            raise clients.kafka_unreachable(settings, e) from None
        if topic not in md.topics or md.topics[topic].error is not None:
            from iot_mlops.kafka.topics import create_topics

            create_topics(settings, {topic: settings.input_partitions})

    def _on_error(self, err: Any) -> None:
        # Transient broker errors are retried by librdkafka; only delivery reports count.
        if self.report.first_error is None and err.fatal():
            self.report.first_error = str(err)

    def _on_delivery(self, err: Any, _msg: Any) -> None:
        if err is None:
            self.report.delivered += 1
        else:
            self.report.failed += 1
            if self.report.first_error is None:
                self.report.first_error = str(err)

    def send(self, r: Reading) -> None:
        key = r.device_id.encode()
        value = encode_reading(r)
        while True:
            try:
                self.producer.produce(self.topic, value, key, on_delivery=self._on_delivery)
                return
            except BufferError:  # local queue full: let deliveries drain, then retry
                self.producer.poll(0.05)

    def poll(self) -> None:
        self.producer.poll(0)

    def flush(self, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.producer.flush(1.0) > 0:
            if time.monotonic() > deadline:
                left = len(self.producer)
                self.report.failed += left
                self.report.first_error = self.report.first_error or (
                    f"{left} readings still queued after {timeout_s:.0f} s"
                )
                return


def write_parquet_atomic(df: pd.DataFrame, path: Path) -> None:
    """Write via a temporary file, so a half-written training set never appears under the
    real name (used by simulate and collect)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    df.to_parquet(tmp, index=False)
    tmp.replace(path)
