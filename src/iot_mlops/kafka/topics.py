"""Topic administration: the topics of DESIGN.md, created idempotently."""

from __future__ import annotations

import time

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from iot_mlops.config import Settings
from iot_mlops.errors import ServiceError
from iot_mlops.kafka.clients import admin as admin_client


def create_topics(
    settings: Settings, partitions: dict[str, int], replication_factor: int = 1
) -> list[str]:
    """Create the topics that do not exist yet; returns those it created."""
    admin = admin_client(settings)
    try:
        existing = set(admin.list_topics(timeout=10).topics)
    except KafkaException as e:
        raise ServiceError(
            f"Kafka at {settings.kafka_bootstrap_servers} is unreachable: {e}",
            fix="start it with `iot-mlops stack up` or set KAFKA_BOOTSTRAP_SERVERS",
        ) from None
    wanted = [
        NewTopic(name, num_partitions=n, replication_factor=replication_factor)
        for name, n in partitions.items()
        if name not in existing
    ]
    if not wanted:
        return []
    created = []
    for name, fut in admin.create_topics(wanted, operation_timeout=30).items():
        try:
            fut.result(timeout=60)
            created.append(name)
        except KafkaException as e:
            if e.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise ServiceError(f"creating topic {name} failed: {e}") from None
    _wait_until_served(admin, created)
    return created


def _wait_until_served(admin: AdminClient, names: list[str], timeout_s: float = 30.0) -> None:
    """Until every partition of ``names`` has a leader: the controller answers the creation
    before the broker serves the topic, and a client that asks in between (watermarks,
    metadata) is told the topic does not exist or has no leader."""
    deadline = time.monotonic() + timeout_s
    while names and time.monotonic() < deadline:
        topics = admin.list_topics(timeout=10).topics
        if all(
            (t := topics.get(n)) is not None
            and t.error is None
            and t.partitions
            and all(pm.leader >= 0 and pm.error is None for pm in t.partitions.values())
            for n in names
        ):
            return
        time.sleep(0.1)


def ensure_topics(settings: Settings) -> list[str]:
    n = settings.input_partitions
    return create_topics(
        settings,
        {settings.input_topic: n, settings.anomalies_topic: n, settings.dlq_topic: n},
    )
