"""The transaction protocol: one consumed batch = one Kafka transaction.

Each batch's anomalies, score records, dead letters and consumed offsets are produced in one
transaction (``send_offsets_to_transaction``), in these steps:

1. begin the transaction and produce the batch's records;
2. send the consumed offsets, under a hard deadline (a hung call replaces the producer);
3. commit, retrying retriable errors;
4. on an abortable error: abort, then rewind, i.e. seek the consumer back to the committed
   offsets and let the runner rebuild the affected series' state, so the batch is redone as
   if the failed attempt never happened.
"""

from __future__ import annotations

import itertools
import logging
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from iot_mlops.config import Settings
from iot_mlops.detector.batch import BatchOutput, Partition
from iot_mlops.detector.metrics import DetectorMetrics
from iot_mlops.detector.publish import Outgoing, Publisher
from iot_mlops.kafka import clients

log = logging.getLogger("iot_mlops.detector")

# How long send_offsets_to_transaction may block before the producer is taken as stuck.
SEND_OFFSETS_DEADLINE_S = 45

# Called after a rewind with the committed offsets of the partitions sought back.
OnRewind = Callable[[list[TopicPartition]], None]
OnDelivery = Callable[[KafkaError | None, Message], None]


def replica_name(settings: Settings) -> str:
    """This replica's name (``instance_id``, or its host name when asked); "" = unnamed."""
    if settings.instance_id or not settings.instance_id_from_hostname:
        return settings.instance_id
    return re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())[:200]


def transactional_id(settings: Settings) -> str:
    """This replica's transactional.id: stable across its restarts when it is named
    (``instance_id``), so a new producer fences the last one's open transaction."""
    return f"{settings.consumer_group}-{replica_name(settings) or uuid.uuid4().hex[:12]}"


def new_producer(
    settings: Settings, txn_id: str, on_delivery: OnDelivery | None = None
) -> Producer:
    """A transactional, idempotent producer with its transactions initialised (which aborts
    whatever an earlier producer with ``txn_id`` left open); failed deliveries are reported
    to ``on_delivery``."""
    s = settings
    extra = {"on_delivery": on_delivery, "delivery.report.only.error": True} if on_delivery else {}
    p = clients.producer(
        s,
        **{
            "transactional.id": txn_id,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "transaction.timeout.ms": s.transaction_timeout_ms,
            "error_cb": clients.log_kafka_error,
            **extra,
        },
    )
    p.init_transactions(60)
    return p


class Transactions:
    """Commits batches transactionally with ``consumer``'s offsets; owns the producer."""

    def __init__(
        self,
        settings: Settings,
        metrics: DetectorMetrics,
        consumer: Consumer,
        owned: set[Partition],
        on_rewind: OnRewind,
    ) -> None:
        self.settings, self.metrics, self.consumer = settings, metrics, consumer
        self.owned = owned  # the runner's live set of assigned partitions
        self.on_rewind = on_rewind
        self.publisher = Publisher(settings.dlq_topic, settings.dlq_max_key_bytes)
        # One id for every producer of this process: a replacement fences the one it
        # replaces, so the transaction that one left open is aborted now, not at its timeout.
        self.txn_id = transactional_id(settings)
        self.producer = self._new_producer()

    def _new_producer(self) -> Producer:
        return new_producer(self.settings, self.txn_id, self.publisher.on_delivery)

    def commit(self, out: BatchOutput) -> bool:
        """Records + consumed offsets in one transaction; True once committed. An aborted
        batch is rewound (False): the caller counts nothing of it, it is redone."""
        if not out.offsets:
            return False  # nothing consumed that this replica owns (e.g. only stale messages)
        p, t0 = self.producer, time.monotonic()
        try:
            p.begin_transaction()
            self.publisher.begin()
            for rec in outgoing(self.settings, out):
                self.publisher.produce(p, rec)
            offsets = [TopicPartition(t, part, off) for (t, part), off in out.offsets.items()]
            if not self._send_offsets(p, offsets):
                self._replace_hung_producer(list(out.offsets))
                return False
            self._commit_transaction(p)
        except KafkaException as e:
            err: KafkaError = e.args[0]
            if err.txn_requires_abort():
                log.warning(
                    "transaction aborted (%s); redoing the batch from committed offsets", err
                )
                self._abort(p)
                self.metrics.transactions.labels(result="aborted").inc()
                self.rewind(list(out.offsets))
                return False
            raise
        self.metrics.transactions.labels(result="committed").inc()
        self.metrics.commit_seconds.observe(time.monotonic() - t0)
        for output in self.publisher.replaced:
            self.metrics.unpublishable.labels(output).inc()
        return True

    def _abort(self, p: Producer) -> None:
        """Abort, retrying what librdkafka says to retry ("retry call to resume"); a producer
        that still cannot abort is replaced (its successor, under the same transactional.id,
        fences it and aborts its transaction; its records never become visible)."""
        for attempt in range(5):
            try:
                p.abort_transaction(60)
                return
            except KafkaException as e:
                err: KafkaError = e.args[0]
                transient = err.retriable() or err.code() == KafkaError._TIMED_OUT
                if not transient or attempt == 4:
                    log.error("aborting the transaction failed (%s); replacing the producer", err)
                    self.producer = self._new_producer()
                    return
                log.warning("aborting the transaction failed (%s); retrying", err)
                time.sleep(min(5.0, 0.2 * 2**attempt))

    def _replace_hung_producer(self, partitions: list[Partition]) -> None:
        # librdkafka can block in send_offsets_to_transaction() forever, past its
        # timeout, when the group coordinator goes away mid-transaction (seen here
        # with a single broker restarted; confluentinc/librdkafka#5456, #5511). The
        # stuck call is left to its daemon thread with its producer; a fresh producer
        # under the same transactional.id fences it (its open transaction is aborted,
        # never committed) and redoes the batch from the committed offsets.
        log.error(
            "sending offsets to the transaction hung for %ds; replacing the producer "
            "and redoing the batch from committed offsets", SEND_OFFSETS_DEADLINE_S,
        )  # fmt: skip
        self.metrics.transactions.labels(result="aborted").inc()
        self.producer = self._new_producer()
        self.rewind(partitions)

    def _send_offsets(self, p: Producer, offsets: list[TopicPartition]) -> bool:
        """``send_offsets_to_transaction`` with a hard deadline per call (False if a call
        hung) and retries of retriable errors: with the broker away (a restart) the call fails
        with e.g. ``_TRANSPORT``, which librdkafka documents as retriable, not as fatal."""
        give_up = time.monotonic() + self.settings.transaction_timeout_ms / 1000 + 60
        for attempt in itertools.count():
            meta = self.consumer.consumer_group_metadata()
            failed: list[KafkaException] = []

            def call(meta: object = meta, failed: list = failed) -> None:
                try:
                    p.send_offsets_to_transaction(offsets, meta, SEND_OFFSETS_DEADLINE_S * 2 / 3)
                except KafkaException as e:  # re-raised in the runner's thread
                    failed.append(e)

            t = threading.Thread(target=call, name="send-offsets", daemon=True)
            t.start()
            t.join(SEND_OFFSETS_DEADLINE_S)
            if t.is_alive():
                return False
            if not failed:
                return True
            err: KafkaError = failed[0].args[0]
            if err.txn_requires_abort() or not err.retriable() or time.monotonic() > give_up:
                raise failed[0]
            log.warning("sending offsets to the transaction failed (%s); retrying", err)
            time.sleep(min(5.0, 0.2 * 2**attempt))
        raise AssertionError("unreachable")

    @staticmethod
    def _commit_transaction(p: Producer) -> None:
        for attempt in range(10):
            try:
                p.commit_transaction(60)
                return
            except KafkaException as e:
                if e.args[0].retriable() and attempt < 9:
                    time.sleep(min(5.0, 0.2 * 2**attempt))
                    continue
                raise

    def rewind(self, partitions: list[Partition]) -> None:
        """After an abort: back to the committed offsets, with state rebuilt to match."""
        # Partitions lost meanwhile (e.g. the session timed out while the broker was away)
        # cannot be seeked; they were dropped and resume from the committed offsets when
        # they are assigned again.
        partitions = [tp for tp in partitions if tp in self.owned]
        if not partitions:
            return
        tps = [TopicPartition(t, p) for t, p in partitions]
        committed = self._committed(tps)
        for tp in committed:
            if tp.offset >= 0:
                self.consumer.seek(tp)
            else:
                self.consumer.seek(TopicPartition(tp.topic, tp.partition, -2))  # OFFSET_BEGINNING
        self.on_rewind(committed)

    def _committed(self, tps: list[TopicPartition]) -> list[TopicPartition]:
        """The group's committed offsets, retried while the coordinator is away (a broker
        restart can outlast one 30 s call) up to the transaction timeout plus a minute."""
        give_up = time.monotonic() + self.settings.transaction_timeout_ms / 1000 + 60
        for attempt in itertools.count():
            try:
                return self.consumer.committed(tps, timeout=30)
            except KafkaException as e:
                err: KafkaError = e.args[0]
                transient = err.retriable() or err.code() == KafkaError._TIMED_OUT
                if not transient or time.monotonic() > give_up:
                    raise
                log.warning("reading the committed offsets failed (%s); retrying", err)
                time.sleep(min(5.0, 0.2 * 2**attempt))
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.producer.flush(10)


def outgoing(settings: Settings, out: BatchOutput) -> list[Outgoing]:
    """The batch's records in publication order: anomalies, score records, dead letters."""
    s = settings
    recs = [Outgoing("anomalies", s.anomalies_topic, k, v) for k, v in out.anomalies]
    recs += [Outgoing("scores", s.scores_topic, k, v) for k, v in out.scores]
    recs += [
        Outgoing("dlq", s.dlq_topic, dl.key, dl.value, tuple(dl.headers()))
        for dl in out.dead_letters
    ]
    return recs
