"""The stream runner: owns the consume → score → produce → commit loop and the rebalance
callbacks, and wires the units that do the work:

- ``batch.process_batch``: decode and score a batch, build its records and metric deltas;
- ``transaction.Transactions``: exactly-once publication. Each consumed batch is one Kafka
  transaction holding its anomalies, its dead letters and the consumed offsets. Readers of the
  output use ``isolation.level=read_committed``. If a transaction aborts, the consumer seeks
  back to the committed offsets and the affected series' state is rebuilt, so the batch is
  redone as if the failed attempt never happened. A SIGKILLed detector leaves an open
  transaction that the broker aborts (or the next instance's producer fences); its successor
  resumes from the committed offsets;
- ``restore.rebuild``: on partition assignment each series' window is rebuilt from the recent
  log before the committed offset, so a replica that takes over a partition scores like the
  one that left;
- ``watcher.ModelWatcher``: loads newly promoted models in the background.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from iot_mlops.config import Settings
from iot_mlops.detector import restore
from iot_mlops.detector.batch import (
    Incoming,
    Partition,
    SeriesGauges,
    apply_committed,
    apply_observed,
    process_batch,
)
from iot_mlops.detector.metrics import DetectorMetrics
from iot_mlops.detector.transaction import Transactions, replica_name
from iot_mlops.detector.watcher import (
    Loader,
    ModelWatcher,
    Resolver,
    default_loader,
    default_resolver,
)
from iot_mlops.kafka import clients
from iot_mlops.scoring.engine import Engine, ForecasterLike
from iot_mlops.scoring.liveness import LivenessConfig
from iot_mlops.scoring.rules import engine_options

log = logging.getLogger("iot_mlops.detector")


class Detector:
    def __init__(
        self,
        settings: Settings,
        metrics: DetectorMetrics | None = None,
        resolve: Resolver = default_resolver,
        load: Loader = default_loader,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or DetectorMetrics(max_label_values=settings.max_label_values)
        self.stop_event = threading.Event()
        self.watcher = ModelWatcher(settings, self.metrics, self.stop_event, resolve, load)
        self.gauges = SeriesGauges(self.metrics, settings.series_gauge_limit)
        self.engine: Engine | None = None
        self.assigned: set[Partition] = set()
        self.partition_series: dict[Partition, set[str]] = {}
        self.consumer: Consumer | None = None
        self.transactions: Transactions | None = None
        self.batches = 0
        self.last_beat = time.monotonic()  # the loop's last sign of life (/livez)

    @property
    def m(self) -> DetectorMetrics:
        """Short alias of ``metrics`` (used by evaluation.pipeline)."""
        return self.metrics

    # --- state shown by /readyz and /livez -----------------------------------------------------
    def ready(self) -> bool:
        """Serving: a model loaded and partitions to score."""
        return self.engine is not None and bool(self.assigned)

    def beat(self) -> None:
        self.last_beat = time.monotonic()

    def stalled_for(self) -> float:
        """Seconds since the loop last moved. A spare replica (no partitions) or one waiting
        for its model is alive: its loop keeps moving."""
        return time.monotonic() - self.last_beat

    def stop(self) -> None:
        self.stop_event.set()
        self.watcher.wake.set()

    # --- lifecycle ----------------------------------------------------------------------------
    def run(self) -> int:
        s = self.settings
        self.metrics.model_loaded.set(0)
        self.watcher.start()
        if not self._wait_for_model():
            return 0
        self.consumer = self._new_consumer()
        self.transactions = Transactions(
            s, self.metrics, self.consumer, self.assigned, self._on_rewind
        )
        self.consumer.subscribe(
            [s.input_topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )
        log.info("consuming %s as group %s", s.input_topic, s.consumer_group)
        try:
            self._loop()
        finally:
            self._shutdown()
        return 0

    def _new_consumer(self) -> Consumer:
        s = self.settings
        name = replica_name(s) if s.static_membership else ""
        return clients.consumer(
            s,
            s.consumer_group,
            # A named replica is a static member: its restart does not rebalance the group.
            **({"group.instance.id": name} if name else {}),
            **{
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
                "partition.assignment.strategy": "cooperative-sticky",
                "enable.partition.eof": False,
                # Rebuilding state on assignment replays the log through the model.
                "max.poll.interval.ms": 600_000,
                "session.timeout.ms": s.session_timeout_ms,
                "heartbeat.interval.ms": 2_000,
                "error_cb": clients.log_kafka_error,
            },
        )

    def _loop(self) -> None:
        assert self.consumer is not None
        s = self.settings
        last_lag = 0.0
        while not self.stop_event.is_set():
            self.beat()
            self._maybe_swap_model()
            msgs = self.consumer.consume(s.batch_max_messages, timeout=s.batch_max_wait_ms / 1000)
            if msgs:
                self._process_batch(msgs)
            now = time.monotonic()
            if now - last_lag > 2.0:
                self._update_lag()
                last_lag = now

    def _wait_for_model(self) -> bool:
        while not self.stop_event.is_set():
            self.beat()
            model = self.watcher.take()
            if model is not None:
                self._use_model(model)
                return True
            self.stop_event.wait(0.2)
        return False

    def _use_model(self, model: ForecasterLike) -> None:
        s, m = self.settings, self.metrics
        if self.engine is None:
            self.engine = Engine(
                model, min_history=s.min_history, on_model_call=self._observe_model_call,
                liveness=LivenessConfig(s.silent_after_s, s.expire_after_s), **engine_options(s),
            )  # fmt: skip
        else:
            self.engine.set_model(model)
        m.model_info.clear()
        m.model_info.labels(s.model_name, str(model.version), s.model_alias).set(1)
        m.model_loaded.set(1)
        m.show_model(model)
        m.model_reloads.labels(result="success").inc()
        log.info("using %s version %s", s.model_name, model.version)

    def _maybe_swap_model(self) -> None:
        model = self.watcher.take()
        if model is not None:
            self._use_model(model)

    def _observe_model_call(self, n_series: int, seconds: float) -> None:
        self.metrics.forecast_batch_size.observe(n_series)
        self.metrics.model_call_seconds.observe(seconds)

    # --- the batch ----------------------------------------------------------------------------
    def _process_batch(self, msgs: list[Message]) -> None:
        assert self.engine is not None and self.transactions is not None
        out = process_batch(_incoming(msgs), self.engine, self.settings, self.assigned)
        for key, series in out.series.items():
            self.partition_series.setdefault(key, set()).update(series)
        self._forget_expired(out.expired)
        apply_observed(out.deltas, self.metrics, self.gauges)
        # Counted only once committed: an aborted batch is redone and counted then (counting
        # it here too made a permanent abort loop look like a healthy stream).
        if self.transactions.commit(out):
            apply_committed(out.deltas, self.metrics, time.time() * 1000)
        self.metrics.series_tracked.set(len(self.engine.series))
        self.metrics.series_warming_up.set(self.engine.warming_up())
        self.metrics.series_silent.set(self.engine.silent())
        self.batches += 1

    def _forget_expired(self, expired: set[str]) -> None:
        """Expired series leave the partition index too (it would otherwise keep every id
        ever seen). A series expired in an aborted batch is only gone from the engine: the
        index may still name it, which ``drop`` tolerates."""
        if expired:
            for series in self.partition_series.values():
                series -= expired

    # --- rebalance ----------------------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if not partitions:
            return
        log.info("assigned %s", _partition_list(partitions))
        self.metrics.partition_changes.labels("assigned").inc(len(partitions))
        committed = consumer.committed(partitions, timeout=30)
        # A partition lost without a revoke (e.g. the session expired while the broker was
        # away) may still hold state that ran past its committed offset: start it from the log.
        for tp in partitions:
            self._drop_partition((tp.topic, tp.partition))
        self._rebuild(committed)
        self.assigned |= {(tp.topic, tp.partition) for tp in partitions}

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if not partitions:
            return
        log.info("revoked %s", _partition_list(partitions))
        self.metrics.partition_changes.labels("revoked").inc(len(partitions))
        for tp in partitions:
            key = (tp.topic, tp.partition)
            self.assigned.discard(key)
            self._drop_partition(key)
            with contextlib.suppress(KeyError):
                self.metrics.consumer_lag.remove(tp.topic, str(tp.partition))

    def _on_rewind(self, committed: list[TopicPartition]) -> None:
        for tp in committed:
            self._drop_partition((tp.topic, tp.partition))
        self._rebuild(committed)

    def _drop_partition(self, key: Partition) -> None:
        assert self.engine is not None
        # Its log clock too: the rebuild recomputes it from the committed log only.
        self.engine.drop(list(self.partition_series.pop(key, set())), clocks=[key[1]])

    def _rebuild(self, committed: list[TopicPartition]) -> None:
        assert self.engine is not None
        seen = restore.rebuild(
            self.settings, self.engine, committed, self.consumer, on_progress=self.beat
        )
        for key, series in seen.items():
            # Series that expired during the replay are not held.
            held = {k for k in series if k in self.engine.series}
            self.partition_series.setdefault(key, set()).update(held)

    # --- housekeeping -------------------------------------------------------------------------
    def _update_lag(self) -> None:
        if self.consumer is None or not self.assigned:
            return
        tps = [TopicPartition(t, p) for t, p in sorted(self.assigned)]
        try:
            positions = self.consumer.position(tps)
        except KafkaException:
            return
        for tp in positions:
            try:
                _low, high = self.consumer.get_watermark_offsets(tp, cached=True)
            except KafkaException:
                continue
            if high >= 0 and tp.offset >= 0:
                self.metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(
                    max(0, high - tp.offset)
                )

    def _shutdown(self) -> None:
        self.stop()
        if self.consumer is not None:
            # Leave the group now so the partitions move to another replica at once.
            try:
                self.consumer.close()
            except (KafkaException, RuntimeError) as e:
                log.warning("closing the consumer: %s", e)
        if self.transactions is not None:
            self.transactions.close()
        log.info("detector stopped after %d batches", self.batches)


def _incoming(msgs: list[Message]) -> list[Incoming]:
    """The batch's messages as plain values; consumer errors are raised (fatal) or logged."""
    out: list[Incoming] = []
    for msg in msgs:
        err = msg.error()
        if err is not None:
            if err.fatal():
                raise KafkaException(err)
            log.warning("consumer error: %s", err)
            continue
        incoming = Incoming(
            msg.topic(), msg.partition(), msg.offset(), msg.key(), msg.value(),
            msg.timestamp()[1],
        )  # fmt: skip
        out.append(incoming)
    return out


def _partition_list(partitions: list[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions)
