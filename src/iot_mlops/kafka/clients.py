"""Kafka clients: the factories every part uses (all from ``settings.kafka_common()``, so
security settings reach every client), the error that says Kafka is away, and one way to read
a topic to its end.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from iot_mlops.config import Settings
from iot_mlops.errors import ServiceError

log = logging.getLogger("iot_mlops.kafka")

# librdkafka logs every failed connection attempt (20 a second) to stderr; clients made with
# ``quiet=True`` route its logs to this logger, which stays silent unless the user configures
# logging, since their callers raise a clear error instead.
KAFKA_LOGGER = logging.getLogger("iot_mlops.kafka")
KAFKA_LOGGER.addHandler(logging.NullHandler())  # no "last resort" printing to stderr

METADATA_TIMEOUT_S = 10.0

Partition = tuple[str, int]  # (topic, partition)


def _config(settings: Settings, quiet: bool, config: dict[str, Any]) -> dict[str, Any]:
    return {**settings.kafka_common(), **({"logger": KAFKA_LOGGER} if quiet else {}), **config}


def consumer(settings: Settings, group_id: str, quiet: bool = False, **config: Any) -> Consumer:
    """A consumer of group ``group_id``; ``config`` adds librdkafka properties."""
    return Consumer(_config(settings, quiet, {"group.id": group_id, **config}))


def reader(settings: Settings, purpose: str, quiet: bool = False, **config: Any) -> Consumer:
    """A read_committed consumer in a throwaway group that never commits (reading must not
    move anyone's offsets), reporting each partition's end."""
    return consumer(
        settings,
        f"{purpose}-{uuid.uuid4().hex}",
        quiet,
        **{
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            "enable.partition.eof": True,
            **config,
        },
    )


def producer(settings: Settings, quiet: bool = False, **config: Any) -> Producer:
    return Producer(_config(settings, quiet, config))


def admin(settings: Settings) -> AdminClient:
    return AdminClient(settings.kafka_common())


def log_kafka_error(err: KafkaError) -> None:
    """An ``error_cb``: librdkafka reports transient broker trouble here and retries."""
    level = logging.ERROR if err.fatal() else logging.WARNING
    logging.getLogger("iot_mlops.detector").log(level, "kafka: %s", err)


def kafka_unreachable(settings: Settings, detail: object) -> ServiceError:
    if isinstance(detail, KafkaException) and detail.args:
        err = detail.args[0]
        detail = err.str() if hasattr(err, "str") else err
    return ServiceError(
        f"Kafka at {settings.kafka_bootstrap_servers} is unreachable ({detail})",
        fix="start it with `iot-mlops stack up`, or set KAFKA_BOOTSTRAP_SERVERS",
    )


def watermarks(
    client: Consumer, topic: str, timeout: float | None = None
) -> dict[int, tuple[int, int]] | None:
    """(low, high) watermark of each partition of ``topic``, taken now; None when the topic
    does not exist. Raises ``KafkaException`` when the broker does not answer within
    ``timeout`` (default ``METADATA_TIMEOUT_S``)."""
    timeout = METADATA_TIMEOUT_S if timeout is None else timeout
    tmd = client.list_topics(topic, timeout=timeout).topics.get(topic)
    if tmd is None or tmd.error is not None or not tmd.partitions:
        return None
    return {
        p: client.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout, cached=False)
        for p in sorted(tmd.partitions)
    }


def read_to_end(
    client: Consumer,
    ends: dict[Partition, int],
    on_message: Callable[[Message], bool | None],
    *,
    timeout_s: float | None = None,
    idle_timeout_s: float | None = None,
    on_fatal: Callable[[KafkaError], Exception] | None = None,
    on_round: Callable[[], None] | None = None,
    batch: int = 5000,
    poll_s: float = 0.5,
) -> set[Partition]:
    """Consume the partitions of ``ends`` (already assigned to ``client`` at their start
    offsets) up to, not including, each one's end offset, handing every message to
    ``on_message`` (which returns False to finish its partition early).

    Stops when every partition is done, after ``timeout_s`` in all, or after
    ``idle_timeout_s`` without any message (with read_committed, a partition can stall below
    its end behind an open transaction). Returns the partitions not finished. Consumer errors
    are retried by librdkafka and skipped here; a fatal one raises ``on_fatal(err)`` when
    given. ``on_round`` is called after each consume round."""
    todo = dict(ends)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    last_progress = time.monotonic()
    while todo and (deadline is None or time.monotonic() < deadline):
        msgs = client.consume(batch, timeout=poll_s)
        if not msgs:
            if idle_timeout_s is not None and time.monotonic() - last_progress > idle_timeout_s:
                break
            continue
        last_progress = time.monotonic()
        for msg in msgs:
            _take(msg, todo, on_message, on_fatal)
        _drop_passed(client, todo)
        if on_round is not None:
            on_round()
    return set(todo)


def _take(
    msg: Message,
    todo: dict[Partition, int],
    on_message: Callable[[Message], bool | None],
    on_fatal: Callable[[KafkaError], Exception] | None,
) -> None:
    key = (msg.topic(), msg.partition())
    err = msg.error()
    if err is not None:
        # A read_committed reader reaches "the end" at the last stable offset: a partition
        # whose end lies past an open transaction (a producer killed or replaced mid-
        # transaction) is not done until the broker resolves it; the timeouts bound that.
        if err.code() == KafkaError._PARTITION_EOF and msg.offset() >= todo.get(key, 0):
            todo.pop(key, None)
        elif err.fatal() and on_fatal is not None:
            raise on_fatal(err)
        return  # transient: librdkafka retries; the timeouts bound it
    end = todo.get(key)
    off = msg.offset()
    if end is None or off >= end:  # beyond the snapshot, or partition finished
        todo.pop(key, None)
        return
    if off >= end - 1:
        todo.pop(key, None)
    if on_message(msg) is False:
        todo.pop(key, None)


def _drop_passed(client: Consumer, todo: dict[Partition, int]) -> None:
    """Transaction markers take offsets without being delivered: the position tells that a
    partition is done even when its last offset is a control record."""
    if not todo:
        return
    for tp in client.position([TopicPartition(t, p) for t, p in todo]):
        key = (tp.topic, tp.partition)
        if tp.offset >= 0 and tp.offset >= todo.get(key, 0):
            todo.pop(key, None)


def read_topic(
    settings: Settings,
    topic: str,
    timeout_s: float = 300.0,
    on_progress: Callable[[int, int], None] | None = None,
) -> list[Message]:
    """Every committed message of ``topic`` (read_committed), from the start up to its end
    offsets now. ``on_progress(read, total)`` follows the read. Raises ``ServiceError`` when
    the topic is not read to its end within ``timeout_s``."""
    c = reader(settings, "reader")
    out: list[Message] = []
    try:
        ends = {(topic, p): hi for p, hi in high_watermarks(settings, topic).items() if hi > 0}
        total = sum(ends.values())
        c.assign([TopicPartition(t, p, 0) for t, p in ends])
        progress = (lambda: on_progress(len(out), total)) if on_progress else None
        left = read_to_end(c, ends, out.append, timeout_s=timeout_s, on_round=progress)
    finally:
        c.close()
    if left:
        raise ServiceError(
            f"reading {topic} timed out ({len(out):,} messages read): a transaction still open "
            f"on it holds read_committed readers until its producer's transaction.timeout.ms",
            fix="retry once the producer that left it open has been restarted or timed out",
        )
    return out


def high_watermarks(settings: Settings, topic: str) -> dict[int, int]:
    """Each partition's high watermark now, open transactions included (a read_committed
    consumer's watermarks stop at the last stable offset, which would silently cut a read
    "up to the end now" short of what was committed after an open transaction)."""
    c = consumer(
        settings, f"probe-{uuid.uuid4().hex}", quiet=True, **{"isolation.level": "read_uncommitted"}
    )
    try:
        return {p: hi for p, (_lo, hi) in (watermarks(c, topic) or {}).items()}
    finally:
        c.close()
